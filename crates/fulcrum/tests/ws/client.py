"""A WebSocket client for tests/websocket.rs, on Python's `websockets` (Debian
python3-websockets), the way an application would connect through fulcrum.

  client.py URL echo         greeting (sent with a forged connection id), a text and a
                             512 KiB binary echo, a clean close
  client.py URL messages     a 1 MiB message, a fragmented one, a ping, a close by the
                             server (4002), a close by the client (4001) and how the server
                             saw it
  client.py URL hold N [B]   N connections (opened B at a time, default 1), their
                             greetings; each stdin line "echo" sends
                             a message on every connection and reads it back; closes
                             them all at stdin's end
  client.py URL idle SECS    greeting, then silence for SECS: was the connection closed?
  client.py URL flood [reconnect]
                             asks for a stream of messages and reads them until the
                             connection closes: how many, and the close frame received;
                             then, with reconnect, connects again: which backend greets

Prints one JSON object per line."""

import asyncio
import json
import os
import sys

import websockets


def say(**fields):
    print(json.dumps(fields), flush=True)


async def echo(url):
    # A client naming its own connection id is not believed.
    forged = {"X-Fulcrum-Connection-Id": "forged"}
    async with websockets.connect(url, max_size=None, extra_headers=forged) as ws:
        say(greeting=json.loads(await ws.recv()))
        await ws.send("ping")
        say(text=await ws.recv())
        payload = os.urandom(512 * 1024)
        await ws.send(payload)
        say(binary_echoed=(await ws.recv()) == payload)
    say(close_code=ws.close_code)


async def messages(url):
    async with websockets.connect(url, max_size=None) as ws:
        say(greeting=json.loads(await ws.recv()))
        mib = os.urandom(1024 * 1024)
        await ws.send(mib)
        say(mib_echoed=(await ws.recv()) == mib)
        await ws.send(["frag", "ment", "ed"])
        say(fragmented=await ws.recv())
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        say(pong=True)
        await ws.send("close-me")
        try:
            await asyncio.wait_for(ws.recv(), 5)
        except websockets.ConnectionClosed as closed:
            say(server_close=closed.rcvd.code, reason=closed.rcvd.reason)
    async with websockets.connect(url) as ws:
        await ws.recv()
        await ws.close(code=4001, reason="client bye")
    async with websockets.connect(url) as ws:
        await ws.recv()
        for _ in range(50):
            await ws.send("last-close")
            seen = json.loads(await ws.recv())
            if seen.get("code") == 4001:
                break
            await asyncio.sleep(0.05)
        say(client_close=seen)


async def hold(url, n, batch):
    sockets = []
    while len(sockets) < n:
        opening = [websockets.connect(url) for _ in range(min(batch, n - len(sockets)))]
        sockets += await asyncio.gather(*opening)
    for ws in sockets:
        say(greeting=json.loads(await ws.recv()))
    say(holding=n)
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "echo":
        echoed = 0
        for ws in sockets:
            await ws.send("still there?")
            echoed += (await ws.recv()) == "still there?"
        say(echoed=echoed)
    for ws in sockets:
        await ws.close()
    say(closed=n)


async def idle(url, seconds):
    ws = await websockets.connect(url, ping_interval=None)
    say(greeting=json.loads(await ws.recv()))
    await asyncio.sleep(seconds)
    try:
        await asyncio.wait_for(ws.recv(), 5)
        say(open=True)
    except websockets.ConnectionClosed as closed:
        say(open=False, code=closed.code)
    except asyncio.TimeoutError:
        say(open=True)


async def flood(url, reconnect):
    async with websockets.connect(url, max_size=None) as ws:
        say(greeting=json.loads(await ws.recv()))
        await ws.send("flood")
        received = 0
        try:
            while True:
                await ws.recv()
                received += 1
        except websockets.ConnectionClosed as closed:
            frame = closed.rcvd
            say(received=received,
                code=frame.code if frame else None,
                reason=frame.reason if frame else None)
    if reconnect:
        async with websockets.connect(url) as ws:
            say(reconnected=json.loads(await ws.recv()))


url, mode = sys.argv[1], sys.argv[2]
if mode == "echo":
    asyncio.run(echo(url))
elif mode == "flood":
    asyncio.run(flood(url, sys.argv[3:] == ["reconnect"]))
elif mode == "messages":
    asyncio.run(messages(url))
elif mode == "hold":
    asyncio.run(hold(url, int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1))
else:
    asyncio.run(idle(url, float(sys.argv[3])))
