"""protocols/openai*.py: parsing OpenAI requests, encoding events, and both round trips.

Server side: wire request -> ChatRequest; events -> responses and stream chunks. Client side:
ChatRequest -> wire -> ChatRequest, and events -> chunks -> events, must come back unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
import struct

import pytest

from tenshu.core.errors import ContextLengthError, InvalidRequestError, OverloadedError
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
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest, ToolChoice
from tenshu.protocols.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    embedding_inputs,
    error_body,
    parse_chat_request,
    parse_completion_request,
    parse_completion_requests,
)
from tenshu.protocols.openai_client import (
    StreamDecoder,
    decode_response,
    encode_chat_request,
    encode_completion_request,
    error_from_body,
)
from tenshu.protocols.openai_encode import (
    ChatCompletion,
    ChatStream,
    Completion,
    CompletionStream,
    Echo,
    encode_chat_completion,
    encode_completion,
    encode_embeddings,
)


def chat(**body) -> ChatRequest:
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return parse_chat_request(ChatCompletionRequest.model_validate(body))


def lp(token: str, logprob: float, *top: tuple[str, float]) -> TokenLogprob:
    return TokenLogprob(token, logprob, list(token.encode()),
                        [TokenLogprob(t, v, list(t.encode())) for t, v in top])


START = MessageStart("r1", "m", Usage(5, 0, 2), 1700000000)
TEXT = [
    START,
    BlockStart(0, TextBlock("")),
    BlockDelta(0, text="Hel", logprobs=[lp("Hel", -0.1, ("Hel", -0.1), ("He", -2.5))]),
    BlockDelta(0, text="lo", logprobs=[lp("lo", -0.2, ("lo", -0.2), ("l", -3.0))]),
    BlockStop(0),
    MessageFinish("stop_sequence", Usage(5, 2, 2), stop_sequence="END"),
]
TOOL = [
    START,
    BlockStart(0, TextBlock("")),
    BlockDelta(0, text="Let me look."),
    BlockStop(0),
    BlockStart(1, ToolUseBlock("call_1", "weather")),
    BlockDelta(1, partial_json='{"city": '),
    BlockDelta(1, partial_json='"Paris"}'),
    BlockStop(1),
    BlockStart(2, ToolUseBlock("call_2", "time")),
    BlockDelta(2, partial_json="{}"),
    BlockStop(2),
    MessageFinish("tool_use", Usage(5, 9, 2)),
]
TWO_CHOICES = [
    START,
    BlockStart(0, TextBlock(""), choice=1),
    BlockDelta(0, text="b", choice=1),
    BlockStart(0, TextBlock(""), choice=0),
    BlockDelta(0, text="a", choice=0),
    BlockStop(0, choice=1),
    MessageFinish("max_tokens", Usage(5, 4, 2), choice=1),
    BlockDelta(0, text="aa", choice=0),
    BlockStop(0, choice=0),
    MessageFinish("end_turn", Usage(5, 3, 2), choice=0),
]


def stream_round_trip(events, n=1):
    encoder, decoder = ChatStream("chatcmpl-1", n=n, include_usage=True), StreamDecoder()
    out = []
    for event in events:
        for chunk in encoder.encode(event):
            out += decoder.feed(chunk)
    for chunk in encoder.end():
        out += decoder.feed(chunk)
    return out + decoder.end()


def comparable(events):
    """Events without what the wire does not carry (timings, the start's counts)."""
    return [(type(e).__name__, e.choice, e.stop_reason, e.stop_sequence, e.usage)
            if isinstance(e, MessageFinish) else e
            for e in events if not isinstance(e, MessageStart)]


# -- parsing ------------------------------------------------------------------------------------


def test_messages_of_every_role_become_core_messages():
    request = chat(messages=[
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "look", "arguments": '{"x": 1}'}},
            {"id": "c2", "type": "function", "function": {"name": "look", "arguments": ""}},
            # arguments that do not parse (cut short) are kept as written, as OpenAI keeps them
            {"id": "c3", "type": "function", "function": {"name": "look", "arguments": '{"x'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "a hat"}]},
        {"role": "tool", "tool_call_id": "c3", "content": "?"},
        {"role": "user", "content": "thanks"},
    ])
    assert request.messages == [
        Message.of("system", "Be brief."),
        Message("user", [TextBlock("What is this?"),
                         ImageBlock(media_type="image/png", data="iVBOR"),
                         ImageBlock(url="https://example.com/cat.jpg")]),
        Message("assistant", [ToolUseBlock("c1", "look", {"x": 1}), ToolUseBlock("c2", "look"),
                              ToolUseBlock("c3", "look", unparsed='{"x')]),
        Message("user", [ToolResultBlock("c1", [TextBlock("a cat")]),
                         ToolResultBlock("c2", [TextBlock("a hat")]),
                         ToolResultBlock("c3", [TextBlock("?")])]),
        Message.of("user", "thanks"),
    ]


