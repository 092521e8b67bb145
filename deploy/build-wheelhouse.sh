#!/usr/bin/env bash
# Collect edge-agent and every dependency as wheels in one folder, for an
# offline install with deploy/install.sh (no network on the device).
#
#   deploy/build-wheelhouse.sh OUT_DIR                      # this machine's Python/arch
#   deploy/build-wheelhouse.sh --platform manylinux2014_aarch64 \
#       --python-version 3.11 OUT_DIR                        # e.g. a Raspberry Pi 5 / Jetson
#
# Host mode runs `pip wheel`: wheels from the index, and any sdist-only
# dependency built here. Cross mode (--platform) cannot build for another
# architecture, so it runs `pip download --only-binary=:all:` and fails if a
# dependency has no wheel for the target. pip matches platform tags exactly,
# and PyAV and cryptography ship manylinux_2_28 / _2_34 wheels only, so a
# manylinux2014_ARCH target also accepts manylinux_2_17 ... manylinux_2_<G>
# for ARCH, where G comes from --glibc (default 2.36: Debian 12, Raspberry Pi
# OS bookworm; use 2.35 for Ubuntu 22.04 / JetPack 6).
#
# The project itself is always built here as a pure-Python wheel. The folder
# gets SHA256SUMS (checked by install.sh) and MANIFEST.txt (what and for whom).
set -euo pipefail

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    echo "options: --python PY (interpreter that builds; default python3)"
    echo "         --platform TAG (repeatable) --python-version X.Y --abi cp3XX --glibc 2.NN"
    exit "${1:-2}"
}

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
PLATFORMS=()
PYVER=""
ABI=""
GLIBC="2.36"
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
    --python) PY="$2"; shift 2 ;;
    --platform) PLATFORMS+=("$2"); shift 2 ;;
    --python-version) PYVER="$2"; shift 2 ;;
    --abi) ABI="$2"; shift 2 ;;
    --glibc) GLIBC="$2"; shift 2 ;;
    -h | --help) usage 0 ;;
    -*) echo "build-wheelhouse: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || { echo "build-wheelhouse: one OUT_DIR only" >&2; usage; }; OUT="$1"; shift ;;
    esac
done
[ -n "$OUT" ] || { echo "build-wheelhouse: give the output folder" >&2; usage; }
if [ -n "$PYVER" ] && [ ${#PLATFORMS[@]} -eq 0 ]; then
    echo "build-wheelhouse: --python-version needs --platform (a target other than this machine)" >&2
    exit 2
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT

# Build from a clean copy: a stale build/ or egg-info in the work tree must not
# leak into the wheel.
tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=build --exclude='*.egg-info' \
    --exclude=__pycache__ -cf - . | tar -C "$BUILD" -xf -
iso=()
"$PY" -c "import setuptools, wheel" 2>/dev/null && iso=(--no-build-isolation)
echo "build-wheelhouse: building edge-agent"
"$PY" -m pip wheel -q --no-deps "${iso[@]}" -w "$OUT" "$BUILD"
PROJECT_WHEEL="$(ls -t "$OUT"/edge_agent-*.whl | head -n 1)"

if [ ${#PLATFORMS[@]} -eq 0 ]; then
    target="$("$PY" -c 'import sys, sysconfig; print(f"cp{sys.version_info[0]}{sys.version_info[1]} {sysconfig.get_platform()}")')"
    echo "build-wheelhouse: dependencies for this machine ($target)"
    "$PY" -m pip wheel -q -w "$OUT" "$PROJECT_WHEEL"
else
    PYVER="${PYVER:-3.11}"
    ABI="${ABI:-cp${PYVER/./}}"
    target="$ABI ${PLATFORMS[*]}"
    args=(--only-binary=:all: --python-version "$PYVER" --implementation cp --abi "$ABI" --abi abi3 --abi none)
    for p in "${PLATFORMS[@]}"; do
        args+=(--platform "$p")
        case "$p" in
        manylinux2014_* | manylinux_2_17_*)
            arch="${p#manylinux2014_}"
            arch="${arch#manylinux_2_17_}"
            for ((minor = 17; minor <= ${GLIBC#2.}; minor++)); do
                args+=(--platform "manylinux_2_${minor}_${arch}")
            done
            target="$target (glibc <= $GLIBC)"
            ;;
        esac
    done
    echo "build-wheelhouse: dependencies for $target"
    "$PY" -m pip download -q "${args[@]}" -d "$OUT" "$PROJECT_WHEEL"
fi

cd "$OUT"
# Anything but wheels (an sdist pip kept) would need a compiler on the device.
if ls | grep -v -E '\.whl$|^SHA256SUMS$|^MANIFEST\.txt$' >/dev/null; then
    echo "build-wheelhouse: not all files are wheels:" >&2
    ls | grep -v -E '\.whl$|^SHA256SUMS$|^MANIFEST\.txt$' >&2
    exit 1
fi
sha256sum -- *.whl >SHA256SUMS
{
    echo "edge-agent wheelhouse"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "project: $(basename "$PROJECT_WHEEL")"
    echo "target: $target"
    echo "builder: $("$PY" -c 'import sys; print(sys.version.split()[0])') $(uname -m)"
    echo "wheels: $(ls -- *.whl | wc -l)"
    echo
    cat SHA256SUMS
} >MANIFEST.txt
echo "build-wheelhouse: $(ls -- *.whl | wc -l) wheels in $OUT (target $target)"
