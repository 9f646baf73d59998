# shellcheck shell=bash
# lib.sh: shared by the ops tests (sourced, not run).
#
# Arguments of every test script: FIXTURE OPS_TOOL LOCAL_CLUSTER_SH.
# Environment (tests/CMakeLists.txt): JAPLAID_BIN, JP_BUILD_DIR (where
# local-cluster.sh finds japlaid-shard and japlaid-coordinator).
# Needs bash, coreutils, grep, sed (no jq/python).
set -euo pipefail

F=${1:?usage: $0 FIXTURE OPS_TOOL LOCAL_CLUSTER_SH}
OT=${2:?ops_tool}
LC=${3:?local-cluster.sh}
# shellcheck disable=SC2034  # used by the scripts that source this
J=${JAPLAID_BIN:?JAPLAID_BIN is not set}
export JAPLAID_BIN_DIR=${JP_BUILD_DIR:?JP_BUILD_DIR is not set}
if [ ! -r "$F/corpus.jsonl" ]; then
  echo "skipped: no fixture in $F (test_ops_fixture skipped or failed)"
  exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/japlaid-ops-XXXXXX")
RUNS=()
cleanup() {
  local r
  for r in "${RUNS[@]}"; do "$LC" stop --run-dir "$r" > /dev/null 2>&1 || true; done
  rm -rf "$T"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  local r
  for r in "${RUNS[@]}"; do
    for l in "$r"/*.log; do
      [ -r "$l" ] && { echo "---- $l (last lines)" >&2; tail -n 15 "$l" >&2; }
    done
  done
  exit 1
}

# get PATH [DEFAULT] < json
get() { "$OT" get "$@"; }

# cluster RUN ARGS...: start a cluster with local-cluster.sh (cleaned up at
# exit); sets GRPC and HTTP.
cluster() {
  local run=$1
  shift
  RUNS+=("$run")
  "$LC" start --run-dir "$run" --model "$F/model" --threads 2 "$@" > "$T/start.out" 2>&1 ||
    { cat "$T/start.out" >&2; fail "local-cluster.sh start $*"; }
  GRPC=$(sed -n 's/^grpc=//p' "$run/endpoints")
  HTTP=$(sed -n 's/^http=//p' "$run/endpoints")
  if [ -z "$GRPC" ] || [ -z "$HTTP" ]; then fail "no endpoints in $run"; fi
}

# pid_of RUN NAME
pid_of() { cut -d' ' -f1 "$1/$2.pid"; }

# expect_eq GOT WANT WHAT
expect_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"; }
