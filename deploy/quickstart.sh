#!/usr/bin/env bash
# quickstart.sh: JaPLAID's whole main job on a fresh machine, end to end:
#   1. dependencies   ./deploy/install-deps.sh (installs only what is missing)
#   2. build          cmake, Release, in build/
#   3. model          a real ColBERT checkpoint if one is given or present,
#                     else the generated static model (a lexical stand-in)
#   4. data           JSQuAD valid (../shared/data/jsquad, else downloaded
#                     from JGLUE on GitHub and converted)
#   5. index          mpirun -np 2 japlaid-index build: 2 partitions
#   6. cluster        deploy/local-cluster.sh start (shards + coordinator)
#   7. queries        sample Japanese queries by CLI (gRPC) and curl (HTTP)
#
#   ./deploy/quickstart.sh [--model DIR] [--reindex] [--work-dir DIR]
#                          [--run-dir DIR] [--build-dir DIR] [--replicas R]
#                          [--skip-deps] [--light-deps]
#
# --model DIR     a Hugging Face ColBERT checkpoint directory (config.json,
#                 model.safetensors, vocab.txt, tokenizer_config.json,
#                 artifact.metadata), e.g. bclavie/JaColBERTv2. Default:
#                 $JAPLAID_MODEL, else ./models/JaColBERTv2 when present, else
#                 the static model (generated; says so).
# --reindex       build the index again even if one of this model exists
# --work-dir DIR  models, data, index and logs (default ./out/quickstart)
# --run-dir DIR   the cluster's run directory (default WORK/run)
# --build-dir DIR the CMake build directory (default ./build)
# --replicas R    replicas per partition (default 1)
# --skip-deps     do not run install-deps.sh; --light-deps: pass it --light
#                 (the small IPAdic dictionary instead of UniDic)
#
# Re-runnable: the build is incremental, the data and an index built with
# the same model are reused, and a cluster already running in the run
# directory is stopped and started again. Any failing step stops the script
# with the step's name and the end of its log.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK=$ROOT/out/quickstart
RUN=""
BUILD=$ROOT/build
MODEL=${JAPLAID_MODEL:-}
REINDEX=0
REPLICAS=1
SKIP_DEPS=0
LIGHT_DEPS=0
PARTITIONS=2
RANKS=2
# The JGLUE file (the same one ../shared/data holds; see its README) and the
# bert-base-japanese-v3 vocabulary (for the static model), with its sha256:
# from the model's Hugging Face repository, else a verbatim GitHub copy.
JSQUAD_URL=https://raw.githubusercontent.com/yahoojapan/JGLUE/main/datasets/jsquad-v1.3/valid-v1.3.json
VOCAB_URLS=(https://huggingface.co/tohoku-nlp/bert-base-japanese-v3/resolve/main/vocab.txt
  https://raw.githubusercontent.com/fishaudio/Bert-VITS2/80a50f87685673acd33891cff49f11ba7126b8b8/bert/bert-base-japanese-v3/vocab.txt)
VOCAB_SHA256=5e9a696b0191b833cfdf8eefada01f41f23ccbd7e7746946864260b1cdd0a784

while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=${2:?--model needs DIR}; shift 2 ;;
    --reindex) REINDEX=1; shift ;;
    --work-dir) WORK=${2:?}; shift 2 ;;
    --run-dir) RUN=${2:?}; shift 2 ;;
    --build-dir) BUILD=${2:?}; shift 2 ;;
    --replicas) REPLICAS=${2:?}; shift 2 ;;
    --skip-deps) SKIP_DEPS=1; shift ;;
    --light-deps) LIGHT_DEPS=1; shift ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
    *) echo "quickstart: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
RUN=${RUN:-$WORK/run}

STEP="start"
LOG=""
on_error() {
  echo >&2
  echo "quickstart: FAILED at step: $STEP" >&2
  if [ -n "$LOG" ] && [ -s "$LOG" ]; then
    echo "---- last lines of $LOG ----" >&2
    tail -n 25 "$LOG" >&2
  fi
  exit 1
}
trap on_error ERR
die() { echo "quickstart: $*" >&2; LOG=""; false; }
step() {
  STEP=$1
  LOG=$WORK/logs/$2.log
  echo
  echo "==== [$STEP] $3"
}
# run LOG-visible command: output to the step's log (shown on failure)
run() { echo "+ $*" >> "$LOG"; "$@" >> "$LOG" 2>&1; }

