"""``edge-agent anonymize-file IN OUT``: anonymize one video file and verify it.

The engine alone, on a file, for demos and benchmarks (docs/anonymization.md);
recordings in the catalog are a later command. Needs the [anonymize] extra,
imported only when this command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_agent.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    add_command,
    add_json_arg,
    print_json,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
