#!/usr/bin/env bash
# test_launcher.sh: deploy/local-cluster.sh itself.
#   - start (2 partitions x 2 replicas) -> status lists 5 live processes
#     (exit 0); a second start in the same run dir is refused and touches
#     nothing; stop ends every process (exit 0), status then exits 3, a
#     second stop says nothing runs; start again reuses the copies.
#   - heal restarts a killed coordinator on its old addresses.
#   - a failed start (a model the shards were not built with, so they are
#     refused and never healthy) gives up after --timeout with the reason
#     and leaves no process behind; a directory that holds no index is
#     refused before anything starts.
#   - a one-partition index (`japlaid index`) is served; with the
#     coordinator's --no-split override an upsert is one passage, although
#     the partition's settings (split at 64 tokens) are reported unchanged.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
R=$T/run

alive_pid() { [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2> /dev/null; }

echo "== start / status / refuse / stop"
cluster "$R" --index "$F/parts" --replicas 2
"$LC" status --run-dir "$R" > "$T/status" || { cat "$T/status"; fail "status exit"; }
expect_eq "$(grep -c ' yes ' "$T/status")" 5 "processes alive"
expect_eq "$(grep -c ' live$' "$T/status")" 4 "live replicas"
pids=$(cat "$R"/*.pid | cut -d' ' -f1)
if "$LC" start --run-dir "$R" --index "$F/parts" --model "$F/model" > "$T/out" 2>&1; then
  fail "a second start in the same run dir succeeded"
fi
grep -q "a cluster is running in" "$T/out" || fail "refusal: $(cat "$T/out")"
expect_eq "$(cat "$R"/*.pid | cut -d' ' -f1)" "$pids" "pids after the refused start"
"$LC" stop --run-dir "$R" > "$T/out" || fail "stop"
grep -q "stopped 5 process" "$T/out" || fail "stop: $(cat "$T/out")"
for p in $pids; do
  if alive_pid "$p"; then fail "pid $p still runs after stop"; fi
done
set +e
"$LC" status --run-dir "$R" > /dev/null
st=$?
set -e
expect_eq "$st" 3 "status of a stopped cluster"
"$LC" stop --run-dir "$R" | grep -q "nothing runs" || fail "second stop"

echo "== start again (copies reused), kill the coordinator, heal"
touch "$R/data/p0-r0/reuse-marker"
cluster "$R" --index "$F/parts" --replicas 2
[ -e "$R/data/p0-r0/reuse-marker" ] || fail "the partition copy was made again"
grpc0=$GRPC
q1=$(head -1 "$F/queries.tsv" | cut -f2)
cpid=$(pid_of "$R" coordinator)
kill -9 "$cpid"
# kill(2) returns before the process is gone: heal must not see it alive.
for _ in $(seq 50); do alive_pid "$cpid" && sleep 0.1; done
"$LC" heal --run-dir "$R" > "$T/out" 2>&1 || { cat "$T/out"; fail "heal"; }
grep -q "restarted coordinator" "$T/out" || fail "heal: $(cat "$T/out")"
"$J" search --server "$grpc0" -k 2 "$q1" > "$T/r.out" || fail "search after the coordinator's heal"
expect_eq "$(get results.1.rank < "$T/r.out")" 2 "answer after heal"
"$LC" stop --run-dir "$R" > /dev/null

echo "== failed starts clean up"
"$J" model static --out "$T/model2" --vocab-file "$JP_DATA_DIR/bert-base-japanese-v3/vocab.txt" \
  --seed 2 > /dev/null
if "$LC" start --run-dir "$T/bad" --index "$F/parts" --model "$T/model2" --timeout 5 \
     > "$T/out" 2>&1; then
  fail "a cluster of refused replicas started"
fi
grep -q "not healthy after 5s" "$T/out" || fail "failed start: $(cat "$T/out")"
grep -q "refused" "$T/out" || fail "failed start does not say why: $(cat "$T/out")"
for f in "$T"/bad/*.pid; do
  [ -e "$f" ] && fail "pid file $f left after a failed start"
done
mkdir -p "$T/empty"
if "$LC" start --run-dir "$T/bad2" --index "$T/empty" --model "$F/model" > "$T/out" 2>&1; then
  fail "start with no index succeeded"
fi
grep -q "holds no partition" "$T/out" || fail "no index: $(cat "$T/out")"

echo "== one partition, --no-split override of the partition's settings"
cluster "$T/one" --index "$F/one" --coordinator-arg --no-split
"$J" add --server "$GRPC" --corpus "$F/add.jsonl" > "$T/ra.json" || fail "remote add"
expect_eq "$(get passages < "$T/ra.json")" 1 "passages with --no-split"
"$J" stats --server "$GRPC" > "$T/s.json"
expect_eq "$(get partitions.0.stats.settings.split < "$T/s.json")" true "reported settings"
expect_eq "$(get n_documents < "$T/s.json")" 241 "documents after the add"
"$LC" stop --run-dir "$T/one" > /dev/null
echo "PASS"
