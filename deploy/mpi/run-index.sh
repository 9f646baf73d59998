#!/usr/bin/env bash
# run-index.sh: the mpirun line for japlaid-index, as root or as a user,
# on one machine or on the nodes of a hostfile.
#
#   RANKS=4 ./deploy/mpi/run-index.sh --model M --corpus docs.jsonl --out idx --partitions 4
#   RANKS=8 HOSTFILE=deploy/mpi/hostfile.example DEVICE=cuda ./deploy/mpi/run-index.sh ...
#
# Everything after the script name is passed to `japlaid-index build`.
# Environment: RANKS (default: the cores here), HOSTFILE (default: none,
# this machine only), DEVICE (cpu | cuda, default cpu), JAPLAID_INDEX_BIN
# (default: japlaid-index on PATH, else ./build/indexer/japlaid-index),
# THREADS (threads per rank; default: japlaid-index decides: the cores the
# rank is bound to, or cores / ranks on the node), OPENBLAS_NUM_THREADS
# (default: 1 per rank with several ranks on a machine).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${JAPLAID_INDEX_BIN:-$(command -v japlaid-index || echo "$here/build/indexer/japlaid-index")}
RANKS=${RANKS:-$(nproc)}
DEVICE=${DEVICE:-cpu}

mpi=(mpirun -np "$RANKS")
# OpenMPI refuses to run as root unless told; both variables are needed
# (or the --allow-run-as-root flag).
if [ "$(id -u)" = 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
if [ -n "${HOSTFILE:-}" ]; then
  mpi+=(--hostfile "$HOSTFILE" --map-by ppr:1:slot)
elif [ "$RANKS" -gt "$(nproc)" ]; then
  # More ranks than cores on one machine: allowed, but not bound to cores.
  mpi+=(--oversubscribe)
fi
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
mpi+=(-x OPENBLAS_NUM_THREADS -x PATH)
for v in LD_LIBRARY_PATH JAPLAID_LOG CUDA_VISIBLE_DEVICES; do
  if [ -n "${!v:-}" ]; then mpi+=(-x "$v"); fi
done
args=(build --device "$DEVICE")
if [ -n "${THREADS:-}" ]; then args+=(--threads "$THREADS"); fi
echo "+ ${mpi[*]} $BIN ${args[*]} $*" >&2
exec "${mpi[@]}" "$BIN" "${args[@]}" "$@"
