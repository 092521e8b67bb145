#!/usr/bin/env bash
# Install, upgrade or remove edge-agent from a wheelhouse, with no network.
#
#   sudo deploy/install.sh --wheelhouse /media/usb/wheelhouse
#   sudo deploy/install.sh --wheelhouse DIR            # again: upgrade in place
#   sudo deploy/install.sh --uninstall                 # keeps config, catalog, recordings
#   sudo deploy/install.sh --uninstall --purge         # removes them too
#   sudo deploy/install.sh --wheelhouse DIR --root /srv/image   # stage into an image
#
# Layout (under --root when given):
#   /opt/edge-agent                 virtualenv (bin/edge-agent), docs
#   /etc/edge-agent/config.toml     root:edge-agent 0640; written once, never overwritten
#   /var/lib/edge-agent             state (catalog, recordings), edge-agent 0750
#   /var/log/edge-agent             logs, edge-agent 0750
#   /etc/systemd/system             edge-agent.service, edge-agent-reconcile.{service,timer},
#                                   edge-agent-background.slice
#   /usr/lib/sysusers.d/edge-agent.conf   the user (systemd-sysusers, at boot)
#   /usr/lib/tmpfiles.d/edge-agent.conf   owners and modes above (systemd-tmpfiles, at boot)
#
# Options:
#   --wheelhouse DIR   wheels from deploy/build-wheelhouse.sh (checked against SHA256SUMS)
#   --root DIR         stage into the root file system of an image: no user is created
#                      and nothing is chowned or enabled here; the image's systemd does
#                      that at first boot from the sysusers.d and tmpfiles.d files
#   --target-python P  the image's interpreter, as a path inside it (default /usr/bin/python3)
#   --venv MODE        how the image's virtualenv is built (with --root):
#                        chroot   the image's own Python builds it in a chroot of DIR
#                                 (needs root; another architecture needs qemu-user-static)
#                        rewrite  this machine's --python builds it, then its paths are
#                                 rewritten to /opt/edge-agent and the image's interpreter
#                                 (same Python X.Y and architecture only; no root needed)
#                        auto     chroot when it works, else rewrite (default)
#   --python PY        interpreter for the virtualenv without --root, and for --venv rewrite
#                      (default python3; 3.11+)
#   --config FILE      config to install when none exists (default: a minimal one
#                      written with `edge-agent provision`; edit it, then run doctor)
#   --device-id ID     device id for that minimal config (default: from the host name)
#   --no-enable        do not enable/start the units
#   --uninstall [--purge]
#
# Either way the result runs only inside the image: #! lines name
# /opt/edge-agent/bin/python, which links to the image's interpreter.
set -euo pipefail

SELF_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$SELF_DIR/.." && pwd)"
ROOT=""
WHEELHOUSE=""
PY="${PYTHON:-python3}"
TARGET_PY=/usr/bin/python3
VENV_MODE=auto
CONFIG_SRC=""
DEVICE_ID=""
ENABLE=1
UNINSTALL=0
PURGE=0
USER_NAME=edge-agent

die() { echo "install: $*" >&2; exit 2; }
say() { echo "install: $*"; }
warn() { echo "install: warning: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
    --root) ROOT="$2"; shift 2 ;;
    --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --target-python) TARGET_PY="$2"; shift 2 ;;
    --venv) VENV_MODE="$2"; shift 2 ;;
    --config) CONFIG_SRC="$2"; shift 2 ;;
    --device-id) DEVICE_ID="$2"; shift 2 ;;
    --no-enable) ENABLE=0; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h | --help) sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
