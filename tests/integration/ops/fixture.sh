#!/usr/bin/env bash
# fixture.sh: the data of the ops suite, built fresh into OUT (ctest fixture
# jp_ops_data; every test_*.sh of the suite reads it):
#   OUT/model          the static model (`japlaid model static`)
#   OUT/corpus.jsonl   the first 240 JSQuAD valid paragraphs as JSONL with
#                      metadata {"article": "a10336", "para": 0}
#   OUT/queries.tsv    40 JSQuAD questions about those paragraphs (qid<TAB>q)
#   OUT/add.jsonl      one long document that is not in the corpus
#   OUT/one            a one-partition index (`japlaid index`)
#   OUT/parts          a two-partition index: part-0000, part-0001 (+ index.json
#                      from japlaid-index build)
# Both indexes split passages at 64 tokens (--max-document-length 64), so
# the tests can tell the build's split settings from the model's default
# (256). k-means runs 4 iterations: seconds on 2 cores.
#
# Usage: fixture.sh OUT indexer|make_parts TOOL
# Environment (tests/CMakeLists.txt): JAPLAID_BIN, JP_DATA_DIR.
set -euo pipefail

OUT=${1:?usage: fixture.sh OUT indexer|make_parts TOOL}
KIND=${2:?}
TOOL=${3:?}
J=${JAPLAID_BIN:?JAPLAID_BIN is not set}
D=${JP_DATA_DIR:?JP_DATA_DIR is not set}
CORPUS=$D/jsquad/valid.corpus.tsv
QUERIES=$D/jsquad/valid.queries.tsv
VOCAB=$D/bert-base-japanese-v3/vocab.txt
if [ ! -r "$CORPUS" ] || [ ! -r "$QUERIES" ] || [ ! -r "$VOCAB" ]; then
  echo "skipped: JSQuAD or the vocabulary is not under $D"
  exit 77
fi
fail() { echo "FAIL: $*" >&2; exit 1; }
N_DOCS=240

rm -rf "$OUT"
mkdir -p "$OUT"
"$J" model static --out "$OUT/model" --vocab-file "$VOCAB" > /dev/null

# JSON string escaping for awk (JSQuAD texts hold no tabs or newlines).
ESC='function esc(s) { gsub(/\\/, "\\\\", s); gsub(/"/, "\\\"", s); return s }'
head -n "$N_DOCS" "$CORPUS" | awk -F'\t' "$ESC"'
  { split($1, a, "p"); printf "{\"id\":\"%s\",\"text\":\"%s\",\"metadata\":{\"article\":\"%s\",\"para\":%d}}\n",
      $1, esc($2 " " $3), a[1], NR % 3 }' > "$OUT/corpus.jsonl"
# Questions whose paragraph is in the corpus: every 5th, 40 of them.
sed 's/^{"id":"\([^"]*\)".*/\1/' "$OUT/corpus.jsonl" > "$OUT/pids"
awk -F'\t' 'NR == FNR { want[$1] = 1; next }
  { pid = $1; sub(/q[0-9]+$/, "", pid); if (pid in want && n++ % 5 == 0 && m++ < 40) print }' \
  "$OUT/pids" "$QUERIES" > "$OUT/queries.tsv"
[ "$(wc -l < "$OUT/queries.tsv")" = 40 ] || fail "fewer than 40 questions about the subset"
# A long document (four paragraphs from outside the subset, ~700 characters):
# several passages at 64 tokens, fewer at the model's 256.
long=$(sed -n "$((N_DOCS + 1)),$((N_DOCS + 4))p" "$CORPUS" | cut -f3 | tr -d '\n')
printf '{"id":"ops-added-1","text":"%s","metadata":{"article":"added","para":0}}\n' \
  "$(printf '%s' "$long" | sed 's/\\/\\\\/g; s/"/\\"/g')" > "$OUT/add.jsonl"

"$J" index --model "$OUT/model" --corpus "$OUT/corpus.jsonl" --index "$OUT/one" \
  --max-document-length 64 --kmeans-iters 4 --threads 2 > "$OUT/one.json" 2> "$OUT/one.log" ||
  { cat "$OUT/one.log"; fail "japlaid index"; }
case "$KIND" in
  indexer)
    "$TOOL" build --model "$OUT/model" --corpus "$OUT/corpus.jsonl" --out "$OUT/parts" \
      --partitions 2 --max-document-length 64 --kmeans-iters 4 --threads 2 \
      > "$OUT/parts.json" 2> "$OUT/parts.log" || { cat "$OUT/parts.log"; fail "japlaid-index build"; }
    ;;
  make_parts)
    "$TOOL" --model "$OUT/model" --index "$OUT/one" --corpus "$OUT/corpus.jsonl" --partitions 2 \
      --out "$OUT/mp" > "$OUT/parts.json" 2> "$OUT/parts.log" ||
      { cat "$OUT/parts.log"; fail "jp_make_parts"; }
    mkdir -p "$OUT/parts"
    mv "$OUT/mp/p0" "$OUT/parts/part-0000"
    mv "$OUT/mp/p1" "$OUT/parts/part-0001"
    rm -rf "$OUT/mp"
    ;;
  *) fail "unknown kind $KIND" ;;
esac
if [ ! -r "$OUT/parts/part-0000/CURRENT" ] || [ ! -r "$OUT/parts/part-0001/CURRENT" ]; then
  fail "no partitions written"
fi
echo "fixture: $(cat "$OUT/one.json")"
echo "fixture: $(head -c 300 "$OUT/parts.json")"