# ---- 1. dependencies ---------------------------------------------------------------
step "1/7 dependencies" deps "Debian packages (deploy/install-deps.sh)"
if [ "$SKIP_DEPS" = 1 ]; then
  echo "skipped (--skip-deps)"
else
  args=()
  [ "$LIGHT_DEPS" = 1 ] && args+=(--light)
  run ./deploy/install-deps.sh "${args[@]}"
  tail -n 1 "$LOG"
fi

# ---- 2. build ----------------------------------------------------------------------
step "2/7 build" build "cmake --build $BUILD (Release)"
cfg=(-DCMAKE_BUILD_TYPE=Release)
# A first configure skips what the quickstart does not need; an existing
# build directory keeps its own choices.
[ -f "$BUILD/CMakeCache.txt" ] || cfg+=(-DJP_BUILD_TESTS=OFF -DJP_BUILD_BENCH=OFF)
run cmake -S "$ROOT" -B "$BUILD" "${cfg[@]}"
run cmake --build "$BUILD" -j "$(nproc)"
J=$BUILD/tools/japlaid
IX=$BUILD/indexer/japlaid-index
for b in "$J" "$IX" "$BUILD/shard/japlaid-shard" "$BUILD/coordinator/japlaid-coordinator"; do
  [ -x "$b" ] || die "the build did not produce $b"
done
echo "built: $J, $IX, japlaid-shard, japlaid-coordinator"

# ---- 3. model ----------------------------------------------------------------------
step "3/7 model" model "the ColBERT checkpoint"
is_ckpt() { [ -r "$1/config.json" ] && [ -r "$1/model.safetensors" ] && [ -r "$1/vocab.txt" ]; }
if [ -z "$MODEL" ] && is_ckpt "$ROOT/models/JaColBERTv2"; then MODEL=$ROOT/models/JaColBERTv2; fi
if [ -n "$MODEL" ]; then
  is_ckpt "$MODEL" || die "--model $MODEL is not a checkpoint directory (needs config.json, \
model.safetensors, vocab.txt, tokenizer_config.json, artifact.metadata)"
  MODEL=$(cd "$MODEL" && pwd)
  echo "using the checkpoint $MODEL"
else
  MODEL=$WORK/models/static
  if [ ! -r "$MODEL/config.json" ]; then
    vocab=$ROOT/../shared/data/bert-base-japanese-v3/vocab.txt
    if [ ! -r "$vocab" ]; then
      vocab=$WORK/data/vocab.txt
      if [ ! -r "$vocab" ]; then
        mkdir -p "$WORK/data"
        echo "downloading the bert-base-japanese-v3 vocabulary"
        got=0
        for url in "${VOCAB_URLS[@]}"; do
          if curl -fsSL -o "$vocab.tmp" "$url" >> "$LOG" 2>&1 &&
            echo "$VOCAB_SHA256  $vocab.tmp" | sha256sum -c --quiet - >> "$LOG" 2>&1; then
            got=1
            break
          fi
          echo "  $url: failed or wrong sha256"
        done
        [ "$got" = 1 ] || die "could not download the vocabulary with the expected sha256"
        mv "$vocab.tmp" "$vocab"
      fi
    fi
    run "$J" model static --out "$MODEL" --vocab-file "$vocab"
  fi
  cat << EOF
NOTE: no real checkpoint was given, so this run uses the STATIC model: a
      lexical stand-in (one fixed vector per vocabulary entry, no
      transformer) that finds passages sharing words with the query. It
      shows the whole system working; its rankings are NOT JaColBERTv2's.
      For the real model, download the files of the Hugging Face repository
      bclavie/JaColBERTv2 -- config.json, model.safetensors, vocab.txt,
      tokenizer_config.json, artifact.metadata -- into one directory, e.g.
        mkdir -p models/JaColBERTv2   (then put the five files there)
      and run again with --model models/JaColBERTv2 (or JAPLAID_MODEL=DIR,
      or just leave it at ./models/JaColBERTv2).
