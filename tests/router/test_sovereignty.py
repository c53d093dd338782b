"""Content matchers: each kind of private content is found wherever it sits in a request, the
reason names it without repeating it, and look-alikes (UUIDs, hashes, timestamps, code that
handles keys) leave the request free to go to the cloud."""

from __future__ import annotations

import json
import random
import string
import uuid

import pytest

from tenshu.core.messages import (
    ImageBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)
from tenshu.core.request import ChatRequest
from tenshu.router.sovereignty import DEFAULT_MATCHERS, MATCHERS, private_reason

ALL = MATCHERS
_rng = random.Random(7)
ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    # Built at run time, so no file in the repository holds a key-shaped string.
    return "".join(_rng.choice(alphabet) for _ in range(n))


def pem(kind: str) -> str:
    lines = "\n".join(rand(64, ALNUM + "+/") for _ in range(4))
    return f"-----BEGIN {kind}-----\n{lines}\n-----END {kind}-----"


def jwt() -> str:
    return "eyJ" + rand(30) + ".eyJ" + rand(60) + "." + rand(43, ALNUM + "-_")


# (matcher, the value that must stay local, how the reason names it)
FINDINGS = [
    ("secrets", "sk-" + rand(48), "an OpenAI API key"),
    ("secrets", "sk-proj-" + rand(120, ALNUM + "-_") + "9", "an OpenAI API key"),
    ("secrets", "sk-ant-api03-" + rand(93, ALNUM + "-_") + "AA", "an Anthropic API key"),
    ("secrets", "AKIA" + rand(16, string.ascii_uppercase + string.digits), "an AWS access key"),
    ("secrets", "ASIA" + rand(16, string.ascii_uppercase + string.digits), "an AWS access key"),
    ("secrets", "ghp_" + rand(36), "a GitHub token"),
    ("secrets", "github_pat_" + rand(82, ALNUM + "_"), "a GitHub token"),
    ("secrets", "xoxb-" + rand(12, string.digits) + "-" + rand(24), "a Slack token"),
    ("secrets", "AIza" + rand(35, ALNUM + "-_"), "a Google API key"),
    ("secrets", "sk_live_" + rand(24), "a Stripe live key"),
    ("secrets", "rk_live_" + rand(24), "a Stripe live key"),
    ("secrets", jwt(), "a JSON Web Token"),
    ("private_keys", pem("RSA PRIVATE KEY"), "a private key"),
    ("private_keys", pem("EC PRIVATE KEY"), "a private key"),
    ("private_keys", pem("OPENSSH PRIVATE KEY"), "a private key"),
    ("private_keys", pem("PRIVATE KEY"), "a private key"),
    ("private_keys", pem("PGP PRIVATE KEY BLOCK").replace("BLOCK-----\n", "BLOCK-----\n\n", 1),
     "a private key"),
    ("emails", "jane.doe+work@mail.example-corp.co.uk", "an email address"),
    ("cards", "4111 1111 1111 1111", "a payment card number"),
    ("cards", "5555-5555-5555-4444", "a payment card number"),
    ("cards", "3782 822463 10005", "a payment card number"),  # Amex, 4-6-5
    ("cards", "6011111111111117", "a payment card number"),
]

# Credentials assigned in config or code: (text, the value)
ASSIGNMENTS = [
    ('password = "Tr0ub4dor&3x!"', "Tr0ub4dor&3x!"),
    ("DB_PASSWORD=s3cr3t-Pa55word", "s3cr3t-Pa55word"),
    ('{"api_key": "9f8e7d6c5b4a39281706f5e4"}', "9f8e7d6c5b4a39281706f5e4"),
    ("client_secret: Qm9vbGVhbiBmbGFn2024", "Qm9vbGVhbiBmbGFn2024"),
    ("X-Api-Key: 7b3c1e9a0f2d4c6b8e5a", "7b3c1e9a0f2d4c6b8e5a"),
]


