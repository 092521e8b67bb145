"""The device's own Ed25519 key, which signs export manifests (docs/export.md).

It lives in the state directory, beside the catalog (``device-signing.key``,
mode 0600, and ``device-signing.pub``), so it stays with the device and not
with a recording disk that may move. Provisioning makes it when that folder
exists; ``edge-agent export`` makes it on first use otherwise (a device
provisioned before exports existed). An existing key is never replaced: a
verifier may already trust it. The private key is never logged or shown; its
``key_id`` (first 16 hex of SHA-256 of the public key) is.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.host.fsutil import fsync_dir

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_NAME = "device-signing.key"
PUB_NAME = "device-signing.pub"


def key_paths(state_dir: Path) -> tuple[Path, Path]:
    return Path(state_dir) / KEY_NAME, Path(state_dir) / PUB_NAME


def _write_new(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    # O_EXCL: two exports starting at once must not make two keys.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            with contextlib.suppress(PermissionError):
                os.fchown(fd, *owner)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_device_key(state_dir: Path) -> tuple[Path, bool]:
    """The private key's path, and whether it was made now.

    New files take the owner of ``state_dir``: when root provisions, the agent's
    user must still be able to read its key (and nobody else can).
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent.core.commands import private_pem, public_pem

    priv, pub = key_paths(state_dir)
    if priv.exists():
        return priv, False
    st = Path(state_dir).stat()
    owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
    key = Ed25519PrivateKey.generate()
    try:
        _write_new(priv, private_pem(key), 0o600, owner)
    except FileExistsError:
        return priv, False
    with contextlib.suppress(FileExistsError):
        pub.unlink(missing_ok=True)
        _write_new(pub, public_pem(key.public_key()), 0o644, owner)
    fsync_dir(Path(state_dir))
    return priv, True


def load_device_key(state_dir: Path) -> Ed25519PrivateKey:
    """The private key; OSError or ValueError (with the path, never the key) otherwise."""
    from edge_agent.core.commands import load_private_key

    priv, _ = key_paths(state_dir)
    return load_private_key(priv.read_bytes(), name=str(priv))


__all__ = ["KEY_NAME", "PUB_NAME", "ensure_device_key", "key_paths", "load_device_key"]
