#!/usr/bin/env bash
# The paper's claims, reproduced (issue 18): HOGWILD! SGD training and MLP
# inference under cold starts, on faaslet (shared state, Proto-Faaslets),
# faaslet with sharing off (state copied, a fresh instance per call), a
# container per call (runc) and a process per call in fresh namespaces
# (unshare). See benches/paper/README.md.
#
#   bash benches/paper/run.sh            # the full run (~100 MB training set, 30 s of load per share)
#   bash benches/paper/run.sh --quick    # a 10 MB training set, 10 s of load per share
#   bash benches/paper/run.sh --smoke    # faaslet only, tiny: builds everything, one short training
#                                        # and a few inference calls (CI)
# Extra arguments after `--` go to paper.py (e.g. -- --rate 10 --ns 2,16).
# FAASLET=path/to/faaslet skips the build (the smoke check builds and uses the debug binary;
# its results go to target/paper/smoke/).
#
# Installs what it lacks (apt-get), builds into target/paper/build, writes
# the tables, results.json and the plots to target/paper/. Starts its own
# redis-server and faaslet workers on free ports and stops them (and any
# container it started) on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

MODE=full
EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) MODE=quick ;;
    --smoke) MODE=smoke ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "usage: run.sh [--quick|--smoke] [-- paper.py args]" >&2; exit 2 ;;
  esac
  shift
done

OUT=$ROOT/target/paper
[ "$MODE" = smoke ] && OUT=$ROOT/target/paper/smoke   # never over a full run's results
B=$ROOT/target/paper/build
WORK=$OUT/work
mkdir -p "$B" "$WORK"

# Anything started by paper.py is stopped by it; this is the backstop if
# it dies: the process groups it recorded, and leftover containers.
cleanup() {
  if [ -f "$WORK/pids" ]; then
    while read -r pid; do kill -TERM -- "-$pid" 2>/dev/null || true; done < "$WORK/pids"
    rm -f "$WORK/pids"
  fi
  if [ -d "$WORK/runc-root" ] && command -v runc >/dev/null; then
    for id in $(runc --root "$WORK/runc-root" list -q 2>/dev/null); do
      runc --root "$WORK/runc-root" kill "$id" KILL 2>/dev/null || true
      runc --root "$WORK/runc-root" delete -f "$id" 2>/dev/null || true
    done
  fi
  rm -rf "$WORK/bundles"
}
trap cleanup EXIT
# A previous run's leftovers: its containers (in our own runc root, so ours)
# go; its pid list is dropped, not acted on (those ids may be reused by now).
rm -f "$WORK/pids"
cleanup

# ---- what it needs (Debian packages)
need=()
# (The smoke check needs neither numpy, nor matplotlib, nor runc: faaslet
# only, its loss judged in plain Python, no plots.)
pkgs=(clang lld wasi-libc libclang-rt-dev-wasm32 redis-server)
[ "$MODE" = smoke ] || pkgs+=(runc util-linux python3-numpy python3-matplotlib)
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "paper: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi
PY=/usr/bin/python3   # Debian's, which has python3-numpy and python3-matplotlib

# ---- faaslet
if [ -z "${FAASLET:-}" ]; then
  if [ "$MODE" = smoke ]; then
    cargo build -p faaslet-cli   # CI has just built it for the tests
    FAASLET=$ROOT/target/debug/faaslet
  else
    cargo build --release -p faaslet-cli
    FAASLET=$ROOT/target/release/faaslet
  fi
fi

# ---- the functions: wasm for faaslet, static native for the baselines
P=$ROOT/benches/paper
SDK=$ROOT/sdk
WASM=(clang --target=wasm32-wasi -O2 -I"$SDK/include" -I"$P")
NATIVE=(clang -O2 -Wno-unknown-attributes -Wno-int-to-pointer-cast -I"$SDK/include" -I"$P")
"${WASM[@]}" -DSHARE=1 "$SDK/src/faasm.c" "$P/sgd.c" -o "$B/sgd.wasm" -lm
"${WASM[@]}" -DSHARE=0 "$SDK/src/faasm.c" "$P/sgd.c" -o "$B/sgd_copy.wasm" -lm
"${WASM[@]}" -DSHARE=1 "$SDK/src/faasm.c" "$P/mlp.c" -o "$B/mlp.wasm"
"${WASM[@]}" -DSHARE=0 "$SDK/src/faasm.c" "$P/mlp.c" -o "$B/mlp_copy.wasm"
"${NATIVE[@]}" -c "$SDK/src/faasm.c" -o "$B/faasm.o"
"${NATIVE[@]}" -c "$P/shim.c" -o "$B/shim.o"
"${NATIVE[@]}" -DSHARE=0 -Dmain=faasm_main -c "$P/sgd.c" -o "$B/sgd.o"
"${NATIVE[@]}" -DSHARE=0 -Dmain=faasm_main -c "$P/mlp.c" -o "$B/mlp.o"
clang -static -o "$B/sgd" "$B/sgd.o" "$B/faasm.o" "$B/shim.o" -lm
clang -static -o "$B/mlp" "$B/mlp.o" "$B/faasm.o" "$B/shim.o" -lm
clang -O2 -I"$P" "$P/gendata.c" -o "$B/gendata" -lm

# The containers' root file system: the two static binaries, nothing else
# (no image is pulled).
rm -rf "$B/rootfs"
mkdir -p "$B/rootfs"/{proc,dev,sys,tmp}
cp "$B/sgd" "$B/mlp" "$B/rootfs/"

# ---- the data (seeded; regenerated only when missing)
case $MODE in
  full) ROWS=500000 ;;
  quick) ROWS=50000 ;;
  smoke) ROWS=5000 ;;
esac
FEATURES=262144
DATA=$B/sgd_data_${ROWS}_${FEATURES}.bin
[ -f "$DATA" ] || "$B/gendata" "$DATA" "$ROWS" "$FEATURES" 42
[ -f "$B/mlp_weights.bin" ] || "$B/gendata" mlp "$B/mlp_weights.bin" 7

ARGS=(--faaslet "$FAASLET" --sgd-wasm "$B/sgd.wasm" --sgd-copy-wasm "$B/sgd_copy.wasm"
      --mlp-wasm "$B/mlp.wasm" --mlp-copy-wasm "$B/mlp_copy.wasm" --sgd-native "$B/sgd"
      --mlp-native "$B/mlp" --rootfs "$B/rootfs" --data "$DATA" --mlp-weights "$B/mlp_weights.bin"
      --out "$OUT")
case $MODE in
  quick) ARGS+=(--duration 10) ;;
  smoke) ARGS+=(--systems faaslet --ns 2 --repeats 1 --target 0.6 --max-epochs 5 --rate 20 --duration 0.5
                --shares 0,100) ;;
esac
"$PY" "$P/paper.py" "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
