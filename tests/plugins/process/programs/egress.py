"""A process plugin that uses the network the way ordinary code does:
urllib with the proxy variables the node sets, a hand-written CONNECT, and a
direct connection that ignores the proxy."""

import asyncio
import os
import socket
import urllib.error
import urllib.request

from aspen.plugin_sdk import Plugin, Request, reply

plugin = Plugin("egress", "0.1.0", handles=["Fetch", "Tunnel", "Direct", "Hold", "Release", "Raw"])
held: list[socket.socket] = []


def fetch(url: str) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return {"status": answer.status, "body": answer.read().decode()}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "code": exc.headers.get("X-Aspen-Error")}
    except (urllib.error.URLError, OSError) as exc:
        return {"error": str(getattr(exc, "reason", exc))}


def connect(target: str) -> tuple[socket.socket, int, str | None]:
    """A CONNECT through the proxy: the socket, the status and X-Aspen-Error."""
    return send(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())


def send(data: bytes) -> tuple[socket.socket, int, str | None]:
    """``data`` to the proxy; the socket, the status and X-Aspen-Error of its answer."""
    proxy = os.environ.get("HTTP_PROXY", "http://127.0.0.1:3128").rsplit(":", 1)[1]
    sock = socket.create_connection(("127.0.0.1", int(proxy)), timeout=10)
    sock.sendall(data)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    lines = head.decode(errors="replace").split("\r\n")
    code = next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("x-aspen-error:")), None)
    return sock, int(lines[0].split()[1]), code


def tunnel(target: str) -> dict:
    sock, status, code = connect(target)
    with sock:
        if status != 200:
            return {"status": status, "code": code}
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return {"status": status, "body": data.split(b"\r\n\r\n", 1)[1].decode()}


def direct(host: str, port: int) -> dict:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return {"connected": True}
    except OSError as exc:
        return {"connected": False, "error": str(exc)}


def hold(target: str, count: int) -> dict:
    statuses = []
    for _ in range(count):
        sock, status, code = connect(target)
        held.append(sock)
        statuses.append([status, code])
    return {"statuses": statuses}


@plugin.handler("Fetch")
async def on_fetch(req: Request) -> dict:
    return reply("Fetched", await asyncio.to_thread(fetch, req.body["url"]))


@plugin.handler("Tunnel")
async def on_tunnel(req: Request) -> dict:
    return reply("Tunneled", await asyncio.to_thread(tunnel, req.body["target"]))


@plugin.handler("Direct")
async def on_direct(req: Request) -> dict:
    return reply("Direct", await asyncio.to_thread(direct, req.body["host"], req.body["port"]))


@plugin.handler("Hold")
async def on_hold(req: Request) -> dict:
    return reply("Held", await asyncio.to_thread(hold, req.body["target"], req.body["count"]))


@plugin.handler("Raw")
async def on_raw(req: Request) -> dict:
    data = req.body["data"].encode() * req.body.get("times", 1)
    sock, status, code = await asyncio.to_thread(send, data)
    sock.close()
    return reply("Raw", {"status": status, "code": code})


@plugin.handler("Release")
def on_release(req: Request) -> dict:
    while held:
        held.pop().close()
    return reply("Released", {})


plugin.run()
