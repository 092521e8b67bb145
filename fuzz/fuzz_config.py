"""The config loader and its checks fed arbitrary bytes: the only failure allowed is
:class:`~edge_agent.config.config.ConfigError` with at least one non-empty line, and a
config that loads must answer everything the daemon asks of it.

Half the inputs are raw file bytes (TOML syntax, UTF-8, structure); the other
half are a valid config with fuzzed values put in place of some of its values,
which reaches the cross-checks, periods, urls, paths and the live view and MQTT
checks.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from edge_agent.config.config import ConfigError, load_config

HERE = Path(
    tempfile.mkdtemp(prefix="fuzz-config-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
)
CONFIG = HERE / "config.toml"
(HERE / "live.token").write_text("0123456789abcdef0123\n")
(HERE / "short.token").write_text("x\n")
(HERE / "mqtt.pw").write_text("pw\n")
(HERE / "central.pub").write_text("not checked\n")

TEMPLATE = [
    ("[device]", None),
    ("id", '"gw-fuzz-01"'),
    ("hw_profile", '"rpi5-nvme"'),
    ("[storage]", None),
    ("root", '"rec"'),
    ("catalog", '"catalog.db"'),
    ("free_space_floor", '"5%"'),
    ("fsync_batch_seconds", "1.5"),
    ("write_buffer", '"1MiB"'),
    ("[[locations]]", None),
    ("id", '"gate"'),
    ("kind", '"premises"'),
    ("audio_room", "true"),
    ("signage", "true"),
    ("[[sources]]", None),
    ("id", '"cam-1"'),
    ("url", '"rtsp://u:p@127.0.0.1:8554/x"'),
    ("location", '"gate"'),
    ("purpose", '"security"'),
    ("segment_seconds", "30"),
    ("audio", "true"),
    ("[[watch]]", None),
    ("path", '"drop"'),
    ("location", '"gate"'),
    ("purpose", '"rnd"'),
    ("stable_seconds", "5"),
    ("poll_seconds", "2"),
    ("[retention]", None),
    ("security", '"72h"'),
    ("anonymized", '"1y"'),
    ("[clock]", None),
    ("start_time_floor", "2021-06-01"),
    ("max_jump_seconds", "120"),
    ("max_future_seconds", "300"),
    ("[mqtt]", None),
    ("url", '"mqtt://127.0.0.1:1883"'),
    ("username", '"gw"'),
    ("password_file", '"mqtt.pw"'),
    ("protocol", "5"),
    ("[commands]", None),
    ("trusted_keys", '["central.pub"]'),
    ("[liveview]", None),
    ("listen", '"127.0.0.1:8088"'),
    ("token_file", '"live.token"'),
    ("max_viewers", "4"),
    ("max_connections", "64"),
    ("ice_servers", '["stun:127.0.0.1:3478"]'),
]
VALUES = [v for _, v in TEMPLATE if v is not None]
UNITS = ["s", "min", "h", "d", "w", "mo", "y", "%", "GiB", "MiB", ""]


def _value(fdp: atheris.FuzzedDataProvider) -> str:
    kind = fdp.ConsumeIntInRange(0, 7)
    if kind == 0:
        return fdp.ConsumeUnicodeNoSurrogates(40)  # raw text: may not even be TOML
    if kind == 1:
        text = fdp.ConsumeUnicodeNoSurrogates(60)
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if kind == 2:
        return str(fdp.ConsumeInt(8))
    if kind == 3:
        return repr(fdp.ConsumeFloat())
    if kind == 4:
        return fdp.PickValueInList(["true", "false", "[]", "{}", '""', "0", "-1", "inf", "nan"])
    if kind == 5:
        unit = fdp.PickValueInList(UNITS)
        return f'"{fdp.ConsumeIntInRange(0, 10**6)}{unit}"'
    if kind == 6:
        y, m, d = (
            fdp.ConsumeIntInRange(1, 9999),
            fdp.ConsumeIntInRange(1, 12),
            fdp.ConsumeIntInRange(1, 28),
        )
        off = fdp.PickValueInList(["", "Z", "+01:00", "-14:00", "+23:59"])
        return f"{y:04d}-{m:02d}-{d:02d}T00:00:00{off}"
    return fdp.PickValueInList(VALUES)


def _document(fdp: atheris.FuzzedDataProvider) -> bytes:
    lines = []
    for key, value in TEMPLATE:
        if value is None:
            lines.append(key)
        elif fdp.ConsumeProbability() < 0.15:
            if fdp.ConsumeBool():
                continue  # drop the key
            lines.append(f"{key} = {_value(fdp)}")
        else:
            lines.append(f"{key} = {value}")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def _use(cfg: object) -> None:
    """What the daemon and the CLI ask of a loaded config."""
    from edge_agent.config.config import Config

    assert isinstance(cfg, Config)
    for line in cfg.warnings():
        assert isinstance(line, str) and line
    cfg.fsync_policy()
    _ = cfg.clock.max_jump, cfg.clock.max_future
    for w in cfg.watch:
        cfg.location(w.location)
    cfg.retention_periods()
    cfg.free_space_floor_bytes(10**12)
    _ = cfg.quarantine_dir, cfg.topic_root
    for src in cfg.sources:
        cfg.segment_seconds_for(src)
        _ = src.redacted_url, src.scheme
        cfg.location(src.location)
    if cfg.mqtt is not None:
        _ = cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls
    if cfg.liveview is not None:
        _ = cfg.liveview.host, cfg.liveview.port


def test_one(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    check_files = fdp.ConsumeBool()
    raw = fdp.ConsumeBytes(fdp.remaining_bytes()) if fdp.ConsumeBool() else _document(fdp)
    CONFIG.write_bytes(raw)
    try:
        cfg = load_config(CONFIG, check_files=check_files)
    except ConfigError as exc:
        assert exc.problems, "ConfigError without a problem line"
        for line in exc.problems:
            assert isinstance(line, str) and line.strip(), repr(line)
        return
    _use(cfg)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()
