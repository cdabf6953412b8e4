#!/usr/bin/env bash
# PolyBench/C 4.2.1 (the 30 kernels the Faasm paper used) native, under
# wasmtime (the PyPI wheel) and under `faaslet run`, in one run, and a table
# of kernel times with ratios and geomeans.
#
#   benches/polybench.sh                 # all 30 kernels, LARGE dataset
#   KERNELS="gemm lu" RUNS=5 benches/polybench.sh
#
# Builds every kernel from ../shared/polybench (never copied into the tree)
# with clang -O2, natively and for wasm32-wasi, into target/polybench/.
#
# Correctness: each kernel is first built with -DPOLYBENCH_DUMP_ARRAYS at
# the CHECK_DATASET size and run under wasmtime and faaslet; their result
# dumps (stderr) must be byte-identical, else the kernel is marked MISMATCH
# and the script exits 1 at the end.
#
# Timing: the kernels are built with -DPOLYBENCH_TIME, which times the
# kernel alone (not compilation, instantiation or initialisation) and prints
# the seconds on stdout. Each engine runs each kernel RUNS times, the
# engines interleaved run by run so that load on this shared machine hits
# them alike; the table shows the minimum of each.
#
# Columns: native; wasmtime (its defaults: no interruption checks);
# faaslet (`faaslet run`: guard pages, Spectre guard on, and without
# --timeout no interruption checks either); faaslet+deadline (`--timeout`,
# as every worker call has one: stopped by a signal, no checks in the
# code); faaslet+checks (`--timeout --interrupt checks`: the epoch checks
# at function entries and loop headers instead); no-guard, faaslet without the Spectre guard
# (`--no-spectre-guard`; with guard pages it only guards table indices,
# which these kernels do not use); and with FAASLET_BASE set, base, a
# second faaslet binary (e.g. a build of main) for before/after in the same
# run. With BOUNDS=explicit, faaslet runs with `--bounds explicit` (where
# the Spectre guard covers every memory access). The table
# (benches/polybench_table.py) gives the minimum of the RUNS runs of each.
#
# Env: FAASLET (default: target/release/faaslet, built or brought up to date
#      by cargo first),
#      FAASLET_BASE (optional second binary), DATASET (MINI, SMALL, MEDIUM,
#      LARGE (default), EXTRALARGE), CHECK_DATASET (default SMALL),
#      RUNS (default 3), KERNELS (names, default all), BOUNDS (guard|explicit),
#      NO_GUARD_COLUMN=1 (skip the --no-spectre-guard runs),
#      POLYBENCH (default ../shared/polybench beside the repository),
#      METRIC (time (default); instructions: each column is the number
#      of instructions the kernel took, counted by valgrind's cachegrind
#      as a run at DATASET (default then MEDIUM) minus a run at MINI, which
#      cancels start-up and compilation; one run, since counts do not
#      depend on the load of the machine (they vary by about 0.02%
#      between runs). Needs valgrind. Counts are not times (a load and an
#      add count the same), but they show what the code does without the
#      noise of a shared machine); or cpu: the user+system CPU seconds
#      of the whole process (getrusage of the child), a run at DATASET
#      minus a run at MINI, min of RUNS: unlike PolyBench's wall-clock
#      timer, it does not count the time a process spends waiting for a
#      core, so it holds up on a loaded machine (cache sharing with the
#      other load still shows, which the interleaved runs spread over
#      every column alike).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
POLYBENCH="${POLYBENCH:-$ROOT/../shared/polybench}"
OUT="$ROOT/target/polybench"
METRIC="${METRIC:-time}"
case "$METRIC" in
    time) DATASET="${DATASET:-LARGE}" ;;
    cpu) DATASET="${DATASET:-LARGE}" ;;
    instructions) DATASET="${DATASET:-MEDIUM}"; RUNS=1
        command -v valgrind >/dev/null || { echo "polybench: METRIC=instructions needs valgrind" >&2; exit 2; } ;;
    *) echo "polybench: METRIC is time, cpu or instructions" >&2; exit 2 ;;
esac
CHECK_DATASET="${CHECK_DATASET:-SMALL}"
RUNS="${RUNS:-3}"
BOUNDS="${BOUNDS:-guard}"
FAASLET_GIVEN="${FAASLET:-}"
FAASLET="${FAASLET:-$ROOT/target/release/faaslet}"
FAASLET_BASE="${FAASLET_BASE:-}"
WASMTIME_PY_VERSION=50.0.1

