#!/usr/bin/env bash
# Builds every cargo-fuzz target and runs each for a bounded time.
#
#   bash fuzz/ci.sh                 # 60 s per target (.ci/run passes 20)
#   FUZZ_SECONDS=600 bash fuzz/ci.sh  # longer
#   FUZZ_CORPUS_MAX=50 bash fuzz/ci.sh  # start from at most 50 cached inputs per target (CI)
#
# The build (coverage-instrumented, Cranelift included) and the
# corpora are kept under $FUZZ_CACHE (default ~/.cache/faaslet-fuzz), outside
# the checkout, so that later runs on the same machine start warm: a cold
# build costs ~415 s of CPU, a warm one seconds.
#
# Uses the nightly toolchain if rustup has one, else the default (stable)
# one: with `-s none` cargo-fuzz passes only stable -C flags. Needs a C++
# compiler (g++) for libfuzzer-sys. Installs cargo-fuzz if it is missing. Exits non-zero if a target fails to build or
# finds a crash; the crashing input is left in fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "$0")"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
# FUZZ_TARGETS="a b": only those (soak.sh passes every target).
read -r -a TARGETS <<< "${FUZZ_TARGETS:-compile differential sandbox hostcalls}"
# -s none: no AddressSanitizer (guests fault on purpose; the engine's own
# signal handling is what is under test) and a much shorter build.
# -a: debug assertions and overflow checks stay on in the optimised build.
CACHE="${FUZZ_CACHE:-$HOME/.cache/faaslet-fuzz}"
mkdir -p "$CACHE/corpus"
# FUZZ_PROFILE=dev: an unoptimised build (about 2.5x faster to build on two
# cores, slower to run): what CI uses for its short smoke runs.
if [ "${FUZZ_PROFILE:-release}" = dev ]; then
    BUILD_FLAGS=(--dev -a -s none --target-dir "$CACHE/target-dev")
else
    BUILD_FLAGS=(-O -a -s none --codegen-units 16 --target-dir "$CACHE/target")
fi

TOOLCHAIN=()
if rustup run nightly rustc --version >/dev/null 2>&1; then
    TOOLCHAIN=(+nightly)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
echo "fuzz: toolchain $(cargo "${TOOLCHAIN[@]}" --version)"

start=$(date +%s)
cargo "${TOOLCHAIN[@]}" fuzz build "${BUILD_FLAGS[@]}"
echo "fuzz: built ${#TARGETS[@]} targets in $(( $(date +%s) - start )) s"

# FUZZ_CORPUS_MAX=N: start each target from at most the N newest inputs of
# its cached corpus (in a scratch copy; new finds are not kept). libFuzzer
# replays the whole corpus before -max_total_time counts, and a corpus
# grown by soak runs (thousands of inputs at a few per second for the
# differential target) turned CI's 20 s runs into minutes.
summary=()
scratch=""
cleanup() { [ -n "$scratch" ] && rm -rf "$scratch"; true; }
trap cleanup EXIT
for t in "${TARGETS[@]}"; do
    corpus="$CACHE/corpus/$t"
    mkdir -p "$corpus"
    if [ -n "${FUZZ_CORPUS_MAX:-}" ]; then
        [ -n "$scratch" ] || scratch="$(mktemp -d)"
        mkdir -p "$scratch/$t"
        # Newest first; names are content hashes, so no quoting issues.
        # (awk reads all its input: no early exit, no SIGPIPE under pipefail.)
        find "$corpus" -maxdepth 1 -type f -printf '%T@ %f\n' | sort -rn \
            | awk -v n="$FUZZ_CORPUS_MAX" 'NR <= n { print $2 }' \
            | while read -r f; do cp "$corpus/$f" "$scratch/$t/"; done
        corpus="$scratch/$t"
    fi
    log="$(mktemp)"
    set +e
    cargo "${TOOLCHAIN[@]}" fuzz run "${BUILD_FLAGS[@]}" "$t" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" \
        -timeout=20 \
        -rss_limit_mb=4096 \
        -malloc_limit_mb=4096 \
        -print_final_stats=1 \
        2>&1 | tee "$log" | grep -E "^(==|#[0-9]+ +(DONE|INITED)|stat::|.*(panicked|ERROR|SUMMARY|deadly signal))" 
    rc=${PIPESTATUS[0]}
    set -e
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)
    summary+=("$t: ${execs:-?} executions, exit $rc")
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: target $t FAILED (exit $rc); last output:"
        tail -40 "$log"
        for s in "${summary[@]}"; do echo "fuzz: $s"; done
        exit "$rc"
    fi
    rm -f "$log"
done
for s in "${summary[@]}"; do echo "fuzz: $s"; done
echo "fuzz: total $(( $(date +%s) - start )) s"
