#!/usr/bin/env bash
# Issue 14's endurance checks, as CI runs them after the test suite:
# every fuzz target (tests/fuzz/) for FUZZ_SECONDS (default 60) under
# atheris, then the fault-injecting soak (benchmarks/soak.py) for
# SOAK_SECONDS (default 60) on each backend.  Runs in the 3.11 venv that
# tests/all_pythons.py made and installed ringline into
# ($RINGLINE_VENVS/3.11, default ~/.cache/ringline-venvs/3.11); installs
# atheris there if it is missing.  About 7 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
venvs="${RINGLINE_VENVS:-$HOME/.cache/ringline-venvs}"
py="$venvs/3.11/bin/python"
if [ ! -x "$py" ]; then
    echo "fuzz_and_soak: no venv at $venvs/3.11 (tests/all_pythons.py makes it)" >&2
    exit 1
fi
"$py" -c "import ringline" # installed by tests/all_pythons.py
if ! "$py" -c "import atheris" 2>/dev/null; then
    "$py" -m pip install -q --only-binary atheris atheris || echo "fuzz_and_soak: atheris did not install; fuzzing without coverage guidance"
fi
fuzz_rc=0
"$py" tests/fuzz/run.py --seconds "${FUZZ_SECONDS:-60}" || fuzz_rc=$?
soak_rc=0
"$py" benchmarks/soak.py --seconds "${SOAK_SECONDS:-60}" --backend both || soak_rc=$?
echo "fuzz_and_soak: fuzz exit $fuzz_rc, soak exit $soak_rc"
[ "$fuzz_rc" -eq 0 ] && [ "$soak_rc" -eq 0 ]
