"""A process plugin written against docs/plugin-process.md alone (stdlib
json, threads, no SDK) that misbehaves on request. HOSTILE_START=crash dies
at once after some stderr; HOSTILE_NAME renames it; HOSTILE_HEALTH=bad fails
health probes; HOSTILE_SHUTDOWN=ignore
ignores shutdown, end of input and SIGTERM."""

import json
import os
import signal
import sys
import threading
import time

NAME = os.environ.get("HOSTILE_NAME", "hostile")
HANDLES = ["Echo", "Crash", "Hang", "Huge", "Garbage", "Flood", "HostCall", "RawHost", "Stderr", "BadShape"]
out_lock = threading.Lock()
waiting: dict[int, tuple[threading.Event, list]] = {}
next_id = [1_000_000]


def send(line: str) -> None:
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def answer(id, result) -> None:
    send(json.dumps({"jsonrpc": "2.0", "id": id, "result": result}))


def host(line_for_id) -> dict:
    with out_lock:
        next_id[0] += 1
        id = next_id[0]
    done, box = threading.Event(), []
    waiting[id] = (done, box)
    send(line_for_id(id))
    done.wait(30)
    return box[0] if box else {"error": {"code": "NO_ANSWER"}}


def handle(id, req) -> None:
    kind, body = req["type"], req.get("body", {})
    if kind == "Echo":
        answer(id, {"type": "Echo", "body": body})
    elif kind == "Crash":
        os._exit(3)
    elif kind == "Hang":
        return
    elif kind == "Huge":
        send(f'{{"jsonrpc":"2.0","id":{id},"result":{{"type":"Huge","body":{{"x":"{"a" * body["bytes"]}"}}}}}}')
    elif kind == "BadShape":
        answer(id, {"type": body.get("type", 5), "body": body.get("body", {})})
    elif kind == "Garbage":
        send(f'{{"jsonrpc":"2.0","id":{id},"result":{{bad')
    elif kind == "Flood":
        with out_lock:
            sys.stdout.write("x\n" * body.get("lines", 100_000))
            sys.stdout.flush()
    elif kind == "Stderr":
        print(body.get("text", "hello"), file=sys.stderr, flush=True)
        answer(id, {"type": "Stderr", "body": {}})
    elif kind == "HostCall":
        reply = host(
            lambda i: json.dumps({"jsonrpc": "2.0", "id": i, "method": body["method"], "params": body["params"]})
        )
        answer(id, {"type": "HostReply", "body": {k: v for k, v in reply.items() if k in ("result", "error")}})
    elif kind == "RawHost":
        line = body["line"].replace("PAD", "v" * body.get("pad", 0))
        reply = host(lambda i: line.replace("ID", str(i), 1))
        answer(id, {"type": "HostReply", "body": {k: v for k, v in reply.items() if k in ("result", "error")}})


def main() -> None:
    if os.environ.get("HOSTILE_START") == "crash":
        for i in range(80):
            print(f"dying line {i}", file=sys.stderr)
        sys.exit(1)
    for raw in sys.stdin:
        msg = json.loads(raw)
        if "method" not in msg:
            done, box = waiting.pop(msg["id"])
            box.append(msg)
            done.set()
            continue
        id, method = msg["id"], msg["method"]
        if method == "plugin_info":
            answer(id, {"name": NAME, "version": "0.1.0", "handles": HANDLES})
        elif method == "health" and os.environ.get("HOSTILE_HEALTH") == "bad":
            answer(id, {"ok": False})
        elif method in ("init", "health"):
            answer(id, {"ok": True})
        elif method == "shutdown" and os.environ.get("HOSTILE_SHUTDOWN") != "ignore":
            answer(id, {})
            return
        elif method == "handle_request":
            threading.Thread(target=handle, args=(id, msg["params"]), daemon=True).start()
        else:
            send(json.dumps({"jsonrpc": "2.0", "id": id, "error": {"code": "UNKNOWN_REQUEST", "message": method}}))
    if os.environ.get("HOSTILE_SHUTDOWN") == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(3600)


main()
