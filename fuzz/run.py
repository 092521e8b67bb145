"""Run every atheris harness in this folder for a fixed time and print a table.

    python fuzz/run.py                 # the CI smoke run: 10 s per harness
    python fuzz/run.py --seconds 600   # the longer run (docs/fuzzing.md)
    python fuzz/run.py --only time     # one harness (fuzz_time.py)

A harness is ``fuzz_<name>.py`` with ``atheris.Setup(...); atheris.Fuzz()``
under ``if __name__ == "__main__"``. A crash leaves ``crash-*`` in
``fuzz/artifacts/``; turn each into a test, then delete the file.
Exit 1 when any harness crashed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10, help="run time per harness")
    ap.add_argument("--only", action="append", default=[], help="harness name (repeatable)")
    args = ap.parse_args()
    harnesses = sorted(HERE.glob("fuzz_*.py"))
    if args.only:
        harnesses = [h for h in harnesses if h.stem.removeprefix("fuzz_") in args.only]
    artifacts = HERE / "artifacts"
    artifacts.mkdir(exist_ok=True)
    rows: list[tuple[str, float, int, str]] = []
    failed = False
    for h in harnesses:
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                str(h),
                f"-max_total_time={args.seconds}",
                "-print_final_stats=1",
                f"-artifact_prefix={artifacts}/{h.stem}-",
                "-rss_limit_mb=2048",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - t0
        m = re.search(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
        execs = int(m.group(1)) if m else 0
        verdict = "ok" if proc.returncode == 0 else f"CRASH (exit {proc.returncode})"
        if proc.returncode != 0:
            failed = True
            sys.stderr.write(proc.stderr[-4000:])
        rows.append((h.stem, elapsed, execs, verdict))
    print(f"{'harness':<24} {'seconds':>8} {'executions':>11} {'exec/s':>8}  verdict")
    for name, elapsed, execs, verdict in rows:
        rate = execs / elapsed if elapsed else 0.0
        print(f"{name:<24} {elapsed:8.1f} {execs:11d} {rate:8.0f}  {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
