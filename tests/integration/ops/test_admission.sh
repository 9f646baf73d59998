#!/usr/bin/env bash
# test_admission.sh: the coordinator's bound on searches in flight.
#   2 partitions x 1 replica, coordinator --max-inflight-searches 1 and a
#   4 s search deadline. Partition 1's shard is stopped (SIGSTOP), so a
#   search stays in flight until its deadline; the coordinator's /metrics
#   shows it (japlaid_searches_in_flight 1). While it is held:
#   - a second search is refused at once with UNAVAILABLE "overloaded",
#     by gRPC and by HTTP (503), and nothing else changes;
#   - once the shard continues (SIGCONT), the held search is answered, the
#     gauge returns to 0 and searches are admitted again, with full answers.
# No timing is asserted: the held search is seen through the gauge, not
# assumed after a sleep.
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
Q=$F/queries.tsv
R=$T/run

cluster "$R" --index "$F/parts" --replicas 1 --coordinator-arg --deadline-ms=4000 \
  --coordinator-arg --max-inflight-searches=1
held=$(pid_of "$R" shard-p1-r0)
# A stopped shard must not outlive the test, whatever fails.
trap 'kill -CONT "$held" 2> /dev/null || true; cleanup' EXIT

# metric NAME: its value from the coordinator's GET /metrics (bash's
# /dev/tcp: no curl needed).
metric() {
  local host=${HTTP%:*} port=${HTTP##*:}
  exec 3<> "/dev/tcp/$host/$port"
  printf 'GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$HTTP" >&3
  sed -n "s/^$1 //p" <&3 | tr -d '\r'
  exec 3<&-
}

q1=$(head -1 "$Q" | cut -f2)
expect_eq "$(metric japlaid_searches_in_flight)" 0 "in flight before"

echo "== hold one search with a stopped shard"
kill -STOP "$held"
"$J" search --server "$GRPC" -k 3 "$q1" > "$T/held.out" 2> "$T/held.err" &
first=$!
for _ in $(seq 200); do
  [ "$(metric japlaid_searches_in_flight)" = 1 ] && break
  sleep 0.05
done
expect_eq "$(metric japlaid_searches_in_flight)" 1 "in flight while held"

echo "== a second search is refused at once"
set +e
"$J" search --server "$GRPC" -k 3 "$q1" > "$T/r.out" 2> "$T/r.err"
st=$?
set -e
expect_eq "$st" 1 "refused search: exit status"
grep -q "UNAVAILABLE (14).*overloaded: 1 searches in flight" "$T/r.err" ||
  fail "refused search: $(cat "$T/r.err")"
body=$T/http.out
{
  exec 3<> "/dev/tcp/${HTTP%:*}/${HTTP##*:}"
  req="{\"query\": \"$q1\", \"k\": 3}"
  printf 'POST /v1/search HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$HTTP" "$(printf '%s' "$req" | wc -c)" "$req" >&3
  cat <&3 > "$body"
  exec 3<&-
}
head -1 "$body" | grep -q "^HTTP/1.1 503" || fail "HTTP refusal: $(head -1 "$body")"
grep -q "overloaded" "$body" || fail "HTTP refusal body: $(cat "$body")"
expect_eq "$(metric japlaid_searches_in_flight)" 1 "in flight after the refusals"

echo "== release the shard: the held search ends, searches are admitted again"
kill -CONT "$held"
wait "$first" || fail "the held search failed: $(cat "$T/held.err")"
[ "$(get results.0.rank < "$T/held.out")" = 1 ] || fail "held search: no results"
for _ in $(seq 200); do
  [ "$(metric japlaid_searches_in_flight)" = 0 ] && break
  sleep 0.05
done
expect_eq "$(metric japlaid_searches_in_flight)" 0 "in flight after the release"
"$J" search --server "$GRPC" -k 3 "$q1" > "$T/after.out" || fail "search after the release"
expect_eq "$(get degraded false < "$T/after.out")" false "search after the release: degraded"
[ "$(get results.2.rank < "$T/after.out")" = 3 ] || fail "search after the release: results"
echo "PASS"
