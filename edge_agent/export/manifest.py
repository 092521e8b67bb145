"""The export manifest: what it holds, how it is signed, and how an export is verified.

Format (docs/export.md): ``manifest.json`` is UTF-8 JSON with sorted keys;
``manifest.sig`` is the base64 Ed25519 signature of the exact bytes of
``manifest.json``, by the key whose PEM public key and ``key_id`` the manifest
carries. Verification needs nothing of the device: every file's size and
SHA-256, no file missing or added, and the signature. Given ``--key``, the
signing key must also be that one (the device's ``device-signing.pub``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

FORMAT = "edge-agent-export/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FILES_DIR = "files"
MAX_MANIFEST = 64 << 20  # a manifest of a million files is ~500 MiB: refuse sooner
_CHUNK = 4 << 20


def manifest_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def sign(data: bytes, key: Any) -> bytes:
    """The signature file's content for ``data`` (``key``: an Ed25519 private key)."""
    return base64.b64encode(key.sign(data)) + b"\n"


def public_key_doc(key: Any) -> dict[str, str]:
    from edge_agent.core.commands import key_id, public_pem

    pub = key.public_key()
    return {"algorithm": "ed25519", "key_id": key_id(pub), "public_pem": public_pem(pub).decode()}


# -- verification ---------------------------------------------------------------


class NotAnExport(Exception):
    """The path is not an export at all (exit 2), as opposed to a damaged one (exit 1)."""


@dataclass
class Verdict:
    path: str
    ok: bool = True
    files: int = 0
    bytes: int = 0
    key_id: str | None = None
    device: str | None = None
    request_ref: str | None = None
    problems: list[str] = field(default_factory=list)

    def bad(self, line: str) -> None:
        self.ok = False
        self.problems.append(line)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "files": self.files,
            "bytes": self.bytes,
            "key_id": self.key_id,
            "device": self.device,
            "request_ref": self.request_ref,
            "problems": list(self.problems),
        }


