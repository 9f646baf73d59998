#!/usr/bin/env bash
# gpu-check.sh: build the CUDA encoder backend in a fresh build directory and
# run, on the GPU of this machine, its parity test and its throughput bench;
# print a summary. Non-interactive; about 2-4 minutes on a 16-core H200 host,
# and it stops itself before 8 minutes (each step has a time limit, and the
# optional steps only run while time is left).
#
#   ./deploy/gpu-check.sh               build in build-gpu/ (wiped first)
#   BUILD_DIR=/tmp/b ./deploy/gpu-check.sh
#   BENCH_ARGS="--batch 32 --len 128" ./deploy/gpu-check.sh
#
#   GPU_CHECK_STANDALONE=1 ./deploy/gpu-check.sh   skip the project build
#
# Steps, most important first:
#   1. nvidia-smi, then a check that every header, library and tool the build
#      needs is present (the device host may have no network, so nothing is
#      installed: missing pieces are listed and the script stops, exit 2);
#   2. cmake configure with JP_CUDA=ON for this GPU's architecture;
#   3. build the CUDA backend's test and bench targets; if the project build
#      fails (another module's file broken), build just the backend, its
#      tests and the bench from their sources with cc/nvcc instead;
#   4. ctest: test_bert_cuda (parity vs the CPU reference, label gpu) and
#      test_bert_cuda_emul (the same sequence emulated on the host);
#   5. bench_bert_cuda: tokens/s and TFLOP/s at batch 64 x 256, bert-base;
#   6. if time is left: build everything and run every other gpu-labelled test.
# Logs go to $BUILD_DIR/gpu-check-logs/ and, when $OUT is set (the device
# runner's return folder), are copied there too.
# Exit: 0 all required steps passed on a GPU, 1 a step failed, 2 prerequisites
# missing, 3 built and emulated fine but no usable GPU (GPU steps skipped).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build-gpu}
LOGS=$BUILD/gpu-check-logs
BENCH_ARGS=${BENCH_ARGS:-"--batch 64 --len 256 --warmup 3 --iters 20"}
BUDGET_S=${BUDGET_S:-450}          # whole run, 7.5 min: under the 8-minute ceiling
JOBS=$(nproc 2>/dev/null || echo 4)
START=$SECONDS

