#!/usr/bin/env bash
# test_failover.sh: 2 partitions x 2 replicas (deploy/local-cluster.sh)
# under `japlaid loadgen` (open loop, 40 qps for 10 s after 1 s of warm-up);
# kill -9 of one replica of partition 0, then of one replica of partition
# 1, while it runs. Pass: every one of the 400 measured requests is
# answered with full coverage (ZERO errors, zero degraded answers): the
# coordinator fails over to the other replica. Then `local-cluster.sh heal`
# brings both back and every replica is live again.
#
# Also checks the generator's open loop: with the coordinator stopped
# (SIGSTOP) for 1 s under 20 qps, the requests due during the stall are
# charged the stall (measured from their intended send times), so the p90
# of the run is at least 300 ms and its max at least 800 ms. A closed-loop
# client would have sent one request during the stall and reported a p90
# of a few milliseconds. These are lower bounds set by the injected stall,
# not speed thresholds: a slower machine only raises them.
#
# The coordinator gets a 5 s search deadline so that a slow, shared CI
# machine cannot turn answers degraded by time alone: what is tested is
# failover, not speed.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
Q=$F/queries.tsv
R=$T/run

cluster "$R" --index "$F/parts" --replicas 2 --coordinator-arg --deadline-ms=5000

echo "== loadgen 40 qps x 10 s; kill -9 shard-p0-r0 at ~4 s, shard-p1-r1 at ~7 s"
"$J" loadgen --server "$GRPC" --queries "$Q" --qps 40 --duration 10 --warmup 1 --connections 2 \
  --json > "$T/lg.json" 2> "$T/lg.err" &
lg=$!
sleep 4
kill -9 "$(pid_of "$R" shard-p0-r0)"
sleep 3
kill -9 "$(pid_of "$R" shard-p1-r1)"
wait "$lg" || fail "loadgen exited with $?: $(cat "$T/lg.err")"
cat "$T/lg.json"
expect_eq "$(get requests < "$T/lg.json")" 400 "requests measured"
expect_eq "$(get errors < "$T/lg.json")" 0 "failed requests (errors: $(get errors_by_kind < "$T/lg.json"))"
expect_eq "$(get ok < "$T/lg.json")" 400 "answered requests"
expect_eq "$(get degraded < "$T/lg.json")" 0 "degraded answers"

set +e
"$LC" status --run-dir "$R" > "$T/status" 2>&1
st=$?
set -e
cat "$T/status"
expect_eq "$st" 1 "status with two dead shards"
expect_eq "$(grep -c ' no ' "$T/status")" 2 "dead processes in status"
grep -q '^coordinator .* yes .*healthz 200' "$T/status" || fail "coordinator not healthy"

echo "== heal"
"$LC" heal --run-dir "$R" > "$T/heal" 2>&1 || { cat "$T/heal"; fail "heal"; }
"$LC" status --run-dir "$R" > "$T/status" || { cat "$T/status"; fail "status after heal"; }
expect_eq "$(grep -c ' live$' "$T/status")" 4 "live replicas after heal"

echo "== open loop: a 1 s stall is charged to every request due during it"
"$J" loadgen --server "$GRPC" --queries "$Q" --qps 20 --duration 4 --json > "$T/lg2.json" &
lg=$!
sleep 1.5
kill -STOP "$(pid_of "$R" coordinator)"
sleep 1
kill -CONT "$(pid_of "$R" coordinator)"
wait "$lg" || fail "loadgen (stall) exited with $?"
cat "$T/lg2.json"
expect_eq "$(get errors < "$T/lg2.json")" 0 "errors during the stall run"
p90=$(get latency_ms.p90 < "$T/lg2.json")
mx=$(get latency_ms.max < "$T/lg2.json")
awk -v a="$p90" 'BEGIN { exit !(a >= 300) }' || fail "p90 $p90 ms: the stall was not charged"
awk -v a="$mx" 'BEGIN { exit !(a >= 800) }' || fail "max $mx ms: the stall was not charged"
echo "PASS"
