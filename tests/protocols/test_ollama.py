"""protocols/ollama*.py: Ollama's wire format <-> core types, both directions, without a server."""

from __future__ import annotations

import base64
import math

import pytest

from tenshu.core.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    TenshuError,
)
from tenshu.core.events import (
    BlockDelta,
    BlockStart,
    BlockStop,
    MessageFinish,
    MessageStart,
    TokenLogprob,
    Usage,
)
from tenshu.core.messages import (
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tenshu.core.models import ModelInfo
from tenshu.core.request import ChatRequest
from tenshu.protocols import ollama, ollama_client, ollama_encode

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()


def chat(**body) -> ChatRequest:
    return ollama.parse_chat(ollama.ChatBody.model_validate({"model": "m", **body}))


def generate(**body) -> ChatRequest:
    return ollama.parse_generate(ollama.GenerateBody.model_validate({"model": "m", **body}))


# Parsing requests.


def test_messages_become_core_messages_with_tool_results_matched_by_name():
    request = chat(messages=[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather and time?", "images": [PNG]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "clock", "arguments": "{\"tz\": \"CET\"}"}}]},
        {"role": "tool", "tool_name": "clock", "content": "12:00"},
        {"role": "tool", "tool_name": "weather", "content": "sunny"},
    ])
    system, user, assistant, results = request.messages
    assert system == Message.of("system", "be brief")
    assert user.content == [ImageBlock("image/png", PNG), TextBlock("weather and time?")]
    assert assistant == Message("assistant", [
        ToolUseBlock("call_2_0", "weather", {"city": "Paris"}),
        ToolUseBlock("call_2_1", "clock", {"tz": "CET"})])
    # both results share one user turn, each answering the call of its tool
    assert results == Message("user", [
        ToolResultBlock("call_2_1", [TextBlock("12:00")]),
        ToolResultBlock("call_2_0", [TextBlock("sunny")])])


def test_arguments_text_that_does_not_parse_is_kept_as_written():
    request = chat(messages=[
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "clock", "arguments": '{"tz": "CE'}}]},
        {"role": "tool", "tool_name": "clock", "content": "?"}])
    assert request.messages[1].content == [ToolUseBlock("call_1_0", "clock", unparsed='{"tz": "CE')]


def test_options_map_to_sampling_fields_with_ollamas_sentinels():
    request = chat(messages=[{"role": "user", "content": "x"}], options={
        "temperature": 0.5, "num_predict": 7, "top_k": 40, "top_p": 0.9, "min_p": 0.05,
        "seed": 3, "stop": ["END", ""], "num_ctx": 256, "repeat_penalty": 1.1,
        "presence_penalty": 0.2, "frequency_penalty": 0.3, "mirostat": 2})  # mirostat: ignored
    assert (request.temperature, request.max_tokens, request.top_k, request.top_p) == (
        0.5, 7, 40, 0.9)
    assert (request.min_p, request.seed, request.stop, request.num_ctx) == (
        0.05, 3, ["END"], 256)
    assert (request.repetition_penalty, request.presence_penalty,
            request.frequency_penalty) == (1.1, 0.2, 0.3)
    for unlimited in (-1, -2, 0):
        assert chat(options={"num_predict": unlimited}).max_tokens is None
    random = chat(options={"seed": -1, "top_k": -1, "stop": "x"})
    assert (random.seed, random.top_k, random.stop) == (None, 0, ["x"])


def test_stream_format_think_and_logprobs():
    assert chat().stream is True  # Ollama streams unless told not to
    assert chat(stream=False).stream is False
    assert chat(format="json").response_format == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert chat(format=schema).response_format["json_schema"]["schema"] == schema
    assert chat(think=True).thinking == {"type": "enabled"}
    assert chat(think="high").thinking == {"type": "enabled", "effort": "high"}
    assert chat(think=False).thinking == {"type": "disabled"}
    request = chat(logprobs=True, top_logprobs=3, keep_alive="5m")
    assert (request.logprobs, request.top_logprobs) == (True, 3)


