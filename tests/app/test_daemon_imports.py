"""What the daemon keeps in memory for months: only what it runs, with real modules.

Each module imported by ``edge-agent run`` stays resident. These tests pin
the heavy ones out, so a stray top-level import shows up here and not as a
slow creep in the fleet's memory graphs (bench/footprint.py measures it).

They also pin that nothing stands in for a library's modules: a stand-in
depends on the library's private modules and exact import statements, and
one upstream rename would stop the daemon before logging starts. The one
trick left is paho's own fallback for a missing optional dnspython.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import edge_agent

NOT_IN_THE_DAEMON = (
    "aiortc",  # live view only, imported when [liveview] is configured
    "aiohttp",
    "aioice",
    "edge_agent.liveview",
    "edge_agent.console",  # the web console, only when configured
    "edge_agent.anonymize",  # the optional [anonymize] extra
    "edge_agent.export",  # the export command
    "numpy",
    "cryptography",  # only with commands.trusted_keys
    "dns",  # paho's connect_srv(), never used (paho runs without it: see comms/mqtt.py)
    "sqlite_utils",  # only while migrations are pending
    "edge_agent.app.doctor",
    "edge_agent.config.provision",
    "edge_agent.app.demo",
    "ctypes.util",  # find_library runs subprocesses
    "edge_agent.media.testsrc",  # virtual cameras: demo and tests
    "difflib",  # "did you mean" for a config typo
)

# What the daemon imports, in a fresh interpreter, and where each module came from.
_DAEMON = (
    "import json, sys\n"
    "from edge_agent.cli import build_parser, prepare\n"
    "prepare('run')\n"
    "build_parser(only='run')\n"
    "import edge_agent.app.daemon\n"
    "out = {}\n"
    "for name, mod in list(sys.modules.items()):\n"
    "    spec, path = getattr(mod, '__spec__', None), getattr(mod, '__file__', None)\n"
    "    out[name] = [type(mod).__name__, getattr(spec, 'name', None), path]\n"
    "print(json.dumps(out))\n"
)


def _daemon_modules() -> dict[str, list[str | None]]:
    out = subprocess.run([sys.executable, "-c", _DAEMON], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded: dict[str, list[str | None]] = json.loads(out.stdout)
    return loaded


def test_run_does_not_import_what_it_does_not_use() -> None:
    loaded = _daemon_modules()
    found = sorted(
        m for m in loaded for heavy in NOT_IN_THE_DAEMON if m == heavy or m.startswith(heavy + ".")
    )
    assert found == []


def test_no_stand_ins_every_module_is_the_real_one() -> None:
    assert importlib.util.find_spec("edge_agent.host.lean") is None
    loaded = _daemon_modules()
    # A stand-in is made, not found by the import system: it has no spec. Some
    # are made by their own package (typing's old aliases, Cython's runtime).
    made = {
        name
        for name, row in loaded.items()
        if (row[0] != "module" or row[1] is None)
        and name not in ("__main__", "typing.io", "typing.re", "cython_runtime")
        and not name.startswith("_cython_")
    }
    assert made == set()
    # The modules the old stand-ins replaced are loaded for real, from their files.
    for name in ("urllib.request", "importlib.metadata", "pydantic.plugin._loader"):
        assert loaded[name][1] == name and str(loaded[name][2]).endswith(".py"), name


def test_no_code_of_ours_writes_sys_modules_but_the_paho_fallback() -> None:
    root = Path(edge_agent.__file__).parent
    writes = {
        str(path.relative_to(root)): line.strip()
        for path in sorted(root.rglob("*.py"))
        for line in path.read_text().splitlines()
        if re.search(r"sys\.modules(\[[^]]*\]\s*=[^=]|\.(update|setdefault)\()", line)
    }
    assert list(writes) == ["comms/mqtt.py"]
    assert writes["comms/mqtt.py"].startswith('sys.modules["dns.resolver"] = None')


def test_paho_runs_without_dnspython_and_dns_stays_importable() -> None:
    code = (
        "import sys\n"
        "import edge_agent.comms.mqtt as m\n"
        "import paho.mqtt.client as client\n"
        "assert m.paho is client and not client.HAVE_DNS and 'dns' not in sys.modules\n"
        "assert 'dns.resolver' not in sys.modules  # the marker is gone again\n"
        "import dns.resolver  # live view (aioice) imports it later: must still work\n"
        "assert dns.resolver.Resolver\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_paho_keeps_dnspython_when_it_is_already_loaded() -> None:
    code = (
        "import dns.resolver\n"
        "import paho.mqtt.client as client\n"
        "import edge_agent.comms.mqtt\n"
        "import sys\n"
        "assert sys.modules['dns.resolver'] is dns.resolver\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_pydantic_plugins_stay_off_in_the_daemon() -> None:
    code = (
        "import os\n"
        "from edge_agent.cli import prepare\n"
        "prepare('run')\n"
        "assert os.environ['PYDANTIC_DISABLE_PLUGINS'] == '__all__'\n"
        "import edge_agent.config.config\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
