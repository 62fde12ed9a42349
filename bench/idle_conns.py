#!/usr/bin/env python3
"""Opens N keep-alive HTTP/1.1 connections to HOST:PORT (over TLS with a fourth argument
`tls`, without verifying: the bench's certificate is self-signed), sends one request on each
and reads its response, then holds them all idle until it receives SIGTERM. Prints "ready N"
once every connection has been answered (bench/run measures the proxy's memory then)."""
import signal
import socket
import ssl
import sys
import time

host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tls = len(sys.argv) > 4 and sys.argv[4] == "tls"
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
conns = []
failed = 0
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect((host, port))
        if tls:
            s = context.wrap_socket(s, server_hostname="bench.test")
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise OSError("closed")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = s.recv(4096)
            if not chunk:
                raise OSError("closed")
            body += chunk
        conns.append(s)
    except OSError:
        failed += 1
        s.close()
print(f"ready {len(conns)} failed {failed}", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(3600)
