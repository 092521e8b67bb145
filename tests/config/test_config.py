"""Config loading: every problem is one line naming the key path, the value and the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.config.config import Config, ConfigError, load_config
from edge_agent.core.model import NOTICE_PERIODS, Period, Purpose, Site
from edge_agent.core.policy import is_longer

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "config.toml"

VALID = """\
[device]
id = "gw-test-01"
hw_profile = "rpi5-nvme"

[storage]
root = "data/recordings"
catalog = "data/catalog.db"

[[locations]]
id = "lab-audio-1"
kind = "premises"
audio_room = true
signage = true

[[locations]]
id = "gate"
kind = "external"
signage = true

[[sources]]
id = "cam-lab-1"
url = "testsrc://?size=320x240&rate=10&tone=1"
location = "lab-audio-1"
purpose = "rnd"
audio = true

[[sources]]
id = "cam-gate-1"
url = "rtsp://user:secret@127.0.0.1:8554/gate"
location = "gate"
purpose = "security"
segment_seconds = 30
priority = 5

[[watch]]
path = "drop/gate"
location = "gate"
purpose = "marketing"

[commands]
trusted_keys = ["keys/central.pub"]
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "central.pub").write_text("not checked here\n")
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.problems


def test_valid_config_and_effective_values(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, VALID))
    assert cfg.path == tmp_path / "config.toml"
    assert cfg.device.id == "gw-test-01"
    # Relative paths resolve against the config file's folder, not the cwd.
    assert cfg.storage.root == tmp_path / "data" / "recordings"
    assert cfg.quarantine_dir == tmp_path / "data" / "quarantine"
    assert cfg.watch[0].path == tmp_path / "drop" / "gate"
    assert cfg.commands.trusted_keys == (tmp_path / "keys" / "central.pub",)
    assert cfg.profile.name == "rpi5-nvme"
    assert cfg.free_space_floor_bytes(1000 * 1024**3) == 50 * 1024**3  # profile: 5%
    assert cfg.fsync_policy().mode == "always"
    assert cfg.segment_seconds_for("cam-lab-1") == 60  # profile default
    assert cfg.segment_seconds_for(cfg.sources[1]) == 30
    assert cfg.sources[1].priority == 5
    assert cfg.sources[1].rtsp_transport == "tcp"
    assert cfg.sources[1].redacted_url == "rtsp://user:***@127.0.0.1:8554/gate"
    assert cfg.sources[0].purpose is Purpose.RND
    assert cfg.location("gate").kind is Site.EXTERNAL
    assert cfg.location("lab-audio-1").audio_room
    assert cfg.retention_periods() == NOTICE_PERIODS
    assert cfg.longer_than_notice() == []
    assert cfg.mqtt is None and cfg.liveview is None and cfg.topic_root is None
    assert cfg.clock.start_time_floor == datetime(2020, 1, 1, tzinfo=UTC)
    assert cfg.clock.trust_rtc is False
    assert cfg.clock.max_jump == timedelta(minutes=5)
    assert cfg.warnings() == []
    with pytest.raises(KeyError, match="unknown location 'nope' \\(known: gate, lab-audio-1\\)"):
        cfg.location("nope")


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, VALID))
    with pytest.raises(ValueError):
        cfg.device.id = "other"  # type: ignore[misc]


def test_example_config_passes() -> None:
    cfg = load_config(EXAMPLE)
    assert {loc.id for loc in cfg.locations} == {"gate", "lab-audio-1"}
    assert all(s.url.startswith("testsrc://") for s in cfg.sources)
    assert cfg.mqtt is not None and cfg.mqtt.host == "127.0.0.1" and cfg.mqtt.port == 1883
    assert cfg.liveview is not None and cfg.liveview.host == "127.0.0.1"


