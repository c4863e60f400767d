#!/bin/bash
# Runs the tests against the programs in $BUILD (default build): cmocka unit
# tests, fuzz corpus replay, integration tests of the real daemons, and VM
# tests under qemu. pytest drives them all, so its summary line is the
# verdict. Arguments go to pytest; with no test path among them (a file or
# folder, possibly with ::test), every test under tests/ runs.
set -uo pipefail
cd "$(dirname "$0")/.."
export BUILD=${BUILD:-build}
args=(-v -ra -p no:cacheprovider --timeout=900)
if [ "${SAN:-0}" = 1 ]; then
    # Leaks in short-lived children are reported by the programs' own exit
    # paths; abort on the first sanitizer error so a test sees it.
    export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
paths=(tests)
for a in "$@"; do
    if [ -e "${a%%::*}" ]; then
        paths=()
        break
    fi
done
exec /usr/bin/python3 -m pytest "${args[@]}" "${paths[@]}" "$@"
