"""``edge-agent anonymize``: anonymized derivatives of catalogued recordings, and
``edge-agent anonymize-file IN OUT``: the engine alone on a file.

``anonymize`` queues one job per recording in the catalog (joining a job
already open for it) and runs them here, resuming an interrupted one; the
receipt lists each job's verdict (docs/anonymization.md, "jobs"). Both need
the [anonymize] extra, imported only when they run.
"""

from __future__ import annotations

import argparse
import getpass
import json
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
from edge_agent.core.model import Recording, iso, utcnow


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_anonymize(sub)
    p = add_command(
        sub,
        "anonymize-file",
        help="hide faces, plates and masked areas in a video file, then verify the result",
        example=(
            "edge-agent anonymize-file in.mp4 out.mp4\n"
            "edge-agent anonymize-file in.mp4 out.mp4 --fill pixelate --json\n"
            "edge-agent anonymize-file in.mp4 out.mp4 --masks '[[[0,0],[0.3,0],[0.3,0.2],[0,0.2]]]'"
        ),
        func=cmd_anonymize_file,
        description=(
            "Writes OUT (H.264 MP4, no audio, no metadata of IN) with faces and plates filled "
            "and the masks painted, then runs the detectors again on OUT at a lower "
            "threshold. Exit 0 when verified (residual detections within the limit), 1 when "
            "not or when the job failed, 2 for bad options. IN is never changed."
        ),
    )
    p.add_argument("input", type=Path, help="the video file to anonymize (read only)")
    p.add_argument("output", type=Path, help="where to write the result (must not exist)")
    p.add_argument(
        "--masks",
        help="privacy masks: JSON list of polygons of [x, y] in 0..1 of the frame, or @FILE",
    )
    p.add_argument("--fill", choices=("solid", "pixelate"), default="solid", help="the fill")
    p.add_argument("--every", type=int, default=2, help="detect on every Nth frame (default 2)")
    p.add_argument(
        "--detect-width", type=int, default=640, help="width the detectors see (default 640)"
    )
    p.add_argument("--threads", type=int, default=2, help="threads for detection and codecs")
    p.add_argument(
        "--plates",
        default="off",
        help="'off' (default), 'heuristic' (offline, weak) or the path of an ONNX plate model",
    )
    p.add_argument("--no-faces", action="store_true", help="do not look for faces")
    p.add_argument("--preset", default="veryfast", help="libx264 preset (default veryfast)")
    p.add_argument("--crf", type=int, default=23, help="libx264 constant quality (default 23)")
    p.add_argument("--bitrate", type=int, default=0, help="kbit/s instead of --crf")
    p.add_argument("--no-verify", action="store_true", help="skip the verification pass")
    p.add_argument("--residual-limit", type=int, default=0, help="residuals allowed (default 0)")
    add_json_arg(p)


def _masks(raw: str | None) -> object:
    if raw is None:
        return []
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(
                f"--masks: cannot read {raw[1:]}: {exc.strerror}", EXIT_BAD_INPUT
            ) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"--masks: not JSON: {exc}", EXIT_BAD_INPUT) from None


