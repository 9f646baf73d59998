#!/usr/bin/env bash
# test_mpi_fault.sh: japlaid-index when ranks die or fail, resume, bad
# corpus lines, and refusing to clobber (labels fault, mpi).
#
# Uses the first 400 JSQuAD documents (fast on 2 cores) and the test hooks
# JAPLAID_TEST_DIE_AT=phase:rank[:n] (that rank _exit(137)s, as kill -9
# would leave it) and JAPLAID_TEST_FAIL_AT (that rank reports an error).
# Every job runs under `timeout`: a hang fails the test (exit 124).
# Asserted:
#   1. a rank killed during k-means: the job exits non-zero (not 124), no
#      DIR appears;
#   2. a rank that fails (an error, not a crash) while scanning: non-zero,
#      the message names the rank and the cause, no DIR;
#   3. over an existing index with --overwrite, a rank killed mid-encode:
#      non-zero, the previous DIR is byte for byte untouched; --resume then
#      keeps the finished chunks (it says so) and the trained codec, and
#      its index equals a fresh build's (codec bit-identical, search
#      results byte-identical per partition, exhaustive and PLAID);
#   4. rank 0 killed just before the final rename: no DIR; --resume
#      publishes the finished temporary directory;
#   5. bad lines (one column, invalid UTF-8, an id repeated on another
#      rank's share): without --skip-bad-lines the job fails naming
#      file:line; with it the job succeeds and counts 3 bad lines;
#   6. an existing DIR without --overwrite, and a directory that is not an
#      index even with --overwrite, are refused and left alone;
#   7. a singleton (no mpirun) that dies exits 137 and leaves no DIR;
#   8. an empty corpus: a clear message, exit 1, neither DIR nor a
#      temporary directory left.
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

JOB_TIMEOUT=180
SMALL=$T/small.tsv
head -400 "$CORPUS" > "$SMALL"
Q=$T/queries.tsv
# Questions about those documents (question id = passage id + q<k>).
awk -F'\t' 'NR == FNR { ids[$1] = 1; next }
             { p = $1; sub(/q[0-9]+$/, "", p); if ((p in ids) && n++ < 200) print }' \
  "$SMALL" "$QUERIES" > "$Q"
"$J" model static --out "$T/model" --vocab-file "$VOCAB" > /dev/null
common=(--model "$T/model" --corpus "$SMALL" --kmeans-iters 4)

# expect_fail NAME STATUS LOG : the job failed, within the timeout.
expect_fail() {
  [ "$2" != 0 ] || fail "$1: the job succeeded"
  [ "$2" != 124 ] || { cat "$3"; fail "$1: the job hung (timeout)"; }
}

echo "== 1. kill -9 of rank 1 during k-means"
set +e
JAPLAID_TEST_DIE_AT=kmeans:1:2 np 2 build "${common[@]}" --out "$T/K" --partitions 2 \
  > /dev/null 2> "$T/k.log"
st=$?
set -e
echo "exit status $st"
expect_fail "kill in k-means" "$st" "$T/k.log"
grep -q 'JAPLAID_TEST_DIE_AT=kmeans:1:2' "$T/k.log" || fail "the hook did not fire"
[ -e "$T/K" ] && fail "kill in k-means: $T/K appeared"

echo "== 2. rank 2 fails while scanning"
set +e
JAPLAID_TEST_FAIL_AT=scan:2 np 3 build "${common[@]}" --out "$T/S" --partitions 2 \
  > /dev/null 2> "$T/s.log"
st=$?
set -e
echo "exit status $st"
expect_fail "failure in scan" "$st" "$T/s.log"
grep -q 'rank 2 .*injected failure at scan' "$T/s.log" || { cat "$T/s.log"; fail "no clear message"; }
[ -e "$T/S" ] && fail "failure in scan: $T/S appeared"

echo "== 3. kill mid-encode over an existing index, then --resume"
np 2 build "${common[@]}" --out "$T/R" --partitions 3 --seed 7 > /dev/null 2> "$T/r0.log" ||
  { cat "$T/r0.log"; fail "first build"; }
before=$(tree_sum "$T/R")
set +e
# Chunks of 60 passages: rank 1 dies at its 3rd batch, after a chunk or two.
JAPLAID_TEST_DIE_AT=encode:1:3 np 2 build "${common[@]}" --out "$T/R" --partitions 3 \
  --chunk-passages 60 --overwrite > /dev/null 2> "$T/r1.log"
st=$?
set -e
echo "exit status $st"
expect_fail "kill in encode" "$st" "$T/r1.log"
[ "$(tree_sum "$T/R")" = "$before" ] || fail "the previous index changed"
ls -d "$T"/R.tmp-* > /dev/null || fail "no temporary directory to resume"
np 2 build "${common[@]}" --out "$T/R" --partitions 3 --chunk-passages 60 --overwrite --resume \
  > "$T/r2.json" 2> "$T/r2.log" || { cat "$T/r2.log"; fail "resume"; }
grep -q '"resumed":true' "$T/r2.json" || fail "resume: summary says not resumed"
grep -q '^codec: kept from the interrupted job' "$T/r2.log" || fail "resume: codec retrained"
grep -Eq 'rank [01]: [1-9][0-9]* of [0-9]+ chunks already done' "$T/r2.log" ||
  { cat "$T/r2.log"; fail "resume: finished chunks were redone"; }