def test_sampling_fields_tools_and_formats_are_carried():
    request = chat(
        max_tokens=50, max_completion_tokens=20, temperature=0.5, top_p=0.9, seed=7, n=2,
        stop="\n", presence_penalty=0.5, frequency_penalty=-0.5, logprobs=True, top_logprobs=3,
        user="u1", stream=True, top_k=40,
        tools=[{"type": "function", "function": {
            "name": "look", "description": "Look", "parameters": {"type": "object"}}}],
        tool_choice={"type": "function", "function": {"name": "look"}},
        parallel_tool_calls=False, response_format={"type": "json_object"})
    assert (request.max_tokens, request.temperature, request.top_p, request.seed) == (
        20, 0.5, 0.9, 7)
    assert (request.n, request.stop, request.logprobs, request.top_logprobs) == (
        2, ["\n"], True, 3)
    assert (request.presence_penalty, request.frequency_penalty, request.top_k) == (
        0.5, -0.5, 40)
    assert request.stream and request.user == "u1"
    assert request.tools == [ToolSpec("look", "Look", {"type": "object"})]
    assert request.tool_choice == ToolChoice("tool", "look", parallel=False)
    assert request.response_format == {"type": "json_object"}
    assert chat(response_format={"type": "text"}).response_format is None


@pytest.mark.parametrize(("body", "field"), [
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                {"type": "input_audio"}]}]},
     "messages.0.content.1"),
    ({"messages": [{"role": "system", "content": [{"type": "text"}]}]}, "messages.0.content.0"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "answer"}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": "{\"type\": \"object\"}"}}},
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format.json_schema.name"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": {}, "strict": "yes"}}}, "response_format.json_schema.strict"),
])
def test_bad_chat_requests_name_the_field(body, field):
    with pytest.raises(InvalidRequestError) as err:
        chat(**body)
    assert err.value.field == field


def test_a_tool_without_parameters_takes_none():
    request = chat(tools=[{"type": "function", "function": {"name": "now"}}])
    assert request.tools == [ToolSpec("now", "", {"type": "object", "properties": {}})]


