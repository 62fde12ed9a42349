"""A WebSocket backend for tests/websocket.rs, on Python's `websockets` (Debian
python3-websockets): greets each connection with what it saw of the handshake, then echoes
every message. Usage: server.py PORT NAME; prints "ready" once it listens."""

import asyncio
import json
import sys

import websockets


async def main(port, name):
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
            await ws.send(message)

    async with websockets.serve(handler, "127.0.0.1", port, max_size=None):
        print("ready", flush=True)
        await asyncio.Future()


asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
