"""A WebSocket backend for tests/websocket.rs, on Python's `websockets` (Debian
python3-websockets): greets each connection with what it saw of the handshake, then echoes
every message, but "flood" (a stream of frames), "close-me" (closes with 4002) and
"last-close" (how the last connection to end was closed by its client). Usage: server.py PORT NAME; prints "ready" once it listens."""

import asyncio
import json
import sys

import websockets


async def main(port, name):
    # How the last connection to end was closed by its client: what "last-close" answers.
    last_close = {}

    async def handler(ws, path=None):
        headers = ws.request_headers
        await ws.send(json.dumps({
            "backend": name,
            "path": ws.path,
            "x_forwarded_for": headers.get("X-Forwarded-For"),
            "upgrade": headers.get("Upgrade"),
            "connection": headers.get("Connection"),
            "connection_id": headers.get_all("X-Fulcrum-Connection-Id"),
        }))
        try:
            async for message in ws:
                if message == "flood":
                    # 2000-byte binary frames, each written in two halves 5 ms apart, back to
                    # back until the connection closes: the stream is inside a frame most of the
                    # time, so a close frame put anywhere but between two breaks the client.
                    payload = bytes(range(256)) * 8
                    header = bytes([0x82, 126]) + len(payload[:2000]).to_bytes(2, "big")
                    try:
                        while not ws.closed:
                            ws.transport.write(header + payload[:1000])
                            await asyncio.sleep(0.005)
                            ws.transport.write(payload[1000:2000])
                            await asyncio.sleep(0.001)
                    except (websockets.ConnectionClosed, ConnectionError):
                        pass
                    return
                if message == "close-me":
                    await ws.close(4002, "server bye")
                    return
                if message == "last-close":
                    await ws.send(json.dumps(last_close))
                    continue
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass  # a close code other than 1000/1001 ends the loop this way
        finally:
            last_close.update(code=ws.close_code, reason=ws.close_reason)

    async with websockets.serve(handler, "127.0.0.1", port, max_size=None):
        print("ready", flush=True)
        await asyncio.Future()


asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
