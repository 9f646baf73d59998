#!/usr/bin/env bash
# test_remote_cli.sh: `japlaid search|rerank|encode|stats|add|delete
# --server` print what the embedded commands print.
#   - One partition (`japlaid index`) behind a coordinator: search (stdin
#     with qids, a query argument, -k, --exhaustive, a metadata filter,
#     --doc-ids), rerank and encode (JSON and .npy) are byte-identical to the
#     embedded commands on the same data.
#   - Two partitions (japlaid-index build): search equals the embedded
#     search of each partition merged by score (ops_tool merge), byte for
#     byte.
#   - stats: the cluster's totals equal the partitions' embedded stats; it
#     carries the replicas' states (StatsResponse.replicas) and each
#     partition's build settings (PartitionStats.settings_json); it equals
#     GET /v1/stats but for the counters that move.
#   - add through the server splits a long document with the partition's
#     build settings (64 tokens, not the model's 256): as many passages as
#     embedded `japlaid add` into a copy of the partition; the document is
#     found, then deleted ({"deleted":1,"not_found":1}) and gone; a repeated
#     id in the file is a bad line.
#   - errors: no server -> UNAVAILABLE, a 9000-byte query -> INVALID_ARGUMENT, exit
#     1 with the status on stderr; --index with --server -> usage (2).
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
Q=$F/queries.tsv

echo "== one partition: remote == embedded, byte for byte"
cluster "$T/run1" --index "$F/one"
modes=("" "-k 3" "--exhaustive -k 5" "--filter para=1" "--doc-ids a10336p0,a10336p1,a10336p10,a10336p2"
       "--ncells 2 --centroid-score-threshold 0.3 --ndocs 512")
for m in "${modes[@]}"; do
  # shellcheck disable=SC2086
  "$J" search --index "$F/one" $m < "$Q" > "$T/e.out" || fail "embedded search $m"
  # shellcheck disable=SC2086
  "$J" search --server "$GRPC" $m < "$Q" > "$T/r.out" 2> "$T/r.err" || fail "remote search $m"
  [ "$(wc -l < "$T/r.out")" = 40 ] || fail "remote search $m: not 40 lines"
  cmp "$T/e.out" "$T/r.out" || fail "search $m: remote output differs from embedded"
  [ ! -s "$T/r.err" ] || fail "search $m: unexpected stderr: $(cat "$T/r.err")"
done
grep -q '"document_metadata":{"article":' "$T/e.out" || fail "no metadata in the results"
q1=$(head -1 "$Q" | cut -f2)
"$J" search --index "$F/one" "$q1" > "$T/e.out"
"$J" search --server "$GRPC" "$q1" > "$T/r.out"
cmp "$T/e.out" "$T/r.out" || fail "search (argument): remote differs"
grep -q '^{"results":\[{"content":' "$T/r.out" || fail "search (argument): no qid-less line"

echo "== rerank"
head -n 30 "$F/corpus.jsonl" | sed -n 's/.*"text":"\([^"]*\)".*/\1/p' > "$T/docs"
"$J" rerank --model "$F/model" -k 5 "$q1" < "$T/docs" > "$T/e.out"
"$J" rerank --server "$GRPC" -k 5 "$q1" < "$T/docs" > "$T/r.out" || fail "remote rerank"
cmp "$T/e.out" "$T/r.out" || fail "rerank: remote differs: $(cat "$T/r.out")"
"$J" rerank --model "$F/model" -k 100 "$q1" < "$T/docs" > "$T/e.out"
"$J" rerank --server "$GRPC" -k 100 "$q1" < "$T/docs" > "$T/r.out" || fail "remote rerank k 100"
cmp "$T/e.out" "$T/r.out" || fail "rerank (k > documents): remote differs"
"$J" rerank --server "$GRPC" "$q1" < /dev/null > "$T/r.out" || fail "remote rerank of nothing"
[ "$(cat "$T/r.out")" = '{"results":[]}' ] || fail "rerank of nothing: $(cat "$T/r.out")"

