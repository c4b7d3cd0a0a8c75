"""Drive the official OpenAI or Anthropic Python SDK, unmodified, against llmtrace's limits and
approvals.

Like llm_client.py, api.openai.com and api.anthropic.com resolve to the fake provider's address
in this process only, so the real SNI goes through the kernel redirect. max_retries=0: every
refusal reaches us as the exception the SDK raises for it (its class name is reported, so a
test sees exactly what an application would catch). Prints one JSON object.

Modes:
  calls  --n N --model M      N sequential calls; per call the outcome (ok, or the exception
                              class, status and Retry-After header)
  rate   --seconds S          sequential calls for S seconds from the first admitted one (so
                              the SDK's start-up is not counted); counts of ok and RateLimitError
  spike  --steady N --repeat R --block-secs B
                              one process, two API keys (two identities), streamed calls without
                              usage (so tokens are estimated from the prompt): N steady calls of
                              key A, one with the prompt repeated R times, then calls of A until
                              one is refused; at once a call of key B and a plain call of A; then
                              calls of A until one passes again (for at most B + 10 s; not
                              with --no-recover)
"""

import argparse
import json
import socket
import sys
import time


PROVIDER_HOSTS = {"api.openai.com", "api.anthropic.com"}


def resolve_to(address):
    real = socket.getaddrinfo

    def patched(host, port, *args, **kwargs):
        if host in PROVIDER_HOSTS:
            host = address
        return real(host, port, *args, **kwargs)

    socket.getaddrinfo = patched


def call(client, model, max_tokens, stream=False, prompt="Say hello."):
    import openai

    kwargs = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if max_tokens:
        kwargs["max_tokens"] = max_tokens
    try:
        if stream:
            chunks = list(client.chat.completions.create(stream=True, **kwargs))
            return {"ok": True, "model": chunks[0].model if chunks else None, "chunks": len(chunks)}
        r = client.chat.completions.create(**kwargs)
        return {"ok": True, "model": r.model}
    except openai.APIStatusError as e:
        return {"ok": False, "error": type(e).__name__, "status": e.status_code,
                "retry_after": e.response.headers.get("retry-after"),
                "body": e.body}


def call_anthropic(client, model, max_tokens, stream=False):
    import anthropic

    kwargs = {"model": model, "max_tokens": max_tokens or 64,
              "messages": [{"role": "user", "content": "Say hello."}]}
    try:
        if stream:
            with client.messages.stream(**kwargs) as s:
                m = s.get_final_message()
            return {"ok": True, "model": m.model, "stream": True}
        r = client.messages.create(**kwargs)
        return {"ok": True, "model": r.model}
    except anthropic.APIStatusError as e:
        return {"ok": False, "error": type(e).__name__,
                "error_module": type(e).__module__.split(".")[0],
                "status": e.status_code,
                "retry_after": e.response.headers.get("retry-after"),
                "body": e.body}


def spike(args):
    import openai

    def make(key):
        return openai.OpenAI(base_url=f"https://api.openai.com:{args.port}/v1", api_key=key,
                             max_retries=0, timeout=20)

    a = make("sk-test-llmtrace-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    b = make("sk-test-llmtrace-BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB")
    out = {"steady": [], "passed_before_block": 0}
    for _ in range(args.steady):
        out["steady"].append(call(a, args.model, 0, stream=True))
        time.sleep(args.pause)
    out["spike"] = call(a, args.model, 0, stream=True, prompt="Say hello. " * args.repeat)
    # The anomaly is found once the spike's row is made, just after its response ended.
    deadline = time.monotonic() + 10
    refused = None
    while refused is None and time.monotonic() < deadline:
        r = call(a, args.model, 0, stream=True)
        if r["ok"]:
            out["passed_before_block"] += 1
            time.sleep(0.02)
        else:
            refused = r
    blocked_at = time.monotonic()
    out["refused_stream"] = refused
    out["other_key"] = call(b, args.model, 0)
    out["refused_plain"] = call(a, args.model, 0)
    refusals = 2
    if args.no_recover:
        out["refusals"] = refusals
        return out
    deadline = blocked_at + args.block_secs + 10
    recovered = None
    while recovered is None and time.monotonic() < deadline:
        r = call(a, args.model, 0)
        if r["ok"]:
            recovered = r
        else:
            refusals += 1
            if r.get("error") != "RateLimitError":
                out.setdefault("unexpected", []).append(r)
            time.sleep(0.1)
    out["recovered"] = recovered
    out["recovered_after_s"] = time.monotonic() - blocked_at
    out["refusals"] = refusals
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["calls", "rate", "spike"])
    ap.add_argument("--sdk", choices=["openai", "anthropic"], default="openai")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--address", required=True)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--stream", action="store_true", help="streamed calls (calls mode)")
    ap.add_argument("--pause", type=float, default=0.05, help="between calls (calls, spike)")
    ap.add_argument("--steady", type=int, default=10, help="steady calls before the spike")
    ap.add_argument("--repeat", type=int, default=200, help="the spike's prompt, repeated")
    ap.add_argument("--block-secs", type=float, default=2.0, help="the block expected")
    ap.add_argument("--no-recover", action="store_true", help="spike: do not wait for the end")
    ap.add_argument("--api-key", default="sk-test-llmtrace-0123456789abcdefABCDEF0123456789",
                    help="OpenAI key (calls, rate); spike uses its own two")
    args = ap.parse_args()
    resolve_to(args.address)
    if args.mode == "spike":
        print(json.dumps(spike(args)))
        return 0
    if args.sdk == "anthropic":
        import anthropic

        client = anthropic.Anthropic(base_url=f"https://api.anthropic.com:{args.port}",
                                     api_key="sk-ant-test-llmtrace-0123456789abcdefABCDEF",
                                     max_retries=0, timeout=20)
        do_call = call_anthropic
    else:
        import openai

        client = openai.OpenAI(base_url=f"https://api.openai.com:{args.port}/v1",
                               api_key=args.api_key,
                               max_retries=0, timeout=20)
        do_call = call
    if args.mode == "calls":
        out = []
        for _ in range(args.n):
            out.append(do_call(client, args.model, args.max_tokens, args.stream))
            time.sleep(args.pause)
        print(json.dumps({"calls": out}))
        return 0
    ok = limited = other = 0
    start = None
    while start is None or time.monotonic() - start < args.seconds:
        r = do_call(client, args.model, args.max_tokens)
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