def cmd_anonymize_file(args: argparse.Namespace) -> int:
    try:
        from edge_agent.anonymize.engine import anonymize_file
        from edge_agent.anonymize.settings import AnonSettings, parse_masks
    except ImportError as exc:
        raise CliError(
            f"the anonymize extra is missing ({exc}): pip install 'edge-agent[anonymize]'"
        ) from None
    raw = _masks(args.masks)
    try:
        masks = parse_masks(raw if isinstance(raw, list) else [raw])
    except ValueError as exc:
        raise CliError(f"--masks: {exc}", EXIT_BAD_INPUT) from None
    settings = AnonSettings(
        faces=not args.no_faces,
        plates=args.plates,
        detect_every=args.every,
        detect_width=args.detect_width,
        fill=args.fill,
        masks=masks,
        threads=args.threads,
        preset=args.preset,
        crf=args.crf,
        bitrate_kbps=args.bitrate,
        verify=not args.no_verify,
        residual_limit=args.residual_limit,
        tags={"edge_agent.anonymized": "true"},
    )
    problems = settings.problems()
    if problems:
        raise CliError("; ".join(problems), EXIT_BAD_INPUT)
    if not args.input.is_file():
        raise CliError(f"{args.input}: no such file", EXIT_BAD_INPUT)
    result = anonymize_file(args.input, args.output, settings)
    if args.json:
        print_json(result.to_json())
    else:
        w = sys.stdout.write
        w(f"{result.status}: {result.reason}\n")
        w(f"  frames      {result.frames} ({result.width}x{result.height})\n")
        w(f"  detections  {_counts(result.detections)}  (boxes filled {result.filled_boxes})\n")
        w(
            f"  residuals   {_counts(result.residuals)}"
            f"  (discounted: {_counts(result.discounted)})\n"
        )
        w(f"  speed       {result.pass_fps} fps anonymizing, {result.fps} fps with verification\n")
        w(f"  verified    {'yes' if result.verified else 'no'}\n")
    return EXIT_OK if result.status == "ok" and result.verified else EXIT_FAILURE


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"


def _register_anonymize(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "anonymize",
        help="make verified anonymized derivatives of catalogued recordings (jobs)",
        example=(
            "edge-agent anonymize 3f2a9c0e1b7d4e6f8a0b1c2d3e4f5a6b\n"
            "edge-agent anonymize --location gate --from 2026-11-20T10:00:00Z "
            "--to 2026-11-20T11:00:00Z --dry-run\n"
            "edge-agent anonymize --pending"
        ),
        func=cmd_anonymize,
        description=(
            "Queues a job per recording (a recording with an open job joins it) and runs "
            "the jobs now: each writes a new recording (the derivative) with faces, plates "
            "and the source's privacy masks filled, no audio and only our tags, verifies it "
            "and catalogues it; the original is never changed. A verified derivative gets "
            "the anonymized retention period, an unverified one keeps the original's "
            "deadline. --pending runs every open job (after a crash). Exit 0 when every "
            "job is done and verified, 1 otherwise, 2 for bad options."
        ),
    )
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument("ids", nargs="*", metavar="RECORDING_ID", help="recordings to anonymize")
    p.add_argument("--location", help="every recording at this location in the window")
    p.add_argument("--from", dest="from_", type=utc_time, help="window start (ISO 8601)")
    p.add_argument("--to", type=utc_time, help="window end (ISO 8601)")
    p.add_argument("--pending", action="store_true", help="run the open jobs (resume)")
    p.add_argument("--dry-run", action="store_true", help="list what would be anonymized")
    p.add_argument("--queue-only", action="store_true", help="queue for the daemon, do not run")
    p.add_argument("--by", help="who asks (default: cli:<user>)")
    # The daemon's worker runs each job through this (app/anon_worker.py): its own
    # process, niced, stopped by SIGTERM (the job goes back to the queue).
    p.add_argument("--job", type=int, help=argparse.SUPPRESS)


def _select(cat: Any, args: argparse.Namespace) -> tuple[list[Recording], list[dict[str, str]]]:
    from edge_agent.core.anon_policy import choose

    refused: list[dict[str, str]] = []
    if args.location is not None:
        recs = cat.recordings.overlapping(args.location, args.from_, args.to)
    else:
        recs = []
        for rid in args.ids:
            rec = cat.recordings.get(rid)
            if rec is None:
                refused.append({"id": rid, "why": "not in the catalog"})
            else:
                recs.append(rec)
    chosen, more = choose(recs, utcnow())
    return chosen, refused + more


def _one_job(args: argparse.Namespace) -> int:
    import signal
    import threading

    from edge_agent.app.anon_job import run_job

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cfg = load_cli_config(args.config)
    with open_cli_catalog(cfg) as cat:
        out = run_job(cat, cfg, args.job, actor=args.by or "agent", cancel=stop.is_set)
    print_json(out.as_dict())
    return EXIT_OK if out.state in ("done", "queued") else EXIT_FAILURE