echo "== encode"
head -n 5 "$Q" | cut -f2 > "$T/q5"
head -n 5 "$T/docs" > "$T/d5"
for kind in --query --doc; do
  in=$T/q5
  [ "$kind" = --doc ] && in=$T/d5
  "$J" encode --model "$F/model" "$kind" < "$in" > "$T/e.out"
  "$J" encode --server "$GRPC" "$kind" < "$in" > "$T/r.out" || fail "remote encode $kind"
  cmp "$T/e.out" "$T/r.out" || fail "encode $kind (json): remote differs"
  "$J" encode --model "$F/model" "$kind" --format npy --out "$T/x.npy" < "$in" > "$T/e.out"
  mv "$T/x.npy" "$T/e.npy"
  "$J" encode --server "$GRPC" "$kind" --format npy --out "$T/x.npy" < "$in" > "$T/r.out" ||
    fail "remote encode $kind npy"
  cmp "$T/e.out" "$T/r.out" || fail "encode $kind (npy summary): remote differs"
  cmp "$T/e.npy" "$T/x.npy" || fail "encode $kind (npy): remote differs"
done
"$J" encode --server "$GRPC" --query --format npy --out "$T/x.npy" < /dev/null > "$T/r.out"
"$J" encode --model "$F/model" --query --format npy --out "$T/e.npy" < /dev/null > /dev/null
cmp "$T/e.npy" "$T/x.npy" || fail "encode of nothing (npy): remote differs"

echo "== stats (one partition)"
"$J" stats --server "$GRPC" > "$T/s.json" || fail "remote stats"
"$J" stats --index "$F/one" > "$T/es.json"
expect_eq "$(get n_documents < "$T/s.json")" 240 "stats n_documents"
expect_eq "$(get n_passages < "$T/s.json")" "$(get passages < "$T/es.json")" "stats n_passages"
expect_eq "$(get coverage.partitions_answered < "$T/s.json")" 1 "stats coverage"
expect_eq "$(get replicas.0.state < "$T/s.json")" live "stats replica state"
expect_eq "$(get partitions.0.stats.settings.max_document_length < "$T/s.json")" 64 \
  "stats settings (the build's max_document_length)"

echo "== two partitions: remote == embedded merged by score, byte for byte"
cluster "$T/run2" --index "$F/parts"
for m in "" "-k 3" "--exhaustive -k 5" "--filter article=a10336"; do
  k=10
  [[ $m =~ -k\ ([0-9]+) ]] && k=${BASH_REMATCH[1]}
  for p in 0 1; do
    # shellcheck disable=SC2086
    "$J" search --index "$F/parts/part-000$p" $m < "$Q" > "$T/e$p.out" || fail "embedded p$p $m"
  done
  "$OT" merge "$k" "$T/e0.out" "$T/e1.out" > "$T/e.out"
  # shellcheck disable=SC2086
  "$J" search --server "$GRPC" $m < "$Q" > "$T/r.out" || fail "remote search $m (2 partitions)"
  cmp "$T/e.out" "$T/r.out" || fail "search $m: remote differs from the merged embedded results"
done

echo "== stats (two partitions): totals, replicas, settings; same as GET /v1/stats"
"$J" stats --server "$GRPC" > "$T/s.json" || fail "remote stats"
sum=0
for p in 0 1; do
  "$J" stats --index "$F/parts/part-000$p" > "$T/es$p.json"
  expect_eq "$(get partitions.$p.stats.n_passages < "$T/s.json")" \
    "$(get passages < "$T/es$p.json")" "stats partition $p passages"
  expect_eq "$(get partitions.$p.stats.settings.max_document_length < "$T/s.json")" 64 \
    "stats partition $p settings"
  expect_eq "$(get replicas.$p.state < "$T/s.json")" live "replica of partition $p"
  expect_eq "$(get replicas.$p.partition < "$T/s.json")" "$p" "replica $p partition"
  sum=$((sum + $(get documents < "$T/es$p.json")))
done
expect_eq "$(get n_documents < "$T/s.json")" "$sum" "stats n_documents (sum of partitions)"
expect_eq "$(get coverage.partitions_answered < "$T/s.json")" 2 "stats coverage"
expect_eq "$(get replicas.2 none < "$T/s.json")" none "stats: more replicas than started"
if command -v curl > /dev/null; then
  volatile='s/"uptime_s":[^,]*,"requests_total":[0-9]*//g; s/"outstanding":[0-9]*//g'
  curl -s "http://$HTTP/v1/stats" | sed "$volatile" > "$T/h.json"
  "$J" stats --server "$GRPC" | sed "$volatile" > "$T/g.json"
  echo >> "$T/h.json"
  cmp "$T/h.json" "$T/g.json" || fail "stats --server differs from GET /v1/stats"
