# lib.sh: shared by the japlaid-index tests (sourced, not run).
#
# Arguments of every test script: JAPLAID_INDEX_BIN MPI_CHECK_BIN MPIEXEC.
# Environment (tests/CMakeLists.txt): JAPLAID_BIN, JP_DATA_DIR.
# Needs bash, coreutils, grep, sed, awk (no jq/python).
set -euo pipefail

X=${1:?usage: $0 JAPLAID_INDEX_BIN MPI_CHECK_BIN MPIEXEC}
CHK=${2:?mpi_check binary}
MPIEXEC=${3:?mpiexec}
J=${JAPLAID_BIN:?JAPLAID_BIN is not set}
D=${JP_DATA_DIR:?JP_DATA_DIR is not set}
CORPUS=$D/jsquad/valid.corpus.tsv
QUERIES=$D/jsquad/valid.queries.tsv
VOCAB=$D/bert-base-japanese-v3/vocab.txt
if [ ! -r "$CORPUS" ] || [ ! -r "$VOCAB" ] || [ ! -r "$QUERIES" ]; then
  echo "skipped: JSQuAD or the vocabulary is not under $D"
  exit 77
fi
if ! command -v "$MPIEXEC" > /dev/null; then
  echo "skipped: no $MPIEXEC"
  exit 77
fi
# OpenMPI refuses root unless told (reference/stack.md §4); both variables
# are needed.
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# One BLAS thread per rank: the ranks share the machine's cores.
export OPENBLAS_NUM_THREADS=1
# A job that hangs is a failure: every mpirun is bounded by this.
JOB_TIMEOUT=${JOB_TIMEOUT:-300}

T=$(mktemp -d "${TMPDIR:-/tmp}/japlaid-mpi-XXXXXX")
trap 'rm -rf "$T"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
# json_num FIELD < json : the number after "FIELD": (first occurrence)
json_num() { grep -o "\"$1\":[-0-9.e+]*" | head -1 | sed 's/^[^:]*://'; }
# ge A B : A >= B for decimals
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }

# np N ARGS... : japlaid-index on N ranks (N = 0: no mpirun, a singleton),
# bounded by JOB_TIMEOUT. Returns the job's exit status.
np() {
  local n=$1
  shift
  if [ "$n" = 0 ]; then
    timeout "$JOB_TIMEOUT" "$X" "$@"
  else
    # --oversubscribe: more ranks than this machine's cores is fine here;
    # -x only for variables that are set (mpirun warns about the others).
    local xs=(-x OPENBLAS_NUM_THREADS) v
    for v in JAPLAID_TEST_DIE_AT JAPLAID_TEST_FAIL_AT; do
      if [ -n "${!v:-}" ]; then xs+=(-x "$v"); fi
    done
    timeout "$JOB_TIMEOUT" "$MPIEXEC" --oversubscribe -np "$n" "${xs[@]}" "$X" "$@"
  fi
}

# search_merged INDEX MODE OUT : `japlaid search` on every INDEX/part-* with
# the query file $Q (MODE "" or --exhaustive), merged by score into OUT.
search_merged() {
  local dir=$1 mode=$2 out=$3 files=() p
  for p in "$dir"/part-*; do
    # shellcheck disable=SC2086
    "$J" search --index "$p" $mode -k 10 < "$Q" > "$out.$(basename "$p")" ||
      fail "search $p $mode"
    files+=("$out.$(basename "$p")")
  done
  "$CHK" merge 10 "${files[@]}" > "$out" || fail "merge $dir"
}

# tree_sum DIR : a checksum of every file under DIR (names and bytes).
tree_sum() {
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}
