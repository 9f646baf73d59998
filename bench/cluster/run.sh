#!/usr/bin/env bash
# run.sh: the cluster benchmark (README.md says what is compared and why).
# For each model (the static model; a full-size random BERT):
#   1. index JSQuAD valid into 2 partitions (japlaid-index build);
#   2. start a local cluster (deploy/local-cluster.sh, 1 replica each);
#   3. unloaded latency, ROUNDS rounds, the order of the paths alternating
#      between rounds: embedded (bench_cluster embedded), fan-out of
#      pre-encoded queries to the shards (bench_cluster fanout), and the
#      coordinator (japlaid loadgen at a rate low enough that requests do
#      not overlap); medians of the rounds' p50s;
#   4. a load sweep: japlaid loadgen at increasing QPS; the highest QPS
#      whose p99 stays under 3x the unloaded p50 with no error.
# Prints the tables (also saved in WORK/results.md).
#
#   bench/cluster/run.sh [--build-dir B] [--work-dir W] [--models static,bert]
#                        [--rounds R] [--step-s S] [--bert-docs N]
#
# Not a test: timings are whatever the machine gives (on a shared machine,
# run it when nothing else runs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build
WORK=$ROOT/out/bench-cluster
MODELS=static,bert
ROUNDS=3
STEP_S=8
BERT_DOCS=0
DATA=${JP_DATA_DIR:-$ROOT/../shared/data}
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD=$(cd "${2:?}" && pwd); shift 2 ;;
    --work-dir) WORK=${2:?}; shift 2 ;;
    --models) MODELS=${2:?}; shift 2 ;;
    --rounds) ROUNDS=${2:?}; shift 2 ;;
    --step-s) STEP_S=${2:?}; shift 2 ;;
    --bert-docs) BERT_DOCS=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
J=$BUILD/tools/japlaid
IX=$BUILD/indexer/japlaid-index
BC=$BUILD/bench/cluster/bench_cluster
LC=$ROOT/deploy/local-cluster.sh
CORPUS=$DATA/jsquad/valid.corpus.tsv
QUERIES=$DATA/jsquad/valid.queries.tsv
VOCAB=$DATA/bert-base-japanese-v3/vocab.txt
for f in "$J" "$IX" "$BC"; do [ -x "$f" ] || { echo "run.sh: build $f first" >&2; exit 1; }; done
for f in "$CORPUS" "$QUERIES" "$VOCAB"; do [ -r "$f" ] || { echo "run.sh: no $f" >&2; exit 1; }; done
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
export JAPLAID_BIN_DIR=$BUILD
RESULTS=$WORK/results.md
: > "$RESULTS"
RUNS=()
trap 'for r in "${RUNS[@]}"; do "$LC" stop --run-dir "$r" > /dev/null 2>&1 || true; done' EXIT

