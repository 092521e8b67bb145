"""The child side of :class:`~edge_agent.media.media_worker.MediaWorker`.

``python -m edge_agent.media.media_child FD``: reads requests from the
``SOCK_SEQPACKET`` socket ``FD``, each a JSON document with the source's
descriptor attached, runs the PyAV call and answers one message per request:
``ok\\n`` + the result as JSON, or ``media\\n`` + the MediaError, or
``error\\n`` + a line. Exits at end of file (the daemon closed its side or
died). Only PyAV and our media modules are imported here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from edge_agent.media.media_probe import MediaError, probe_and_scan
from edge_agent.media.media_remux import remux
from edge_agent.media.media_worker import probe_reply, remux_reply

MAX_REQUEST = 1 << 20


def _handle(op: str, src: Path, args: dict[str, Any]) -> bytes:
    if op == "probe":
        found = probe_and_scan(
            src, max_streams=int(args["max_streams"]), predict=bool(args["predict"])
        )
        return probe_reply().dump_json(found)
    if op == "remux":
        made = remux(
            src, Path(args["dst"]), tags=args["tags"], drop_audio=bool(args["drop_audio"]),
            container=args["container"], max_streams=int(args["max_streams"]),
            scan=bool(args["scan"]),
        )  # fmt: skip
        return remux_reply().dump_json(made)
    raise ValueError(f"unknown operation {op!r}")


def _answer(request: bytes, fds: list[int]) -> bytes:
    if len(fds) != 1:
        return b"error\nexpected one descriptor, got %d" % len(fds)
    try:
        doc = json.loads(request)
        body = _handle(doc["op"], Path(f"/proc/self/fd/{fds[0]}"), doc["args"])
    except MediaError as exc:
        cause = exc.__cause__
        errno = cause.errno if isinstance(cause, OSError) else None
        return (
            b"media\n"
            + json.dumps({"reason": exc.reason, "message": exc.message, "errno": errno}).encode()
        )
    except Exception as exc:  # a verdict for the daemon, not a dead child
        return f"error\n{type(exc).__name__}: {exc}".encode()
    return b"ok\n" + body


def serve(sock: socket.socket) -> None:
    while True:
        try:
            request, fds, _flags, _addr = socket.recv_fds(sock, MAX_REQUEST, 1)
        except ConnectionResetError:
            return
        if not request:
            return
        try:
            reply = _answer(request, fds)
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(reply)


def main() -> None:
    # Stopping is the daemon's business: it closes the socket, or its end of
    # file reaches us when it exits. A terminal's Ctrl-C or systemd's SIGTERM to
    # the whole group must not kill a remux the daemon is about to wait for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        serve(sock)
    except BrokenPipeError:
        pass  # the daemon went away mid-answer
    finally:
        sock.close()


if __name__ == "__main__":
    main()