declare -a SUMMARY=()
status=0
note() { SUMMARY+=("$1"); echo ">>> $1"; }
left() { echo $((BUDGET_S - (SECONDS - START))); }
# cap <step limit>: the step's limit, shortened to what is left of the budget.
cap() { local l; l=$(left); [ "$1" -lt "$l" ] && echo "$1" || echo $((l > 10 ? l : 10)); }
save_logs() {
  if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ] && [ -d "$LOGS" ]; then
    mkdir -p "$OUT/gpu-check-logs" && cp "$LOGS"/*.log "$OUT/gpu-check-logs/" 2>/dev/null
  fi
}
finish() {
  echo
  echo "================ gpu-check summary ($((SECONDS - START)) s) ================"
  for s in "${SUMMARY[@]}"; do echo "  $s"; done
  echo "  exit status: $status"
  save_logs
  exit "$status"
}

echo "gpu-check: repository $ROOT, build dir $BUILD, $JOBS jobs, budget ${BUDGET_S} s"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host: $(uname -n), $(uname -sr)"

# ---- 1. the GPU and the prerequisites ------------------------------------------
echo; echo "---- nvidia-smi ----"
if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 30 nvidia-smi || echo "(nvidia-smi failed: rc $?)"
  timeout 30 nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.max.sm \
    --format=csv 2>/dev/null || true
else
  echo "nvidia-smi: not found (no NVIDIA driver utilities on this host)"
fi

# CUDA toolkit: nvcc on PATH, else the usual install location.
NVCC=$(command -v nvcc 2>/dev/null || true)
for c in "${CUDACXX:-}" /usr/local/cuda/bin/nvcc /usr/local/cuda-13.0/bin/nvcc; do
  [ -z "$NVCC" ] && [ -n "$c" ] && [ -x "$c" ] && NVCC=$c
done
CUDA_ROOT=""
[ -n "$NVCC" ] && CUDA_ROOT=$(cd "$(dirname "$(readlink -f "$NVCC")")/.." && pwd)

# Two tiers: `missing` stops the script (nothing can be built); `missing_proj`
# only rules out the project build, and the standalone build is used.
missing=()
missing_proj=()
need_cmd() {   # command, package hint, array to add to
  local -n cmd_into=$3
  command -v "$1" >/dev/null 2>&1 || cmd_into+=("command $1 ($2)")
}
need_pc() {
  pkg-config --exists "$1" 2>/dev/null || missing_proj+=("pkg-config module $1 ($2)")
}
need_hdr() {   # header, package hint, array to add to
  local -n hdr_into=$3
  # cmocka.h needs these first; harmless for the others.
  printf '#include <stdarg.h>\n#include <stddef.h>\n#include <setjmp.h>\n#include <stdint.h>\n'\
'#include <%s>\nint main(void){return 0;}\n' "$1" |
    cc -x c - -fsyntax-only >/dev/null 2>&1 || hdr_into+=("header <$1> ($2)")
}
need_lib() {   # library name, package hint, array to add to
  local -n lib_into=$3
  printf 'int main(void){return 0;}\n' |
    cc -x c - -o /dev/null -l"$1" >/dev/null 2>&1 || lib_into+=("library -l$1 ($2)")
}
need_cmd cc "build-essential" missing
need_cmd c++ "build-essential (g++ >= 10 for C++20)" missing
need_cmd cmake "cmake >= 3.20" missing_proj
need_cmd pkg-config "pkg-config" missing_proj
need_cmd protoc-c "protobuf-c-compiler" missing_proj
need_cmd mpicc "libopenmpi-dev" missing_proj
if command -v cmake >/dev/null 2>&1; then
  read -r cmaj cmin < <(cmake --version |
    sed -n 's/^cmake version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  if [ "${cmaj:-0}" -lt 3 ] || { [ "${cmaj:-0}" -eq 3 ] && [ "${cmin:-0}" -lt 20 ]; }; then
    missing_proj+=("cmake >= 3.20 (found ${cmaj:-?}.${cmin:-?})")
  fi
fi
if command -v pkg-config >/dev/null 2>&1; then
  need_pc grpc "libgrpc-dev"; need_pc gpr "libgrpc-dev"
  need_pc libprotobuf-c "libprotobuf-c-dev"; need_pc libuv "libuv1-dev"
  need_pc rocksdb "librocksdb-dev"; need_pc openblas "libopenblas-dev"
  need_pc libutf8proc "libutf8proc-dev"; need_pc jansson "libjansson-dev"
fi
if command -v cc >/dev/null 2>&1; then
  need_hdr cmocka.h "libcmocka-dev" missing; need_lib cmocka "libcmocka-dev" missing
  need_hdr xxhash.h "libxxhash-dev" missing; need_lib xxhash "libxxhash-dev" missing
  need_hdr mecab.h "libmecab-dev" missing_proj; need_lib mecab "libmecab-dev" missing_proj
  need_hdr http_parser.h "libhttp-parser-dev" missing_proj
  need_lib http_parser "libhttp-parser-dev" missing_proj
fi
if [ -z "$NVCC" ]; then
  missing+=("nvcc (CUDA toolkit; looked on PATH, \$CUDACXX, /usr/local/cuda/bin)")
else
  echo "nvcc: $NVCC ($("$NVCC" --version | tail -n 2 | head -n 1))"
  for h in cuda_runtime_api.h cublas_v2.h cuda_bf16.h; do
    [ -f "$CUDA_ROOT/include/$h" ] || [ -f "$CUDA_ROOT/targets/x86_64-linux/include/$h" ] ||
      missing+=("CUDA header $h under $CUDA_ROOT (CUDA toolkit / libcublas-dev)")
  done
  for l in cudart_static.a cublas.so cublasLt.so; do
    ls "$CUDA_ROOT"/lib64/lib$l* "$CUDA_ROOT"/targets/x86_64-linux/lib/lib$l* \
      >/dev/null 2>&1 || missing+=("CUDA library lib$l under $CUDA_ROOT")
  done
fi
# Running (not building) needs the driver's libcuda.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  echo "warning: libcuda.so.1 not in the loader cache: the GPU tests will skip (no driver)"
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo; echo "gpu-check: MISSING prerequisites (nothing can be built):"
  for m in "${missing[@]}" "${missing_proj[@]}"; do echo "  - $m"; done
  echo "Install them (deploy/install-deps.sh needs network; the CUDA toolkit with cuBLAS"
  echo "comes from NVIDIA's packages) and run again."
  note "prerequisites: MISSING ${#missing[@]} required (see above)"
  status=2
  finish
fi
if [ ${#missing_proj[@]} -gt 0 ]; then
  echo; echo "gpu-check: the project build is not possible here, missing:"
  for m in "${missing_proj[@]}"; do echo "  - $m"; done
  note "prerequisites: backend ones present, ${#missing_proj[@]} project ones missing: standalone"
  GPU_CHECK_STANDALONE=1
else
  note "prerequisites: all present"
fi

# GPU architecture for the build: this GPU's only (faster to compile), else the
# project's default list.
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 |
  tr -d ' .')
case "$ARCH" in [0-9][0-9]|[0-9][0-9][0-9]) ;; *) ARCH="80;90" ;; esac

# ---- 2./3. configure and build the CUDA backend's targets --------------------------
# The project build compiles every engineer's sources into libjaplaid, so a
# file broken elsewhere would stop it. Then (or with GPU_CHECK_STANDALONE=1)
# the backend, its tests and the bench are built alone, straight from their
# sources: they need only common/util, bert_ref.c and common/model/cuda.
rm -rf "$BUILD" && mkdir -p "$LOGS"
MODE=project
project_build() {
  echo; echo "---- configure (CUDA architectures $ARCH) ----"
  local t=$SECONDS
  if ! timeout "$(cap 150)" cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
       -DJP_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
       -DJP_BUILD_TESTS=ON -DJP_BUILD_BENCH=ON >"$LOGS/configure.log" 2>&1; then
    tail -n 30 "$LOGS/configure.log"
    note "configure: FAILED (log: $LOGS/configure.log)"
    return 1
  fi
  note "configure: ok ($((SECONDS - t)) s, sm $ARCH)"
  grep -E "CUDA backend|CUDA compiler identification" "$LOGS/configure.log" || true
  echo; echo "---- build: test_bert_cuda test_bert_cuda_emul bench_bert_cuda ----"
  t=$SECONDS
  if ! timeout "$(cap 240)" cmake --build "$BUILD" -j "$JOBS" --target test_bert_cuda \
       test_bert_cuda_emul bench_bert_cuda >"$LOGS/build.log" 2>&1; then
    grep -E -i "error" "$LOGS/build.log" | head -n 40
    note "build (CUDA backend targets): FAILED (log: $LOGS/build.log)"
    return 1
  fi
  note "build (CUDA backend targets): ok ($((SECONDS - t)) s, $(grep -c -i 'warning' \
    "$LOGS/build.log") warning lines)"
  TEST_BIN=$BUILD/tests/unit/gpu/test_bert_cuda
  EMU_BIN=$BUILD/tests/unit/gpu/test_bert_cuda_emul
  BENCH_BIN=$BUILD/bench/gpu/bench_bert_cuda
}

standalone_build() {
  local S=$BUILD/standalone t=$SECONDS
  echo; echo "---- standalone build of the CUDA backend (sm $ARCH) ----"
  mkdir -p "$S/gen" && (
    set -e
    cd "$ROOT"
    sed -e 's/@PROJECT_VERSION@/0.0.0-gpu-check/' -e 's/@JP_HAVE_CUDA@/1/' \
        -e 's/@JP_HAVE_AVX2@/0/' -e 's|@JP_DATA_DIR@|/nonexistent|' \
        common/jp_config.h.in >"$S/gen/jp_config.h"
    local cf=(-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wshadow -Icommon -I"$S/gen"
              -isystem "$CUDA_ROOT/include")
    local gencode=() a
    for a in ${ARCH//;/ }; do gencode+=(-gencode "arch=compute_$a,code=sm_$a"); done
    for f in common/util/err.c common/util/log.c common/util/mem.c common/util/hash.c \
             common/util/fp16.c common/util/clock.c common/model/bert_ref.c \
             common/model/cuda/bert_cuda.c common/model/cuda/bert_cuda_seq.c; do
      cc "${cf[@]}" -c "$f" -o "$S/$(basename "$f" .c).o"
    done
    "$NVCC" -std=c++17 -O2 "${gencode[@]}" -Icommon -c common/model/cuda/bert_cuda_kern.cu \
      -o "$S/bert_cuda_kern.o"
    c++ -std=c++20 -O2 -Wno-unknown-pragmas -Icommon -Itests/unit/gpu \
      -isystem "$CUDA_ROOT/include" -c tests/unit/gpu/kern_host_emu.cpp -o "$S/kern_host_emu.o"
    for f in tests/unit/gpu/test_bert_cuda.c tests/unit/gpu/test_bert_cuda_emul.c \
             bench/gpu/bench_bert_cuda.c; do
      cc "${cf[@]}" -Itests -Itests/unit/gpu -c "$f" -o "$S/$(basename "$f" .c).main.o"
    done
    local libs=("$S/bert_cuda.o" "$S/bert_cuda_seq.o" "$S/bert_cuda_kern.o" "$S/bert_ref.o"
                "$S/err.o" "$S/log.o" "$S/mem.o" "$S/hash.o" "$S/fp16.o" "$S/clock.o"
                -L"$CUDA_ROOT/lib64" -L"$CUDA_ROOT/targets/x86_64-linux/lib" -lcublas
                -lcublasLt -lcudart_static -lxxhash -lpthread -ldl -lrt -lm)
    c++ -o "$S/test_bert_cuda" "$S/test_bert_cuda.main.o" "${libs[@]}" -lcmocka
    c++ -o "$S/test_bert_cuda_emul" "$S/test_bert_cuda_emul.main.o" "$S/kern_host_emu.o" \
      "${libs[@]}" -lcmocka
    c++ -o "$S/bench_bert_cuda" "$S/bench_bert_cuda.main.o" "${libs[@]}"
  ) >"$LOGS/build-standalone.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then
    tail -n 30 "$LOGS/build-standalone.log"
    note "standalone build: FAILED (log: $LOGS/build-standalone.log)"
    return 1
  fi
  note "standalone build: ok ($((SECONDS - t)) s)"
  MODE=standalone
  TEST_BIN=$S/test_bert_cuda
  EMU_BIN=$S/test_bert_cuda_emul
  BENCH_BIN=$S/bench_bert_cuda
}

if [ "${GPU_CHECK_STANDALONE:-0}" = 1 ] || ! project_build; then
  [ "${GPU_CHECK_STANDALONE:-0}" = 1 ] || echo "project build failed: trying the standalone build"
  if ! standalone_build; then
    status=1
    finish
  fi
fi

# ---- 4. the parity tests ---------------------------------------------------------------
echo; echo "---- CUDA backend tests ($MODE build) ----"
t=$SECONDS
if [ "$MODE" = project ]; then
  (cd "$BUILD" && timeout "$(cap 240)" ctest -R '^test_bert_cuda(_emul)?$' --output-on-failure \
     -V --timeout 200) >"$LOGS/ctest-cuda.log" 2>&1
  rc=$?
else
  { timeout "$(cap 200)" "$EMU_BIN"; e1=$?; echo "test_bert_cuda_emul exit $e1"
    timeout "$(cap 200)" "$TEST_BIN"; e2=$?; echo "test_bert_cuda exit $e2"
    if [ $e2 -eq 77 ]; then echo "test_bert_cuda ... Skipped"; fi
  } >"$LOGS/ctest-cuda.log" 2>&1
  rc=$(awk '/^test_bert_cuda(_emul)? exit/ { if ($3 != 0 && $3 != 77) bad = 1 }
            END { print bad + 0 }' "$LOGS/ctest-cuda.log")
fi
grep -E "GPU 0|cuda +[0-9]+x|emulated|host kernels|min cosine over|device memory|no GPU|\
\[  (PASSED|FAILED) |tests passed|Skipped|Failed|Timeout| exit [0-9]" "$LOGS/ctest-cuda.log" |
  sed 's/^[0-9]*: //'
if grep -q "test_bert_cuda .*Skipped\|no GPU: skipped" "$LOGS/ctest-cuda.log"; then
  note "test_bert_cuda: SKIPPED (no usable GPU seen by the CUDA runtime)"
  if [ "$rc" -eq 0 ]; then status=3; else status=1; fi
elif [ "$rc" -eq 0 ]; then
  mc=$(grep -h "CUDA BF16 forward vs bert_forward_ref" "$LOGS/ctest-cuda.log" |
       sed -n 's/.*min cosine over all vectors \([0-9.]*\).*/\1/p' | head -n 1)
  note "test_bert_cuda + emul: PASSED ($((SECONDS - t)) s; GPU min cosine ${mc:-?})"
