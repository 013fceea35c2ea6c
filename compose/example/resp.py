"""A few Redis commands over RESP (the example needs no client library)."""

import os
import socket


def command(*args: str) -> object:
    """Send one command to $REDIS_HOST:6379; its reply (str, int or None)."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection((os.environ.get("REDIS_HOST", "redis"), 6379), timeout=5) as sock:
        sock.sendall(payload.encode())
        reply = sock.makefile("rb")
        line = reply.readline().decode().rstrip("\r\n")
        kind, rest = line[:1], line[1:]
        if kind == "+":
            return rest
        if kind == ":":
            return int(rest)
        if kind == "$":
            return None if rest == "-1" else reply.read(int(rest) + 2)[:-2].decode()
        raise RuntimeError(f"redis: {line}")
