#!/usr/bin/env python3
"""Soak clients and the slow upstream for bench/soak.sh (standard library only).

    soak.py upstream --port N [--interval S]     slow SSE upstream: a chunk every S seconds, forever
    soak.py hostile --port N --seconds S [--streams 1000] [--idle 1000] [--slow-headers 200] [--slow-bodies 200]
                                                 holds streams, idle connections and slow clients;
                                                 reconnects whatever the gateway cuts

Every address is 127.0.0.1.
"""

import argparse
import asyncio
import json
import sys
import time

HOST = "127.0.0.1"
STREAM_BODY = json.dumps(
    {"model": "mistral/mistral-small-latest", "stream": True, "messages": [{"role": "user", "content": "soak"}]}
).encode()


def chunk(i):
    data = {
        "id": "chatcmpl-soak",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "mistral-small-latest",
        "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}],
    }
    return f"data: {json.dumps(data)}\n\n".encode()


def content_length(head):
    """The Content-Length of an HTTP head (0 when absent)."""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


# ------------------------------------------------------------------ upstream


async def upstream_conn(reader, writer, interval):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = content_length(head)
        if length:
            await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        i = 0
        while True:
            piece = chunk(i)
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            i += 1
            await asyncio.sleep(interval)
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def upstream(args):
    server = await asyncio.start_server(
        lambda r, w: upstream_conn(r, w, args.interval), HOST, args.port, backlog=4096
    )
    print(f"listening on {HOST}:{args.port}", flush=True)
    async with server:
        await server.serve_forever()


# ------------------------------------------------------------------ hostile


async def hold_stream(port, deadline, stats):
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(STREAM_BODY), STREAM_BODY)
    )
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            stats["streams_open"] += 1
            try:
                while time.monotonic() < deadline:
                    data = await asyncio.wait_for(reader.read(65536), 40)
                    if not data:
                        break
                    stats["stream_bytes"] += len(data)
            finally:
                stats["streams_open"] -= 1
                writer.close()
            stats["stream_restarts"] += 1
        except (OSError, asyncio.TimeoutError):
            stats["connect_errors"] += 1
            await asyncio.sleep(0.5)


async def hold_idle(port, deadline, stats, payload, step):
    """Connects, sends `payload` one byte every `step` seconds (nothing when
    empty), waits to be cut, reconnects."""
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            stats["hostile_connections"] += 1
            try:
                for b in payload:
                    writer.write(bytes([b]))
                    await writer.drain()
                    try:
                        await asyncio.wait_for(reader.read(4096), step)
                        break  # an answer or the close: the gateway cut us
                    except asyncio.TimeoutError:
                        continue
            except OSError:
                pass
            if not payload:
                try:
                    await asyncio.wait_for(reader.read(4096), max(0.1, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
            writer.close()
            stats["hostile_cut"] += 1
        except (OSError, asyncio.IncompleteReadError):
            stats["connect_errors"] += 1
            await asyncio.sleep(0.5)


async def hostile(args):
    stats = {
        "streams_open": 0,
        "stream_bytes": 0,
        "stream_restarts": 0,
        "hostile_connections": 0,
        "hostile_cut": 0,
        "connect_errors": 0,
    }
    deadline = time.monotonic() + args.seconds
    slow_header = b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: " + b"a" * 200
    slow_body = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: 100\r\n\r\n"
    )
    tasks = [hold_stream(args.port, deadline, stats) for _ in range(args.streams)]
    tasks += [hold_idle(args.port, deadline, stats, b"", 0) for _ in range(args.idle)]
    tasks += [hold_idle(args.port, deadline, stats, slow_header, 5.0) for _ in range(args.slow_headers)]
    tasks += [hold_idle_after(args.port, deadline, stats, slow_body) for _ in range(args.slow_bodies)]

    async def report():
        while time.monotonic() < deadline:
            await asyncio.sleep(5)
            print(json.dumps(stats), flush=True)

    await asyncio.gather(report(), *tasks)
    print(json.dumps(stats), flush=True)


async def hold_idle_after(port, deadline, stats, head):
    """A complete head, then the body one byte every 5 s."""
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            stats["hostile_connections"] += 1
            writer.write(head)
            try:
                while time.monotonic() < deadline:
                    writer.write(b" ")
                    await writer.drain()
                    try:
                        await asyncio.wait_for(reader.read(4096), 5.0)
                        break  # the 408 or the close
                    except asyncio.TimeoutError:
                        continue
            except OSError:
                pass
            writer.close()
            stats["hostile_cut"] += 1
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(0.5)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="role", required=True)
    u = sub.add_parser("upstream")
    u.add_argument("--port", type=int, required=True)
    u.add_argument("--interval", type=float, default=1.0)
    x = sub.add_parser("hostile")
    x.add_argument("--port", type=int, required=True)
    x.add_argument("--seconds", type=float, required=True)
    x.add_argument("--streams", type=int, default=1000)
    x.add_argument("--idle", type=int, default=1000)
    x.add_argument("--slow-headers", type=int, default=200)
    x.add_argument("--slow-bodies", type=int, default=200)
    args = p.parse_args()
    run = {"upstream": upstream, "hostile": hostile}[args.role]
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