[ "$PURGE" -eq 0 ] || [ "$UNINSTALL" -eq 1 ] || die "--purge goes with --uninstall"
case "$VENV_MODE" in auto | chroot | rewrite) ;; *) die "--venv is auto, chroot or rewrite" ;; esac
case "$TARGET_PY" in /*) ;; *) die "--target-python is an absolute path inside the image" ;; esac

if [ -n "$ROOT" ]; then
    mkdir -p "$ROOT"
    ROOT="$(cd "$ROOT" && pwd)"
    [ "$ROOT" != "/" ] || ROOT=""
fi
STAGING=0
[ -z "$ROOT" ] || STAGING=1
PREFIX="$ROOT/opt/edge-agent"
ETC="$ROOT/etc/edge-agent"
STATE="$ROOT/var/lib/edge-agent"
LOGS="$ROOT/var/log/edge-agent"
UNITS="$ROOT/etc/systemd/system"
SYSUSERS="$ROOT/usr/lib/sysusers.d/edge-agent.conf"
TMPFILES="$ROOT/usr/lib/tmpfiles.d/edge-agent.conf"
UNIT_FILES=(edge-agent.service edge-agent-reconcile.service edge-agent-reconcile.timer
    edge-agent-background.slice)

# Real users and systemctl only on the live system, as root.
LIVE=0
[ "$STAGING" -eq 0 ] && [ "$(id -u)" -eq 0 ] && LIVE=1
systemd_running() { [ "$LIVE" -eq 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

# -- uninstall ------------------------------------------------------------------
if [ "$UNINSTALL" -eq 1 ]; then
    if systemd_running; then
        systemctl disable --now edge-agent-reconcile.timer edge-agent.service 2>/dev/null || true
    fi
    for u in "${UNIT_FILES[@]}"; do rm -f "$UNITS/$u"; done
    rm -rf "$UNITS/edge-agent.service.d/10-paths.conf" "$UNITS/edge-agent-reconcile.service.d/10-paths.conf"
    rmdir "$UNITS/edge-agent.service.d" "$UNITS/edge-agent-reconcile.service.d" 2>/dev/null || true
    systemd_running && systemctl daemon-reload
    rm -rf "$PREFIX" "$SYSUSERS" "$TMPFILES"
    if [ "$PURGE" -eq 1 ]; then
        rm -rf "$ETC" "$STATE" "$LOGS"
        if [ "$LIVE" -eq 1 ] && getent passwd "$USER_NAME" >/dev/null; then
            userdel "$USER_NAME" 2>/dev/null || warn "could not remove user $USER_NAME"
        fi
        say "purged: program, config, catalog and recordings under $STATE"
        say "recordings or watched folders outside $STATE were not touched"
    else
        say "removed the program and units; kept $ETC, $STATE (catalog, recordings) and $LOGS"
        say "(run with --uninstall --purge to remove them)"
    fi
    exit 0
fi

# -- install / upgrade ----------------------------------------------------------
[ -n "$WHEELHOUSE" ] || die "give --wheelhouse DIR (build one with deploy/build-wheelhouse.sh)"
[ -d "$WHEELHOUSE" ] || die "wheelhouse $WHEELHOUSE is not a folder"
WHEELHOUSE="$(cd "$WHEELHOUSE" && pwd)"
[ -f "$WHEELHOUSE/SHA256SUMS" ] || die "$WHEELHOUSE/SHA256SUMS missing (not made by build-wheelhouse.sh?)"
(cd "$WHEELHOUSE" && sha256sum --quiet -c SHA256SUMS) || die "wheelhouse damaged: checksums differ"

# A path inside the image with its symlinks followed inside the image (an
# absolute link names the image's file, not this machine's); prints nothing
# when it ends nowhere.
resolve_in_root() {
    local p="$1" n=0 t
    while [ -L "$ROOT$p" ]; do
        n=$((n + 1))
        [ "$n" -le 40 ] || return 0
        t="$(readlink "$ROOT$p")"
        case "$t" in /*) p="$t" ;; *) p="$(dirname "$p")/$t" ;; esac
    done
    [ -f "$ROOT$p" ] && echo "$p"
    return 0
}
# ELF class and machine bytes: equal for interpreters that run the same wheels.
elf_arch() { od -An -tx1 -j4 -N1 "$1" 2>/dev/null | tr -d ' \n'; od -An -tx1 -j18 -N2 "$1" 2>/dev/null | tr -d ' \n'; }
# Run a command inside the image, with none of this machine's environment.
in_root() {
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
        PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 chroot "$ROOT" "$@"
}

# How the virtualenv is built: on this machine (no --root), in a chroot of the
# image, or here and then rewritten to the image's paths.
MODE=host
if [ "$STAGING" -eq 1 ]; then
    tpy="$(resolve_in_root "$TARGET_PY")"
    [ -n "$tpy" ] || die "$ROOT$TARGET_PY not found: install python3 (3.11+) and python3-venv in the image first, or name its interpreter with --target-python"
    chroot_err=""
    if [ "$VENV_MODE" != rewrite ]; then
        if [ "$(id -u)" -ne 0 ]; then
            chroot_err="not root"
        elif ! chroot_err="$(in_root "$TARGET_PY" -c 'import sys, venv, ensurepip
sys.exit("Python %d.%d is older than 3.11" % sys.version_info[:2] if sys.version_info < (3, 11) else 0)' 2>&1)"; then
            chroot_err="${chroot_err:-exit status $?}"
        else
            MODE=chroot
        fi
    fi
    if [ "$MODE" = chroot ]; then
        say "building the virtualenv inside $ROOT with its $TARGET_PY (chroot)"
    elif [ "$VENV_MODE" = chroot ]; then
        die "cannot run $TARGET_PY in a chroot of $ROOT: $(echo "$chroot_err" | tail -n 1) (another architecture needs qemu-user-static and binfmt_misc; python3-venv must be installed in the image)"
    else
        MODE=rewrite
        [ -z "$chroot_err" ] || say "no chroot ($(echo "$chroot_err" | tail -n 1)): building the virtualenv here and rewriting its paths"
        tver="$(basename "$tpy" | sed -n 's/^python\(3\.[0-9]*\)$/\1/p')"
        [ -n "$tver" ] || die "cannot tell the Python version of $TARGET_PY (it resolves to $tpy, not pythonX.Y)"
        [ -d "$ROOT/usr/lib/python$tver" ] || die "$ROOT/usr/lib/python$tver missing: is $TARGET_PY a full Python?"
        hver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" || die "$PY does not run"
        [ "$hver" = "$tver" ] || die "--venv rewrite needs the image's Python version here: the image has $tver, $PY is $hver (use --python python$tver, or --venv chroot)"
        hexe="$("$PY" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
        [ "$(elf_arch "$hexe")" = "$(elf_arch "$ROOT$tpy")" ] ||
            die "the image's $tpy is for another architecture than $hexe: its wheels cannot be installed here; use --venv chroot with qemu-user-static (docs/deploy-image.md)"
    fi
fi
if [ "$MODE" != chroot ]; then
    "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is older than 3.11"
fi

# A program of the virtualenv, and a path as that program sees it.
venv_run() {
    local prog="$1"
    shift
    if [ "$MODE" = chroot ]; then in_root "/opt/edge-agent/bin/$prog" "$@"; else "$PREFIX/bin/$prog" "$@"; fi
}
seen_path() { if [ "$MODE" = chroot ]; then echo "$1"; else echo "$ROOT$1"; fi; }

# The user and its group: created here on a live system; in an image by
# systemd-sysusers at boot, from the same file.
mkdir -p "$(dirname "$SYSUSERS")" "$(dirname "$TMPFILES")"
install -m 0644 "$REPO/systemd/edge-agent.sysusers.conf" "$SYSUSERS"
install -m 0644 "$REPO/systemd/edge-agent.tmpfiles.conf" "$TMPFILES"
if [ "$LIVE" -eq 1 ]; then
    if ! getent group "$USER_NAME" >/dev/null; then
        groupadd --system "$USER_NAME"
    fi
    if ! getent passwd "$USER_NAME" >/dev/null; then
        useradd --system --gid "$USER_NAME" --home-dir /var/lib/edge-agent --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-agent camera gateway" "$USER_NAME"
        say "created system user $USER_NAME"
    fi
    getent group video >/dev/null && usermod -a -G video "$USER_NAME"
else
    warn "not creating user $USER_NAME ($([ "$STAGING" -eq 1 ] && echo "staging root" || echo "not root")); systemd-sysusers creates it at boot from $SYSUSERS"
fi

# The virtualenv: reused on upgrade when it runs the same Python. A rewritten
# one names the image's interpreter and cannot run here: always rebuilt.
if [ "$MODE" = chroot ]; then
    want="$(in_root "$TARGET_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
else
    want="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
fi
have=""
if [ "$MODE" != rewrite ] && [ -n "$(resolve_in_root /opt/edge-agent/bin/python)" ]; then
    have="$(venv_run python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
fi
if [ "$have" != "$want" ]; then
    [ -z "$have" ] || say "Python changed ($have -> $want): recreating the virtualenv"
    rm -rf "$PREFIX"
    if [ "$MODE" = chroot ]; then in_root "$TARGET_PY" -m venv /opt/edge-agent; else "$PY" -m venv "$PREFIX"; fi
fi
# Only the wheelhouse: no index, and no pip config from this machine. In a
# chroot the wheels are linked (or copied) into the image for the install.
wh="$WHEELHOUSE"
if [ "$MODE" = chroot ]; then
    mkdir -p "$ROOT/tmp"
    WH_IN_ROOT="$(mktemp -d "$ROOT/tmp/edge-agent-wheelhouse.XXXXXX")"
    trap 'rm -rf "$WH_IN_ROOT"' EXIT
    cp -al "$WHEELHOUSE/." "$WH_IN_ROOT/" 2>/dev/null || cp -a "$WHEELHOUSE/." "$WH_IN_ROOT/"
    wh="${WH_IN_ROOT#"$ROOT"}"
fi
PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    venv_run python -m pip install -q --no-index --find-links "$wh" \
    --upgrade --upgrade-strategy eager edge-agent
if [ "$MODE" = chroot ]; then
    rm -rf "$WH_IN_ROOT"
    trap - EXIT
fi
version="$(venv_run edge-agent --version)"
mkdir -p "$PREFIX/share/doc/edge-agent"
cp "$REPO/README.md" "$PREFIX/share/doc/edge-agent/" 2>/dev/null || true
cp "$SELF_DIR/README.md" "$PREFIX/share/doc/edge-agent/DEPLOY.md" 2>/dev/null || true
cp "$REPO/docs/deploy-image.md" "$PREFIX/share/doc/edge-agent/" 2>/dev/null || true
cp "$WHEELHOUSE/MANIFEST.txt" "$PREFIX/share/doc/edge-agent/" 2>/dev/null || true
say "installed $version in $PREFIX"

# State and logs (owners: here on a live system, else tmpfiles.d at boot).
mkdir -p "$STATE/recordings" "$LOGS"
chmod 0750 "$STATE" "$STATE/recordings" "$LOGS"
if [ "$LIVE" -eq 1 ]; then
    chown "$USER_NAME:$USER_NAME" "$STATE" "$STATE/recordings" "$LOGS"
fi

# Config: written once, never overwritten.
mkdir -p "$ETC"
chmod 0750 "$ETC"
[ "$LIVE" -eq 1 ] && chown "root:$USER_NAME" "$ETC"
if [ -e "$ETC/config.toml" ]; then
    say "kept the existing $ETC/config.toml"
elif [ -n "$CONFIG_SRC" ]; then
    install -m 0640 "$CONFIG_SRC" "$ETC/config.toml"
    say "installed $CONFIG_SRC as $ETC/config.toml"
else
    if [ -z "$DEVICE_ID" ]; then
        DEVICE_ID="$(hostname 2>/dev/null | tr 'A-Z_.' 'a-z--' | tr -cd 'a-z0-9-' | sed 's/^-*//' | cut -c1-63)"
        [ -n "$DEVICE_ID" ] || DEVICE_ID=edge-agent
    fi
    # Final paths (not under --root): the config is read on the device.
    venv_run edge-agent provision --profile generic-linux --device-id "$DEVICE_ID" \
        --storage-root /var/lib/edge-agent/recordings --catalog /var/lib/edge-agent/catalog.db \
        --out "$(seen_path /etc/edge-agent/config.toml)" >/dev/null 2>&1 ||
        die "could not write a first config (edge-agent provision failed)"
    say "wrote a minimal $ETC/config.toml (device $DEVICE_ID, no cameras yet): edit it or"
    say "  re-run 'edge-agent provision --force', then 'edge-agent doctor'"
