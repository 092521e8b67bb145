"""``edge-agent keys generate``: Ed25519 key pairs for signing commands."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    add_command,
    add_group,
    add_json_arg,
    print_json,
)
from edge_agent.core.commands import key_id, private_pem, public_pem

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key that may already be trusted somewhere.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _generate(args: argparse.Namespace) -> int:
    name: str = args.name
    if not NAME_RE.match(name):
        raise CliError(f"--name {name!r}: use letters, digits, '.', '-' or '_'", EXIT_BAD_INPUT)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    for p in (priv_path, pub_path):
        if p.exists():
            raise CliError(f"{p} exists: pick another --name or --out", EXIT_BAD_INPUT)
    key = Ed25519PrivateKey.generate()
    try:
        _write_new(priv_path, private_pem(key), 0o600)
        _write_new(pub_path, public_pem(key.public_key()), 0o644)
    except OSError as exc:
        raise CliError(f"cannot write keys in {out}: {exc.strerror}", EXIT_FAILURE) from None
    doc = {"private": str(priv_path), "public": str(pub_path), "key_id": key_id(key.public_key())}
    if args.json:
        print_json(doc)
    else:
        sys.stdout.write(
            f"private key {priv_path} (keep it on the central side, mode 0600)\n"
            f"public key  {pub_path} (add it to [commands] trusted_keys on devices)\n"
            f"key id      {doc['key_id']}\n"
        )
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "keys",
        help="make keys that sign commands",
        example="edge-agent keys generate --out keys --name central",
    )
    p = add_command(
        group,
        "generate",
        help="write a new Ed25519 key pair (NAME.key, 0600, and NAME.pub)",
        description=(
            "Write NAME.key (PEM private key, mode 0600) and NAME.pub (PEM public key) "
            "into --out. Devices trust the public key via [commands] trusted_keys; "
            "`edge-agent command sign --key NAME.key` signs with the private one. "
            "Existing files are never overwritten."
        ),
        example="edge-agent keys generate --out keys --name central",
        func=_generate,
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the two files")
    p.add_argument("--name", default="central", help="file name stem (default: central)")
    add_json_arg(p)
