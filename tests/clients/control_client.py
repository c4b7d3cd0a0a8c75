"""Drive the official OpenAI Python SDK, unmodified, against llmtrace's limits and approvals.

Like llm_client.py, api.openai.com resolves to the fake provider's address in this process
only, so the real SNI goes through the kernel redirect. max_retries=0: every refusal reaches us
as the exception the SDK raises for it. Prints one JSON object.

Modes:
  calls  --n N --model M      N sequential calls; per call the outcome (ok, or the exception
                              class, status and Retry-After header)
  rate   --seconds S          sequential calls for S seconds from the first admitted one (so
                              the SDK's start-up is not counted); counts of ok and RateLimitError
"""

import argparse
import json
import socket
import sys
import time


def resolve_to(address):
    real = socket.getaddrinfo

    def patched(host, port, *args, **kwargs):
        if host == "api.openai.com":
            host = address
        return real(host, port, *args, **kwargs)

    socket.getaddrinfo = patched


def call(client, model, max_tokens):
    import openai

    kwargs = {"model": model, "messages": [{"role": "user", "content": "Say hello."}]}
    if max_tokens:
        kwargs["max_tokens"] = max_tokens
    try:
        r = client.chat.completions.create(**kwargs)
        return {"ok": True, "model": r.model}
    except openai.APIStatusError as e:
        return {"ok": False, "error": type(e).__name__, "status": e.status_code,
                "retry_after": e.response.headers.get("retry-after"),
                "body": e.body}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["calls", "rate"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--address", required=True)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pause", type=float, default=0.05, help="between calls (calls mode)")
    args = ap.parse_args()
    resolve_to(args.address)
    import openai

    client = openai.OpenAI(base_url=f"https://api.openai.com:{args.port}/v1",
                           api_key="sk-test-llmtrace-0123456789abcdefABCDEF0123456789",
                           max_retries=0, timeout=20)
    if args.mode == "calls":
        out = []
        for _ in range(args.n):
            out.append(call(client, args.model, args.max_tokens))
            time.sleep(args.pause)
        print(json.dumps({"calls": out}))
        return 0
    ok = limited = other = 0
    start = None
    while start is None or time.monotonic() - start < args.seconds:
        r = call(client, args.model, args.max_tokens)
        if r["ok"]:
            ok += 1
            # The window opens when the first call is admitted.
            start = time.monotonic() if start is None else start
        elif r["error"] == "RateLimitError":
            limited += 1
        else:
            other += 1
    print(json.dumps({"ok": ok, "rate_limited": limited, "other": other,
                      "window_s": time.monotonic() - start}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
