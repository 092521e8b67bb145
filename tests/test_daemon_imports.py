"""What the daemon keeps in memory for months: only what it runs.

Each module imported by ``edge-agent run`` stays resident. These tests pin
the heavy ones out, so a stray top-level import shows up here and not as a
slow creep in the fleet's memory graphs (bench/footprint.py measures it).
"""

from __future__ import annotations

import json
import subprocess
import sys

NOT_IN_THE_DAEMON = (
    "aiortc",  # live view only, imported when [liveview] is configured
    "aiohttp",
    "cryptography",  # only with commands.trusted_keys
    "dns",  # paho's connect_srv(), never used
    "sqlite_utils",  # only while migrations are pending
    "edge_agent.app.doctor",
    "edge_agent.config.provision",
    "edge_agent.app.demo",
    "ctypes.util",  # find_library runs subprocesses
    "edge_agent.media.testsrc",  # virtual cameras: demo and tests
    "importlib.metadata",  # pydantic's plugin scan (plugins are off in the daemon)
    "email",  # importlib.metadata and urllib.request
    "http",  # urllib.request, which paho reads proxies from only with PySocks
    "difflib",  # "did you mean" for a config typo
)


def _daemon_modules() -> set[str]:
    code = (
        "import json, sys\n"
        "from edge_agent.cli import build_parser, prepare\n"
        "prepare('run')\n"
        "build_parser(only='run')\n"
        "import edge_agent.app.daemon\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_run_does_not_import_what_it_does_not_use() -> None:
    loaded = _daemon_modules()
    found = sorted(
        m for m in loaded for heavy in NOT_IN_THE_DAEMON if m == heavy or m.startswith(heavy + ".")
    )
    assert found == []


def test_paho_still_works_and_dns_stays_importable() -> None:
    code = (
        "import sys\n"
        "import edge_agent.comms.mqtt as m\n"
        "assert m.paho.Client is not None and 'dns' not in sys.modules\n"
        "import dns.resolver  # live view (aioice) imports it later: must still work\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_what_the_daemon_defers_still_works_when_asked_for() -> None:
    code = (
        "import sys\n"
        "from edge_agent.cli import prepare\n"
        "prepare('run')\n"
        "import edge_agent.config.config, edge_agent.comms.mqtt\n"
        "assert 'importlib.metadata' not in sys.modules and 'http.client' not in sys.modules\n"
        "from pydantic.plugin import _loader\n"
        "assert not list(_loader.get_plugins())  # disabled in the daemon\n"
        "assert _loader.entry_points(group='console_scripts')  # the real scan on demand\n"
        "import importlib.metadata\n"
        "assert importlib.metadata.version('pydantic')\n"
        "import urllib.request\n"
        "assert isinstance(urllib.request.getproxies(), dict)  # loads it\n"
        "from urllib.request import urlopen\n"
        "assert 'http.client' in sys.modules and urlopen\n"
        "import dns.resolver\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
