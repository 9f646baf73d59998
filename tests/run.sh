#!/usr/bin/env bash
# tests/run.sh: install what is missing, configure, build, run the tests.
#
#   ./tests/run.sh                 default suites (everything but `slow`)
#   ./tests/run.sh -L integration  only one label (any ctest arguments pass through)
#   JP_TEST_ALL=1 ./tests/run.sh   include the `slow` label
#   BUILD_DIR=out ./tests/run.sh   build somewhere else (default: build/)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

./deploy/install-deps.sh

build=${BUILD_DIR:-build}
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJP_BUILD_TESTS=ON
cmake --build "$build" -j "$jobs"

cd "$build"
args=("$@")
if [ ${#args[@]} -eq 0 ] && [ "${JP_TEST_ALL:-0}" != 1 ]; then
  args=(-LE slow)
fi
# Tests that use both cores (encoders, searches, MPI) run one at a time;
# ctest -j would only make them fight for the same two cores.
ctest --output-on-failure --timeout 1200 "${args[@]}"
