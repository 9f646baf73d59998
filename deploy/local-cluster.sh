#!/usr/bin/env bash
# local-cluster.sh: run a whole JaPLAID cluster on this machine (127.0.0.1):
# one japlaid-shard per replica of every partition, and a coordinator.
#
#   local-cluster.sh start  --index DIR --model M [--replicas R] [--run-dir RUN]
#                           [--grpc-port N] [--http-port N] [--threads T]
#                           [--bin-dir D] [--fresh] [--timeout S]
#                           [--shard-arg ARG]... [--coordinator-arg ARG]...
#   local-cluster.sh stop   [--run-dir RUN] [--timeout S]
#   local-cluster.sh status [--run-dir RUN]
#   local-cluster.sh heal   [--run-dir RUN] [--timeout S]
#
# start: serves every partition that `japlaid-index build --out DIR` wrote
#   (DIR/part-0000 ... DIR/part-<P-1>, checked against DIR/index.json), or
#   the single partition directory that `japlaid index --index DIR` wrote.
#   Each replica gets its own copy of its partition under RUN/data (replicas
#   share nothing on disk; `cp -a` of a closed RocksDB store is a consistent
#   copy, so do not copy an index that a process is writing to). A later
#   start in the same RUN reuses the copies, so writes made through the
#   cluster survive a stop/start (an index rebuilt since is copied again);
#   --fresh always copies again from DIR. Shards get
#   free ports; the coordinator gets --grpc-port / --http-port (default:
#   free ports). RUN (default ./run) holds cluster.json, the processes' pid
#   files and logs, and `endpoints` (grpc=HOST:PORT, http=HOST:PORT).
#   Returns once the coordinator's /healthz answers 200 with every replica
#   live, and prints the addresses. Refuses to start while any process of
#   RUN is alive; on any failure it stops what it started and shows the log
#   of the process that failed.
# stop: SIGTERM to the coordinator, then the shards; waits (default 15 s),
#   then SIGKILLs stragglers. Data and logs stay in RUN.
# status: per process: pid, alive or dead, address, and its health (the
#   coordinator: GET /healthz; a shard: its state as the coordinator sees
#   it). Exit 0 when everything is alive and live, 1 when something is not,
#   3 when nothing runs.
# heal: starts again, on their old addresses, the processes of RUN that are
#   dead (after a crash or kill -9), and waits for health as start does.
#
# Binaries: --bin-dir D, else $JAPLAID_BIN_DIR, else PATH, else this
# checkout's build/ tree (build/shard/japlaid-shard,
# build/coordinator/japlaid-coordinator).
#
# A process is identified by its pid AND its start time (from /proc), so a
# recycled pid is never signalled. Needs bash 4, coreutils, flock, and curl
# (or bash's /dev/tcp) for the health checks.
set -euo pipefail

PROG=local-cluster.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() { echo "$PROG: $*" >&2; exit 1; }
usage_die() { echo "$PROG: $*" >&2; echo "see: $PROG --help" >&2; exit 2; }
say() { echo "$PROG: $*"; }

# ---- process records -------------------------------------------------------------

# start time of pid (clock ticks since boot), "" if there is no such
# process or it is a zombie (dead, not yet reaped)
proc_start() {
  local s
  s=$(cat "/proc/$1/stat" 2> /dev/null) || return 0
  # Fields after "(comm) ": state is the 1st, starttime the 20th.
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  [ "$1" = Z ] || [ "$1" = X ] || echo "${20}"
}

# alive NAME: the process recorded in RUN/NAME.pid is running
alive() {
  local f="$RUN/$1.pid" pid st
  [ -r "$f" ] || return 1
  read -r pid st < "$f" || return 1
  [ -n "$pid" ] && [ "$(proc_start "$pid")" = "$st" ]
}

pid_of() { local pid st; read -r pid st < "$RUN/$1.pid"; echo "$pid"; }

record() { echo "$2 $(proc_start "$2")" > "$RUN/$1.pid"; }

# Every process name of RUN, coordinator first.
names() {
  [ -r "$RUN/procs" ] && cat "$RUN/procs"
  return 0
}

# ---- HTTP (health) ------------------------------------------------------------------