def in_system(text: str) -> ChatRequest:
    return ChatRequest("m", [Message.of("system", text), Message.of("user", "hi")])


def in_user(text: str) -> ChatRequest:
    return ChatRequest("m", [Message.of("user", "hello"), Message.of("assistant", "hi"),
                             Message.of("user", f"here it is: {text} -- thanks")])


def in_tool_result(text: str) -> ChatRequest:
    return ChatRequest("m", [
        Message.of("user", "read the file"),
        Message("assistant", [ToolUseBlock("t1", "read", {"path": "config.txt"})]),
        Message("user", [ToolResultBlock("t1", [TextBlock(f"line 1\n{text}\nline 3")])]),
    ])


def in_tool_input(text: str) -> ChatRequest:
    return ChatRequest("m", [
        Message.of("user", "write the config"),
        Message("assistant", [TextBlock("Writing it."),
                              ToolUseBlock("t1", "write", {"path": "a.env", "body": text})]),
    ])


PLACES = {
    "system": (in_system, "message 1 (system)"),
    "user": (in_user, "message 3 (user)"),
    "tool result": (in_tool_result, "message 3 (a tool result)"),
    "tool input": (in_tool_input, "message 2 (a tool call)"),
}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize(("matcher", "value", "what"), FINDINGS,
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(FINDINGS)])
def test_each_kind_is_found_in_each_place_and_not_repeated(matcher, value, what, place):
    build, where = PLACES[place]
    reason = private_reason(build(value), [matcher])
    assert reason == f"{what} in {where}"
    assert private_reason(build(value), ALL) == reason
    for line in value.splitlines():
        assert not line or line[4:20] not in reason


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize(("text", "value"), ASSIGNMENTS)
def test_assigned_credentials_are_found(text, value, place):
    build, where = PLACES[place]
    reason = private_reason(build(text), ["secrets"])
    assert reason == f"a hard-coded credential in {where}"
    assert value.lower() not in reason.lower()


def test_completion_prompt_and_thinking_are_scanned():
    key = "AKIA" + rand(16, string.ascii_uppercase + string.digits)
    assert private_reason(ChatRequest("m", prompt=f"aws {key}"), DEFAULT_MATCHERS) == \
        "an AWS access key in the prompt"
    assert private_reason(ChatRequest("m", prompt=[1, 2, 3]), DEFAULT_MATCHERS) is None
    thought = ChatRequest("m", [Message("assistant", [ThinkingBlock(f"the key is {key}")])])
    assert private_reason(thought, DEFAULT_MATCHERS) == "an AWS access key in message 1 (thinking)"


