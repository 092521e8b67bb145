"""``edge-agent provision``: flags to a valid config, checked by the real CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.config.config import load_config
from edge_agent.config.provision import parse_location, parse_source, parse_watch
from tests.support.cli import CliRunner


def _flags(tmp_path: Path) -> list[str]:
    return [
        "provision",
        "--profile",
        "generic-linux",
        "--device-id",
        "gw-test-01",
        "--broker",
        "mqtt://127.0.0.1:1883",
        "--location",
        "gate:premises:signage",
        "--location",
        "lab-1:premises:audio:signage",
        "--source",
        "cam-gate:rtsp://viewer:s3cret@192.0.2.10:554/stream:gate:security",
        "--source",
        "cam-lab:testsrc://?size=320x240&tone=1:lab-1:rnd:audio",
        "--watch",
        f"{tmp_path / 'drop'}:gate:security",
        "--storage-root",
        str(tmp_path / "rec"),
        "--catalog",
        str(tmp_path / "catalog.db"),
        "--liveview-listen",
        "127.0.0.1:8088",
        "--out",
        str(tmp_path / "etc" / "config.toml"),
    ]


def test_round_trip_passes_config_check(tmp_path: Path, cli: CliRunner) -> None:
    (tmp_path / "etc").mkdir()
    out = cli(*_flags(tmp_path))
    assert out.returncode == 0, out.stderr
    cfg_path = tmp_path / "etc" / "config.toml"
    assert "wrote" in out.stdout and "new token" in out.stdout

    check = cli("config", "check", "--config", str(cfg_path))
    assert check.returncode == 0, check.stderr

    cfg = load_config(cfg_path)
    assert cfg.device.id == "gw-test-01" and cfg.profile.name == "generic-linux"
    assert [(loc.id, loc.audio_room, loc.signage) for loc in cfg.locations] == [
        ("gate", False, True),
        ("lab-1", True, True),
    ]
    gate, lab = cfg.sources
    assert gate.url == "rtsp://viewer:s3cret@192.0.2.10:554/stream" and not gate.audio
    assert lab.url == "testsrc://?size=320x240&tone=1" and lab.audio
    assert cfg.watch[0].path == tmp_path / "drop"
    assert cfg.mqtt is not None and cfg.mqtt.url == "mqtt://127.0.0.1:1883"

    # The token is in its own file, not inline; neither file is world-readable.
    assert cfg.liveview is not None and cfg.liveview.token is None
    token_file = tmp_path / "etc" / "liveview.token"
    assert cfg.liveview.token_file == token_file
    token = cfg.liveview.read_token()
    assert len(token) >= 32
    assert token not in cfg_path.read_text()
    for path in (cfg_path, token_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640

    # No overwrite without --force; with --force the token is kept.
    again = cli(*_flags(tmp_path))
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--force" in again.stderr
    forced = cli(*_flags(tmp_path), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "kept the existing token" in forced.stdout
    assert load_config(cfg_path).liveview.read_token() == token  # type: ignore[union-attr]


def test_missing_flags_without_a_terminal_exit_2(tmp_path: Path, cli: CliRunner) -> None:
    out = cli("provision", "--profile", "generic-linux")
    assert out.returncode == 2
    assert "--device-id" in out.stderr and "--out" in out.stderr
    assert "--profile" not in out.stderr.split("missing", 1)[1]


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--location", "gate", "needs an id and a kind"),
        ("--location", "gate:indoors:signage", "kind 'indoors' is not one of premises, external"),
        ("--location", "gate:premises:sign", "unknown flag 'sign'"),
        ("--source", "cam:rtsp://192.0.2.1/s:gate:spying", "purpose 'spying'"),
        ("--source", "cam:gate:security", "too few fields"),
        ("--watch", "/srv/drop:gate", "too few fields"),
    ],
)
def test_bad_specs_exit_2_with_a_clear_line(
    tmp_path: Path, flag: str, value: str, expected: str, cli: CliRunner
) -> None:
    out = cli(
        "provision",
        "--profile",
        "generic-linux",
        "--device-id",
        "gw-1",
        "--out",
        str(tmp_path / "c.toml"),
        flag,
        value,
    )
    assert out.returncode == 2
    assert expected in out.stderr
    assert not (tmp_path / "c.toml").exists()


def test_invalid_config_is_not_written(tmp_path: Path, cli: CliRunner) -> None:
    out = cli(
        "provision",
        "--profile",
        "no-such-profile",
        "--device-id",
        "gw-1",
        "--out",
        str(tmp_path / "c.toml"),
        "--source",
        "cam:rtsp://192.0.2.1/s:nowhere:security",
    )
    assert out.returncode == 2
    assert "sources[0].location: unknown location 'nowhere'" in out.stderr
    assert "device.hw_profile" in out.stderr
    assert not (tmp_path / "c.toml").exists()
    bad_id = cli(
        "provision",
        "--profile",
        "generic-linux",
        "--device-id",
        "GW_1",
        "--out",
        str(tmp_path / "c.toml"),
    )
    assert bad_id.returncode == 2 and "device.id: 'GW_1' is not allowed" in bad_id.stderr


def test_unsigned_location_warns(tmp_path: Path, cli: CliRunner) -> None:
    out = cli(
        "provision",
        "--profile",
        "generic-linux",
        "--device-id",
        "gw-1",
        "--out",
        str(tmp_path / "c.toml"),
        "--location",
        "yard:external",
        "--source",
        "cam:testsrc://:yard:security",
    )
    assert out.returncode == 0, out.stderr
    assert "warning: locations[0].signage" in out.stderr


def test_spec_parsers_read_urls_with_colons() -> None:
    src = parse_source("c1:rtsp://u:p@[2001:db8::1]:8554/a:b:gate:marketing:audio")
    assert (src.url, src.location, src.purpose, src.audio) == (
        "rtsp://u:p@[2001:db8::1]:8554/a:b",
        "gate",
        "marketing",
        True,
    )
    assert parse_watch("/mnt/c:d/drop:gate:rnd").path == "/mnt/c:d/drop"
    assert parse_location("x:external:signage:audio").audio_room


def test_interactive_on_a_terminal(tmp_path: Path) -> None:
    # A pseudo-terminal makes stdin a TTY, as for an installer at a console.
    import pty

    answers = (
        "\n".join(
            [
                "generic-linux",
                "gw-tty-01",
                str(tmp_path / "tty.toml"),
                "gate:premises:signage",
                "",
                "cam-1:testsrc://:gate:security",
                "",
                "",
                "",
                "",
            ]
        )
        + "\n"
    )
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "provision"],
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(secondary)
    os.write(primary, answers.encode())
    try:
        _out, err = proc.communicate(timeout=60)
    finally:
        os.close(primary)
    assert proc.returncode == 0, err
    cfg = load_config(tmp_path / "tty.toml")
    assert cfg.device.id == "gw-tty-01" and cfg.sources[0].id == "cam-1"
    assert cfg.mqtt is None and cfg.liveview is None


def test_liveview_defaults_to_loopback_and_lan_is_warned(tmp_path: Path, cli: CliRunner) -> None:
    """Issue 12 item 6: provision suggests 127.0.0.1:8088, never 0.0.0.0."""
    help_text = cli("provision", "--help").stdout
    assert "0.0.0.0" not in help_text and "127.0.0.1:8088" in help_text
    (tmp_path / "etc").mkdir()
    flags = _flags(tmp_path)
    i = flags.index("--liveview-listen")
    alone = [*flags[:i], "--liveview-listen", *flags[i + 2 :]]
    out = cli(*alone)
    assert out.returncode == 0, out.stderr
    cfg = load_config(tmp_path / "etc" / "config.toml")
    assert cfg.liveview is not None and cfg.liveview.listen == "127.0.0.1:8088"
    assert "liveview.listen" not in out.stderr

    lan = [*flags[:i], "--liveview-listen", "0.0.0.0:8088", *flags[i + 2 :], "--force"]
    out = cli(*lan)
    assert out.returncode == 0, out.stderr
    assert "liveview.listen: '0.0.0.0:8088' is reachable from the network" in out.stderr
