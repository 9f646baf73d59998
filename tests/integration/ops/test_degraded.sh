#!/usr/bin/env bash
# test_degraded.sh: 2 partitions x 1 replica (deploy/local-cluster.sh).
#   - `japlaid loadgen --http` (30 qps for 8 s) while partition 1's only
#     shard is kill -9'ed: answers turn degraded (loadgen counts degraded >
#     0) but not one request fails, and the coordinator keeps running;
#   - during the outage, `japlaid search --server` prints the partial answer
#     with "degraded":true and the coverage naming partition 1 (and a
#     warning on stderr), and --require-full-coverage fails with
#     UNAVAILABLE naming partition 1; `japlaid stats --server` reports
#     partition 1 missing and its replica "down" with a reason
#     (StatsResponse.replicas);
#   - after `local-cluster.sh heal` restarts the shard on its address, a
#     further loadgen run (gRPC) gets only full answers;
#   - loadgen's error accounting: against addresses where nothing listens,
#     every request is an error of the right kind (gRPC UNAVAILABLE, HTTP
#     connect).
# The coordinator gets a 5 s search deadline so that only the kill, never
# a slow shared CI machine, makes answers degraded.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
Q=$F/queries.tsv
R=$T/run

cluster "$R" --index "$F/parts" --replicas 1 --coordinator-arg --deadline-ms=5000

echo "== loadgen --http 30 qps x 8 s; kill -9 the only shard of partition 1 at ~3 s"
"$J" loadgen --http --server "$HTTP" --queries "$Q" --qps 30 --duration 8 --json \
  > "$T/lg.json" 2> "$T/lg.err" &
lg=$!
sleep 3
kill -9 "$(pid_of "$R" shard-p1-r0)"
wait "$lg" || fail "loadgen exited with $?: $(cat "$T/lg.err")"
cat "$T/lg.json"
expect_eq "$(get requests < "$T/lg.json")" 240 "requests measured"
expect_eq "$(get errors < "$T/lg.json")" 0 "failed requests (errors: $(get errors_by_kind < "$T/lg.json"))"
expect_eq "$(get ok < "$T/lg.json")" 240 "answered requests"
deg=$(get degraded < "$T/lg.json")
[ "$deg" -gt 0 ] || fail "no degraded answer after the kill"
[ "$deg" -lt 240 ] || fail "every answer degraded, also before the kill"
grep -q '^coordinator .* yes ' <("$LC" status --run-dir "$R" || true) || fail "the coordinator died"

echo "== the CLI during the outage"
q1=$(head -1 "$Q" | cut -f2)
"$J" search --server "$GRPC" -k 3 "$q1" > "$T/r.out" 2> "$T/r.err" || fail "search during the outage"
expect_eq "$(get degraded < "$T/r.out")" true "search: degraded"
expect_eq "$(get coverage.partitions_answered < "$T/r.out")" 1 "search: partitions answered"
expect_eq "$(get coverage.failed.0.partition < "$T/r.out")" 1 "search: the failed partition"
[ "$(get results.2.rank < "$T/r.out")" = 3 ] || fail "search: partition 0's hits missing"
grep -q "warning: partial answer: 1 of 2 partitions" "$T/r.err" || fail "no warning: $(cat "$T/r.err")"
set +e
"$J" search --server "$GRPC" --require-full-coverage "$q1" > /dev/null 2> "$T/r.err"
st=$?
set -e
expect_eq "$st" 1 "--require-full-coverage: exit status"
grep -q "UNAVAILABLE (14).*partition 1" "$T/r.err" || fail "full coverage: $(cat "$T/r.err")"

"$J" stats --server "$GRPC" > "$T/s.json" || fail "stats during the outage"
expect_eq "$(get coverage.partitions_answered < "$T/s.json")" 1 "stats: partitions answered"
expect_eq "$(get partitions.1.stats < "$T/s.json")" null "stats: partition 1's stats"
expect_eq "$(get replicas.0.state < "$T/s.json")" live "stats: replica of partition 0"
expect_eq "$(get replicas.1.state < "$T/s.json")" down "stats: replica of partition 1"
[ -n "$(get replicas.1.reason < "$T/s.json")" ] || fail "stats: no reason for the down replica"

echo "== heal, then only full answers"
"$LC" heal --run-dir "$R" > "$T/heal" 2>&1 || { cat "$T/heal"; fail "heal"; }
"$J" loadgen --server "$GRPC" --queries "$Q" --qps 30 --duration 3 --json > "$T/lg2.json" ||
  fail "loadgen after heal"
cat "$T/lg2.json"
expect_eq "$(get errors < "$T/lg2.json")" 0 "errors after heal"
expect_eq "$(get degraded < "$T/lg2.json")" 0 "degraded answers after heal"
expect_eq "$(get ok < "$T/lg2.json")" 90 "answers after heal"

echo "== loadgen against nothing: every request an error of its kind"
"$J" loadgen --server 127.0.0.1:1 --queries "$Q" --qps 20 --duration 1 --json > "$T/lg3.json"
expect_eq "$(get errors < "$T/lg3.json")" 20 "gRPC errors"
expect_eq "$(get errors_by_kind.UNAVAILABLE < "$T/lg3.json")" 20 "gRPC UNAVAILABLE"
"$J" loadgen --http --server 127.0.0.1:1 --queries "$Q" --qps 20 --duration 1 --deadline-ms 300 \
  --json > "$T/lg4.json"
cat "$T/lg4.json"
expect_eq "$(get requests < "$T/lg4.json")" 20 "HTTP requests"
expect_eq "$(get ok < "$T/lg4.json")" 0 "HTTP answers"
[ "$(get errors_by_kind.connect < "$T/lg4.json")" -gt 0 ] || fail "no HTTP connect errors"
echo "PASS"