die() { echo "polybench: $*" >&2; exit 2; }
[ -f "$POLYBENCH/utilities/benchmark_list" ] || die "no PolyBench in $POLYBENCH (set POLYBENCH)"
command -v clang >/dev/null || die "clang is needed (with wasm32-wasi support: wasi-libc, lld)"

# --- the engines -------------------------------------------------------------
if [ -z "$FAASLET_GIVEN" ]; then
    # Always through cargo, so a stale binary is never measured.
    (cd "$ROOT" && cargo build --quiet --release -p faaslet-cli) || die "cannot build faaslet"
fi
PYLIB="$OUT/pylib"
export PYTHONPATH="$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c 'import wasmtime' 2>/dev/null; then
    python3 -m pip install --quiet --target "$PYLIB" "wasmtime==$WASMTIME_PY_VERSION" \
        || die "cannot install the wasmtime Python package (is python3-pip installed?)"
fi
WASMTIME=(python3 "$ROOT/tests/wasi-programs/wasmtime_run.py")
if [ "$METRIC" != time ]; then
    # The interpreter itself, not a wrapper script (pyenv's shims are).
    WASMTIME=("$(python3 -c 'import sys; print(sys.executable)')" "$ROOT/tests/wasi-programs/wasmtime_run.py")
fi
FBOUNDS=(--bounds "$BOUNDS")

# --- building ----------------------------------------------------------------
mkdir -p "$OUT/bin"
WASI_FLAGS=(--target=wasm32-wasi -O2 -D_WASI_EMULATED_PROCESS_CLOCKS -lwasi-emulated-process-clocks)
build() { # source name dataset kind(time|dump)
    local src="$1" name="$2" ds="$3" kind="$4" defs=()
    if [ "$kind" = time ]; then defs=(-DPOLYBENCH_TIME); else defs=(-DPOLYBENCH_DUMP_ARRAYS); fi
    local base="$OUT/bin/$name.$ds.$kind"
    if [ ! -f "$base.wasm" ] || [ "$POLYBENCH/$src" -nt "$base.wasm" ]; then
        clang "${WASI_FLAGS[@]}" -I "$POLYBENCH/utilities" "${defs[@]}" "-D${ds}_DATASET" \
            "$POLYBENCH/utilities/polybench.c" "$POLYBENCH/$src" -lm -o "$base.wasm"
    fi
    if [ "$kind" = time ] && { [ ! -f "$base.native" ] || [ "$POLYBENCH/$src" -nt "$base.native" ]; }; then
        clang -O2 -I "$POLYBENCH/utilities" "${defs[@]}" "-D${ds}_DATASET" \
            "$POLYBENCH/utilities/polybench.c" "$POLYBENCH/$src" -lm -o "$base.native"
    fi
}

SOURCES=()
while read -r src; do
    src="${src#./}"
    [ -n "$src" ] || continue
    name="$(basename "$src" .c)"
    if [ -n "${KERNELS:-}" ] && ! [[ " $KERNELS " == *" $name "* ]]; then continue; fi
    SOURCES+=("$src")
done < "$POLYBENCH/utilities/benchmark_list"
[ "${#SOURCES[@]}" -gt 0 ] || die "no kernel selected (KERNELS=$KERNELS)"

echo "building ${#SOURCES[@]} kernels ($DATASET for timing, $CHECK_DATASET for the check)..." >&2
for src in "${SOURCES[@]}"; do
    name="$(basename "$src" .c)"
    build "$src" "$name" "$DATASET" time
    [ "$METRIC" = time ] || build "$src" "$name" MINI time
    build "$src" "$name" "$CHECK_DATASET" dump
done

# --- running -----------------------------------------------------------------
# One timed run: prints the kernel seconds (PolyBench's timer) or FAIL.
timed() { # cmd...
    local out
    if out="$("$@" 2>/dev/null)" && [[ "$out" =~ ^[0-9.]+$ ]]; then echo "$out"; else echo FAIL; fi
}