EOF
fi
run "$J" model info "$MODEL" --json
identity=$(grep -o '"identity": *"[0-9a-f]*"' "$LOG" | tail -n 1 | grep -o '[0-9a-f]\{32\}')
[ -n "$identity" ] || die "cannot read the identity of $MODEL (japlaid model info)"
echo "model identity $identity"

# ---- 4. data -----------------------------------------------------------------------
step "4/7 data" data "JSQuAD valid (JGLUE, CC BY-SA 4.0)"
CORPUS=$WORK/data/jsquad.corpus.tsv
QUERIES=$WORK/data/jsquad.queries.tsv
shared=$ROOT/../shared/data/jsquad
mkdir -p "$WORK/data"
if [ -r "$shared/valid.corpus.tsv" ] && [ -r "$shared/valid.queries.tsv" ]; then
  CORPUS=$shared/valid.corpus.tsv
  QUERIES=$shared/valid.queries.tsv
  echo "using $shared"
elif [ -r "$CORPUS" ] && [ -r "$QUERIES" ]; then
  echo "using $CORPUS (converted before)"
else
  json=$shared/valid-v1.3.json
  if [ ! -r "$json" ]; then
    json=$WORK/data/valid-v1.3.json
    if [ ! -r "$json" ]; then
      echo "downloading $JSQUAD_URL"
      run curl -fsSL -o "$json.tmp" "$JSQUAD_URL"
      mv "$json.tmp" "$json"
    fi
  fi
  # SQuAD JSON -> pid<TAB>title<TAB>paragraph and qid<TAB>question. Each
  # context is "<title> [SEP] <paragraph>"; a paragraph's id is its
  # questions' id without the trailing q<k> (a10336p0q1 -> a10336p0).
  if command -v python3 > /dev/null; then
    run python3 - "$json" "$CORPUS.tmp" "$QUERIES.tmp" << 'PY'
import json, re, sys
data = json.load(open(sys.argv[1], encoding="utf-8"))["data"]
clean = lambda s: re.sub(r"[\t\r\n]", " ", s)
with open(sys.argv[2], "w", encoding="utf-8") as c, open(sys.argv[3], "w", encoding="utf-8") as q:
    for a, art in enumerate(data):
        for p, para in enumerate(art["paragraphs"]):
            qas = para.get("qas", [])
            pid = re.sub(r"q\d+$", "", qas[0]["id"]) if qas else "a%dp%d" % (a, p)
            title, _, text = para["context"].partition(" [SEP] ")
            c.write("%s\t%s\t%s\n" % (pid, clean(title), clean(text)))
            for qa in qas:
                q.write("%s\t%s\n" % (qa["id"], clean(qa["question"])))
PY
  elif command -v jq > /dev/null; then
    run jq -r '.data[].paragraphs[] | (.context | split(" [SEP] ")) as $c
      | [(.qas[0].id | sub("q[0-9]+$"; "")), $c[0], ($c[1:] | join(" [SEP] "))] | @tsv' \
      "$json" > "$CORPUS.tmp"
    run jq -r '.data[].paragraphs[].qas[] | [.id, .question] | @tsv' "$json" > "$QUERIES.tmp"
  else
    die "converting JSQuAD needs python3 or jq (apt-get install python3)"
  fi
  mv "$CORPUS.tmp" "$CORPUS"
  mv "$QUERIES.tmp" "$QUERIES"
  echo "converted $json"
fi
echo "corpus: $(wc -l < "$CORPUS") passages ($CORPUS); questions: $(wc -l < "$QUERIES")"

# ---- 5. index ----------------------------------------------------------------------
step "5/7 index" index "japlaid-index build, $PARTITIONS partitions, $RANKS MPI ranks"
INDEX=$WORK/index
reuse=0
if [ "$REINDEX" = 0 ] && [ -r "$INDEX/index.json" ]; then
  if grep -q "\"identity\": *\"$identity\"" "$INDEX/index.json"; then
    reuse=1
  else
    echo "the index in $INDEX was built with another model: building it again"
  fi
fi
if [ "$reuse" = 1 ]; then
  echo "reusing $INDEX (built with this model; --reindex builds it again)"
