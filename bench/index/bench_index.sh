#!/usr/bin/env bash
# bench_index.sh: index-build benchmark (README.md). Not a test.
#
#   bench/index/bench_index.sh BUILD_DIR
#
# Times `japlaid-index build` as A = one rank with 2 threads against B = 2
# ranks (mpirun -np 2) with 1 thread each -- the same 2 cores -- on JSQuAD
# valid and on a synthetic 100k-passage corpus, per phase, A and B
# alternated (A B, B A, ...), medians; then our k-means against FAISS on the
# sample a build clusters (bench_index kmeans). Prints markdown tables with
# ratios.
#
# Environment: ROUNDS (JSQuAD rounds, default 2 = A B B A), SYNTH_ROUNDS (1),
# SYNTH_DOCS (100000), SYNTH_ITERS (k-means iterations of the synthetic
# builds, default 4 = ColBERT's kmeans_niters; empty = the plan's 10),
# PARTITIONS (4), FAISS_ROUNDS (2), FAISS_SYNTH_ITERS (4), SKIP_JSQUAD=1,
# SKIP_SYNTH=1, SKIP_FAISS=1, MODEL (a checkpoint; default: the static model, generated),
# JP_DATA_DIR (default ../shared/data beside the repository).
set -euo pipefail
B=${1:?usage: $0 BUILD_DIR}
B=$(cd "$B" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
X=$B/indexer/japlaid-index
J=$B/tools/japlaid
BI=$B/bench/index/bench_index
DATA=${JP_DATA_DIR:-$src/../shared/data}
CORPUS=$DATA/jsquad/valid.corpus.tsv
ROUNDS=${ROUNDS:-2}
SYNTH_ROUNDS=${SYNTH_ROUNDS:-1}
SYNTH_DOCS=${SYNTH_DOCS:-100000}
SYNTH_ITERS=${SYNTH_ITERS-4}
PARTITIONS=${PARTITIONS:-4}
FAISS_ROUNDS=${FAISS_ROUNDS:-2}
FAISS_SYNTH_ITERS=${FAISS_SYNTH_ITERS:-4}
for f in "$X" "$J" "$BI" "$CORPUS"; do [ -e "$f" ] || { echo "missing $f" >&2; exit 2; }; done
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export JP_SOURCE_DIR=$src

T=$(mktemp -d "${TMPDIR:-/tmp}/japlaid-bench-index-XXXXXX")
trap 'rm -rf "$T"' EXIT
MODEL=${MODEL:-}
if [ -z "$MODEL" ]; then
  MODEL=$T/model
  "$J" model static --out "$MODEL" --vocab-file "$DATA/bert-base-japanese-v3/vocab.txt" > /dev/null
fi

json_num() { grep -o "\"$1\":[-0-9.e+]*" | head -1 | sed 's/^[^:]*://'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# run NAME CONFIG CORPUS ROUND [extra args]: one build, its summary kept.
run() {
  local name=$1 cfg=$2 corpus=$3 r=$4
  shift 4
  local out=$T/out-$name-$cfg-$r
  local common=(build --model "$MODEL" --corpus "$corpus" --out "$out" --partitions "$PARTITIONS" "$@")
  echo "  $name $cfg round $r" >&2
  if [ "$cfg" = A ]; then
    OPENBLAS_NUM_THREADS=2 "$X" "${common[@]}" --threads 2 > "$T/$name.$cfg.$r.json" 2> "$T/$name.$cfg.$r.log"
  else
    OPENBLAS_NUM_THREADS=1 mpirun -np 2 -x OPENBLAS_NUM_THREADS "$X" "${common[@]}" --threads 1 \
      > "$T/$name.$cfg.$r.json" 2> "$T/$name.$cfg.$r.log"
  fi
  rm -rf "$out"
}

# series NAME CORPUS ROUNDS [extra args]: A and B alternated.
series() {
  local name=$1 corpus=$2 rounds=$3
  shift 3
  for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then run "$name" A "$corpus" "$r" "$@"; run "$name" B "$corpus" "$r" "$@"
    else run "$name" B "$corpus" "$r" "$@"; run "$name" A "$corpus" "$r" "$@"; fi
  done
}

# table NAME : per-phase medians of A and B, ratio B/A.
table() {
  local name=$1 f=$T/$1.A.1.json
  echo
  echo "### $name: $(json_num passages < "$f") passages, $(json_num embeddings < "$f") embeddings," \
       "$(json_num centroids < "$f") centroids, nbits $(json_num nbits < "$f"), $(json_num kmeans_iters < "$f")" \
       "k-means iterations, $PARTITIONS partitions"
  echo
  echo "| seconds (median) | A: 1 rank x 2 threads | B: 2 ranks x 1 thread | B/A |"
  echo "|---|---|---|---|"
  local ph a b
  for ph in scan sample kmeans codec encode ingest total; do
    a=$(for f in "$T/$name".A.*.json; do sed 's/.*"seconds"://' "$f" | json_num "$ph"; done | median)
    b=$(for f in "$T/$name".B.*.json; do sed 's/.*"seconds"://' "$f" | json_num "$ph"; done | median)
    awk -v p="$ph" -v a="$a" -v b="$b" 'BEGIN { printf "| %s | %.2f | %.2f | %s |\n", p, a, b, (a > 0 ? sprintf("%.2f", b / a) : "-") }'
  done
  a=$(json_num kmeans_allreduce_bytes_per_iteration < "$T/$name.B.1.json")
  b=$(for f in "$T/$name".B.*.json; do json_num kmeans_allreduce_seconds < "$f"; done | median)
  echo
  echo "k-means Allreduce payload per rank per iteration (B): $a bytes" \
       "($(awk -v a="$a" 'BEGIN { printf "%.2f", a / 1048576 }') MiB); time in Allreduce over all iterations: ${b}s"
}

if [ -z "${SKIP_JSQUAD:-}" ]; then
  echo "== JSQuAD valid ($ROUNDS rounds)" >&2
  series jsquad "$CORPUS" "$ROUNDS"
fi
if [ -z "${SKIP_SYNTH:-}" ]; then
  echo "== synthetic corpus, $SYNTH_DOCS documents ($SYNTH_ROUNDS rounds)" >&2
  "$BI" corpus --source "$CORPUS" --out "$T/synth.tsv" --docs "$SYNTH_DOCS"
  iters=()
  if [ -n "$SYNTH_ITERS" ]; then iters=(--kmeans-iters "$SYNTH_ITERS"); fi
  series synth "$T/synth.tsv" "$SYNTH_ROUNDS" "${iters[@]}"
fi

echo "## japlaid-index build: one rank with 2 threads (A) vs 2 MPI ranks with 1 thread (B)"
echo
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(date -u +%F)."
if [ -z "${SKIP_JSQUAD:-}" ]; then table jsquad; fi
if [ -z "${SKIP_SYNTH:-}" ]; then table synth; fi

# dump CORPUS DIR: the k-means input of a one-rank build (its sample, init,
# k, iterations); the build is stopped at its first k-means reduction by the
# test hook, since only the dump is needed.
dump() {
  JAPLAID_DUMP_KMEANS=$2 JAPLAID_TEST_DIE_AT=kmeans:0 "$X" build --model "$MODEL" --corpus "$1" \
    --out "$T/dumpbuild" --partitions 1 > /dev/null 2> "$2.log" || true
  rm -rf "$T"/dumpbuild.tmp-*
  [ -f "$2/kmeans.json" ] || { cat "$2.log" >&2; exit 1; }
}

if [ -z "${SKIP_FAISS:-}" ]; then
  echo "== k-means vs FAISS" >&2
  echo
  echo "## k-means: ours (jp_kmeans) vs FAISS on the sample the build clusters"
  echo
  if [ -z "${SKIP_JSQUAD:-}" ]; then
    dump "$CORPUS" "$T/dump-jsquad"
    "$BI" kmeans --dump "$T/dump-jsquad" --threads 2 --rounds "$FAISS_ROUNDS"
  fi
  if [ -z "${SKIP_SYNTH:-}" ]; then
    echo
    dump "$T/synth.tsv" "$T/dump-synth"
    "$BI" kmeans --dump "$T/dump-synth" --threads 2 --rounds 1 --iters "$FAISS_SYNTH_ITERS"
  fi
fi