def _hash_stream(fh: IO[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while chunk := fh.read(_CHUNK):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


class _Source:
    """The members of an export, a folder or a tar file, by relative name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        if path.is_dir():
            return
        if not path.is_file():
            raise NotAnExport(f"{path}: no such folder or file")
        try:
            self.tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
            self.members = {m.name: m for m in self.tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError) as exc:
            self.close()
            raise NotAnExport(f"{path}: not a tar file, or a damaged one ({exc})") from None

    def names(self) -> set[str]:
        if self.tar is not None:
            return set(self.members)
        return {
            p.relative_to(self.path).as_posix()
            for p in self.path.rglob("*")
            if not p.is_dir() or p.is_symlink()
        }

    def read(self, name: str, limit: int) -> bytes | None:
        with self.open(name) as fh:
            if fh is None:
                return None
            data: bytes = fh.read(limit + 1)
            return data

    def open(self, name: str) -> _Maybe:
        if self.tar is not None:
            m = self.members.get(name)
            return _Maybe(self.tar.extractfile(m) if m is not None and m.isfile() else None)
        p = self.path / name
        if p.is_symlink() or not p.is_file():
            return _Maybe(None)
        return _Maybe(p.open("rb"))

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


class _Maybe:
    """A context manager that may hold no file."""

    def __init__(self, fh: IO[bytes] | None) -> None:
        self.fh = fh

    def __enter__(self) -> IO[bytes] | None:
        return self.fh

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()


def _safe_name(name: object) -> str | None:
    if not isinstance(name, str):
        return None
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or len(p.parts) != 2 or p.parts[0] != FILES_DIR:
        return None
    return name


def _check_signature(
    v: Verdict, doc: dict[str, Any], data: bytes, sig: bytes | None, pinned: bytes | None
) -> None:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

    from edge_agent.core.commands import key_id, load_public_key

    unusable = (ValueError, TypeError, UnsupportedAlgorithm)

    key = doc.get("signing_key")
    if not isinstance(key, dict) or not isinstance(key.get("public_pem"), str):
        v.bad("manifest names no signing key")
        return
    try:
        pub = load_public_key(key["public_pem"].encode(), name="manifest").public
    except unusable as exc:
        v.bad(f"manifest signing key unusable: {exc}")
        return
    v.key_id = key_id(pub)
    if pinned is not None:
        try:
            want = load_public_key(pinned, name="--key").public
        except unusable as exc:
            raise NotAnExport(f"--key: {exc}") from None
        if key_id(want) != v.key_id:
            v.bad(f"signed by key {v.key_id}, not by --key {key_id(want)}")
    if sig is None:
        v.bad(f"{SIGNATURE} is missing")
        return
    try:
        pub.verify(base64.b64decode(sig.strip(), validate=True), data)
    except (InvalidSignature, ValueError):
        v.bad(f"{SIGNATURE} does not match {MANIFEST}: the manifest was changed or not signed")


def verify_export(path: Path, *, pinned_key: bytes | None = None) -> Verdict:
    """Check an export folder or tar file. Raises NotAnExport when it is not one."""
    src = _Source(path)
    try:
        return _verify(src, pinned_key)
    finally:
        src.close()


def _verify(src: _Source, pinned: bytes | None) -> Verdict:
    v = Verdict(str(src.path))
    data = src.read(MANIFEST, MAX_MANIFEST)
    if data is None:
        raise NotAnExport(f"{src.path}: no {MANIFEST} (not an export, or an unfinished one)")
    if len(data) > MAX_MANIFEST:
        raise NotAnExport(f"{src.path}: {MANIFEST} larger than {MAX_MANIFEST} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        v.bad(f"{MANIFEST} is not JSON ({exc})")
        return v
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        v.bad(f"{MANIFEST} is not a {FORMAT} manifest")
        return v
    v.device = str(doc.get("device"))
    v.request_ref = str(doc.get("request_ref"))
    _check_signature(v, doc, data, src.read(SIGNATURE, 1024), pinned)
    listed = doc.get("files")
    if not isinstance(listed, list):
        v.bad(f"{MANIFEST} has no file list")
        return v
    expected: set[str] = {MANIFEST, SIGNATURE}
    for entry in listed:
        _check_file(v, src, entry, expected)
    for extra in sorted(src.names() - expected):
        v.bad(f"{extra}: not in the manifest")
    return v


def _check_file(v: Verdict, src: _Source, entry: Any, expected: set[str]) -> None:
    name = _safe_name(entry.get("name")) if isinstance(entry, dict) else None
    if name is None or not isinstance(entry, dict):
        v.bad(f"manifest entry {str(entry)[:80]!r} has no usable file name")
        return
    expected.add(name)
    try:
        with src.open(name) as fh:
            if fh is None:
                v.bad(f"{name}: missing")
                return
            digest, size = _hash_stream(fh)
    except (OSError, tarfile.TarError, EOFError) as exc:
        v.bad(f"{name}: unreadable ({exc})")
        return
    v.files += 1
    v.bytes += size
    if size != entry.get("size"):
        v.bad(f"{name}: {size} bytes, the manifest says {entry.get('size')}")
    if digest != entry.get("sha256"):
        v.bad(f"{name}: SHA-256 {digest} differs from the manifest's")


def iter_lines(v: Verdict) -> Iterator[str]:
    """The verdict for a terminal."""
    state = "OK" if v.ok else "FAILED"
    yield (
        f"{state}: {v.path}: {v.files} file(s), {v.bytes} bytes, device {v.device}, "
        f"request {v.request_ref}, signed by key {v.key_id}"
    )
    for p in v.problems:
        yield f"  {p}"


__all__ = [
    "FILES_DIR",
    "FORMAT",
    "MANIFEST",
    "SIGNATURE",
    "NotAnExport",
    "Verdict",
    "iter_lines",
    "manifest_bytes",
    "public_key_doc",
    "sign",
    "verify_export",
]