def test_storage_overrides_profile_floor(tmp_path: Path) -> None:
    text = VALID.replace(
        'catalog = "data/catalog.db"',
        'catalog = "data/catalog.db"\nfree_space_floor = "2GiB"\nfsync = "batched"',
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.profile.free_space_floor.percent == 5
    assert cfg.free_space_floor_bytes(1000 * 1024**3) == 2 * 1024**3
    assert cfg.fsync_policy().mode == "batched"


def test_full_sections_parse(tmp_path: Path) -> None:
    (tmp_path / "mqtt.pw").write_text("pw\n")
    (tmp_path / "ca.pem").write_text("ca\n")
    (tmp_path / "live.token").write_text("  0123456789abcdef0123  \n")
    text = (
        VALID
        + """
[retention]
security = "72h"
rnd_premises = "8mo"
anonymized = "1y"
allow_longer_than_notice = true

[clock]
max_jump_seconds = 120
start_time_floor = 2021-06-01
trust_rtc = true

[mqtt]
url = "mqtts://127.0.0.1:8883"
protocol = "3.1.1"
username = "gw"
password_file = "mqtt.pw"
ca_file = "ca.pem"

[liveview]
listen = "[::1]:8088"
token_file = "live.token"
ice_servers = ["stun:127.0.0.1:3478"]
"""
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.retention.security == Period(seconds=3 * 86400)
    assert cfg.retention_periods().anonymized == Period(months=12)
    assert cfg.longer_than_notice() == ["rnd_premises"]
    assert cfg.clock.start_time_floor == datetime(2021, 6, 1, tzinfo=UTC)
    assert cfg.mqtt is not None and cfg.mqtt.tls and cfg.mqtt.port == 8883
    assert cfg.topic_root == "edge/gw-test-01"
    assert cfg.liveview is not None and cfg.liveview.host == "::1"
    assert cfg.liveview.read_token() == "0123456789abcdef0123"
    assert any("rnd_premises" in w for w in cfg.warnings())


# Each case: (what to change in VALID, the exact line expected).
INVALID = {
    "unknown location": (
        ('location = "gate"\npurpose = "security"', 'location = "lab-3"\npurpose = "security"'),
        "sources[1].location: unknown location 'lab-3' (known: gate, lab-audio-1)",
    ),
    "watch unknown location": (
        ('location = "gate"\npurpose = "marketing"', 'location = "yard"\npurpose = "marketing"'),
        "watch[0].location: unknown location 'yard' (known: gate, lab-audio-1)",
    ),
    "duplicate location id": (
        ("", '[[locations]]\nid = "gate"\nkind = "premises"\n'),
        "locations[2].id: duplicate id 'gate' (also locations[1]; give each entry its own id)",
    ),
    "duplicate source id": (
        ('id = "cam-gate-1"', 'id = "cam-lab-1"'),
        "sources[1].id: duplicate id 'cam-lab-1' (also sources[0]; give each entry its own id)",
    ),
    "bad duration": (
        ("", '[retention]\nsecurity = "3 days"\n'),
        "retention.security: '3 days' is not a duration (use a whole number and a unit: "
        's, min, h, d, w, mo, y, e.g. "72h", "3d", "6mo")',
    ),
    "retention longer than notice": (
        ("", '[retention]\nrnd_premises = "7mo"\n'),
        "retention.rnd_premises: '7mo' is longer than the privacy notice allows (6mo) "
        "(set retention.allow_longer_than_notice = true to allow it)",
    ),
    "retention in days beyond months": (
        ("", '[retention]\nrnd_external = "62d"\n'),
        "retention.rnd_external: '62d' is longer than the privacy notice allows (2mo) "
        "(set retention.allow_longer_than_notice = true to allow it)",
    ),
    "unknown key top level": (
        ("^", "colour = 1\n"),
        "colour: unknown key (known keys: device, storage, locations, sources, watch, "
        "retention, clock, mqtt, commands, liveview, control, export, anonymize)",
    ),
    "unknown key nested": (
        ("", '[mqtt]\nurl = "mqtt://127.0.0.1"\nurll = "x"\n'),
        "mqtt.urll: unknown key (did you mean 'url'? known keys: url, topic_prefix, protocol, "
        "keepalive, username, password_file, ca_file, cert_file, key_file, "
        "telemetry_interval_seconds, ha_discovery)",
    ),
    "unknown key in array of tables": (
        ("priority = 5", "priority = 5\nprio = 1"),
        "sources[1].prio: unknown key (did you mean 'priority'? known keys: id, url, location, "
        "purpose, audio, segment_seconds, priority, rtsp_transport, anonymized, name_timezone, "
        "privacy_masks, mask_at_recording, anonymized_reason)",
    ),
    "bad device id": (
        ('id = "gw-test-01"', 'id = "GW_01"'),
        "device.id: 'GW_01' is not allowed (use lowercase letters, digits and '-')",
    ),
    "unknown profile": (
        ('hw_profile = "rpi5-nvme"', 'hw_profile = "rpi4"'),
        "device.hw_profile: unknown profile 'rpi4' (known: generic-linux, jetson-orin-nano, "
        "rpi5-nvme, sd-recorder, x86-gateway-hdd; or give a path to a .toml file)",
    ),
    "bad purpose": (
        ('purpose = "rnd"', 'purpose = "rdn"'),
        "sources[0].purpose: 'rdn' is not allowed (use one of: security, rnd, marketing)",
    ),
    "bad site kind": (
        ('kind = "external"', 'kind = "outside"'),
        "locations[1].kind: 'outside' is not allowed (use one of: premises, external)",
    ),
    "bad url scheme": (
        ('url = "rtsp://user:secret@127.0.0.1:8554/gate"', 'url = "ftp://127.0.0.1/gate"'),
        "sources[1].url: 'ftp://127.0.0.1/gate' has an unsupported scheme 'ftp' "
        "(use rtsp, rtsps, http, https, file or testsrc)",
    ),
    "audio room without signage": (
        ("audio_room = true\nsignage = true", "audio_room = true\nsignage = false"),
        "locations[0].signage: audio room 'lab-audio-1' has signage = false (an audio room "
        "must be signed: put up signs and set signage = true, or set audio_room = false)",
    ),
    "liveview token and token_file": (
        (
            "",
            '[liveview]\nlisten = "127.0.0.1:8088"\ntoken = "0123456789abcdef"\n'
            'token_file = "keys/central.pub"\n',
        ),
        "liveview.token: set together with liveview.token_file (keep only one; "
        "token_file keeps the secret out of the config)",
    ),
    "quoted boolean": (
        ("audio = true", 'audio = "yes"'),
        "sources[0].audio: 'yes' is not true or false (write true or false, without quotes)",
    ),
    "missing section": (
        ('[storage]\nroot = "data/recordings"\ncatalog = "data/catalog.db"\n', ""),
        "storage: required section is missing (add a [storage] table)",
    ),
    "missing key": (
        ('catalog = "data/catalog.db"\n', ""),
        "storage.catalog: required key is missing (add catalog = ...)",
    ),
    "segment out of range": (
        ("segment_seconds = 30", "segment_seconds = 1"),
        "sources[1].segment_seconds: 1 is out of range (must be >= 2)",
    ),
    "mqtt scheme": (
        ("", '[mqtt]\nurl = "http://127.0.0.1"\n'),
        "mqtt.url: 'http://127.0.0.1' has an unsupported scheme 'http' "
        "(use mqtt:// or mqtts://, e.g. mqtts://broker.example:8883)",
    ),
    "missing key file": (
        ('trusted_keys = ["keys/central.pub"]', 'trusted_keys = ["keys/other.pub"]'),
        "commands.trusted_keys[0]: file '{tmp}/keys/other.pub' not found "
        "(create it or fix the path)",
    ),
    "watch inside storage root": (
        ('path = "drop/gate"', 'path = "data/recordings/drop"'),
        "watch[0].path: '{tmp}/data/recordings/drop' overlaps storage.root "
        "'{tmp}/data/recordings' (watch a folder outside the recordings)",
    ),
    "short inline token is not echoed": (
        ("", '[liveview]\nlisten = "127.0.0.1:8088"\ntoken = "hunter2"\n'),
        "liveview.token: too short (use 16 characters or more; "
        "'edge-agent provision' writes a random one)",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_config_names_key_value_and_fix(tmp_path: Path, case: str) -> None:
    (old, new), expected = INVALID[case]
    if old == "^":  # top-level keys must come before the first table
        text = new + VALID
    elif old:
        assert VALID.count(old) == 1, f"test setup: {old!r} must occur once"
        text = VALID.replace(old, new)
    else:
        text = VALID + "\n" + new
    found = problems(tmp_path, text)
    assert found == [expected.format(tmp=tmp_path)]


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = VALID.replace(
        'location = "gate"\npurpose = "security"', 'location = "x"\npurpose = "security"'
    )
    text = text.replace('id = "gate"', 'id = "lab-audio-1"')
    found = problems(tmp_path, text)
    assert len(found) == 3, found  # duplicate id, and both users of the vanished 'gate'


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    found = problems(tmp_path, '[device]\nid = "gw"\nhw_profile = \n')
    assert found == [
        f"{tmp_path}/config.toml:3:14: invalid TOML: Invalid value (fix the syntax there)"
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert info.value.problems == [
        f"{tmp_path}/absent.toml: config file not found "
        "(pass --config, or write one with 'edge-agent provision')"
    ]


def test_secret_token_never_in_errors_or_repr(tmp_path: Path) -> None:
    text = VALID + '\n[liveview]\nlisten = "127.0.0.1:8088"\ntoken = "s3cret-s3cret-s3cret"\n'
    cfg = load_config(write(tmp_path, text))
    assert "s3cret" not in repr(cfg)
    assert "s3cret" not in cfg.model_dump_json()


def test_profile_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "custom.toml").write_text(
        'description = "bench rig"\nfree_space_floor = "1GiB"\nfsync = "always"\n'
        "max_streams = 3\nsegment_seconds = 20\n"
    )
    cfg = load_config(write(tmp_path, VALID.replace('"rpi5-nvme"', '"custom.toml"')))
    assert cfg.profile.name == "custom"
    assert cfg.free_space_floor_bytes(10**12) == 1024**3
    assert cfg.segment_seconds_for("cam-lab-1") == 20


@pytest.mark.parametrize(
    ("value", "notice", "longer"),
    [
        ("7mo", "6mo", True),
        ("6mo", "6mo", False),
        ("4d", "3d", True),
        ("72h", "3d", False),
        ("181d", "6mo", False),  # six months are never shorter than 181 days
        ("182d", "6mo", True),  # ...but from 1 September they are exactly 181
        ("1mo", "3d", True),
        ("2d", "1mo", False),
        ("59d", "2mo", False),
        ("60d", "2mo", True),  # 1 Feb + 2 months = 1 April, 59 or 60 days
    ],
)
def test_is_longer_uses_calendar_months(value: str, notice: str, longer: bool) -> None:
    assert is_longer(Period.parse(value), Period.parse(notice)) is longer


def test_warnings_for_audio_outside_audio_room(tmp_path: Path) -> None:
    text = VALID.replace('purpose = "security"\n', 'purpose = "security"\naudio = true\n')
    cfg = load_config(write(tmp_path, text))
    assert cfg.warnings() == [
        "sources[1].audio: 'cam-gate-1' wants audio but 'gate' is not an audio room, audio "
        "will not be recorded (set audio = false to silence this)"
    ]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_cli_config_check_ok_and_bad(tmp_path: Path) -> None:
    ok = run_cli("config", "check", "--config", str(EXAMPLE))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"config OK: {EXAMPLE}")
    assert ok.stderr == ""

    bad = write(tmp_path, VALID.replace('purpose = "rnd"', 'purpose = "rdn"'))
    out = run_cli("config", "check", "--config", str(bad))
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "sources[0].purpose: 'rdn' is not allowed (use one of: security, rnd, marketing)"
    ]

    js = run_cli("config", "check", "--config", str(bad), "--json")
    assert js.returncode == 2
    doc = json.loads(js.stdout)
    assert doc["ok"] is False and len(doc["problems"]) == 1

    js_ok = run_cli("config", "check", "--config", str(EXAMPLE), "--json")
    assert js_ok.returncode == 0
    assert json.loads(js_ok.stdout)["device"] == "gw-example-01"


def test_config_model_rejects_unknown_keys_directly() -> None:
    with pytest.raises(ValueError, match="extra"):
        Config.model_validate({"device": {"id": "gw", "hw_profile": "x", "extra": 1}})


# -- issue 12 items 6, 11c, 11d: secrets and exposure ------------------------------


def _with_token_file(tmp_path: Path, token: str, mode: int, listen: str) -> Path:
    token_file = tmp_path / "live.token"
    token_file.write_text(token + "\n")
    token_file.chmod(mode)
    return write(
        tmp_path, VALID + f'\n[liveview]\nlisten = "{listen}"\ntoken_file = "live.token"\n'
    )


def test_config_check_refuses_a_one_character_token_file(tmp_path: Path) -> None:
    cfg = _with_token_file(tmp_path, "x", 0o640, "127.0.0.1:8088")
    out = run_cli("config", "check", "--config", str(cfg))
    assert out.returncode == 2, out.stderr
    assert "liveview.token_file: the token in" in out.stderr
    assert "has 1 character(s) (use 16 or more" in out.stderr
    assert "x\n" not in out.stderr  # the token itself is never shown
    with pytest.raises(ConfigError, match="has 1 character"):
        load_config(cfg)  # the daemon loads the same way


def test_config_check_warns_on_world_readable_secret_files(tmp_path: Path) -> None:
    cfg = _with_token_file(tmp_path, "0123456789abcdef0123", 0o644, "127.0.0.1:8088")
    (tmp_path / "mqtt.pw").write_text("pw\n")
    (tmp_path / "mqtt.pw").chmod(0o604)
    text = cfg.read_text() + (
        '\n[mqtt]\nurl = "mqtts://127.0.0.1:8883"\nusername = "gw"\npassword_file = "mqtt.pw"\n'
    )
    cfg.write_text(text)
    out = run_cli("config", "check", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if "every user" in line]
    assert lines == [
        f"warning: mqtt.password_file: '{tmp_path / 'mqtt.pw'}' is readable by every user "
        f"on this machine (mode 0604; fix: chmod 640 {tmp_path / 'mqtt.pw'})",
        f"warning: liveview.token_file: '{tmp_path / 'live.token'}' is readable by every user "
        f"on this machine (mode 0644; fix: chmod 640 {tmp_path / 'live.token'})",
    ]
    (tmp_path / "mqtt.pw").chmod(0o640)
    (tmp_path / "live.token").chmod(0o640)
    assert "every user" not in run_cli("config", "check", "--config", str(cfg)).stderr


def test_clear_text_mqtt_password_is_warned(tmp_path: Path) -> None:
    (tmp_path / "mqtt.pw").write_text("pw\n")
    (tmp_path / "mqtt.pw").chmod(0o640)
    mqtt = '\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\nusername = "gw"\npassword_file = "mqtt.pw"\n'
    cfg = load_config(write(tmp_path, VALID + mqtt))
    clear = [w for w in cfg.warnings() if "clear text" in w]
    assert clear == [
        "mqtt.url: 'mqtt://127.0.0.1:1883' is not TLS but mqtt.password_file is set, so the "
        "password crosses the network in clear text (use mqtts:// with mqtt.ca_file)"
    ]
    out = run_cli("config", "check", "--config", str(tmp_path / "config.toml"), "--json")
    assert clear[0] in json.loads(out.stdout)["warnings"]
    tls = load_config(write(tmp_path, VALID + mqtt.replace("mqtt://", "mqtts://")))
    assert not [w for w in tls.warnings() if "clear text" in w]


@pytest.mark.parametrize(
    ("listen", "warned"),
    [
        ("127.0.0.1:8088", False),
        ("[::1]:8088", False),
        ("localhost:8088", False),
        ("0.0.0.0:8088", True),
        ("192.168.1.20:8088", True),
        ("[::]:8088", True),
    ],
)
def test_liveview_beyond_loopback_is_warned(tmp_path: Path, listen: str, warned: bool) -> None:
    cfg = load_config(_with_token_file(tmp_path, "0123456789abcdef0123", 0o640, listen))
    lines = [w for w in cfg.warnings() if w.startswith("liveview.listen")]
    assert bool(lines) is warned
    if warned:
        assert "without TLS" in lines[0] and "127.0.0.1:8088" in lines[0]


def test_liveview_max_connections_bounds(tmp_path: Path) -> None:
    base = VALID + '\n[liveview]\nlisten = "127.0.0.1:8088"\ntoken = "0123456789abcdef"\n'
    assert load_config(write(tmp_path, base)).liveview.max_connections == 64  # type: ignore[union-attr]
    assert problems(tmp_path, base + "max_connections = 2\n") == [
        "liveview.max_connections: 2 is out of range (must be >= 4)"
    ]


def test_run_logs_the_config_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edge_agent.cli.run_cmd import _log_warnings

    cfg = _with_token_file(tmp_path, "0123456789abcdef0123", 0o644, "0.0.0.0:8088")
    with caplog.at_level("WARNING", logger="edge_agent.config.config"):
        _log_warnings(load_config(cfg))
    text = caplog.text
    assert "liveview.listen" in text and "chmod 640" in text


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_future_seconds", "1e300"), ("max_future_seconds", "inf"), ("max_jump_seconds", "1e308")],
)
def test_clock_seconds_that_overflow_are_config_errors(
    tmp_path: Path, key: str, value: str
) -> None:
    """Found by fuzz/fuzz_config.py: these loaded, then timedelta() raised OverflowError
    when the daemon built its clock guard and intake settings."""
    (line,) = problems(tmp_path, VALID + f"\n[clock]\n{key} = {value}\n")
    assert line.startswith(f"clock.{key}: {float(value)!r} is out of range (must be <= 31622400")


def test_a_huge_token_file_is_not_read_whole(tmp_path: Path) -> None:
    big = tmp_path / "live.token"
    big.write_bytes(b"a" * 1_000_000)
    big.chmod(0o640)
    text = VALID + '\n[liveview]\nlisten = "127.0.0.1:8088"\ntoken_file = "live.token"\n'
    assert problems(tmp_path, text) == [
        f"liveview.token_file: '{big}' is larger than 4096 bytes, so it is not a token file "
        "(fix the path)"
    ]


@pytest.mark.parametrize("value", ["8000000mo", "1000000000000d", "101y"])
def test_retention_beyond_a_century_is_a_config_error(tmp_path: Path, value: str) -> None:
    """Found by fuzz/fuzz_config.py: '8000000mo' escaped the loader as
    ValueError('year 685008 is out of range') from the notice comparison."""
    text = VALID + f'\n[retention]\nsecurity = "{value}"\nallow_longer_than_notice = true\n'
    assert problems(tmp_path, text) == [
        f"retention.security: {value!r} is longer than 100 years (give a shorter period)"
    ]