def test_bad_input_names_the_field():
    with pytest.raises(InvalidRequestError) as err:
        chat(messages=[{"role": "user", "content": "x", "images": ["not base64!"]}])
    assert err.value.field == "messages.0.images.0"
    with pytest.raises(InvalidRequestError) as err:
        chat(messages=[{"role": "user", "tool_calls": [{"function": {"name": "f"}}]}])
    assert err.value.field == "messages.0.tool_calls"
    with pytest.raises(InvalidRequestError) as err:
        generate(prompt="def f(", suffix="return 1")
    assert err.value.field == "suffix"


def test_generate_raw_is_a_prompt_and_otherwise_a_templated_user_turn():
    assert generate(prompt="<|im_start|>hi", raw=True).prompt == "<|im_start|>hi"
    request = generate(prompt="hi", system="you are a cat", images=[PNG])
    assert request.prompt is None
    assert request.messages == [Message.of("system", "you are a cat"),
                                Message("user", [ImageBlock("image/png", PNG), TextBlock("hi")])]


def test_load_calls():
    assert ollama.is_load_request(ollama.GenerateBody(model="m", prompt=""))
    assert not ollama.is_load_request(ollama.GenerateBody(model="m", prompt="hi"))
    assert ollama.is_load_request(ollama.ChatBody(model="m"))
    assert ollama.load_reason(None) == "load"
    assert ollama.load_reason(0) == ollama.load_reason("0s") == "unload"


def test_keep_alive_reads_durations_and_seconds_as_ollama_does():
    assert ollama.keep_alive(None) is None
    assert ollama.keep_alive("10m") == ollama.keep_alive(600) == ollama.keep_alive("600") == 600
    assert ollama.keep_alive("1h30m") == 5400 and ollama.keep_alive("300ms") == 0.3
    assert ollama.keep_alive(-1) == ollama.keep_alive("-1m") == math.inf  # forever
    assert ollama.keep_alive("0") == ollama.keep_alive(0) == 0
    for bad in ("soon", "5x", "", "m"):
        with pytest.raises(InvalidRequestError, match="keep_alive"):
            ollama.keep_alive(bad)
    request = ollama.parse_chat(ollama.ChatBody(model="m", keep_alive="1s"))
    assert request.keep_alive == 1.0
    assert ollama_encode.load_reply("m", "generate", "load") | {"created_at": ""} == {
        "model": "m", "created_at": "", "response": "", "done": True, "done_reason": "load"}


# Round trips through the client direction.


def test_chat_request_round_trips_through_the_wire():
    original = ChatRequest(
        model="m",
        messages=[
            Message.of("system", "be brief"),
            Message("user", [ImageBlock("image/png", PNG), TextBlock("look")]),
            Message("assistant", [ThinkingBlock("hmm"), TextBlock("calling"),
                                  ToolUseBlock("t1", "zoom", {"factor": 2})]),
            Message("user", [ToolResultBlock("t1", [TextBlock("zoomed")])]),
            Message.of("user", "and now?"),
        ],
        max_tokens=9, temperature=0.3, top_p=0.8, top_k=5, min_p=0.1, seed=4,
        repetition_penalty=1.2, presence_penalty=0.5, frequency_penalty=0.25, stop=["\n\n"],
        num_ctx=128, stream=True, logprobs=True, top_logprobs=2,
        tools=[ToolSpec("zoom", "zoom in", {"type": "object",
                                            "properties": {"factor": {"type": "number"}}})],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "response", "schema": {"type": "object"}}},
        thinking={"type": "enabled", "effort": "low"},
    )
    wire = ollama_client.encode_chat_request(original)
    assert wire["messages"][3] == {"role": "tool", "content": "zoomed", "tool_call_id": "t1",
                                   "tool_name": "zoom"}
    assert wire["options"]["num_predict"] == 9 and wire["options"]["repeat_penalty"] == 1.2
    assert ollama.parse_chat(ollama.ChatBody.model_validate(wire)) == original


def test_completion_round_trips_through_generate():
    original = ChatRequest(model="m", prompt="once upon", max_tokens=3, stream=False,
                           response_format={"type": "json_object"})
    wire = ollama_client.encode_generate_request(original)
    assert wire["raw"] is True and wire["format"] == "json"
    assert ollama.parse_generate(ollama.GenerateBody.model_validate(wire)) == original
    with pytest.raises(InvalidRequestError):
        ollama_client.encode_chat_request(original)


