"""What most commands do first: load the config and open its catalog, with CLI errors.

Config problems exit 2 (one line each on stderr); a missing, foreign or too-new
catalog exits 1 with the reason.

Run as root, a command that opens the catalog first becomes the agent
(:func:`act_as_agent`): the user owning ``storage.root``, with that user's
groups and no others (root's supplementary groups are dropped), and a umask
of at least 027. Otherwise ``sudo edge-agent ingest`` would leave root-owned
folders, catalog files and audit head that the agent cannot delete or
write. When it cannot become that user it refuses, naming the fix.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.cli._base import EXIT_BAD_INPUT, EXIT_FAILURE, CliError, error
from edge_agent.store.catalog import (
    Catalog,
    CatalogError,
    CatalogMismatch,
    open_catalog_from_config,
)
from edge_agent.store.migrations import MigrationError

if TYPE_CHECKING:
    # Only for types: a command that needs no config does not load pydantic.
    from edge_agent.config.config import Config


def load_cli_config(path: Path) -> Config:
    """The config, or CliError (exit 2) with one line per problem."""
    from edge_agent.config.config import ConfigError, load_config

    try:
        # Reading and maintenance commands do not need the key and certificate files.
        return load_config(path, check_files=False)
    except ConfigError as exc:
        problems = exc.problems or [str(exc)]
        for line in problems[:-1]:
            error(line)
        raise CliError(problems[-1], EXIT_BAD_INPUT) from None


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    name: str  # the user name, or the uid as text when it has no passwd entry
    home: str
    groups: tuple[int, ...]


def state_owner(cfg: Config) -> Owner | None:
    """Who owns the agent's state: the owner of ``storage.root``, or of the catalog
    (or its folder) while the root does not exist yet; None when nothing does."""
    catalog = Path(cfg.storage.catalog)
    for candidate in (Path(cfg.storage.root), catalog, catalog.parent):
        try:
            st = candidate.stat()
        except OSError:
            continue
        return owner_of(st.st_uid, st.st_gid)
    return None


def owner_of(uid: int, fallback_gid: int) -> Owner:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return Owner(uid, fallback_gid, str(uid), "/", ())
    return Owner(
        uid, pw.pw_gid, pw.pw_name, pw.pw_dir, tuple(os.getgrouplist(pw.pw_name, pw.pw_gid))
    )


def _tighten_umask() -> None:
    os.umask(os.umask(0o027) | 0o027)


def _foreign_state(cfg: Config, owner: Owner) -> list[Path]:
    """Catalog files a previous root run left, which ``owner`` could not write."""
    from edge_agent.store.audit import head_file_path

    catalog = Path(cfg.storage.catalog)
    names = [catalog, Path(f"{catalog}-wal"), Path(f"{catalog}-shm"), head_file_path(catalog)]
    out = []
    for p in names:
        try:
            uid = p.lstat().st_uid
        except OSError:
            continue
        if uid != owner.uid:
            out.append(p)
    return out


def _allows(path: Path, owner: Owner, bit: int) -> bool:
    """Mode bits only (no ACLs): can ``owner`` read (4) or search (1) ``path``?"""
    st = path.stat()
    if st.st_uid == owner.uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid == owner.gid or st.st_gid in owner.groups:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def unreadable_code(owner: Owner) -> Path | None:
    """The first folder of Python or of the agent that ``owner`` cannot read, if any.

    After the switch, every import still to come is read as ``owner``: an
    interpreter under root's home would fail half-way through the command.
    """
    import edge_agent

    for top in (Path(os.__file__).parent, Path(edge_agent.__file__).parent):
        folder = Path(os.path.realpath(top))
        chain = [*reversed(folder.parents), folder]
        for d in chain:
            if not _allows(d, owner, 1) or (d == folder and not _allows(d, owner, 4)):
                return d
    return None


def switch_user(owner: Owner) -> None:
    """Become ``owner`` for good: groups, then gid, then uid (the order that works)."""
    os.setgroups(list(owner.groups))
    os.setresgid(owner.gid, owner.gid, owner.gid)
    os.setresuid(owner.uid, owner.uid, owner.uid)
    os.environ["HOME"] = owner.home
    os.environ["USER"] = os.environ["LOGNAME"] = owner.name


_acted: list[Owner | None] = []


def act_as_agent(cfg: Config) -> Owner | None:
    """Run the rest of this command as the owner of the agent's state (see module doc).

    Returns the user switched to, or None when nothing changed (not root, or
    the state belongs to root). Raises CliError (exit 1) with the fix when the
    state has no owner yet, a previous root run left catalog files behind, or
    the switch is not permitted. Safe to call more than once.
    """
    if _acted:
        return _acted[0]
    _tighten_umask()
    if os.geteuid() != 0:
        _acted.append(None)
        return None
    owner = state_owner(cfg)
    root = Path(cfg.storage.root)
    if owner is None:
        raise CliError(
            f"storage root {root} does not exist, and a command run as root would create it "
            "owned by root, where the agent cannot delete: create it for the agent's user "
            f"first (install -d -o edge-agent -g edge-agent -m 0750 {root}), or run this "
            "command as that user (sudo -u edge-agent edge-agent ...)",
            EXIT_FAILURE,
        )
    if owner.uid == 0:
        _acted.append(None)
        return None
    foreign = _foreign_state(cfg, owner)
    if foreign:
        shown = " ".join(str(p) for p in foreign)
        raise CliError(
            f"{shown}: not owned by {owner.name}, who owns {root} and runs the agent "
            f"(left by an earlier run as root?): chown {owner.name}: {shown}",
            EXIT_FAILURE,
        )
    folder = _nearest_existing(Path(cfg.storage.catalog).parent)
    if not (_allows(folder, owner, 2) and _allows(folder, owner, 1)):
        raise CliError(
            f"{owner.name}, who owns {root} and runs the agent, cannot write in {folder}, "
            f"where the catalog and its WAL live: chown {owner.name}: {folder}",
            EXIT_FAILURE,
        )
    blocked = unreadable_code(owner)
    if blocked is not None:
        raise CliError(
            f"{owner.name}, who owns {root} and runs the agent, cannot read {blocked}, where "
            "this edge-agent's Python code is: run the installed agent as that user "
            f"(sudo -u {owner.name} /opt/edge-agent/bin/edge-agent ...)",
            EXIT_FAILURE,
        )
    try:
        switch_user(owner)
    except OSError as exc:
        raise CliError(
            f"cannot switch to {owner.name}, the owner of {root} ({exc.strerror or exc}): "
            f"run the command as that user (sudo -u {owner.name} edge-agent ...)",
            EXIT_FAILURE,
        ) from None
    _acted.append(owner)
    return owner


def open_cli_catalog(cfg: Config, *, create: bool = False) -> Catalog:
    """The config's catalog, opened as the agent (:func:`act_as_agent`); a catalog of
    another disk is shown as such (exit 1)."""
    act_as_agent(cfg)
    try:
        return open_catalog_from_config(cfg, create=create)
    except CatalogMismatch as exc:
        raise CliError(f"catalog does not match this disk: {exc}", EXIT_FAILURE) from None
    except (CatalogError, MigrationError) as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None


def check_location(cfg: Config, location: str) -> None:
    """A location for existing footage: configured, or one the catalog holds footage for.

    A room removed from the config keeps its footage until its deadlines, and a
    person filmed there may still ask for erasure (docs/retention-policy.md).
    """
    configured = sorted(loc.id for loc in cfg.locations)
    if location in configured:
        return
    cat = open_cli_catalog(cfg)
    try:
        if cat.recordings.has_location(location):
            return
        known = sorted({*configured, *cat.recordings.locations()})
    finally:
        cat.close()
    raise CliError(
        f"--location: unknown location {location!r} (known: {', '.join(known) or 'none'}); "
        "use a location id from the config or one the catalog holds footage for",
        EXIT_BAD_INPUT,
    )