# http_get ADDR PATH: sets HTTP_STATUS (000 on no answer) and HTTP_BODY.
http_get() {
  HTTP_STATUS=000
  HTTP_BODY=
  if command -v curl > /dev/null; then
    local out
    out=$(curl -s -m 3 -w '\n%{http_code}' "http://$1$2" 2> /dev/null) || return 0
    HTTP_STATUS=${out##*$'\n'}
    HTTP_BODY=${out%$'\n'*}
    return 0
  fi
  local host=${1%:*} port=${1##*:} resp
  { exec 3<> "/dev/tcp/$host/$port"; } 2> /dev/null || return 0
  printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3
  resp=$(timeout 3 cat <&3 2> /dev/null || true)
  exec 3<&-
  local first=${resp%%$'\r'*}
  read -r _ HTTP_STATUS _ <<< "$first" || true
  HTTP_BODY=${resp#*$'\r\n\r\n'}
  [ -n "$HTTP_STATUS" ] || HTTP_STATUS=000
}

# The state ("live", "down", ...) of replica ADDR in a /healthz body.
replica_state() {
  printf '%s' "$2" | grep -m1 -o "\"address\":\"$1\",\"state\":\"[a-z]*\"" |
    sed 's/.*"state":"\([a-z]*\)"/\1/'
}

# ---- binaries -------------------------------------------------------------------------

find_bin() {
  local name=$1 sub=$2 d
  for d in "${BIN_DIR:-}" "${JAPLAID_BIN_DIR:-}"; do
    if [ -n "$d" ]; then
      [ -x "$d/$name" ] && { echo "$d/$name"; return; }
      [ -x "$d/$sub/$name" ] && { echo "$d/$sub/$name"; return; }
    fi
  done
  if command -v "$name" > /dev/null; then command -v "$name"; return; fi
  [ -x "$ROOT/build/$sub/$name" ] && { echo "$ROOT/build/$sub/$name"; return; }
  die "cannot find $name: build the project (cmake --build build) or give --bin-dir"
}

# ---- starting processes ---------------------------------------------------------------

STARTED=()

# Stop what this invocation started (failure path).
cleanup_started() {
  local n
  for n in "${STARTED[@]}"; do
    if alive "$n"; then kill -TERM "$(pid_of "$n")" 2> /dev/null || true; fi
  done
  sleep 0.5
  for n in "${STARTED[@]}"; do
    if alive "$n"; then kill -KILL "$(pid_of "$n")" 2> /dev/null || true; fi
    rm -f "$RUN/$n.pid"
  done
  STARTED=()
}

fail_start() {
  echo "$PROG: $1" >&2
  if [ -n "${2:-}" ] && [ -r "$RUN/$2.log" ]; then
    echo "---- last lines of $RUN/$2.log ----" >&2
    tail -n 20 "$RUN/$2.log" >&2
  fi
  cleanup_started
  echo "$PROG: stopped everything this start had started" >&2
  exit 1
}

# wait_line NAME PREFIX: the rest of the first stdout line of NAME that
# starts with PREFIX (stdout goes to RUN/NAME.out), within TIMEOUT.
wait_line() {
  local n=$1 prefix=$2 t0=$SECONDS line
  while :; do
    line=$(grep -m1 "^$prefix" "$RUN/$n.out" 2> /dev/null || true)
    if [ -n "$line" ]; then
      echo "${line#"$prefix"}"
      return 0
    fi
    alive "$n" || return 1
    [ $((SECONDS - t0)) -lt "$TIMEOUT" ] || return 1
    sleep 0.1
  done
}

# spawn NAME CMD...: run in the background, stdout to NAME.out, stderr to
# NAME.log (appended: a restart keeps the history), pid recorded.
spawn() {
  local n=$1
  shift
  : > "$RUN/$n.out"
  echo "==== $(date '+%F %T') $*" >> "$RUN/$n.log"
  # fd 9 is the run directory's lock: the process must not keep it.
  nohup "$@" > "$RUN/$n.out" 2>> "$RUN/$n.log" < /dev/null 9>&- &
  record "$n" $!
  STARTED+=("$n")
}

start_shard() {
  local n=$1 args=(--index "$RUN/data/${1#shard-}" --listen "$2")
  [ -n "$THREADS" ] && args+=(--threads "$THREADS")
  spawn "$n" "$SHARD_BIN" "${args[@]}" "${SHARD_ARGS[@]}"
}

start_coordinator() {
  local args=(--cluster "$RUN/cluster.json" --model "$MODEL" --grpc-listen "$1" --http-listen "$2")
  [ -n "$THREADS" ] && args+=(--threads "$THREADS")
  spawn coordinator "$COORD_BIN" "${args[@]}" "${COORD_ARGS[@]}"
}

# Wait until /healthz is 200 and every replica is live.
wait_healthy() {
  local http=$1 t0=$SECONDS n
  while :; do
    for n in $(names); do
      alive "$n" || fail_start "$n exited" "$n"
    done
    http_get "$http" /healthz
    if [ "$HTTP_STATUS" = 200 ] &&
       ! printf '%s' "$HTTP_BODY" | grep -q '"state":"\(down\|unverified\|refused\)"'; then
      return 0
    fi
    if [ $((SECONDS - t0)) -ge "$TIMEOUT" ]; then
      echo "$PROG: not healthy after ${TIMEOUT}s; /healthz said $HTTP_STATUS: $HTTP_BODY" >&2
      fail_start "giving up (a larger index may need --timeout)" coordinator
    fi
    sleep 0.2
  done
}

lock_run() {
  mkdir -p "$RUN"
  exec 9> "$RUN/.lock"
  flock -n 9 || die "another $PROG is working on $RUN"
}

# ---- commands --------------------------------------------------------------------------

cmd_start() {
  local index="" replicas=1 grpc_port=0 http_port=0 fresh=0
  MODEL=""
  THREADS=""
  SHARD_ARGS=()
  COORD_ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --index) index=${2:?--index needs DIR}; shift 2 ;;
      --model) MODEL=${2:?--model needs DIR}; shift 2 ;;
      --replicas) replicas=${2:?}; shift 2 ;;
      --run-dir) RUN=${2:?}; shift 2 ;;
      --grpc-port) grpc_port=${2:?}; shift 2 ;;
      --http-port) http_port=${2:?}; shift 2 ;;
      --threads) THREADS=${2:?}; shift 2 ;;
      --bin-dir) BIN_DIR=${2:?}; shift 2 ;;
      --timeout) TIMEOUT=${2:?}; shift 2 ;;
      --fresh) fresh=1; shift ;;
      --shard-arg) SHARD_ARGS+=("${2:?}"); shift 2 ;;
      --coordinator-arg) COORD_ARGS+=("${2:?}"); shift 2 ;;
      *) usage_die "start: unknown option $1" ;;
    esac
  done
  if [ -z "$index" ] || [ -z "$MODEL" ]; then usage_die "start needs --index DIR and --model M"; fi
  [[ $replicas =~ ^[1-9][0-9]?$ ]] || usage_die "--replicas must be 1..99"
  local port
  for port in "$grpc_port" "$http_port"; do
    if ! [[ $port =~ ^[0-9]{1,5}$ ]] || [ "$port" -gt 65535 ]; then
      usage_die "bad --grpc-port / --http-port: $port"
    fi
  done
  [ -z "$THREADS" ] || [[ $THREADS =~ ^[1-9][0-9]*$ ]] || usage_die "bad --threads"
  [[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || usage_die "bad --timeout"
  [ -d "$index" ] || die "--index $index: no such directory"
  [ -r "$MODEL/config.json" ] || die "--model $MODEL: not a model directory (no config.json)"
  index=$(cd "$index" && pwd)
  MODEL=$(cd "$MODEL" && pwd)
  SHARD_BIN=$(find_bin japlaid-shard shard)
  COORD_BIN=$(find_bin japlaid-coordinator coordinator)

  # The partitions.
  local parts=() d
  if [ -r "$index/CURRENT" ]; then
    parts=("$index")              # one partition (`japlaid index`)
  else
    for d in "$index"/part-[0-9]*; do
      [ -d "$d" ] && parts+=("$d")
    done
    [ ${#parts[@]} -gt 0 ] || die "$index holds no partition (neither part-NNNN directories of \
japlaid-index build nor an index of japlaid index)"
    if [ -r "$index/index.json" ]; then
      local want
      want=$(grep -m1 -o '"partitions": *[0-9]*' "$index/index.json" | grep -o '[0-9]*$')
      [ "$want" = "${#parts[@]}" ] ||
        die "$index/index.json lists $want partitions, the directory holds ${#parts[@]}"
    fi
    local i
    for i in "${!parts[@]}"; do
      [ "$(basename "${parts[$i]}")" = "$(printf 'part-%04d' "$i")" ] ||
        die "partition directories must be part-0000 .. part-$(printf '%04d' $((${#parts[@]} - 1))); found ${parts[$i]}"
      [ -r "${parts[$i]}/CURRENT" ] || die "${parts[$i]} is not a partition store (no CURRENT)"
    done
  fi

  lock_run
  RUN=$(cd "$RUN" && pwd)
  local n running=()
  for n in $(names); do
    alive "$n" && running+=("$n(pid $(pid_of "$n"))")
  done
  [ ${#running[@]} -eq 0 ] || die "a cluster is running in $RUN: ${running[*]}; stop it first \
($PROG stop --run-dir $RUN)"

  # Copies of the partitions, one per replica.
  mkdir -p "$RUN/data"
  local p r src dst id names_new=(coordinator)
  for p in "${!parts[@]}"; do
    src=${parts[$p]}
    # The source's path and inode: an index rebuilt in place (a new
    # directory published by rename) is copied again. (Not its mtime:
    # opening a store read-only may add a log file to it.)
    id="$src $(stat -c '%i' "$src")"
    for ((r = 0; r < replicas; r++)); do
      n="p$p-r$r"
      dst="$RUN/data/$n"
      names_new+=("shard-$n")
      if [ "$fresh" = 0 ] && [ -d "$dst" ] && [ "$(cat "$dst.source" 2> /dev/null)" = "$id" ]; then
        continue
      fi
      rm -rf "$dst" "$dst.tmp" "$dst.source"
      cp -a --reflink=auto "$src" "$dst.tmp" || die "cannot copy $src to $dst.tmp"
      mv "$dst.tmp" "$dst"
      echo "$id" > "$dst.source"
    done
  done
  printf '%s\n' "${names_new[@]}" > "$RUN/procs"
  {
    declare -p MODEL THREADS SHARD_BIN COORD_BIN SHARD_ARGS COORD_ARGS
    echo "INDEX=$(printf '%q' "$index")"
  } > "$RUN/settings"

  # Shards, then cluster.json, then the coordinator.
  trap 'cleanup_started' INT TERM
  for p in "${!parts[@]}"; do
    for ((r = 0; r < replicas; r++)); do
      start_shard "shard-p$p-r$r" 127.0.0.1:0
    done
  done
  local addr json="{\"partitions\": ["
  for p in "${!parts[@]}"; do
    if [ "$p" -gt 0 ]; then json+=", "; fi
    json+="{\"id\": $p, \"replicas\": ["
    for ((r = 0; r < replicas; r++)); do
      n="shard-p$p-r$r"
      addr=$(wait_line "$n" "listening on ") || fail_start "$n did not start" "$n"
      echo "$addr" > "$RUN/$n.addr"
      if [ "$r" -gt 0 ]; then json+=", "; fi
      json+="\"$addr\""
    done
    json+="]}"
  done
  echo "$json]}" > "$RUN/cluster.json"
  start_coordinator "127.0.0.1:$grpc_port" "127.0.0.1:$http_port"
  local grpc http
  grpc=$(wait_line coordinator "grpc listening on ") ||
    fail_start "the coordinator did not start" coordinator
  http=$(wait_line coordinator "http listening on ") ||
    fail_start "the coordinator did not start" coordinator
  printf 'grpc=%s\nhttp=%s\n' "$grpc" "$http" > "$RUN/endpoints"
  wait_healthy "$http"
  trap - INT TERM
  say "${#parts[@]} partition(s) x $replicas replica(s) live, run dir $RUN"
  echo "  grpc: $grpc    e.g. japlaid search --server $grpc \"query\""
  echo "  http: http://$http    e.g. curl -s http://$http/v1/search -d '{\"query\": \"...\"}'"
  echo "  stop: $0 stop --run-dir $RUN"
}

cmd_stop() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --run-dir) RUN=${2:?}; shift 2 ;;
      --timeout) TIMEOUT=${2:?}; shift 2 ;;
      *) usage_die "stop: unknown option $1" ;;
    esac
  done
  [ -d "$RUN" ] || die "$RUN: no such run directory"
  lock_run
  local n live=() killed=0 t0
  for n in $(names); do
    alive "$n" && live+=("$n")
  done
  if [ ${#live[@]} -eq 0 ]; then
    for n in $(names); do rm -f "$RUN/$n.pid"; done
    say "nothing runs in $RUN"
    return 0
  fi
  # The coordinator first, so it stops routing before the shards go.
  for n in "${live[@]}"; do
    kill -TERM "$(pid_of "$n")" 2> /dev/null || true
    if [ "$n" = coordinator ]; then sleep 0.2; fi
  done
  t0=$SECONDS
  while [ $((SECONDS - t0)) -lt "$TIMEOUT" ]; do
    local still=0
    for n in "${live[@]}"; do alive "$n" && still=1; done
    [ $still = 0 ] && break
    sleep 0.1
  done
  for n in "${live[@]}"; do
    if alive "$n"; then
      kill -KILL "$(pid_of "$n")" 2> /dev/null || true
      killed=$((killed + 1))
      echo "$PROG: $n did not stop within ${TIMEOUT}s: killed" >&2
    fi
  done
  for n in $(names); do rm -f "$RUN/$n.pid"; done
  say "stopped ${#live[@]} process(es)$([ $killed -gt 0 ] && echo ", $killed with SIGKILL")"
}

cmd_status() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --run-dir) RUN=${2:?}; shift 2 ;;
      *) usage_die "status: unknown option $1" ;;
    esac
  done
  if [ ! -r "$RUN/procs" ]; then
    say "no cluster in $RUN"
    exit 3
  fi
  local n any=0 bad=0 http="" body="" pid state addr
  HTTP_STATUS=000
  [ -r "$RUN/endpoints" ] && http=$(sed -n 's/^http=//p' "$RUN/endpoints")
  if alive coordinator && [ -n "$http" ]; then
    http_get "$http" /healthz
    body=$HTTP_BODY
  fi
  printf '%-16s %-8s %-6s %-22s %s\n' PROCESS PID ALIVE ADDRESS HEALTH
  for n in $(names); do
    pid=-
    [ -r "$RUN/$n.pid" ] && pid=$(pid_of "$n")
    if alive "$n"; then
      any=1
      if [ "$n" = coordinator ]; then
        addr=$(sed -n 's/^grpc=//p' "$RUN/endpoints" 2> /dev/null)
        state="healthz $HTTP_STATUS"
        [ "$HTTP_STATUS" = 200 ] || bad=1
      else
        addr=$(cat "$RUN/$n.addr" 2> /dev/null || echo -)
        state=$(replica_state "$addr" "$body")
        [ -n "$state" ] || state="unknown (no coordinator)"
        [ "$state" = live ] || bad=1
      fi
      printf '%-16s %-8s %-6s %-22s %s\n' "$n" "$pid" yes "$addr" "$state"
    else
      bad=1
      printf '%-16s %-8s %-6s %-22s %s\n' "$n" "$pid" no - -
    fi
  done
  [ $any = 1 ] || exit 3
  [ $bad = 0 ] || exit 1
}

