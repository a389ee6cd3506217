#!/usr/bin/env python3
"""A small, fast OpenAI-compatible server for the benchmarks (asyncio, HTTP/1.1 keep-alive).

  fake_openai_server.py PORT [--delay SECONDS] [--stream-chunks N --chunk-interval SECONDS]
                               [--tool-steps N]

Every POST gets the same chat.completion reply after --delay. With "stream": true in the body
it sends N SSE chunks --chunk-interval apart; each chunk's content is the server's send time in
nanoseconds (CLOCK_REALTIME), so the client can measure chunk-to-caller latency.
With --tool-steps N, a request whose conversation holds fewer than N tool results gets a
tool call to "step" back (finish_reason tool_calls), so an agent runs an N-step tool loop.
Listens on 127.0.0.1 only. Stops on SIGTERM/SIGINT.

The bench scripts (run-model.sh, run-agents.sh) run fake_openai_server.c instead: the same
command line and reply bytes from one epoll thread, at a fraction of this server's CPU per
request, so the server does not compete with the code being measured. This file remains the
readable reference and works without a compiler.
"""
import asyncio
import json
import signal
import sys
import time

REPLY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
}).encode()


def tool_reply(n):
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "bench",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [{
                "id": "call_%d" % n, "type": "function",
                "function": {"name": "step", 'arguments': '{"n": %d}' % n}}]}}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12},
    }).encode()


def chunk(obj):
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


async def handle(reader, writer, args):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if args["delay"]:
                await asyncio.sleep(args["delay"])
            tools_done = body.count(b'"role":"tool"')
            if args["tool_steps"] and tools_done < args["tool_steps"]:
                reply = tool_reply(tools_done)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(reply), reply))
            elif b'"stream":true' in body:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                for _ in range(args["chunks"]):
                    writer.write(chunk({"choices": [{"index": 0, "delta": {
                        "content": "%d " % time.time_ns()}}]}))
                    await writer.drain()
                    await asyncio.sleep(args["interval"])
                writer.write(chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
                writer.write(chunk({"choices": [], "usage": {"prompt_tokens": 8,
                                    "completion_tokens": args["chunks"]}}))
                data = b"data: [DONE]\n\n"
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(REPLY), REPLY))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    port = int(sys.argv[1])
    argv = sys.argv[2:]
    args = {"delay": 0.0, "chunks": 20, "interval": 0.01, "tool_steps": 0}
    for i, a in enumerate(argv):
        if a == "--delay":
            args["delay"] = float(argv[i + 1])
        if a == "--stream-chunks":
            args["chunks"] = int(argv[i + 1])
        if a == "--tool-steps":
            args["tool_steps"] = int(argv[i + 1])
        if a == "--chunk-interval":
            args["interval"] = float(argv[i + 1])
    server = await asyncio.start_server(lambda r, w: handle(r, w, args), "127.0.0.1", port,
                                        backlog=16384)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()


asyncio.run(main())