# num KEY < json: the number after "KEY": (first occurrence)
num() { grep -o "\"$1\":[-0-9.e+]*" | sed -n '1s/^[^:]*://p'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
out() { echo "$*" | tee -a "$RESULTS"; }

bench_model() {
  local name=$1 model=$WORK/model-$1 index=$WORK/index-$1 run=$WORK/run-$1 corpus=$CORPUS n
  echo
  echo "======== $name"
  if [ ! -r "$model/config.json" ]; then
    if [ "$name" = static ]; then
      "$J" model static --out "$model" --vocab-file "$VOCAB" > /dev/null
    else
      # bert-base-japanese-v3 size (12 layers, 768 wide, 110M parameters).
      "$J" model random --out "$model" --vocab-file "$VOCAB" > /dev/null
    fi
  fi
  if [ "$name" = bert ] && [ "$BERT_DOCS" -gt 0 ]; then
    corpus=$WORK/corpus-$BERT_DOCS.tsv
    head -n "$BERT_DOCS" "$CORPUS" > "$corpus"
  fi
  if [ ! -r "$index/index.json" ]; then
    echo "indexing $(wc -l < "$corpus") passages with $name (one process)..."
    OPENBLAS_NUM_THREADS=$(nproc) "$IX" build --model "$model" --corpus "$corpus" --out "$index" \
      --partitions 2 > "$WORK/index-$name.json" 2> "$WORK/index-$name.log"
  fi
  RUNS+=("$run")
  "$LC" stop --run-dir "$run" > /dev/null 2>&1 || true
  "$LC" start --index "$index" --model "$model" --run-dir "$run" > "$WORK/start-$name.log" 2>&1 ||
    { cat "$WORK/start-$name.log"; exit 1; }
  local grpc
  grpc=$(sed -n 's/^grpc=//p' "$run/endpoints")

  # Queries measured per round (5 more are run first, unmeasured). A BERT
  # query takes ~100x a static one on a CPU.
  n=200
  [ "$name" = bert ] && n=40
  local w_with=() w_enc=() w_wo=() w_seq=() f_wo=() c_with=() same=ok
  local r e f c qps_u
  for ((r = 0; r < ROUNDS; r++)); do
    for step in 0 1 2; do
      # Rounds alternate the order: embedded, fan-out, coordinator / the reverse.
      local which=$(( r % 2 ? 2 - step : step ))
      case $which in
        0)
          e=$("$BC" embedded --model "$model" --index "$index" --queries "$QUERIES" --n "$n" \
                --order $((r % 2)) --out "$WORK/top-embedded-$name" 2> /dev/null)
          w_with+=("$(num with_p50 <<< "$e")")
          w_enc+=("$(num encode_p50 <<< "$e")")
          w_wo+=("$(num without_p50 <<< "$e")")
          w_seq+=("$(num without_seq_p50 <<< "$e")")
          ;;
        1)
          f=$("$BC" fanout --model "$model" --cluster "$run/cluster.json" --queries "$QUERIES" \
                --n "$n" --out "$WORK/top-fanout-$name" 2> /dev/null)
          f_wo+=("$(num without_p50 <<< "$f")")
          ;;
        2)
          # Unloaded: requests 4x their latency apart, so none overlaps.
          qps_u=$(awk -v l="${w_with[0]:-5}" 'BEGIN { q = 250 / (l + 1); print (q > 50 ? 50 : q) }')
          c=$("$J" loadgen --server "$grpc" --queries "$QUERIES" --qps "$qps_u" \
                --warmup "$(awk -v q="$qps_u" 'BEGIN { print 5 / q }')" \
                --duration "$(awk -v q="$qps_u" -v n="$n" 'BEGIN { print n / q }')" --json)
          c_with+=("$(num p50 <<< "$c")")
          ;;
      esac
    done
  done
  cmp -s "$WORK/top-embedded-$name" "$WORK/top-fanout-$name" || same="DIFFER"
  local ew ee ewo eseq fwo cw
  ew=$(median "${w_with[@]}"); ee=$(median "${w_enc[@]}"); ewo=$(median "${w_wo[@]}")
  eseq=$(median "${w_seq[@]}"); fwo=$(median "${f_wo[@]}"); cw=$(median "${c_with[@]}")
  out ""
  out "### $name model: unloaded p50 latency, ms (median of $ROUNDS alternated rounds, $n queries each, k 10)"
  out ""
  out "| path | p50 ms | ratio |"
  out "|---|---:|---:|"
  out "| embedded, with encoding (encode + both partitions in parallel + merge) | $ew | 1.00 |"
  out "| cluster via the coordinator, gRPC, with encoding (loadgen at $qps_u qps) | $cw | $(ratio "$cw" "$ew") |"
  out "| embedded encode alone | $ee | |"
  out "| embedded, without encoding (partitions in parallel) | $ewo | 1.00 |"
  out "| embedded, without encoding (partitions one after the other) | $eseq | $(ratio "$eseq" "$ewo") |"
  out "| cluster fan-out to the shards, pre-encoded, without encoding | $fwo | $(ratio "$fwo" "$ewo") |"
  # Only meaningful while encoding is small next to the search: a BERT
  # encode's run-to-run noise exceeds the whole search.
  if awk -v e="$ee" -v s="$ewo" 'BEGIN { exit !(e < s / 4) }'; then
    out "| cluster via the coordinator minus the embedded encode (derived) | $(awk -v a="$cw" -v b="$ee" 'BEGIN { printf "%.3f", a - b }') | $(awk -v a="$cw" -v b="$ee" -v c="$ewo" 'BEGIN { printf "%.2f", (a - b) / c }') |"
  else
    out "| cluster via the coordinator minus the embedded encode (derived) | n/a: encoding dominates | |"
  fi
  out ""
  out "Top-10 passage ids, embedded vs fan-out, all queries: $same"

  # Load sweep.
  local steps limit best=0 over=0 q
  if [ "$name" = bert ]; then steps="1 2 4 8 16 32"; else steps="25 50 100 200 400 800 1600"; fi
  limit=$(awk -v p="$cw" 'BEGIN { print 3 * p }')
  out ""
  out "### $name model: load sweep (gRPC, 4 channels, ${STEP_S} s per step after 2 s warm-up); limit p99 < 3 x $cw = $limit ms"
  out ""
  out "| target qps | achieved | p50 ms | p90 ms | p99 ms | errors | degraded | late sends | within limit |"
  out "|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for q in $steps; do
    c=$("$J" loadgen --server "$grpc" --queries "$QUERIES" --qps "$q" --duration "$STEP_S" \
          --warmup 2 --connections 4 --deadline-ms 10000 --json)
    local p50 p90 p99 errs deg ach late okk=no
    p50=$(num p50 <<< "$c"); p90=$(num p90 <<< "$c"); p99=$(num p99 <<< "$c")
    errs=$(num errors <<< "$c"); deg=$(num degraded <<< "$c"); ach=$(num achieved_qps <<< "$c")
    late=$(num late_sends <<< "$c")
    if [ "$errs" = 0 ] && awk -v a="$p99" -v l="$limit" 'BEGIN { exit !(a != "" && a < l) }'; then
      okk=yes
      best=$q
      over=0
    else
      over=$((over + 1))
    fi
    out "| $q | $ach | $p50 | $p90 | $p99 | $errs | $deg | $late | $okk |"
    [ $over -lt 2 ] || break
  done
  out ""
  out "Highest QPS with p99 < 3 x unloaded p50 and no error: **$best**"
  "$LC" stop --run-dir "$run" > /dev/null
}

out "# bench/cluster: $(date -u '+%F %T') UTC, $(nproc) cores, $(uname -m)"
IFS=, read -r -a list <<< "$MODELS"
for m in "${list[@]}"; do bench_model "$m"; done
echo
echo "results: $RESULTS"