cmd_heal() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --run-dir) RUN=${2:?}; shift 2 ;;
      --timeout) TIMEOUT=${2:?}; shift 2 ;;
      *) usage_die "heal: unknown option $1" ;;
    esac
  done
  if [ ! -r "$RUN/settings" ] || [ ! -r "$RUN/endpoints" ]; then
    die "no cluster was started in $RUN"
  fi
  lock_run
  RUN=$(cd "$RUN" && pwd)
  # shellcheck disable=SC1091
  source "$RUN/settings"
  local n restarted=0 grpc http
  grpc=$(sed -n 's/^grpc=//p' "$RUN/endpoints")
  http=$(sed -n 's/^http=//p' "$RUN/endpoints")
  trap 'cleanup_started' INT TERM
  for n in $(names); do
    alive "$n" && continue
    restarted=$((restarted + 1))
    if [ "$n" = coordinator ]; then
      start_coordinator "$grpc" "$http"
      wait_line coordinator "http listening on " > /dev/null ||
        fail_start "the coordinator did not start again on $grpc / $http" coordinator
    else
      start_shard "$n" "$(cat "$RUN/$n.addr")"
      wait_line "$n" "listening on " > /dev/null ||
        fail_start "$n did not start again on $(cat "$RUN/$n.addr")" "$n"
    fi
    say "restarted $n (pid $(pid_of "$n"))"
  done
  wait_healthy "$http"
  trap - INT TERM
  say "$restarted process(es) restarted; every replica is live"
}

RUN=./run
TIMEOUT=${LOCAL_CLUSTER_TIMEOUT:-120}
BIN_DIR=""
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  start) cmd_start "$@" ;;
  stop)
    TIMEOUT=15
    cmd_stop "$@" ;;
  status) cmd_status "$@" ;;
  heal) cmd_heal "$@" ;;
  -h|--help|help) sed -n '2,45p' "$0" ;;
  *) usage_die "usage: $PROG start|stop|status|heal [options] (--help)" ;;
esac
