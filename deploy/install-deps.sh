#!/usr/bin/env bash
# install-deps.sh: install every Debian package JaPLAID needs. Idempotent:
# packages already present are skipped, and nothing is downloaded when all
# are there.
#
#   ./deploy/install-deps.sh            build + runtime + test packages, UniDic
#   ./deploy/install-deps.sh --light    the same, but only the small IPAdic
#                                       dictionary instead of UniDic (1 GB)
#   ./deploy/install-deps.sh --python   also the Python packages used by the
#                                       PyTorch reference and the benchmarks
#   ./deploy/install-deps.sh --check    list what is missing, install nothing
#
# Why UniDic by default: JaColBERTv2's tokenizer was trained on UniDic
# (unidic-lite = UniDic 2.1.2); Debian's unidic-mecab 3.1.1 is the closest
# dictionary available. IPAdic cuts words differently (see README).
set -euo pipefail

light=0; python=0; check=0
for a in "$@"; do
  case "$a" in
    --light) light=1 ;;
    --python) python=1 ;;
    --check) check=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install-deps.sh: unknown option $a" >&2; exit 2 ;;
  esac
done

pkgs=(
  # toolchain
  build-essential cmake pkg-config git ca-certificates curl
  # libraries (see reference/stack.md for versions and pitfalls)
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler grpc-proto
  libuv1-dev libhttp-parser-dev librocksdb-dev
  libopenmpi-dev openmpi-bin libopenblas-dev
  libmecab-dev mecab-ipadic-utf8
  libutf8proc-dev libjansson-dev libxxhash-dev
  # tests
  libcmocka-dev
)
[ "$light" = 1 ] || pkgs+=(unidic-mecab)
[ "$python" = 1 ] && pkgs+=(python3 python3-torch python3-numpy python3-faiss python3-grpcio python3-grpc-tools)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: missing: ${missing[*]}"
[ "$check" = 1 ] && exit 1

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "install-deps: need root (or sudo) to install packages" >&2; exit 1
  fi
fi
case " ${missing[*]} " in
  *" unidic-mecab "*) echo "install-deps: unidic-mecab is a ~1 GB download (use --light to skip it)" ;;
esac
export DEBIAN_FRONTEND=noninteractive
# A stale package list makes apt ask for versions that no longer exist.
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${#missing[@]} packages"
