"""Concurrent HTTPS/1.1 POSTs of chat requests, for llmtrace's resource and fault tests.

Connects to a provider name resolved to the fake provider's loopback address (a getaddrinfo
override in this process only), so the SNI is the real name and the kernel hook redirects the
connection to llmtrace. Trust comes from SSL_CERT_FILE. Each worker keeps one connection alive
for its requests. Prints one JSON object: counts of successes and failures, statuses, errors.
"""

import argparse
import http.client
import json
import socket
import ssl
import threading
import time


def resolve_to(host, address):
    real = socket.getaddrinfo

    def patched(h, port, *args, **kwargs):
        if h == host:
            h = address
        return real(h, port, *args, **kwargs)

    socket.getaddrinfo = patched


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="api.openai.com")
    p.add_argument("--address", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/v1/chat/completions")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--requests", type=int, default=1, help="per worker, on one connection")
    p.add_argument("--size", type=int, default=0, help="bytes of prompt text per request")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--done-log", help="append the prompt id of each exchange whose whole 200 "
                   "response was read (one line each, flushed); prompts are then those ids")
    p.add_argument("--tag", default="x", help="prefix of the prompt ids")
    args = p.parse_args()
    done_log = open(args.done_log, "a", buffering=1) if args.done_log else None
    latencies = []
    resolve_to(args.host, args.address)
    ctx = ssl.create_default_context()
    lock = threading.Lock()
    tally = {"ok": 0, "failed": 0, "statuses": {}, "errors": [], "bytes_down": 0}

    def worker(w):
        conn = None
        for n in range(args.requests):
            prompt_id = f"{args.tag}-{w}-{n}"
            content = f"{prompt_id} {'x' * args.size}" if done_log else "x" * args.size
            body = json.dumps({"model": "gpt-4o-mini", "stream": args.stream,
                               "messages": [{"role": "user", "content": content}]})
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(args.host, args.port, context=ctx,
                                                       timeout=args.timeout)
                conn.request("POST", args.path, body=body,
                             headers={"content-type": "application/json",
                                      "authorization": "Bearer sk-test-load-0123456789"})
                r = conn.getresponse()
                data = r.read()
                took = time.monotonic() - started
                with lock:
                    latencies.append(took)
                    if done_log and r.status == 200:
                        done_log.write(prompt_id + "\n")
                    tally["statuses"][str(r.status)] = tally["statuses"].get(str(r.status), 0) + 1
                    tally["bytes_down"] += len(data)
                    if r.status == 200:
                        tally["ok"] += 1
                    else:
                        tally["failed"] += 1
                        if len(tally["errors"]) < 5:
                            tally["errors"].append(data[:300].decode("utf-8", "replace"))
                if r.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is reported, none raised
                with lock:
                    tally["failed"] += 1
                    if len(tally["errors"]) < 5:
                        tally["errors"].append(f"{type(e).__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    if latencies:
        pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 3)  # noqa: E731
        tally["p50_ms"], tally["p99_ms"] = pick(0.5), pick(0.99)
    print(json.dumps(tally))


if __name__ == "__main__":
    main()
