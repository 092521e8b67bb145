#!/usr/bin/env bash
# Check the systemd units: `systemd-analyze verify` and the exposure score of
# `systemd-analyze security --offline=yes` (at most MAX_EXPOSURE, default 2.0).
#
#   deploy/check-units.sh            # exits 0 when both pass
#
# Needs systemd-analyze (Debian package `systemd`, which also provides the
# targets the units refer to); without it the script says so and exits 0, so
# CI can call it unconditionally. systemd does not need to be running.
#
# verify checks that ExecStart= binaries exist and are executable, and
# /opt/edge-agent is not installed on a build machine: the units are verified
# from a temporary copy whose /opt/edge-agent/bin/edge-agent points at a stub.
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_EXPOSURE="${MAX_EXPOSURE:-2.0}"
UNITS=(edge-agent.service edge-agent-reconcile.service edge-agent-reconcile.timer
    edge-agent-background.slice)
SECURITY=(edge-agent.service edge-agent-reconcile.service)

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-units: systemd-analyze not found (apt-get install systemd); skipped"
    exit 0
fi
echo "check-units: $(systemd-analyze --version | head -n 1)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf '#!/bin/sh\nexit 0\n' >"$tmp/edge-agent"
chmod +x "$tmp/edge-agent"
for u in "${UNITS[@]}"; do
    sed "s#/opt/edge-agent/bin/edge-agent#$tmp/edge-agent#g" "systemd/$u" >"$tmp/$u"
done

fail=0
# --man=no: the Documentation= pages are installed with the program, not here.
# Without a running systemd, verify would also warn about the journal; that
# is noise, not a problem with the units.
if ! out="$(cd "$tmp" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "${UNITS[@]}" 2>&1)"; then
    echo "$out"
    echo "check-units: FAIL systemd-analyze verify"
    fail=1
elif [ -n "$out" ]; then
    echo "$out"
    echo "check-units: FAIL systemd-analyze verify printed warnings"
    fail=1
else
    echo "check-units: OK   systemd-analyze verify ${UNITS[*]}"
fi

for u in "${SECURITY[@]}"; do
    report="$(systemd-analyze security --offline=yes "systemd/$u" 2>&1 || true)"
    score="$(echo "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
    if [ -z "$score" ]; then
        echo "$report"
        echo "check-units: FAIL $u: no exposure score"
        fail=1
    elif awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
        echo "check-units: OK   $u exposure $score (limit $MAX_EXPOSURE)"
    else
        echo "$report" | grep '✗' || true
        echo "check-units: FAIL $u exposure $score is above $MAX_EXPOSURE"
        fail=1
    fi
done
exit "$fail"