def cmd_anonymize(args: argparse.Namespace) -> int:
    if args.job is not None:
        return _one_job(args)
    if args.location is None and (args.from_ is not None or args.to is not None):
        raise CliError("--from/--to go with --location", EXIT_BAD_INPUT)
    if args.location is not None and (args.from_ is None or args.to is None or args.ids):
        raise CliError("--location needs --from and --to, and no RECORDING_ID", EXIT_BAD_INPUT)
    if not args.ids and args.location is None and not args.pending:
        raise CliError("give RECORDING_ID..., --location with --from/--to, or --pending", 2)
    cfg = load_cli_config(args.config)
    if args.location is not None:
        check_location(cfg, args.location)
    by = args.by or f"cli:{getpass.getuser()}"
    cat = open_cli_catalog(cfg)
    with cat:
        chosen, refused = _select(cat, args)
        if args.dry_run:
            doc = {
                "dry_run": True,
                "would_anonymize": [{"id": r.id, "path": r.path} for r in chosen],
                "refused": refused,
                "at": iso(utcnow()),
            }
            _emit(args, doc)
            return EXIT_OK
        job_ids = []
        for rec in chosen:
            job, _ = cat.anon_jobs.enqueue(rec.id, requested_by=by, origin="cli")
            job_ids.append(job.id)
        if args.pending:
            job_ids += [j.id for j in cat.anon_jobs.open_jobs() if j.id not in job_ids]
        outcomes = [] if args.queue_only else _run(cat, cfg, job_ids, by, args.json)
    doc = {
        "dry_run": False,
        "queued": job_ids if args.queue_only else [],
        "jobs": [o.as_dict() for o in outcomes],
        "refused": refused,
        "at": iso(utcnow()),
    }
    _emit(args, doc)
    ok = all(o.state == "done" and o.verified for o in outcomes) and not refused
    return EXIT_OK if ok else EXIT_FAILURE


def _run(cat: Any, cfg: Any, job_ids: list[int], by: str, quiet: bool) -> list[Any]:
    try:
        from edge_agent.anonymize import engine  # noqa: F401  (the extra is installed)
    except ImportError as exc:
        raise CliError(
            f"the anonymize extra is missing ({exc}): pip install 'edge-agent[anonymize]'"
        ) from None
    from edge_agent.app.anon_job import run_job

    out = []
    for jid in job_ids:
        bar = _Bar(jid) if sys.stderr.isatty() and not quiet else None
        out.append(run_job(cat, cfg, jid, actor=by, progress=bar))
        if bar is not None:
            bar.done()
    return out


class _Bar:
    """Frames read, on one terminal line (no total: the engine counts as it decodes)."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.frames = 0

    def __call__(self, frames: int) -> None:
        self.frames = frames
        if frames % 10 == 0:
            sys.stderr.write(f"\rjob {self.job_id}: {frames} frames")
            sys.stderr.flush()

    def done(self) -> None:
        sys.stderr.write(f"\rjob {self.job_id}: {self.frames} frames, done\n")


def _emit(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    if args.json:
        print_json(doc)
        return
    w = sys.stdout.write
    if doc["dry_run"]:
        w(f"would anonymize {len(doc['would_anonymize'])} recording(s)\n")
        for line in doc["would_anonymize"]:
            w(f"  {line['id']}  {line['path']}\n")
    for jid in doc.get("queued", []):
        w(f"queued job {jid}\n")
    for j in doc.get("jobs", []):
        d = j.get("derivative")
        verdict = "verified" if j["verified"] else "NOT verified (keeps the original's deadline)"
        w(f"job {j['job']} {j['recording_id']}: {j['state']}: {j['reason']}\n")
        if d is not None:
            w(f"  derivative {d['id']} {d['path']} {verdict}; deadline {d['deadline'] or 'none'}\n")
            w(f"  residuals {_counts(j.get('residuals', {}))}\n")
    for r in doc["refused"]:
        w(f"refused {r['id']}: {r['why']}\n")