fi
[ "$LIVE" -eq 1 ] && chgrp "$USER_NAME" "$ETC"/* 2>/dev/null || true

# Units, and a drop-in that waits for the recordings disk and opens the configured
# folders outside the state dir (ProtectSystem=strict makes everything else read-only).
mkdir -p "$UNITS"
for u in "${UNIT_FILES[@]}"; do install -m 0644 "$REPO/systemd/$u" "$UNITS/$u"; done
paths="$(venv_run python - "$(seen_path /etc/edge-agent/config.toml)" <<'EOF' 2>/dev/null || true
import sys
from pathlib import Path
from edge_agent.config.config import load_config

cfg = load_config(Path(sys.argv[1]), check_files=False)
state = Path("/var/lib/edge-agent")
wanted = [cfg.storage.root, cfg.storage.catalog.parent, cfg.quarantine_dir, *(w.path for w in cfg.watch)]
seen = []
for p in wanted:
    if p != state and state not in p.parents and p not in seen:
        seen.append(p)
# The storage root may be its own disk even inside the state dir: always wait for it.
print(f"mount {cfg.storage.root}")
for p in seen:
    print(f"rw {p}")
EOF
)"
mounts="$(echo "$paths" | sed -n 's/^mount //p; s/^rw //p' | awk '!seen[$0]++')"
rw="$(echo "$paths" | sed -n 's/^rw //p')"
for unit in edge-agent.service edge-agent-reconcile.service; do
    dropin="$UNITS/$unit.d/10-paths.conf"
    if [ -n "$mounts" ]; then
        mkdir -p "$UNITS/$unit.d"
        {
            echo "# Written by deploy/install.sh from /etc/edge-agent/config.toml: the disks the"
            echo "# agent records to, and folders outside /var/lib/edge-agent it writes to."
            echo "# Re-run install.sh after changing them."
            echo "[Unit]"
            echo "$mounts" | sed 's/^/RequiresMountsFor=/'
            if [ -n "$rw" ]; then
                echo "[Service]"
                echo "$rw" | sed 's/^/ReadWritePaths=-/'
            fi
        } >"$dropin"
    else
        rm -f "$dropin"
    fi
done

# A virtualenv built here names this machine's paths: the staging root in the
# #! lines and this machine's interpreter in bin/python. Point them at the
# image's, then check that nothing still leads out of the image.
if [ "$MODE" = rewrite ]; then
    "$PY" - "$PREFIX" "$TARGET_PY" "$tpy" <<'EOF'
import os
import re
import sys
from pathlib import Path

venv, target_py, resolved = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
old, new = str(venv).encode(), b"/opt/edge-agent"
# pip writes a /bin/sh launcher instead of a #! line when the path is long.
launcher = re.compile(rb"#!/bin/sh\n'''exec' \"?(/opt/edge-agent/bin/python[0-9.]*)\"? \"\$0\" \"\$@\"\n' '''\n")
for f in (venv / "bin").iterdir():
    if f.is_symlink():
        if os.path.isabs(os.readlink(f)):
            f.unlink()
            f.symlink_to(target_py)
    elif f.is_file():
        data = f.read_bytes()
        if old in data:
            data = data.replace(old, new)
            m = launcher.match(data)
            if m:
                data = b"#!" + m.group(1) + b"\n" + data[m.end() :]
            f.write_bytes(data)
lines = []
for line in (venv / "pyvenv.cfg").read_text().splitlines():
    key = line.partition("=")[0].strip()
    if key == "home":
        line = f"home = {os.path.dirname(target_py)}"
    elif key == "executable":
        line = f"executable = {resolved}"
    elif key == "command":
        continue
    lines.append(line)
(venv / "pyvenv.cfg").write_text("\n".join(lines) + "\n")
EOF
    left="$(grep -rIlF -- "$PREFIX" "$PREFIX" 2>/dev/null | head -n 3 || true)"
    [ -z "$left" ] || die "the virtualenv still names $PREFIX in: $left"
    [ "$(resolve_in_root /opt/edge-agent/bin/python)" = "$tpy" ] ||
        die "$PREFIX/bin/python does not lead to the image's $tpy"
    say "rewrote the virtualenv for /opt/edge-agent and the image's $TARGET_PY ($tpy)"
fi
if [ "$STAGING" -eq 1 ]; then
    shebang="$(head -n 1 "$PREFIX/bin/edge-agent")"
    [ "$shebang" = "#!/opt/edge-agent/bin/python" ] || [ "$shebang" = "#!/opt/edge-agent/bin/python3" ] ||
        die "$PREFIX/bin/edge-agent starts with $shebang, not #!/opt/edge-agent/bin/python"
fi

if [ "$ENABLE" -eq 1 ] && systemd_running; then
    systemctl daemon-reload
    systemctl enable edge-agent.service edge-agent-reconcile.timer
    if systemctl is-active --quiet edge-agent.service; then
        systemctl restart edge-agent.service
        say "restarted edge-agent.service"
    else
        say "enabled; start it with: systemctl start edge-agent (after editing the config)"
    fi
elif [ "$STAGING" -eq 1 ]; then
    say "staged in $ROOT; to enable in an image: systemctl --root=$ROOT enable edge-agent.service edge-agent-reconcile.timer"
else
    warn "systemd is not running (or not root): units installed but not enabled"
fi
say "done"