REPLY = [
    MessageStart("r1", "m", Usage(5, 0), 0),
    BlockStart(0, ThinkingBlock("")),
    BlockDelta(0, text="let me see"),
    BlockStop(0),
    BlockStart(1, TextBlock("")),
    BlockDelta(1, text="Hel", logprobs=[TokenLogprob("Hel", -0.5, [72, 101, 108],
                                                     [TokenLogprob("Hel", -0.5, [72, 101, 108])])]),
    BlockDelta(1, text="lo"),
    BlockStop(1),
    BlockStart(2, ToolUseBlock("t1", "zoom")),
    BlockDelta(2, partial_json='{"fac'),
    BlockDelta(2, partial_json='tor": 2}'),
    BlockStop(2),
    MessageFinish("tool_use", Usage(5, 6), prompt_ns=100, decode_ns=300),
]


def summary(events) -> list:
    """What a reply says, whatever the chunking: each block's kind and joined content."""
    blocks, out = {}, []
    for e in events:
        if isinstance(e, BlockStart):
            blocks[e.index] = [type(e.block).__name__, getattr(e.block, "name", None), ""]
            out.append(blocks[e.index])
        elif isinstance(e, BlockDelta):
            blocks[e.index][2] += e.text or e.partial_json.replace(" ", "")
        elif isinstance(e, MessageFinish):
            out.append([e.stop_reason, e.usage.input_tokens, e.usage.output_tokens,
                        e.prompt_ns, e.decode_ns])
    return out


def test_reply_round_trips_through_chunks():
    clock = iter([0, 1000]).__next__
    encoder = ollama_encode.ReplyEncoder("m", "chat", clock=clock)
    chunks = [c for e in REPLY for c in encoder.chunks(e)]
    assert chunks[1]["message"]["content"] == "Hel" and chunks[1]["logprobs"][0]["token"] == "Hel"
    assert chunks[3]["message"]["tool_calls"] == [
        {"id": "t1", "function": {"index": 0, "name": "zoom", "arguments": {"factor": 2}}}]
    final = chunks[-1]
    assert final["done"] is True and final["done_reason"] == "stop"
    assert (final["total_duration"], final["load_duration"], final["prompt_eval_duration"],
            final["eval_duration"], final["prompt_eval_count"], final["eval_count"]) == (
        1000, 600, 100, 300, 5, 6)
    assert all(c["done"] is False for c in chunks[:-1])

    decoder = ollama_client.StreamDecoder()
    decoded = [e for c in chunks for e in decoder.decode(c)]
    assert isinstance(decoded[0], MessageStart) and decoded[0].model == "m"
    assert summary(decoded) == summary(REPLY)
    logprobs = next(e.logprobs for e in decoded if isinstance(e, BlockDelta) and e.logprobs)
    assert logprobs == REPLY[5].logprobs

    # stream: false is the same reply in one object
    whole = encoder.response()
    assert whole["message"]["content"] == "Hello" and whole["message"]["thinking"] == "let me see"
    assert summary(ollama_client.StreamDecoder().decode(whole)) == summary(REPLY)


def test_parallel_calls_come_each_in_a_chunk_of_their_own_as_ollama_sends_them():
    calls = [
        MessageStart("r1", "m", Usage(5, 0), 0),
        BlockStart(0, ToolUseBlock("t1", "weather")),
        BlockDelta(0, partial_json='{"city": '),
        BlockDelta(0, partial_json='"Paris"}'),
        BlockStop(0),
        BlockStart(1, ToolUseBlock("t2", "clock")),
        BlockDelta(1, partial_json="{}"),
        BlockStop(1),
        MessageFinish("tool_use", Usage(5, 9)),
    ]
    encoder = ollama_encode.ReplyEncoder("m", "chat")
    chunks = [c for e in calls for c in encoder.chunks(e)]
    assert [(c["done"], c["message"]["content"], c["message"].get("tool_calls")) for c in chunks] == [
        (False, "", [{"id": "t1", "function": {"index": 0, "name": "weather",
                                               "arguments": {"city": "Paris"}}}]),
        (False, "", [{"id": "t2", "function": {"index": 1, "name": "clock", "arguments": {}}}]),
        (True, "", None),
    ]
    assert chunks[-1]["done_reason"] == "stop"  # Ollama has no reason of its own for calls
    whole = encoder.response()
    assert [c["function"]["name"] for c in whole["message"]["tool_calls"]] == ["weather", "clock"]

    sdk = pytest.importorskip("ollama")
    for body in [*chunks, whole]:
        sdk.ChatResponse.model_validate(body)
    assert sdk.ChatResponse.model_validate(whole).message.tool_calls[0].function.arguments == {
        "city": "Paris"}


