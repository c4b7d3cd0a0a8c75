"""Drive the official OpenAI and Anthropic Python SDKs, unmodified, for llmtrace's end-to-end tests.

Provider host names resolve to the fake provider's loopback address (a getaddrinfo override in
this process only), so the SDK connects to the real name with the real SNI, exactly as an app
would; the kernel hook redirects the connection to llmtrace. Trust comes from SSL_CERT_FILE.
Prints one JSON object: what the SDK returned, or the error it raised.
"""

import argparse
import json
import os
import socket
import sys

PROVIDER_HOSTS = {"api.openai.com", "api.anthropic.com"}
WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def resolve_providers_to(address):
    real = socket.getaddrinfo

    def patched(host, port, *args, **kwargs):
        if host in PROVIDER_HOSTS:
            host = address
        return real(host, port, *args, **kwargs)

    socket.getaddrinfo = patched


def run_openai(args):
    import openai

    client = openai.OpenAI(
        base_url=f"https://api.openai.com:{args.port}/v1",
        api_key="sk-test-llmtrace-0123456789abcdefABCDEF0123456789",
        max_retries=0,
        timeout=20,
    )
    kwargs = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": args.prompt}]}
    if args.tools:
        kwargs["tools"] = [WEATHER_TOOL_OPENAI]
    if args.mode == "sync":
        r = client.chat.completions.create(**kwargs)
        msg = r.choices[0].message
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in msg.tool_calls or []]
        return {"model": r.model, "text": msg.content, "tool_calls": calls,
                "usage": {"input": r.usage.prompt_tokens, "output": r.usage.completion_tokens}}
    text, model, usage, calls = "", None, None, {}
    stream = client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)
    for i, chunk in enumerate(stream):
        if args.abandon_after is not None and i == args.abandon_after:
            # An app that stops listening halfway: it closes the stream, as the SDK documents.
            stream.close()
            return {"model": model, "text": text, "tool_calls": [], "usage": usage, "abandoned_after": i}
        model = chunk.model
        if chunk.usage:
            usage = {"input": chunk.usage.prompt_tokens, "output": chunk.usage.completion_tokens}
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                c = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                c["id"] = tc.id or c["id"]
                if tc.function:
                    c["name"] = tc.function.name or c["name"]
                    c["arguments"] += tc.function.arguments or ""
    return {"model": model, "text": text, "tool_calls": list(calls.values()), "usage": usage}


def run_anthropic(args):
    import anthropic

    client = anthropic.Anthropic(
        base_url=f"https://api.anthropic.com:{args.port}",
        api_key="sk-ant-api03-llmtrace-test-0123456789abcdef0123456789abcdef",
        max_retries=0,
        timeout=20,
    )
    kwargs = {"model": "claude-3-5-haiku-latest", "max_tokens": 64,
              "messages": [{"role": "user", "content": args.prompt}]}
    if args.tools:
        kwargs["tools"] = [WEATHER_TOOL_ANTHROPIC]
    if args.mode == "sync":
        m = client.messages.create(**kwargs)
    else:
        with client.messages.stream(**kwargs) as s:
            for _ in s:
                pass
            m = s.get_final_message()
    text = "".join(b.text for b in m.content if b.type == "text")
    calls = [{"id": b.id, "name": b.name, "arguments": json.dumps(b.input, separators=(",", ":"))}
             for b in m.content if b.type == "tool_use"]
    return {"model": m.model, "text": text, "tool_calls": calls,
            "usage": {"input": m.usage.input_tokens, "output": m.usage.output_tokens}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdk", choices=["openai", "anthropic"], required=True)
    ap.add_argument("--mode", choices=["sync", "stream"], default="sync")
    ap.add_argument("--tools", action="store_true")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--address", required=True, help="where provider host names resolve")
    ap.add_argument("--prompt", default="Say hello.")
    ap.add_argument("--abandon-after", type=int, help="openai stream: close the stream after this many chunks")
    args = ap.parse_args()
    resolve_providers_to(args.address)
    try:
        out = run_openai(args) if args.sdk == "openai" else run_anthropic(args)
        out["ok"] = True
        out["pid"] = os.getpid()
    except Exception as e:  # the error itself is the result (e.g. a policy block)
        out = {"ok": False, "error": f"{type(e).__name__}: {e}",
               "status": getattr(e, "status_code", None), "pid": os.getpid()}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
