"""Started inside a process plugin's sandbox, before the plugin: listens on
``127.0.0.1:PORT`` of the sandbox's own network namespace, relays every
connection to the node's egress proxy socket, and execs the plugin command
(which keeps the pid, stdin and stdout the node talks to).

Standard library only, run as a script (``python3 -I egress_forwarder.py
SOCKET PORT -- COMMAND…``): the sandbox's python3 need not see Aspen's
dependencies. The relay runs in a forked child with stdin and stdout on
``/dev/null``; it dies with the sandbox's PID namespace when the plugin ends.
"""

import os
import socket
import sys
import threading

MAX_RELAYS = 64  # at once; the node's proxy enforces the plugin's own, lower quota


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay(client: socket.socket, path: str, slots: threading.Semaphore) -> None:
    try:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            try:
                upstream.connect(path)
            except OSError:
                return
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join()
    finally:
        slots.release()


def _serve(listener: socket.socket, path: str) -> None:
    threading.stack_size(256 * 1024)  # within the sandbox's RLIMIT_AS
    slots = threading.Semaphore(MAX_RELAYS)
    while True:
        client, _ = listener.accept()
        if not slots.acquire(blocking=False):
            client.close()
            continue
        threading.Thread(target=_relay, args=(client, path, slots), daemon=True).start()


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[2] != "--":
        sys.exit("usage: egress_forwarder.py SOCKET PORT -- COMMAND...")
    path, port, command = argv[0], int(argv[1]), argv[3:]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)  # bound before the fork: the plugin's first connect cannot race the relay
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        try:
            _serve(listener, path)
        finally:
            os._exit(0)
    listener.close()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