else
  note "CUDA backend tests: FAILED (log: $LOGS/ctest-cuda.log)"
  status=1
fi

# ---- 5. the bench ----------------------------------------------------------------------
echo; echo "---- bench_bert_cuda $BENCH_ARGS ----"
t=$SECONDS
# shellcheck disable=SC2086
timeout "$(cap 180)" "$BENCH_BIN" $BENCH_ARGS 2>&1 | tee "$LOGS/bench.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -eq 0 ]; then
  note "bench: $(grep '^RESULT' "$LOGS/bench.log" | sed 's/^RESULT //') ($((SECONDS - t)) s)"
elif [ "$rc" -eq 77 ]; then
  note "bench: SKIPPED (no GPU)"
  [ $status -ne 0 ] || status=3
else
  note "bench: FAILED rc $rc (log: $LOGS/bench.log)"
  status=1
fi

# ---- 6. optional: every other gpu-labelled test -------------------------------------------
if [ "$MODE" = project ] && [ "$(left)" -gt 150 ]; then
  echo; echo "---- optional: full build + ctest -L gpu ($(left) s left) ----"
  t=$SECONDS
  if timeout "$(cap 150)" cmake --build "$BUILD" -j "$JOBS" >"$LOGS/build-all.log" 2>&1; then
    (cd "$BUILD" && timeout "$(cap 120)" ctest -L gpu -E '^test_bert_cuda(_emul)?$' \
       --output-on-failure --timeout 100) >"$LOGS/ctest-gpu-other.log" 2>&1
    rc=$?
    grep -E "tests passed|No tests were found|Failed|Skipped" "$LOGS/ctest-gpu-other.log" |
      head -n 10
    if [ $rc -eq 0 ]; then note "other gpu-labelled tests: ok ($((SECONDS - t)) s)"
    else note "other gpu-labelled tests: FAILED rc $rc (log: $LOGS/ctest-gpu-other.log)"; fi
  else
    note "full build: failed or timed out (not required; log: $LOGS/build-all.log)"
  fi
else
  note "optional full build + other gpu tests: skipped ($MODE build, $(left) s left)"
fi

finish
