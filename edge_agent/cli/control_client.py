"""Ask the running agent over its control socket (see app/control.py).

Blocking and bounded: the CLI waits at most ``timeout`` seconds and reads at
most ``MAX_ANSWER`` bytes, so a wedged or hostile peer on the socket path
cannot hang ``status`` or fill its memory.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_ANSWER = 4 * 1024 * 1024


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("edge-agent", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(os.fsencode(self._path))
        except OSError:
            s.close()
            raise
        self.sock = s


@dataclass(frozen=True)
class Answer:
    """What the agent said, or why nobody answered (``doc`` is None then)."""

    doc: dict[str, Any] | None
    why_not: str | None = None


def ask_agent(path: Path, what: str = "/v1/state", *, timeout: float = 3.0) -> Answer:
    if not path.exists():
        return Answer(None, f"no control socket at {path}")
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("GET", what)
        resp = conn.getresponse()
        body = resp.read(MAX_ANSWER + 1)
    except PermissionError:
        return Answer(None, f"no permission to open {path} (join the agent's group)")
    except (ConnectionRefusedError, FileNotFoundError):
        return Answer(None, f"nothing listens on {path} (stale socket)")
    except TimeoutError:
        return Answer(None, f"the agent did not answer on {path} within {timeout:g} s")
    except (OSError, http.client.HTTPException) as e:
        return Answer(None, f"control socket {path}: {type(e).__name__}: {e}")
    finally:
        conn.close()
    if len(body) > MAX_ANSWER:
        return Answer(None, f"the answer on {path} is over {MAX_ANSWER} bytes")
    if resp.status != 200:
        return Answer(None, f"the agent answered HTTP {resp.status}")
    try:
        doc = json.loads(body)
    except ValueError:
        return Answer(None, "the agent's answer is not JSON")
    if not isinstance(doc, dict):
        return Answer(None, "the agent's answer is not a JSON object")
    return Answer(doc)