def test_a_tool_without_parameters_takes_none():
    request = chat(tools=[{"type": "function", "function": {"name": "now"}}])
    assert request.tools == [ToolSpec("now", "", {"type": "object", "properties": {}})]


def test_generate_replies_use_response_and_report_length():
    encoder = ollama_encode.ReplyEncoder("m", "generate", clock=iter([0, 50]).__next__)
    events = [MessageStart("r", "m", Usage(2), 0), BlockStart(0, TextBlock("")),
              BlockDelta(0, text="ab"), BlockStop(0), MessageFinish("max_tokens", Usage(2, 1))]
    chunks = [c for e in events for c in encoder.chunks(e)]
    assert [c["response"] for c in chunks] == ["ab", ""]
    assert chunks[-1]["done_reason"] == "length" and chunks[-1]["context"] == []
    assert "message" not in chunks[-1]
    decoded = [e for c in chunks for e in ollama_client.StreamDecoder().decode(c)]
    assert decoded[-1].stop_reason == "max_tokens"


def test_errors_both_ways():
    assert ollama.error_body(TenshuError("boom")) == {"error": "boom"}
    with pytest.raises(TenshuError, match="out of memory"):
        ollama_client.StreamDecoder().decode({"error": "out of memory"})
    assert isinstance(ollama_client.parse_error(404, '{"error": "model \'x\' not found"}'),
                      NotFoundError)
    assert isinstance(ollama_client.parse_error(401, "unauthorized"), AuthenticationError)
    assert ollama_client.parse_error(500, "{}").status == 500


# Model listings and embeddings.

INFO = ModelInfo(name="tiny", context_window=512, created=0, family="llama",
                 parameters=3_475_712, dtype="bfloat16", size_bytes=6_955_520, path="/m/tiny",
                 chat_template="{{ messages }}")


def test_listing_entries():
    entry = ollama_encode.model_entry(INFO)
    assert entry["name"] == entry["model"] == "tiny:latest"
    assert entry["modified_at"] == "1970-01-01T00:00:00Z"
    assert len(entry["digest"]) == 64 and entry["digest"] == ollama_encode.model_entry(INFO)["digest"]
    assert entry["details"] == {"parent_model": "", "format": "safetensors", "family": "llama",
                                "families": ["llama"], "parameter_size": "3.48M",
                                "quantization_level": "BF16"}
    assert ollama_encode.running_entry(INFO)["context_length"] == 512
    show = ollama_encode.show_response(INFO)
    assert show["template"] == "{{ messages }}" and show["capabilities"] == ["completion", "tools"]
    assert show["model_info"]["llama.context_length"] == 512
    assert 'TEMPLATE """{{ messages }}"""' in show["modelfile"]


@pytest.mark.parametrize(("count", "text"), [
    (7_000_000_000, "7B"), (7_615_616_512, "7.6B"), (494_032_768, "494.03M"),
    (22_000_000, "22M"), (3_000, "3K"), (12, "12")])
def test_parameter_size_reads_like_ollamas(count, text):
    assert ollama_encode.parameter_size(count) == text


def test_embed_inputs_and_dimensions():
    assert ollama.parse_embed(ollama.EmbedBody(model="e", input="a")) == ["a"]
    assert ollama.parse_embed(ollama.EmbedBody(model="e", input=["a", "b"])) == ["a", "b"]
    assert ollama.parse_embed(ollama.EmbedBody(model="e", input="")) == []
    short = ollama_encode.shorten([0.6, 0.8, 0.0, 0.0], 1)
    assert short == [1.0]
    assert math.isclose(sum(x * x for x in ollama_encode.shorten([0.5, 0.5, 0.5, 0.5], 3)), 1.0)