# One counted run: millions of instructions of the kernel, as the count
# at DATASET minus the count at MINI (the binary stem's dataset part is
# swapped), or FAIL.
counted() { # stem cmd-prefix... (the wasm or native path is appended)
    local stem="$1"; shift
    local big small
    big="$(instr "$@" "$stem")" && small="$(instr "$@" "${stem/.$DATASET./.MINI.}")" \
        && python3 -c "print(f'{($big - $small) / 1e6:.3f}')" || echo FAIL
}
# One CPU-timed run: user+system CPU seconds of the kernel, as the run at
# DATASET minus the run at MINI (start-up, compilation, initialisation
# cancel), or FAIL.
cpu_counted() { # stem cmd-prefix... (the wasm or native path is appended)
    local stem="$1"; shift
    local big small
    big="$(cpu_secs "$@" "$stem")" && small="$(cpu_secs "$@" "${stem/.$DATASET./.MINI.}")" \
        && python3 -c "print(f'{max($big - $small, 0):.4f}')" || echo FAIL
}
cpu_secs() { # cmd... : user+system CPU seconds of the whole run (the child alone)
    python3 -c '
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.exit(1) if r.returncode else print(u.ru_utime + u.ru_stime)' "$@"
}
instr() { # cmd... : instructions of the whole run
    valgrind --tool=cachegrind --cache-sim=no --smc-check=all-non-file \
        --cachegrind-out-file=/dev/null "$@" 2>&1 >/dev/null \
        | sed -n 's/.*I *refs: *//p' | tr -d , | grep -E '^[0-9]+$'
}

RESULTS="$OUT/results.$DATASET.$BOUNDS.$METRIC.tsv"
# The columns, in order; each is one way of running a kernel.
COLS=(native wasmtime faaslet faaslet+deadline faaslet+checks)
[ -n "${NO_GUARD_COLUMN:-}" ] || COLS+=(no-guard)
[ -z "$FAASLET_BASE" ] || COLS+=(base)
run_col() { # column binary-stem
    if [ "$METRIC" = cpu ]; then
        case "$1" in
            native) cpu_counted "$2.native" ;;
            *) local cmd; read -ra cmd <<<"$(col_cmd "$1")"; cpu_counted "$2.wasm" "${cmd[@]}" ;;
        esac
        return
    fi
    if [ "$METRIC" = instructions ]; then
        case "$1" in
            native) counted "$2.native" ;;
            *) local cmd; read -ra cmd <<<"$(col_cmd "$1")"; counted "$2.wasm" "${cmd[@]}" ;;
        esac
        return
    fi
    case "$1" in
        native) timed "$2.native" ;;
        *) local cmd; read -ra cmd <<<"$(col_cmd "$1")"; timed "${cmd[@]}" "$2.wasm" ;;
    esac
}
col_cmd() { # column: the command before the wasm path
    case "$1" in
        wasmtime) echo "${WASMTIME[*]}" ;;
        faaslet) echo "$FAASLET run ${FBOUNDS[*]}" ;;
        # --timeout: the deadline every worker call has, by signal (the
        # default) or by epoch checks at function entries and loop headers.
        faaslet+deadline) echo "$FAASLET run ${FBOUNDS[*]} --timeout 100000" ;;
        faaslet+checks) echo "$FAASLET run ${FBOUNDS[*]} --timeout 100000 --interrupt checks" ;;
        no-guard) echo "$FAASLET run ${FBOUNDS[*]} --no-spectre-guard" ;;
        base) echo "$FAASLET_BASE run ${FBOUNDS[*]}" ;;
    esac
}
(IFS=$'\t'; echo "kernel	check	${COLS[*]}") > "$RESULTS"
status=0
for src in "${SOURCES[@]}"; do
    name="$(basename "$src" .c)"
    dump="$OUT/bin/$name.$CHECK_DATASET.dump.wasm"
    wt_dump="$("${WASMTIME[@]}" "$dump" 2>&1 >/dev/null)" || true
    fl_dump="$("$FAASLET" run "${FBOUNDS[@]}" "$dump" 2>&1 >/dev/null)" || true
    if [ -n "$wt_dump" ] && [ "$wt_dump" = "$fl_dump" ]; then check=same; else check=MISMATCH; status=1; fi
    declare -A times=()
    for _ in $(seq "$RUNS"); do
        for c in "${COLS[@]}"; do
            times[$c]="${times[$c]:-} $(run_col "$c" "$OUT/bin/$name.$DATASET.time")"
        done
    done
    line="$name	$check"
    for c in "${COLS[@]}"; do line+="	${times[$c]# }"; done
    echo "$line" >> "$RESULTS"
    unset times
    echo "  $name done ($check)" >&2
done

# --- the table ---------------------------------------------------------------
python3 "$HERE/polybench_table.py" "$RESULTS" "$DATASET" "$BOUNDS" "$RUNS" "$METRIC"
exit "$status"