ls -d "$T"/R.tmp-* > /dev/null 2>&1 && fail "resume left a temporary directory"
[ "$(tree_sum "$T/R")" = "$before" ] && fail "resume did not replace the previous index"
np 2 build "${common[@]}" --out "$T/F" --partitions 3 --chunk-passages 60 > "$T/f.json" \
  2> "$T/f.log" || { cat "$T/f.log"; fail "fresh build"; }
for p in 0 1 2; do
  "$CHK" codec "$T/R/part-000$p" "$T/F/part-000$p" --same > /dev/null ||
    fail "resumed and fresh codecs differ (partition $p)"
  for mode in "" --exhaustive; do
    # shellcheck disable=SC2086
    "$J" search --index "$T/R/part-000$p" $mode < "$Q" > "$T/r.out"
    # shellcheck disable=SC2086
    "$J" search --index "$T/F/part-000$p" $mode < "$Q" > "$T/f.out"
    cmp -s "$T/r.out" "$T/f.out" || fail "resumed and fresh results differ (partition $p $mode)"
  done
done
for f in documents passages embeddings; do
  [ "$(json_num $f < "$T/r2.json")" = "$(json_num $f < "$T/f.json")" ] || fail "resume: $f"
done

echo "== 4. rank 0 killed before the final rename, then --resume"
set +e
JAPLAID_TEST_DIE_AT=publish:0 np 2 build "${common[@]}" --out "$T/P" --partitions 2 \
  > /dev/null 2> "$T/p1.log"
st=$?
set -e
expect_fail "kill at publish" "$st" "$T/p1.log"
[ -e "$T/P" ] && fail "kill at publish: $T/P appeared"
np 2 build "${common[@]}" --out "$T/P" --partitions 2 --resume > "$T/p2.json" 2> "$T/p2.log" ||
  { cat "$T/p2.log"; fail "resume after publish kill"; }
grep -q 'complete, publishing it' "$T/p2.log" || fail "resume rebuilt a finished index"
[ -f "$T/P/index.json" ] && [ -d "$T/P/part-0001" ] || fail "resume after publish kill: layout"

echo "== 5. bad lines"
BAD=$T/bad.tsv
{
  head -150 "$SMALL"
  printf 'a-line-without-a-tab\n'
  printf 'x1\tbad \377 utf8\n'
  sed -n '151,400p' "$SMALL"
  sed -n 20p "$SMALL"           # an id of rank 0's share, on rank 1's
} > "$BAD"
set +e
np 2 build --model "$T/model" --corpus "$BAD" --kmeans-iters 2 --out "$T/B1" --partitions 2 \
  > /dev/null 2> "$T/b1.log"
st=$?
set -e
expect_fail "bad lines" "$st" "$T/b1.log"
grep -q 'bad.tsv:151: expected id<TAB>text' "$T/b1.log" || { cat "$T/b1.log"; fail "bad line not named"; }
[ -e "$T/B1" ] && fail "bad lines: $T/B1 appeared"
np 2 build --model "$T/model" --corpus "$BAD" --kmeans-iters 2 --out "$T/B2" --partitions 2 \
  --skip-bad-lines > "$T/b2.json" 2> "$T/b2.log" || { cat "$T/b2.log"; fail "--skip-bad-lines"; }
[ "$(json_num bad_lines < "$T/b2.json")" = 3 ] || fail "bad_lines: $(json_num bad_lines < "$T/b2.json")"
[ "$(json_num documents < "$T/b2.json")" = 400 ] || fail "documents with bad lines skipped"
grep -q 'bad.tsv:403: this document id was already used on line 20' "$T/b2.log" ||
  { cat "$T/b2.log"; fail "the repeated id is not reported with both lines"; }
grep -q 'bad.tsv:152: invalid UTF-8' "$T/b2.log" || fail "invalid UTF-8 not reported"

echo "== 6. refusing to clobber"
set +e
np 0 build "${common[@]}" --out "$T/R" --partitions 3 > /dev/null 2> "$T/c1.log"
st=$?
set -e
[ "$st" = 1 ] || fail "existing DIR without --overwrite: status $st"
grep -q -- '--overwrite' "$T/c1.log" || fail "refusal does not mention --overwrite"
mkdir -p "$T/precious" && echo keep > "$T/precious/file"
set +e
np 0 build "${common[@]}" --out "$T/precious" --partitions 1 --overwrite > /dev/null 2> "$T/c2.log"
st=$?
set -e
[ "$st" = 1 ] || fail "a foreign directory with --overwrite: status $st"
[ "$(cat "$T/precious/file")" = keep ] && [ "$(ls "$T/precious")" = file ] || fail "a foreign directory was touched"

echo "== 7. singleton death"
set +e
JAPLAID_TEST_DIE_AT=encode:0 np 0 build "${common[@]}" --out "$T/Z" --partitions 1 > /dev/null 2> "$T/z.log"
st=$?
set -e
[ "$st" = 137 ] || fail "singleton death: status $st"
[ -e "$T/Z" ] && fail "singleton death: $T/Z appeared"

echo "== 8. empty corpus"
: > "$T/empty.tsv"
set +e
np 2 build --model "$T/model" --corpus "$T/empty.tsv" --out "$T/N" --partitions 2 > /dev/null 2> "$T/n.log"
st=$?
set -e
expect_fail "empty corpus" "$st" "$T/n.log"
grep -q 'empty.tsv has no documents to index' "$T/n.log" || { cat "$T/n.log"; fail "empty corpus: message"; }
ls -d "$T/N" "$T"/N.tmp-* > /dev/null 2>&1 && fail "empty corpus: a directory was left"
echo "PASS"