@pytest.mark.parametrize(("body", "expected"), [
    ({}, None),
    ({"tool_choice": "none"}, ToolChoice("none")),
    ({"tool_choice": "auto"}, ToolChoice("auto")),
    ({"tool_choice": "required"}, ToolChoice("required")),
    ({"tool_choice": {"type": "function", "function": {"name": "look"}}}, ToolChoice("tool", "look")),
    ({"parallel_tool_calls": False}, ToolChoice("auto", parallel=False)),
    ({"tool_choice": "required", "parallel_tool_calls": True}, ToolChoice("required")),
])
def test_tool_choice_and_parallel_tool_calls(body, expected):
    tools = [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}]
    assert chat(tools=tools, **body).tool_choice == expected


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
    {"type": "array", "items": {"type": "string"}},
    {"anyOf": [{"type": "string"}, {"type": "null"}]},
])
def test_a_json_schema_response_format_takes_any_schema(schema):
    value = {"type": "json_schema",
             "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    assert chat(response_format=value).response_format == value


def test_completion_prompts():
    def parse(**body):
        return parse_completion_request(CompletionRequest.model_validate({"model": "m", **body}))

    assert parse(prompt="Once").prompt == "Once"
    assert parse(prompt=["Once"]).prompt == "Once"
    assert parse(prompt=[1, 2, 3]).prompt == [1, 2, 3]
    assert parse(prompt="x").max_tokens == 16  # the legacy default
    request = parse(prompt="x", logprobs=2, echo=False)
    assert (request.logprobs, request.top_logprobs, request.prompt_logprobs) == (True, 2, None)
    # echo with logprobs scores the prompt (lm-eval's loglikelihood), token ids as well as text
    request = parse(prompt=[5, 6, 7], logprobs=1, echo=True, max_tokens=1)
    assert (request.echo, request.prompt_logprobs, request.prompt) == (True, 1, [5, 6, 7])
    assert parse(prompt="x", prompt_logprobs=3).prompt_logprobs == 3  # vLLM's own field

    def several(**body):
        return parse_completion_requests(CompletionRequest.model_validate({"model": "m", **body}))

    assert [r.prompt for r in several(prompt=["a", "b"], n=2)] == ["a", "b"]
    assert [r.prompt for r in several(prompt=[[1, 2], [3]])] == [[1, 2], [3]]
    assert all(r.n == 2 for r in several(prompt=["a", "b"], n=2))
    for body, field in [({"prompt": ["a", "b"]}, "prompt"), ({"prompt": "a", "suffix": "z"},
                        "suffix"), ({"prompt": ["a"] * 257}, "prompt")]:
        with pytest.raises(InvalidRequestError) as err:
            parse(**body)
        assert err.value.field == field


def test_embedding_inputs():
    assert embedding_inputs(EmbeddingRequest(model="e", input="a")) == ["a"]
    assert embedding_inputs(EmbeddingRequest(model="e", input=["a", "b"])) == ["a", "b"]
    with pytest.raises(InvalidRequestError, match="token ids"):
        embedding_inputs(EmbeddingRequest(model="e", input=[1, 2]))


# -- encoding -----------------------------------------------------------------------------------


def test_chat_completion_response():
    body = encode_chat_completion(TOOL, "chatcmpl-1")
    ChatCompletion.model_validate(body)
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    assert choice["message"]["tool_calls"][0] == {
        "id": "call_1", "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14,
                             "prompt_tokens_details": {"cached_tokens": 2}}
    text = encode_chat_completion(TEXT, "chatcmpl-1")["choices"][0]
    assert text["finish_reason"] == "stop" and text["stop_reason"] == "END"
    first = text["logprobs"]["content"][0]
    assert first["token"] == "Hel" and first["bytes"] == list(b"Hel")
    assert first["top_logprobs"][1] == {"token": "He", "logprob": -2.5, "bytes": list(b"He")}


def test_a_reply_of_calls_alone_has_null_content():
    calls_only = [START, *TOOL[4:]]  # TOOL without its text block
    body = encode_chat_completion(calls_only, "chatcmpl-1")
    ChatCompletion.model_validate(body)
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert [c["function"]["arguments"] for c in message["tool_calls"]] == [
        '{"city": "Paris"}', "{}"]
    # text before the calls is the content, beside them (as OpenAI and vLLM answer)
    both = encode_chat_completion(TOOL, "chatcmpl-1")["choices"][0]["message"]
    assert both["content"] == "Let me look." and len(both["tool_calls"]) == 2


def test_parallel_tool_calls_stream_as_the_openai_sdk_reads_them():
    encoder = ChatStream("chatcmpl-1")
    chunks = [c for e in TOOL for c in encoder.encode(e)]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Let me look."},
        # the first delta of a call carries its id, type and name, with empty arguments
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "weather", "arguments": ""}}]},
        # then only the call's index and fragments of its arguments
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
        {"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                         "function": {"name": "time", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 7 + ["tool_calls"]

    sdk = pytest.importorskip("openai.lib.streaming.chat")
    from openai.types.chat import ChatCompletionChunk
    state = sdk.ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    (choice,) = state.get_final_completion().choices
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("call_1", "weather", '{"city": "Paris"}'), ("call_2", "time", "{}")]


def test_a_call_that_streams_no_arguments_still_ends_with_an_object():
    events = [START, BlockStart(0, ToolUseBlock("call_1", "now")), BlockStop(0),
              MessageFinish("tool_use", Usage(5, 3, 2))]
    encoder = ChatStream("chatcmpl-1")
    deltas = [c["choices"][0]["delta"] for e in events for c in encoder.encode(e)]
    assert deltas[2] == {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}
    whole = encode_chat_completion(events, "chatcmpl-1")["choices"][0]["message"]
    assert whole["tool_calls"][0]["function"]["arguments"] == "{}"