else
  ix=(build --model "$MODEL" --corpus "$CORPUS" --out "$INDEX" --partitions "$PARTITIONS")
  [ -e "$INDEX" ] && ix+=(--overwrite)
  if command -v mpirun > /dev/null; then
    mpi=(mpirun -np "$RANKS")
    # OpenMPI refuses root unless told so; more ranks than cores needs
    # --oversubscribe.
    if [ "$(id -u)" = 0 ]; then
      mpi+=(--allow-run-as-root)
      export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
    [ "$(nproc)" -ge "$RANKS" ] || mpi+=(--oversubscribe)
    # One BLAS thread per rank: the ranks share the cores.
    mpi+=(-x OPENBLAS_NUM_THREADS=1)
  else
    echo "WARNING: mpirun not found: building with one process instead"
    mpi=()
  fi
  echo "+ ${mpi[*]} $IX ${ix[*]}"
  echo "(the static model takes about a minute on 2 cores; a BERT model on a CPU longer)"
  run "${mpi[@]}" "$IX" "${ix[@]}"
  tail -n 1 "$LOG" | cut -c1-300
fi

# ---- 6. cluster --------------------------------------------------------------------
step "6/7 cluster" cluster "deploy/local-cluster.sh: $PARTITIONS partitions x $REPLICAS replica(s)"
export JAPLAID_BIN_DIR=$BUILD
if ./deploy/local-cluster.sh status --run-dir "$RUN" > /dev/null 2>&1 ||
   [ $? = 1 ]; then
  echo "a cluster runs in $RUN: stopping it first"
  run ./deploy/local-cluster.sh stop --run-dir "$RUN"
fi
run ./deploy/local-cluster.sh start --index "$INDEX" --model "$MODEL" --replicas "$REPLICAS" \
  --run-dir "$RUN"
GRPC=$(sed -n 's/^grpc=//p' "$RUN/endpoints")
HTTP=$(sed -n 's/^http=//p' "$RUN/endpoints")
./deploy/local-cluster.sh status --run-dir "$RUN"

# ---- 7. queries --------------------------------------------------------------------
step "7/7 queries" queries "sample Japanese queries"
# Questions about articles of the corpus (JSQuAD valid is 59 Wikipedia
# articles: 梅雨, 日本共産党, オランダ, グーテンベルク, マーラー, ...), and
# the first two JSQuAD questions.
samples=("梅雨が明けるのはいつ頃ですか" "グーテンベルクが発明した印刷技術は何か" "マーラーの交響曲の特徴")
while IFS=$'\t' read -r _ q; do samples+=("$q"); done < <(head -n 2 "$QUERIES")
# The hits of a search answer (CLI line or HTTP body), one line each: rank,
# score, document id, the passage's first characters.
show_hits() {
  sed 's/{"content":"/\n/g' "$1" | tail -n +2 |
    sed 's/^\(.\{0,60\}\)[^"]*","score":\([^,]*\),"rank":\([0-9]*\),"document_id":"\([^"]*\)".*/  #\3 \2 \4 \1.../'
}
for q in "${samples[@]}"; do
  echo
  echo "\$ japlaid search --server $GRPC -k 3 \"$q\""
  "$J" search --server "$GRPC" -k 3 "$q" > "$WORK/answer.json" 2>> "$LOG"
  show_hits "$WORK/answer.json"
done
body=$(printf '{"query": "%s", "k": 3}' "${samples[1]}")
echo
echo "\$ curl -s http://$HTTP/v1/search -d '$body'"
curl -s "http://$HTTP/v1/search" -d "$body" > "$WORK/answer-http.json"
echo >> "$WORK/answer-http.json"
show_hits "$WORK/answer-http.json"
echo "  $(grep -o '"coverage":.*' "$WORK/answer-http.json")"
echo
echo "==== done. The cluster keeps running:"
echo "  gRPC   $GRPC   japlaid search --server $GRPC \"質問\"  (also rerank/encode/stats/add/delete)"
echo "  HTTP   http://$HTTP   POST /v1/search, GET /v1/stats, /healthz, /metrics"
echo "  load   $J loadgen --server $GRPC --queries $QUERIES --qps 20 --duration 10"
echo "  status ./deploy/local-cluster.sh status --run-dir $RUN"
echo "  stop   ./deploy/local-cluster.sh stop --run-dir $RUN"