def test_a_key_at_the_end_of_a_long_prompt_is_found():
    bulk = "def f(x):\n    return x * 2  # 2024-01-15 12:30 id 1700000000000 @decorator\n"
    text = bulk * (200_000 // len(bulk)) + "export GITHUB_TOKEN=ghp_" + rand(36)
    request = ChatRequest("m", [Message.of("user", text)])
    assert private_reason(request, ALL) == "a GitHub token in message 1 (user)"


def luhn_failing_16_digits() -> str:
    n = "4" + rand(15, string.digits)
    total = sum(int(d) if i % 2 == 0 else (2 * int(d) - 9 if int(d) > 4 else 2 * int(d))
                for i, d in enumerate(reversed(n)))
    return n if total % 10 else n[:-1] + str((int(n[-1]) + 1) % 10)


NEAR_MISSES = [
    str(uuid.UUID(int=_rng.getrandbits(128))),
    "12345678-1234-1234-1234-123456789012",  # an all-digit UUID
    "commit " + rand(40, "0123456789abcdef"),
    luhn_failing_16_digits(),
    "4111 1111 1111 1112",
    "created at 1700000000000 ms, request 1234567890123456789",  # timestamps and ids
    "a matrix: 2 7 1 8 2 8 1 8 2 8 4 5 9 0 4 5 2 3 5 3",
    "call +1 555-123-4567 on 2024-01-15",
    "OpenAI keys start with sk- followed by random characters; see sk-learn-style docs.",
    "task-management-software-for-teams-2024 and risk-assessment-framework-v2-final",
    "password = settings.db_password",
    "password: str = Field(..., min_length=8)",
    'api_key=os.environ["OPENAI_API_KEY"]',
    "password=<your-password-here>",
    'api_key: "YOUR_API_KEY_123"',
    "secret: ${{ secrets.DEPLOY_KEY }}",
    "password=********",
    "passwords are stored as argon2 hashes",
    'if line.startswith("-----BEGIN RSA PRIVATE KEY-----"):\n    kind = "rsa"',
    "@dataclass\nclass A: ...",
    "ssh into root@localhost",
    "AKIA is the prefix of AWS access key ids",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_look_alikes_are_not_flagged(text):
    for build, _ in PLACES.values():
        assert private_reason(build(text), ALL) is None, text


def test_disabled_matchers_do_not_fire():
    text = "\n".join(value for _, value, _ in FINDINGS)
    request = in_user(text)
    assert private_reason(request, []) is None
    for matcher in MATCHERS:
        reason = private_reason(request, [matcher])
        others = [m for m in MATCHERS if m != matcher]
        assert reason is not None
        expected = {what for m, _, what in FINDINGS if m == matcher}
        assert reason.removesuffix(" in message 3 (user)") in expected
        assert all(private_reason(in_user(v), others) is None
                   for m, v, _ in FINDINGS if m == matcher)


def test_emails_are_off_by_default():
    request = in_system("Report bugs to support@example.com.")
    assert "emails" not in DEFAULT_MATCHERS
    assert private_reason(request, DEFAULT_MATCHERS) is None
    assert private_reason(request, ["emails"]) == "an email address in message 1 (system)"


def test_unknown_matcher_names_the_valid_ones():
    with pytest.raises(ValueError, match="'phones'.*secrets, private_keys, emails, cards"):
        private_reason(in_user("hi"), ["secrets", "phones"])


def test_tool_input_is_scanned_as_json():
    key = pem("OPENSSH PRIVATE KEY")
    request = in_tool_input(key)
    assert json.dumps({"body": key}).count("\\n") > 3  # its newlines arrive escaped
    assert private_reason(request, ["private_keys"]) == "a private key in message 2 (a tool call)"


def test_every_field_sent_upstream_is_scanned():
    """Not only the messages: tools, the user and metadata fields, the response format, stop
    sequences, tool-call ids and image URLs reach an upstream too."""
    key = "AKIA" + rand(16, string.ascii_uppercase + string.digits)
    base = [Message.of("user", "hello")]
    cases = {
        "tool 1 (deploy)": ChatRequest("m", base, tools=[ToolSpec("deploy", f"uses {key}")]),
        "tool 2 (push)": ChatRequest("m", base, tools=[
            ToolSpec("ls"), ToolSpec("push", "", {"type": "object", "properties": {
                "token": {"type": "string", "enum": [key]}}})]),
        "the user field": ChatRequest("m", base, user=f"ops {key}"),
        "the metadata field": ChatRequest("m", base, metadata={"user_id": key}),
        "the response_format field": ChatRequest("m", base, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"const": key}}}),
        "the stop field": ChatRequest("m", base, stop=[key]),
        "message 2 (a tool call)": ChatRequest("m", [*base, Message("assistant", [
            ToolUseBlock(f"call_{key}", "f", {})])]),
        "message 1 (an image)": ChatRequest("m", [Message("user", [
            ImageBlock(url=f"https://example.com/i.png?k={key}")])]),
    }
    for where, request in cases.items():
        assert private_reason(request, DEFAULT_MATCHERS) == f"an AWS access key in {where}"
    assert private_reason(ChatRequest("m", base, tools=[ToolSpec("ls", "lists files")],
                                      user="alice", metadata={"user_id": "u-1"}),
                          DEFAULT_MATCHERS) is None
