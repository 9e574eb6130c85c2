"""Drives the relay's OpenAI-compatible endpoint with the official `openai` Python SDK.

Run by the Rust test `relay::openai::official_openai_python_sdk_talks_to_the_relay`, which
starts the relay in front of the mock upstream and passes RELAY_BASE_URL, RELAY_API_KEY and
RELAY_MODEL. Exits non-zero (with the reason) on the first mismatch; prints the number of
requests that reached the upstream on success.
"""

import json
import os
import sys

import openai
from openai import OpenAI

BASE_URL = os.environ["RELAY_BASE_URL"]
MODEL = os.environ["RELAY_MODEL"]
client = OpenAI(base_url=BASE_URL, api_key=os.environ["RELAY_API_KEY"], max_retries=0)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
QUESTION = [{"role": "user", "content": "Weather in Paris and Tokyo?"}]
EXPECTED_CALLS = [
    ("toolu_mock_1", "get_weather", {"city": "Paris"}),
    ("toolu_mock_2", "get_weather", {"city": "Tokyo"}),
]


def expect(what, got, want):
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}", file=sys.stderr)
        sys.exit(1)


upstream_calls = 0

# 1. Plain completion.
r = client.chat.completions.create(
    model=MODEL,
    max_tokens=64,
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ],
)
upstream_calls += 1
expect("text", r.choices[0].message.content, "Hello from the mock.")
expect("finish_reason", r.choices[0].finish_reason, "stop")
expect("object", r.object, "chat.completion")
expect(
    "usage",
    (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens),
    (325, 12, 337),
)
expect("cached tokens", r.usage.prompt_tokens_details.cached_tokens, 200)

# 2. Streamed completion with the usage chunk.
text, finish, usage, roles = "", None, None, []
for chunk in client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Hello"}],
    stream=True,
    stream_options={"include_usage": True},
):
    expect("chunk object", chunk.object, "chat.completion.chunk")
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.role:
            roles.append(choice.delta.role)
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish
upstream_calls += 1
expect("streamed text", text, "Hello from the mock.")
expect("streamed roles", roles, ["assistant"])
expect("streamed finish_reason", finish, "stop")
expect("streamed usage", usage.total_tokens if usage else None, 337)

# 3. Tool call round trip: the model calls the tool, the client answers, the model replies.
r = client.chat.completions.create(model=MODEL, messages=QUESTION, tools=TOOLS)
upstream_calls += 1
message = r.choices[0].message
expect("tool finish_reason", r.choices[0].finish_reason, "tool_calls")
expect("tool text", message.content, "Let me check.")
expect(
    "tool calls",
    [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls],
    EXPECTED_CALLS,
)
messages = QUESTION + [message]
for call in message.tool_calls:
    city = json.loads(call.function.arguments)["city"]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": f"sunny in {city}"})
r = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
upstream_calls += 1
expect("answer after the tool results", r.choices[0].message.content, "Hello from the mock.")
expect("finish after the tool results", r.choices[0].finish_reason, "stop")

# 4. Streamed tool call: argument deltas gathered by their index.
calls, finish = {}, None
for chunk in client.chat.completions.create(
    model=MODEL, messages=QUESTION, tools=TOOLS, stream=True
):
    for choice in chunk.choices:
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
upstream_calls += 1
expect(
    "streamed tool calls",
    [(calls[i]["id"], calls[i]["name"], json.loads(calls[i]["arguments"])) for i in sorted(calls)],
    EXPECTED_CALLS,
)
expect("streamed tool finish_reason", finish, "tool_calls")

# 5. Errors reach the SDK as its own exception types, with the status and message.
try:
    OpenAI(base_url=BASE_URL, api_key="cr_" + "0" * 64, max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}]
    )
    expect("unknown key", "accepted", "AuthenticationError")
except openai.AuthenticationError as e:
    expect("unknown key status", e.status_code, 401)
    expect("unknown key body", e.body, {"message": "invalid API key", "type": "authentication_error", "code": "invalid_api_key"})
try:
    client.chat.completions.create(model=MODEL, n=2, messages=[{"role": "user", "content": "Hello"}])
    expect("n=2", "accepted", "BadRequestError")
except openai.BadRequestError as e:
    expect("n=2 status", e.status_code, 400)
    expect("n=2 message", e.body["message"], "n: only 1 choice per request is supported")

# 6. The model list.
ids = [m.id for m in client.models.list()]
expect("model listed", MODEL in ids, True)

print(f"ok: {upstream_calls} requests reached the upstream")