def test_chat_stream_chunks():
    encoder = ChatStream("chatcmpl-1", n=2, include_usage=True)
    chunks = [c for e in TWO_CHOICES for c in encoder.encode(e)] + encoder.end()
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [
        {"role": "assistant", "content": ""}] * 2
    assert [c["choices"][0]["index"] for c in chunks[:2]] == [0, 1]
    texts = {0: "", 1: ""}
    for c in chunks[:-1]:
        texts[c["choices"][0]["index"]] += c["choices"][0]["delta"].get("content", "")
    assert texts == {0: "aaa", 1: "b"}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]
                and c["choices"][0]["finish_reason"]]
    assert finishes == ["length", "stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 7


def test_completion_echo_and_legacy_logprobs():
    body = encode_completion(TEXT, "cmpl-1", echo=Echo("Say: "), logprobs=True)
    Completion.model_validate(body)
    (choice,) = body["choices"]
    assert choice["text"] == "Say: Hello"
    assert choice["logprobs"] == {
        "tokens": ["Hel", "lo"], "token_logprobs": [-0.1, -0.2],
        "top_logprobs": [{"Hel": -0.1, "He": -2.5}, {"lo": -0.2, "l": -3.0}],
        "text_offset": [0, 3]}
    encoder = CompletionStream("cmpl-1", echo=Echo("Say: "), logprobs=True)
    chunks = [c for e in TEXT for c in encoder.encode(e)]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Say: Hello"
    assert [c["choices"][0]["logprobs"]["text_offset"] for c in chunks[1:3]] == [[5], [8]]
    assert chunks[0]["object"] == "text_completion"


def test_echo_with_logprobs_puts_the_scored_prompt_first():
    """As OpenAI's legacy API and vLLM: the prompt's tokens lead the logprobs, the first with
    null; text offsets count from the start of the echoed prompt; vLLM's prompt_logprobs field
    keys each position by token id."""
    say = [TokenLogprob("Say", None, id=7),
           TokenLogprob(": ", -1.5, top=[TokenLogprob(":", -0.5, id=9, rank=1)], id=8, rank=2)]
    events = [dataclasses.replace(TEXT[0], prompt_text="Say: ", prompt_tokens=say), *TEXT[1:]]
    body = encode_completion(events, "cmpl-1", echo=Echo(True, True, scores=True),
                             logprobs=True)
    Completion.model_validate(body)
    (choice,) = body["choices"]
    assert choice["text"] == "Say: Hello"
    assert choice["logprobs"]["tokens"] == ["Say", ": ", "Hel", "lo"]
    assert choice["logprobs"]["token_logprobs"] == [None, -1.5, -0.1, -0.2]
    assert choice["logprobs"]["top_logprobs"][:2] == [None, {": ": -1.5, ":": -0.5}]
    assert choice["logprobs"]["text_offset"] == [0, 3, 5, 8]
    assert choice["prompt_logprobs"] == [None, {
        "8": {"logprob": -1.5, "rank": 2, "decoded_token": ": "},
        "9": {"logprob": -0.5, "rank": 1, "decoded_token": ":"}}]
    encoder = CompletionStream("cmpl-1", echo=Echo(True, True), logprobs=True)
    chunks = [c for e in events for c in encoder.encode(e)]
    assert chunks[0]["choices"][0]["text"] == "Say: "
    assert chunks[0]["choices"][0]["logprobs"]["token_logprobs"] == [None, -1.5]
    assert [c["choices"][0]["logprobs"]["text_offset"] for c in chunks[1:3]] == [[5], [8]]
    # a backend that cannot score prompts (an upstream) says so instead of leaving them out
    with pytest.raises(InvalidRequestError, match="does not score prompts"):
        encode_completion(TEXT, "cmpl-1", echo=Echo("Say: ", True), logprobs=True)


def test_embeddings_base64_is_little_endian_float32():
    vectors = [[0.5, -1.25, 3.0]]
    floats = encode_embeddings("e", vectors, 3)["data"][0]["embedding"]
    packed = encode_embeddings("e", vectors, 3, "base64")["data"][0]["embedding"]
    assert floats == vectors[0]
    assert list(struct.unpack("<3f", base64.b64decode(packed))) == vectors[0]


def test_logprobs_of_impossible_tokens_stay_valid_json():
    events = [START, BlockStart(0, TextBlock("")),
              BlockDelta(0, text="x", logprobs=[lp("x", float("-inf"))]), BlockStop(0),
              MessageFinish("end_turn", Usage(5, 1, 0))]
    body = encode_chat_completion(events, "chatcmpl-1")
    assert body["choices"][0]["logprobs"]["content"][0]["logprob"] == -9999.0


# -- client direction: round trips --------------------------------------------------------------


def test_chat_request_round_trip():
    request = ChatRequest(
        model="m", max_tokens=30, temperature=0.7, top_p=0.8, seed=3, stop=["x"], n=2,
        stream=True, logprobs=True, top_logprobs=2, user="u",
        messages=[
            Message.of("system", "Be brief."),
            Message("user", [TextBlock("Look:"), ImageBlock(media_type="image/png", data="AA")]),
            Message("assistant", [TextBlock("Sure."), ToolUseBlock("c1", "look", {"x": [1]})]),
            Message("user", [ToolResultBlock("c1", [TextBlock("a cat")])]),
        ],
        tools=[ToolSpec("look", "Look at it", {"type": "object"})],
        tool_choice=ToolChoice("required", parallel=False),
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": {}}})
    wire = encode_chat_request(request)
    assert wire["stream_options"] == {"include_usage": True}
    assert parse_chat_request(ChatCompletionRequest.model_validate(wire)) == request


def test_completion_request_round_trip():
    request = ChatRequest(model="m", prompt="Once upon", max_tokens=8, temperature=0.0,
                          logprobs=True, top_logprobs=2, ignore_eos=True)
    wire = encode_completion_request(request)
    assert parse_completion_request(CompletionRequest.model_validate(wire)) == request


@pytest.mark.parametrize("events", [TEXT, TOOL], ids=["text", "tools"])
def test_events_survive_the_stream(events):
    assert comparable(stream_round_trip(events)) == comparable(events)


def test_usage_on_every_chunk_does_not_end_the_stream_early():
    """vLLM's continuous usage stats put the running usage on every chunk, not only on one
    after the last finish."""
    encoder = ChatStream("chatcmpl-1", n=1, include_usage=True)
    chunks = [chunk for event in TEXT for chunk in encoder.encode(event)] + encoder.end()
    usage = chunks[-1]["usage"]
    decoder, out = StreamDecoder(), []
    for chunk in chunks:
        out += decoder.feed({**chunk, "usage": usage} if chunk["choices"] else chunk)
    assert comparable(out + decoder.end()) == comparable(TEXT)


def test_interleaved_choices_survive_the_stream():
    out = stream_round_trip(TWO_CHOICES, n=2)
    for choice in (0, 1):
        sent = [e for e in TWO_CHOICES[1:] if e.choice == choice]
        got = [e for e in out[1:] if e.choice == choice]
        assert comparable(got[:-1]) == comparable(sent[:-1])
        assert got[-1].stop_reason == sent[-1].stop_reason
    assert sum(e.usage.output_tokens for e in out if isinstance(e, MessageFinish)) == 7


@pytest.mark.parametrize("events", [TEXT, TOOL, TWO_CHOICES], ids=["text", "tools", "n2"])
def test_whole_responses_decode_to_the_same_response(events):
    body = encode_chat_completion(events, "chatcmpl-1", n=2 if events is TWO_CHOICES else 1)
    assert encode_chat_completion(decode_response(body), "chatcmpl-1") == body
    text = encode_completion(TEXT, "cmpl-1", logprobs=True)
    assert encode_completion(decode_response(text), "cmpl-1", logprobs=True) == text


def test_errors_round_trip():
    body = error_body(ContextLengthError("too long", field="messages"))
    assert body["error"]["code"] == "context_length_exceeded"
    back = error_from_body(body, 400)
    assert isinstance(back, ContextLengthError) and back.field == "messages"
    assert isinstance(error_from_body({"error": {"message": "slow down"}}, 429), OverloadedError)
    decoder = StreamDecoder()
    decoder.feed({"id": "c", "model": "m", "created": 1, "choices": []})
    with pytest.raises(InvalidRequestError, match="bad"):
        decoder.feed(error_body(InvalidRequestError("bad")))
