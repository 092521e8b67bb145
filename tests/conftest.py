"""Fixtures every test may use: a broker, a free port, a catalog, recordings, the CLI.

All real: a mosquitto process, a SQLite file, media encoded with PyAV and adopted
through the intake, the CLI as a subprocess. Helpers they are built on live in
``tests/support/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from edge_agent.core.model import Purpose, Recording
from edge_agent.store.catalog import Catalog
from tests.support import broker as broker_support
from tests.support.cli import CliRunner, run_cli
from tests.support.recordings import MakeRecording, intake_settings
from tests.support.retention import NOW, adopt


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    return broker_support.free_port()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[broker_support.Broker]:
    """A mosquitto of this test's own on a free loopback port, stopped (killed if stuck) after."""
    b = broker_support.Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    """A real SQLite catalog (tmp_path/catalog.db) of device gw-test, footage in tmp_path/rec."""
    cat = Catalog.open(tmp_path / "catalog.db", device_id="gw-test", storage_root=tmp_path / "rec")
    yield cat
    cat.close()


@pytest.fixture
def make_recording(tmp_path: Path, catalog: Catalog) -> MakeRecording:
    """Adopt a real 0.4 s mkv made with PyAV into `catalog`, tagged as asked.

    Adoption is what most tests of retention, erasure and the CLI do: the file goes
    through the real intake (probe, tags, hash) into tmp_path/rec.
    """
    settings = intake_settings(tmp_path)

    def make(
        name: str,
        *,
        start: datetime = NOW,
        purpose: Purpose = Purpose.SECURITY,
        location: str = "gate",
        anonymized: bool = False,
    ) -> Recording:
        return adopt(
            catalog,
            settings,
            name,
            start=start,
            purpose=purpose,
            location=location,
            anonymized=anonymized,
        )

    return make


@pytest.fixture
def cli() -> CliRunner:
    """``cli("status", "--json")``: the real CLI as a subprocess from the repo root."""
    return run_cli
