#!/usr/bin/env bash
# Install, upgrade or remove edge-agent from a wheelhouse, with no network.
#
#   sudo deploy/install.sh --wheelhouse /media/usb/wheelhouse
#   sudo deploy/install.sh --wheelhouse DIR            # again: upgrade in place
#   sudo deploy/install.sh --uninstall                 # keeps config, catalog, recordings
#   sudo deploy/install.sh --uninstall --purge         # removes them too
#   deploy/install.sh --wheelhouse DIR --root /tmp/stage   # staging root (images, tests)
#
# Layout (under --root when given):
#   /opt/edge-agent                 virtualenv (bin/edge-agent), docs
#   /etc/edge-agent/config.toml     root:edge-agent 0640; written once, never overwritten
#   /var/lib/edge-agent             state (catalog, recordings), edge-agent 0750
#   /var/log/edge-agent             logs, edge-agent 0750
#   /etc/systemd/system             edge-agent.service, edge-agent-reconcile.{service,timer}
#   /usr/lib/sysusers.d/edge-agent.conf   the user, for images built with --root
#
# Options:
#   --wheelhouse DIR   wheels from deploy/build-wheelhouse.sh (checked against SHA256SUMS)
#   --root DIR         install into a staging root: no user creation, no systemctl
#   --python PY        interpreter for the virtualenv (default python3; 3.11+)
#   --config FILE      config to install when none exists (default: a minimal one
#                      written with `edge-agent provision`; edit it, then run doctor)
#   --device-id ID     device id for that minimal config (default: from the host name)
#   --no-enable        do not enable/start the units
#   --uninstall [--purge]
#
# A virtualenv records absolute paths: one made under --root DIR has DIR in its
# scripts' #! lines and works from there only. That is what tests need; an image
# builder should instead run this script inside the image (chroot or
# systemd-nspawn) without --root, or build the venv at its final path.
set -euo pipefail

SELF_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$SELF_DIR/.." && pwd)"
ROOT=""
WHEELHOUSE=""
PY="${PYTHON:-python3}"
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
    --config) CONFIG_SRC="$2"; shift 2 ;;
    --device-id) DEVICE_ID="$2"; shift 2 ;;
    --no-enable) ENABLE=0; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h | --help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
done
[ "$PURGE" -eq 0 ] || [ "$UNINSTALL" -eq 1 ] || die "--purge goes with --uninstall"

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
UNIT_FILES=(edge-agent.service edge-agent-reconcile.service edge-agent-reconcile.timer)

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
    rm -rf "$PREFIX" "$SYSUSERS"
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
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PY is older than 3.11"

# The user and its group.
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
    warn "not creating user $USER_NAME ($([ "$STAGING" -eq 1 ] && echo "staging root" || echo "not root")); $SYSUSERS creates it at boot"
fi
mkdir -p "$(dirname "$SYSUSERS")"
cat >"$SYSUSERS" <<'EOF'
# edge-agent: the service's user (systemd-sysusers, for images built with install.sh --root)
u edge-agent - "edge-agent camera gateway" /var/lib/edge-agent /usr/sbin/nologin
m edge-agent video
EOF

# The virtualenv: reused on upgrade when it runs the same Python.
want="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
have=""
[ -x "$PREFIX/bin/python" ] && have="$("$PREFIX/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
if [ "$have" != "$want" ]; then
    [ -z "$have" ] || say "Python changed ($have -> $want): recreating the virtualenv"
    rm -rf "$PREFIX"
    "$PY" -m venv "$PREFIX"
fi
# Only the wheelhouse: no index, and no pip config from this machine.
PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$PREFIX/bin/python" -m pip install -q --no-index --find-links "$WHEELHOUSE" \
    --upgrade --upgrade-strategy eager edge-agent
version="$("$PREFIX/bin/edge-agent" --version)"
mkdir -p "$PREFIX/share/doc/edge-agent"
cp "$REPO/README.md" "$PREFIX/share/doc/edge-agent/" 2>/dev/null || true
cp "$SELF_DIR/README.md" "$PREFIX/share/doc/edge-agent/DEPLOY.md" 2>/dev/null || true
cp "$WHEELHOUSE/MANIFEST.txt" "$PREFIX/share/doc/edge-agent/" 2>/dev/null || true
say "installed $version in $PREFIX"

# State and logs.
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
    "$PREFIX/bin/edge-agent" provision --profile generic-linux --device-id "$DEVICE_ID" \
        --storage-root /var/lib/edge-agent/recordings --catalog /var/lib/edge-agent/catalog.db \
        --out "$ETC/config.toml" >/dev/null 2>&1 ||
        die "could not write a first config (edge-agent provision failed)"
    say "wrote a minimal $ETC/config.toml (device $DEVICE_ID, no cameras yet): edit it or"
    say "  re-run 'edge-agent provision --force', then 'edge-agent doctor'"
fi
[ "$LIVE" -eq 1 ] && chgrp "$USER_NAME" "$ETC"/* 2>/dev/null || true

# Units, and a drop-in that opens the configured folders outside the state dir
# (ProtectSystem=strict makes everything else read-only).
mkdir -p "$UNITS"
for u in "${UNIT_FILES[@]}"; do install -m 0644 "$REPO/systemd/$u" "$UNITS/$u"; done
paths="$("$PREFIX/bin/python" - "$ETC/config.toml" <<'EOF' 2>/dev/null || true
import sys
from pathlib import Path
from edge_agent.config import load_config

cfg = load_config(Path(sys.argv[1]), check_files=False)
state = Path("/var/lib/edge-agent")
wanted = [cfg.storage.root, cfg.storage.catalog.parent, cfg.quarantine_dir, *(w.path for w in cfg.watch)]
seen = []
for p in wanted:
    if p != state and state not in p.parents and p not in seen:
        seen.append(p)
for p in seen:
    print(p)
EOF
)"
for unit in edge-agent.service edge-agent-reconcile.service; do
    dropin="$UNITS/$unit.d/10-paths.conf"
    if [ -n "$paths" ]; then
        mkdir -p "$UNITS/$unit.d"
        {
            echo "# Written by deploy/install.sh from $ETC/config.toml: folders outside"
            echo "# /var/lib/edge-agent the agent writes to. Re-run install.sh after changing them."
            echo "[Unit]"
            echo "$paths" | sed 's/^/RequiresMountsFor=/'
            echo "[Service]"
            echo "$paths" | sed 's/^/ReadWritePaths=-/'
        } >"$dropin"
    else
        rm -f "$dropin"
    fi
done

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
