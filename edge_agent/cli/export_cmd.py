"""``edge-agent export`` and ``edge-agent export verify``: footage out, and the check of it.

The rules and the manifest format are in docs/export.md.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from pathlib import Path
from typing import Any

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    add_command,
    add_config_arg,
    add_json_arg,
    print_json,
)
from edge_agent.cli._context import check_location, load_cli_config, open_cli_catalog
from edge_agent.cli.recordings_cmd import utc_time
from edge_agent.core.export_plan import ExportQuery
from edge_agent.core.model import Purpose, iso, utcnow

MAX_TEXT = 1000  # --reason and --request-ref land in the audit chain


def operator_now() -> Any:
    """Who runs this, read before the command becomes the agent's user."""
    from edge_agent.export.run import Operator

    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    sudo = os.environ.get("SUDO_USER") if uid == 0 else None
    return Operator(uid=uid, user=user, sudo_user=sudo or None)


class _Progress:
    """``export: 10 files, 45.0/120.0 MiB (37%)`` on stderr, only on a terminal."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int, n_files: int) -> None:
        if not self.on:
            return
        pct = 100 * done // total if total else 100
        if pct == self.last:
            return
        self.last = pct
        mib = 1024 * 1024
        sys.stderr.write(
            f"\rexport: {n_files} files, {done / mib:.1f}/{total / mib:.1f} MiB ({pct}%)"
        )
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _text(value: str, flag: str) -> str:
    text = value.strip()
    if not text:
        raise CliError(f"{flag} is empty: give it", EXIT_BAD_INPUT)
    if len(text) > MAX_TEXT or any(ord(c) < 32 for c in text):
        raise CliError(
            f"{flag}: at most {MAX_TEXT} characters, on one line, no control characters",
            EXIT_BAD_INPUT,
        )
    return text


def _print_receipt(doc: dict[str, Any]) -> None:
    w = sys.stdout.write
    w(f"export for request {doc['request_ref']} ({doc['status']})\n")
    w(f"  location {doc['location']}, window {doc['from']} .. {doc['to']}")
    w(f", purpose {doc['purpose']}" if doc["purpose"] else "")
    w(", anonymized only\n" if doc["anonymized_only"] else "\n")
    verb = {"done": "exported", "dry_run": "would export", "empty": "exported"}[doc["status"]]
    count = doc["file_count"] if doc["status"] != "empty" else 0
    w(f"  {verb}: {count} file(s), {doc['bytes']} bytes\n")
    if doc["status"] != "empty":
        for f in doc["files"]:
            w(f"    {f['id']}  {f['start']} .. {f['end']}  deadline {f['deadline'] or '-'}\n")
    for key, n in doc["left_out"].items():
        w(f"  left out: {n} ({doc['left_out_why'][key]})\n")
    if doc["status"] == "done":
        w(f"  written: {doc['out']}\n")
        w(f"  manifest sha256 {doc['manifest_sha256']}, signed by key {doc['key_id']}\n")
        w(f"  audit entry {doc['audit_seq']}\n")
    for note in doc["notes"]:
        w(f"  {note}\n")


def _export(args: argparse.Namespace) -> int:
    if getattr(args, "export_command", None) == "verify":
        return _verify(args)
    missing = [
        flag
        for flag, value in (
            ("--location", args.location),
            ("--from", args.from_),
            ("--to", args.to),
            ("--request-ref", args.request_ref),
            ("--reason", args.reason),
            ("--out", args.out),
        )
        if value is None
    ]
    if missing:
        raise CliError(f"export: missing {', '.join(missing)}", EXIT_BAD_INPUT)
    if args.to < args.from_:
        raise CliError(
            f"--to {iso(args.to)} is before --from {iso(args.from_)}: swap them", EXIT_BAD_INPUT
        )
    ref, reason = _text(args.request_ref, "--request-ref"), _text(args.reason, "--reason")
    operator = operator_now()  # before open_cli_catalog switches users
    cfg = load_cli_config(args.config)
    check_location(cfg, args.location)
    from edge_agent.export.run import ExportError, ExportRequest, run_export

    req = ExportRequest(
        query=ExportQuery(
            location=args.location,
            start=args.from_,
            end=args.to,
            purpose=Purpose(args.purpose) if args.purpose else None,
            anonymized_only=args.anonymized_only,
            marketing_originals=cfg.export.marketing_originals,
        ),
        request_ref=ref,
        reason=reason,
        out=Path(os.path.abspath(args.out)),
        operator=operator,
        device_id=cfg.device.id,
        storage_root=Path(cfg.storage.root),
        state_dir=Path(cfg.storage.catalog).parent,
        audio_rooms=frozenset(loc.id for loc in cfg.locations if loc.audio_room),
        now=utcnow(),
        dry_run=args.dry_run,
    )
    cat = open_cli_catalog(cfg)
    try:
        receipt = run_export(cat, req, progress=_Progress())
    except ExportError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    finally:
        cat.close()
    doc = receipt.as_dict()
    if args.json:
        print_json(doc)
    else:
        _print_receipt(doc)
    if receipt.status == "empty":
        if args.json:
            sys.stderr.write(f"edge-agent: {' '.join(receipt.notes)}\n")
        return EXIT_FAILURE
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from edge_agent.export.manifest import NotAnExport, iter_lines, verify_export

    pinned = None
    if args.key is not None:
        try:
            pinned = args.key.read_bytes()
        except OSError as exc:
            raise CliError(f"--key {args.key}: {exc.strerror}", EXIT_BAD_INPUT) from None
    try:
        verdict = verify_export(args.path, pinned_key=pinned)
    except NotAnExport as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    if args.json:
        print_json(verdict.as_dict())
    else:
        for line in iter_lines(verdict):
            sys.stdout.write(line + "\n")
    return EXIT_OK if verdict.ok else EXIT_FAILURE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "export",
        help="copy footage the notice allows out, with a signed manifest (or: export verify)",
        description=(
            "Copy the recordings of --location overlapping [--from, --to] as they are "
            "stored, with manifest.json (per file: id, tags, start/end, deadline, size, "
            "SHA-256; who, why, when) signed with the device's Ed25519 key. --out is a "
            "new folder, or a FILE.tar. Restricted recordings never go; marketing takes "
            "anonymized derivatives only unless [export] marketing_originals = true; "
            "audio outside an audio room is refused. An export that meets nothing writes "
            "nothing and exits 1. One audit entry and one export.created event per export. "
            "`edge-agent export verify PATH` checks hashes and signature (exit 0 good, "
            "1 damaged, 2 not an export)."
        ),
        example=(
            "edge-agent export --location gate --from 2026-11-20T10:00:00Z "
            "--to 2026-11-20T10:30:00Z --request-ref DSR-2026-042 "
            '--reason "subject access request" --out /media/usb/dsr-042.tar\n'
            "edge-agent export verify /media/usb/dsr-042.tar"
        ),
        func=_export,
    )
    add_config_arg(p)
    p.add_argument("--location", help="location id")
    p.add_argument("--from", dest="from_", type=utc_time, help="window start (ISO 8601)")
    p.add_argument("--to", type=utc_time, help="window end (ISO 8601)")
    p.add_argument("--purpose", choices=[x.value for x in Purpose], help="only this purpose")
    p.add_argument("--anonymized-only", action="store_true", help="only anonymized derivatives")
    p.add_argument("--request-ref", help="the request's reference (goes into the manifest)")
    p.add_argument("--reason", help="why the footage leaves the device (manifest, audit)")
    p.add_argument("--out", type=Path, help="a new folder, or a new FILE.tar")
    p.add_argument("--dry-run", action="store_true", help="list what would go; write nothing")
    add_json_arg(p)
    inner = p.add_subparsers(dest="export_command", metavar="verify")
    v = add_command(
        inner,
        "verify",
        help="check an export's hashes and signature (exit 0 good, 1 damaged, 2 not an export)",
        description=(
            "Check every file's size and SHA-256 against manifest.json, that no file is "
            "missing or added, and the manifest's Ed25519 signature. --key pins the "
            "device's public key (device-signing.pub); without it the key inside the "
            "manifest is used and its key_id printed. Needs no config."
        ),
        example="edge-agent export verify /media/usb/dsr-042.tar --key gw-01.pub",
        func=_verify,
    )
    v.add_argument("path", type=Path, help="the export folder or FILE.tar")
    v.add_argument("--key", type=Path, help="the device's public key (PEM) to require")
    add_json_arg(v)