fi

echo "== add / delete through the server"
cp -a "$F/parts/part-0000" "$T/copy0"
"$J" add --index "$T/copy0" --corpus "$F/add.jsonl" > "$T/ea.json" 2> /dev/null ||
  fail "embedded add"
n_e=$(get passages < "$T/ea.json")
[ "$n_e" -ge 3 ] || fail "the long document is $n_e passages at 64 tokens (expected >= 3)"
"$J" add --server "$GRPC" --corpus "$F/add.jsonl" > "$T/ra.json" || fail "remote add"
expect_eq "$(get documents < "$T/ra.json")" 1 "remote add: documents"
expect_eq "$(get passages < "$T/ra.json")" "$n_e" \
  "remote add: passages (split with the partition's settings, as embedded add)"
expect_eq "$(get embeddings < "$T/ra.json")" null "remote add: embeddings"
expect_eq "$(get bad_lines < "$T/ra.json")" 0 "remote add: bad_lines"
probe=$(sed 's/.*"text":"\(.\{30\}\).*/\1/' "$F/add.jsonl")
"$J" search --server "$GRPC" -k 3 --doc-ids ops-added-1 "$probe" > "$T/r.out"
expect_eq "$(get results.0.document_id < "$T/r.out")" ops-added-1 "search finds the added document"
expect_eq "$(get results.0.document_metadata.article < "$T/r.out")" added "added metadata"
"$J" stats --server "$GRPC" > "$T/s.json"
expect_eq "$(get n_documents < "$T/s.json")" $((sum + 1)) "stats after add"
"$J" delete --server "$GRPC" --doc-ids ops-added-1,no-such-doc > "$T/rd.json" || fail "remote delete"
expect_eq "$(cat "$T/rd.json")" '{"deleted":1,"not_found":1}' "remote delete output"
"$J" search --server "$GRPC" -k 3 --doc-ids ops-added-1 "$probe" > "$T/r.out"
expect_eq "$(cat "$T/r.out")" '{"results":[]}' "search after delete"
"$J" stats --server "$GRPC" > "$T/s.json"
expect_eq "$(get n_documents < "$T/s.json")" "$sum" "stats after delete"
cat "$F/add.jsonl" "$F/add.jsonl" > "$T/dup.jsonl"
if "$J" add --server "$GRPC" --corpus "$T/dup.jsonl" > /dev/null 2> "$T/err"; then
  fail "remote add of a repeated id succeeded"
fi
grep -q "already used on line 1" "$T/err" || fail "repeated id: $(cat "$T/err")"
"$J" add --server "$GRPC" --corpus "$T/dup.jsonl" --skip-bad-lines > "$T/ra.json"
expect_eq "$(get bad_lines < "$T/ra.json")" 1 "remote add --skip-bad-lines: bad_lines"
"$J" delete --server "$GRPC" --doc-ids ops-added-1 > /dev/null

echo "== errors"
set +e
"$J" search --server 127.0.0.1:1 "$q1" > /dev/null 2> "$T/err"
st=$?
set -e
expect_eq "$st" 1 "no server: exit status"
grep -q "UNAVAILABLE (14) from 127.0.0.1:1" "$T/err" || fail "no server: $(cat "$T/err")"
set +e
"$J" search --server "$GRPC" "$(head -c 9000 /dev/zero | tr '\0' a)" > /dev/null 2> "$T/err"
st=$?
set -e
expect_eq "$st" 1 "query too long: exit status"
grep -q "INVALID_ARGUMENT (3) from $GRPC: queries\[0\]: 9000 bytes, the limit is 8192" "$T/err" ||
  fail "query too long: $(cat "$T/err")"
set +e
"$J" search --server "$GRPC" --index "$F/one" "$q1" > /dev/null 2> "$T/err"
st=$?
set -e
expect_eq "$st" 2 "--index with --server: exit status"
echo "PASS"
