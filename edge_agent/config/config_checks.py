"""Problems in a config, as lines a person can act on.

Two producers: :func:`format_validation_error` turns pydantic's errors into
``<key path>: <problem naming the value> (<fix>)`` lines, and
:func:`cross_check` finds what no single section can see (unknown locations,
duplicate ids, unsigned audio rooms, retention beyond the privacy notice,
overlapping folders, missing key files).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from edge_agent.core.model import NOTICE_PERIODS

if TYPE_CHECKING:
    from edge_agent.config.config import Config, LiveView, Mqtt

# A bearer token is the only thing between the LAN and the cameras' live
# pictures: 16 characters of provision's random token are 96 bits.
MIN_TOKEN_LENGTH = 16


# -- pydantic errors as key-path lines ---------------------------------------


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or "(" in part:
            continue  # a validator or union tag, not a key the user wrote
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _model_class(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_class(arg)
        if found is not None:
            return found
    return None


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        model = _model_class(model.model_fields[part].annotation)
    return model


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _choices(expected: str) -> str:
    found = re.findall(r"'([^']*)'", expected)
    return ", ".join(found) if found else expected


def _error_line(err: Any, root: type[BaseModel]) -> str:
    loc: tuple[int | str, ...] = tuple(err["loc"])
    path = _key_path(loc)
    kind: str = err["type"]
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    secret = bool(loc) and str(loc[-1]) in ("token", "password")
    shown = "(hidden)" if secret else _short(value)
    if kind == "extra_forbidden":
        parent = _model_at(root, loc[:-1])
        known = list(parent.model_fields) if parent else []
        import difflib  # only for a typo: the daemon need not hold it for months

        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{path}: unknown key ({hint}known keys: {', '.join(known)})"
    if kind == "missing":
        if _model_at(root, loc) is not None and not isinstance(loc[-1], int):
            return f"{path}: required section is missing (add a [{path}] table)"
        return f"{path}: required key is missing (add {loc[-1]} = ...)"
    if kind == "value_error":
        return f"{path}: {ctx.get('error', err['msg'])}"
    if kind in ("literal_error", "enum"):
        return f"{path}: {shown} is not allowed (use one of: {_choices(ctx.get('expected', ''))})"
    if kind == "bool_type":
        return f"{path}: {shown} is not true or false (write true or false, without quotes)"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{path}: {shown} is not a whole number (write a number without quotes, e.g. 60)"
    if kind in ("float_type", "float_parsing"):
        return f"{path}: {shown} is not a number (write a number without quotes, e.g. 5)"
    if kind == "string_type":
        return f"{path}: {shown} is not text (put it in double quotes)"
    if kind == "string_too_short":
        return f"{path}: empty (give a value or remove the key)"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}
        op = bound.get(kind, "<=")
        limit = next(iter(ctx.values()), "?")
        return f"{path}: {shown} is out of range (must be {op} {limit})"
    if kind in ("list_type", "tuple_type"):
        return f"{path}: {shown} is not a list (write [ ... ] or repeat [[{path}]] tables)"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{path}: {shown} is not a table (write a [{path}] table)"
    return f"{path}: {shown}: {err['msg']}"


def format_validation_error(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """One line per pydantic error, keyed by TOML path (``sources[1].url``)."""
    return [_error_line(e, root) for e in exc.errors()]


# -- checks that need the whole file -------------------------------------------


def _duplicates(kind: str, ids: list[str], what: str) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, item_id in enumerate(ids):
        if item_id in seen:
            out.append(
                f"{kind}[{i}].{what}: duplicate {what} {item_id!r} (also {kind}[{seen[item_id]}]; "
                f"give each entry its own {what})"
            )
        else:
            seen[item_id] = i
    return out


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def cross_check(cfg: Config, *, check_files: bool = True) -> list[str]:
    """Problems that no single section can see, one line each."""
    problems: list[str] = []
    problems += _duplicates("locations", [loc.id for loc in cfg.locations], "id")
    problems += _duplicates("sources", [s.id for s in cfg.sources], "id")
    problems += _duplicates("watch", [str(w.path) for w in cfg.watch], "path")

    known = {loc.id for loc in cfg.locations}
    known_text = ", ".join(sorted(known)) or "none; add a [[locations]] table"
    named = [("sources", i, s.location) for i, s in enumerate(cfg.sources)]
    named += [("watch", i, w.location) for i, w in enumerate(cfg.watch)]
    for kind, i, location in named:
        if location not in known:
            problems.append(
                f"{kind}[{i}].location: unknown location {location!r} (known: {known_text})"
            )

    for i, loc in enumerate(cfg.locations):
        if loc.audio_room and not loc.signage:
            problems.append(
                f"locations[{i}].signage: audio room {loc.id!r} has signage = false "
                "(an audio room must be signed: put up signs and set signage = true, "
                "or set audio_room = false)"
            )

    if not cfg.retention.allow_longer_than_notice:
        for name in cfg.retention.longer_than_notice():
            problems.append(
                f"retention.{name}: '{getattr(cfg.retention, name)}' is longer than the privacy "
                f"notice allows ({getattr(NOTICE_PERIODS, name)}) "
                "(set retention.allow_longer_than_notice = true to allow it)"
            )

    problems += _storage_checks(cfg)
    problems += _mqtt_checks(cfg.mqtt)
    problems += _liveview_checks(cfg.liveview)
    if check_files:
        problems += _file_checks(cfg)
        from edge_agent.config.storage_checks import config_problems  # reads the real disk

        problems += config_problems(cfg)
    return problems


def _storage_checks(cfg: Config) -> list[str]:
    out = []
    root = cfg.storage.root
    if cfg.storage.quarantine is not None and _inside(cfg.storage.quarantine, root):
        out.append(
            f"storage.quarantine: '{cfg.storage.quarantine}' is inside storage.root "
            f"(put it outside, e.g. '{root.parent / 'quarantine'}')"
        )
    if _inside(cfg.storage.catalog, root):
        out.append(
            f"storage.catalog: '{cfg.storage.catalog}' is inside storage.root "
            f"(put it outside, e.g. '{root.parent / 'catalog.db'}')"
        )
    for i, w in enumerate(cfg.watch):
        if _inside(w.path, root) or _inside(root, w.path):
            out.append(
                f"watch[{i}].path: '{w.path}' overlaps storage.root '{root}' "
                "(watch a folder outside the recordings)"
            )
    return out


def _mqtt_checks(mqtt: Mqtt | None) -> list[str]:
    if mqtt is None:
        return []
    out = []
    if not mqtt.tls:
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(mqtt, key) is not None:
                out.append(
                    f"mqtt.{key}: set but mqtt.url {mqtt.url!r} is not TLS "
                    "(use an mqtts:// url, or remove the key)"
                )
    if (mqtt.cert_file is None) != (mqtt.key_file is None):
        missing = "key_file" if mqtt.key_file is None else "cert_file"
        out.append(
            f"mqtt.{missing}: missing (a client certificate needs both cert_file and key_file)"
        )
    if mqtt.password_file is not None and mqtt.username is None:
        out.append("mqtt.username: missing (password_file is set; add the user name it belongs to)")
    return out


def _liveview_checks(lv: LiveView | None) -> list[str]:
    if lv is None:
        return []
    if lv.token is not None and lv.token_file is not None:
        return [
            "liveview.token: set together with liveview.token_file (keep only one; "
            "token_file keeps the secret out of the config)"
        ]
    if lv.token is None and lv.token_file is None:
        return ["liveview: no token (set liveview.token_file, or liveview.token)"]
    if lv.token is not None and len(lv.token.get_secret_value()) < MIN_TOKEN_LENGTH:
        return [
            f"liveview.token: too short (use {MIN_TOKEN_LENGTH} characters or more; "
            "'edge-agent provision' writes a random one)"
        ]
    return []


def _file_checks(cfg: Config) -> list[str]:
    wanted: list[tuple[str, Path | None]] = []
    if cfg.mqtt is not None:
        for key in ("password_file", "ca_file", "cert_file", "key_file"):
            wanted.append((f"mqtt.{key}", getattr(cfg.mqtt, key)))
    wanted += [(f"commands.trusted_keys[{i}]", p) for i, p in enumerate(cfg.commands.trusted_keys)]
    if cfg.liveview is not None:
        wanted.append(("liveview.token_file", cfg.liveview.token_file))
    out = [
        f"{key}: file '{p}' not found (create it or fix the path)"
        for key, p in wanted
        if p is not None and not p.is_file()
    ]
    lv = cfg.liveview
    if lv is not None and lv.token_file is not None and lv.token_file.is_file():
        from edge_agent.config.config import ConfigError

        try:
            length = len(lv.read_token())
        except ConfigError as exc:
            out += exc.problems
        except OSError as exc:
            out.append(
                f"liveview.token_file: cannot read '{lv.token_file}' ({exc.strerror or exc})"
            )
        else:
            if length < MIN_TOKEN_LENGTH:
                out.append(
                    f"liveview.token_file: the token in '{lv.token_file}' has {length} "
                    f"character(s) (use {MIN_TOKEN_LENGTH} or more: "
                    f"openssl rand -base64 24 > {lv.token_file})"
                )
    return out


# -- warnings: legal, but exposes something ---------------------------------------


def _secret_files(cfg: Config) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    if cfg.mqtt is not None:
        for key in ("password_file", "key_file"):
            p = getattr(cfg.mqtt, key)
            if p is not None:
                out.append((f"mqtt.{key}", p))
    if cfg.liveview is not None and cfg.liveview.token_file is not None:
        out.append(("liveview.token_file", cfg.liveview.token_file))
    return out


def secret_file_warnings(cfg: Config) -> list[str]:
    """Secret files that other local users can read or change."""
    out = []
    for key, path in _secret_files(cfg):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue  # a missing file is a problem of its own (_file_checks)
        if stat.S_IMODE(mode) & 0o006:
            what = "readable" if mode & 0o004 else "writable"
            out.append(
                f"{key}: '{path}' is {what} by every user on this machine "
                f"(mode {stat.S_IMODE(mode):04o}; fix: chmod 640 {path})"
            )
    return out


def is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def exposure_warnings(cfg: Config) -> list[str]:
    """Secrets or pictures that would cross the network in clear text."""
    out = []
    mqtt = cfg.mqtt
    if mqtt is not None and not mqtt.tls and mqtt.password_file is not None:
        out.append(
            f"mqtt.url: {mqtt.url!r} is not TLS but mqtt.password_file is set, so the "
            "password crosses the network in clear text (use mqtts:// with mqtt.ca_file)"
        )
    lv = cfg.liveview
    if lv is not None and not is_loopback_host(lv.host):
        out.append(
            f"liveview.listen: {lv.listen!r} is reachable from the network without TLS: "
            "the token and the pictures cross it in clear text (listen on 127.0.0.1:"
            f"{lv.port} and reach it through an SSH tunnel or a TLS reverse proxy)"
        )
    return out
