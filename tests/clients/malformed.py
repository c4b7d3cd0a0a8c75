"""Hostile and malformed HTTP through llmtrace, for the malformed-input catalogue test.

Each --case speaks raw bytes over TLS (HTTP/1.1 or HTTP/2 frames built here, no HTTP library),
to a provider name resolved to the fake provider's loopback address, so the kernel hook
redirects the connection to the agent. Prints one JSON object of what the client observed:
responses (status and body prefix), whether the connection was closed, GOAWAY codes, time.
"""

import argparse
import gzip
import json
import socket
import ssl
import struct
import time

HOST = "api.openai.com"
CHAT = "/v1/chat/completions"


def connect(args, alpn):
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols([alpn])
    raw = socket.create_connection((args.address, args.port), timeout=args.timeout)
    s = ctx.wrap_socket(raw, server_hostname=HOST)
    return s


def read_all(s, limit=1 << 20):
    out = b""
    try:
        while len(out) < limit:
            b = s.recv(65536)
            if not b:
                return out, True
            out += b
    except (socket.timeout, TimeoutError):
        return out, False
    except (ConnectionError, ssl.SSLError):
        return out, True
    return out, False


def h1_responses(data):
    """Splits a byte stream into HTTP/1.1 responses (Content-Length or chunked bodies)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            n = int(headers["content-length"])
            body, data = rest[:n], rest[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                n = int(size_line.split(b";")[0] or b"0", 16)
                if n == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                body += rest[:n]
                rest = rest[n + 2:]
            data = rest
        else:
            body, data = rest, b""
        out.append({"status": status, "body": body[:400].decode("utf-8", "replace")})
    return out


def chat_body(text="hi"):
    return json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}).encode()


def h1_request(method, path, body=b"", extra=""):
    head = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\ncontent-type: application/json\r\n"
            f"{extra}")
    if "content-length" not in extra.lower() and "transfer-encoding" not in extra.lower():
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def h1_case(args, payload):
    s = connect(args, "http/1.1")
    s.sendall(payload)
    data, closed = read_all(s)
    s.close()
    return {"responses": h1_responses(data), "closed": closed}


# --- HTTP/2 frames -------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, CONTINUATION = 0, 1, 3, 4, 7, 9
END_STREAM, END_HEADERS = 0x1, 0x4


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_str(b):
    assert len(b) < 127
    return bytes([len(b)]) + b


def hpack_literal(name, value):
    # Literal header field without indexing, new name (RFC 7541 6.2.2); lengths < 127 or
    # encoded with the 7-bit prefix integer.
    def integer(n):
        if n < 127:
            return bytes([n])
        out = [127]
        n -= 127
        while n >= 128:
            out.append((n % 128) + 128)
            n //= 128
        out.append(n)
        return bytes(out)
    return b"\x00" + integer(len(name)) + name + integer(len(value)) + value


def request_headers(path=CHAT, extra=()):
    block = (hpack_literal(b":method", b"POST") + hpack_literal(b":scheme", b"https")
             + hpack_literal(b":authority", HOST.encode()) + hpack_literal(b":path", path.encode())
             + hpack_literal(b"content-type", b"application/json"))
    for k, v in extra:
        block += hpack_literal(k, v)
    return block


def h2_read(s, wait):
    """Reads frames for up to `wait` seconds; returns (frames, closed)."""
    s.settimeout(wait)
    buf, closed = b"", False
    end = time.time() + wait
    while time.time() < end:
        try:
            b = s.recv(65536)
        except (socket.timeout, TimeoutError):
            break
        except (ConnectionError, ssl.SSLError):
            closed = True
            break
        if not b:
            closed = True
            break
        buf += b
    frames = []
    while len(buf) >= 9:
        n = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + n:
            break
        kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        frames.append((kind, flags, stream, buf[9:9 + n]))
        buf = buf[9 + n:]
    return frames, closed


def h2_summary(frames, closed):
    goaway = [int.from_bytes(p[4:8], "big") for k, _, _, p in frames if k == GOAWAY]
    rst = [int.from_bytes(p[:4], "big") for k, _, _, p in frames if k == RST_STREAM]
    # A :status in a HEADERS frame (static table index 8..14 = 200..500, indexed form).
    statuses = []
    for k, _, _, p in frames:
        if k == HEADERS and p:
            b = p[0]
            table = {0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500}
            if b in table:
                statuses.append(table[b])
            elif b & 0xF0 in (0x00, 0x10) and (b & 0x0F) in range(8, 15) and len(p) > 2:
                statuses.append(int(p[2:2 + p[1]].decode() or 0))
            elif b & 0xC0 == 0x40 and (b & 0x3F) in range(8, 15) and len(p) > 2:
                statuses.append(int(p[2:2 + p[1]].decode() or 0))
    return {"goaway": goaway, "rst": rst, "statuses": statuses, "closed": closed,
            "frames": len(frames)}


def h2_open(args):
    s = connect(args, "h2")
    assert s.selected_alpn_protocol() == "h2", s.selected_alpn_protocol()
    s.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
    return s


def case_rapid_reset(args):
    s = h2_open(args)
    start = time.time()
    sent = 0
    try:
        for i in range(args.count):
            sid = 2 * i + 1
            s.sendall(frame(HEADERS, END_HEADERS, sid, request_headers())
                      + frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
            sent += 1
    except (ConnectionError, ssl.SSLError):
        pass
    frames, closed = h2_read(s, 3)
    out = h2_summary(frames, closed)
    out.update({"sent": sent, "seconds": time.time() - start})
    return out


def case_header_bomb(args):
    s = h2_open(args)
    # 200 headers of 4 KiB each: an 800 KiB header list, far over max_header_bytes.
    extra = [(f"x-bomb-{i}".encode(), b"a" * 4096) for i in range(200)]
    block = request_headers(extra=extra)
    # Split into a HEADERS frame and CONTINUATIONs of 16 KiB (the default max frame size).
    chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    payload = frame(HEADERS, 0, 1, chunks[0])
    for j, c in enumerate(chunks[1:]):
        payload += frame(CONTINUATION, END_HEADERS if j == len(chunks) - 2 else 0, 1, c)
    try:
        s.sendall(payload)
    except (ConnectionError, ssl.SSLError):
        pass
    return h2_summary(*h2_read(s, 3))


def case_oversized_frame(args):
    s = h2_open(args)
    body = chat_body()
    s.sendall(frame(HEADERS, END_HEADERS, 1, request_headers()))
    # A DATA frame of 1 MiB, over the 16 KiB SETTINGS_MAX_FRAME_SIZE nobody raised.
    try:
        s.sendall(frame(DATA, END_STREAM, 1, body + b" " * (1 << 20)))
    except (ConnectionError, ssl.SSLError):
        pass
    return h2_summary(*h2_read(s, 3))


def case_h1(args, payload):
    return h1_case(args, payload)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--address", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--timeout", type=float, default=5)
    args = p.parse_args()
    start = time.time()
    follow = h1_request("POST", CHAT + "?follow-up", chat_body("follow-up"))
    c = args.case
    if c == "cl-te":
        # Content-Length and Transfer-Encoding together; the "body" hides a second request.
        smuggled = b"0\r\n\r\nPOST /smuggled HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 0\r\n\r\n"
        out = case_h1(args, h1_request("POST", CHAT, smuggled,
                                       "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n") + follow)
    elif c == "te-cl":
        # The reverse desync: a chunked body whose chunk carries a request, with a short CL.
        inner = b"POST /smuggled HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 0\r\n\r\n"
        body = b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n"
        out = case_h1(args, h1_request("POST", CHAT, body,
                                       "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n") + follow)
    elif c == "double-cl":
        out = case_h1(args, h1_request("POST", CHAT, b"{}",
                                       "Content-Length: 2\r\nContent-Length: 40\r\n") + follow)
    elif c == "bad-te":
        out = case_h1(args, h1_request("POST", CHAT, b"0\r\n\r\n",
                                       "Transfer-Encoding: xchunked\r\n") + follow)
    elif c == "follow-up-only":
        last = h1_request("POST", CHAT + "?follow-up", chat_body("follow-up"), "Connection: close\r\n")
        out = case_h1(args, follow + last)
    elif c == "decompression-bomb":
        bomb = gzip.compress(b"\0" * (64 << 20))
        out = case_h1(args, h1_request("POST", CHAT, bomb, "content-encoding: gzip\r\n"))
    elif c == "deep-json":
        deep = b"[" * 200000 + b"]" * 200000
        out = case_h1(args, h1_request("POST", CHAT, deep))
    elif c == "invalid-utf8":
        body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\xff\xfe\xc3\x28 AKIA\xffIOSFODNN7EXAMPLE"}]}'
        out = case_h1(args, h1_request("POST", CHAT, body))
    elif c == "tiny-chunks":
        # A body sent one byte per chunk: read whole, analysed, forwarded intact.
        body = chat_body("note " * 20000 + "AKIAIOSFODNN7EXAMPLE")
        chunked = b"".join(b"1\r\n" + body[i:i + 1] + b"\r\n" for i in range(len(body))) + b"0\r\n\r\n"
        out = case_h1(args, h1_request("POST", CHAT, chunked, "Transfer-Encoding: chunked\r\n"))
        out["sent"] = len(body)
    elif c == "rapid-reset":
        out = case_rapid_reset(args)
    elif c == "header-bomb":
        out = case_header_bomb(args)
    elif c == "oversized-frame":
        out = case_oversized_frame(args)
    else:
        raise SystemExit(f"unknown case {c}")
    out["seconds"] = time.time() - start
    print(json.dumps(out))


if __name__ == "__main__":
    main()
