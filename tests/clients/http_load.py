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
    args = p.parse_args()
    resolve_to(args.host, args.address)
    ctx = ssl.create_default_context()
    lock = threading.Lock()
    tally = {"ok": 0, "failed": 0, "statuses": {}, "errors": [], "bytes_down": 0}

    def worker():
        conn = None
        for _ in range(args.requests):
            body = json.dumps({"model": "gpt-4o-mini", "stream": args.stream,
                               "messages": [{"role": "user", "content": "x" * args.size}]})
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(args.host, args.port, context=ctx,
                                                       timeout=args.timeout)
                conn.request("POST", args.path, body=body,
                             headers={"content-type": "application/json",
                                      "authorization": "Bearer sk-test-load-0123456789"})
                r = conn.getresponse()
                data = r.read()
                with lock:
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

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(tally))


if __name__ == "__main__":
    main()
