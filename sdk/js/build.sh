#!/usr/bin/env bash
# Builds qjs-faaslet.wasm, the WASI command JavaScript functions run on:
# our driver (qjs-faaslet.c beside this file) linked with QuickJS-NG's
# engine, compiled with clang --target=wasm32-wasi (Debian: clang lld
# wasi-libc libclang-rt-dev-wasm32).
#
# QuickJS-NG's sources are not kept in this repository: they come from the
# PyPI source distribution of `quickjs-ng` (a Python wrapper that ships the
# engine's C files, MIT licence), fetched with pip the first time and
# checked against a SHA-256. Everything is cached under target/quickjs/:
# the engine's objects are compiled once (about a minute on two cores),
# later builds only relink when the driver changes.
#
# Usage: sdk/js/build.sh [--native] [OUT.wasm]
#   (default target/quickjs/qjs-faaslet.wasm); prints the path of the
#   built module on stdout. --native also builds the same driver and engine
#   for the host, as qjs-faaslet-native beside OUT (what `faaslet bench
#   cold-start --js` compares a native start with; about half a minute more).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="$ROOT/target/quickjs"
NATIVE=0
if [ "${1:-}" = --native ]; then NATIVE=1; shift; fi
OUT="${1:-$CACHE/qjs-faaslet.wasm}"

QJS_SDIST="quickjs-ng==0.17.0.2"
QJS_SDIST_FILE="quickjs_ng-0.17.0.2.tar.gz"
QJS_SDIST_SHA256="43d2e48272208721a7aaea8e3f02d4b9318f12ef20cc4f5421b59d9a470706ef"
QJS_SOURCES="dtoa libregexp libunicode quickjs"
CFLAGS=(--target=wasm32-wasi -O2)

die() { echo "sdk/js/build.sh: $*" >&2; exit 2; }
command -v clang >/dev/null || die "clang not found (apt-get install clang lld wasi-libc libclang-rt-dev-wasm32)"

SRC="$CACHE/quickjs-ng-0.17.0.2"
if [ ! -f "$SRC/quickjs.c" ]; then
    mkdir -p "$CACHE/dl"
    if [ ! -f "$CACHE/dl/$QJS_SDIST_FILE" ]; then
        python3 -m pip download --quiet --no-deps --no-binary :all: -d "$CACHE/dl" "$QJS_SDIST" >&2 \
            || die "pip download $QJS_SDIST failed (needs python3-pip and access to PyPI)"
    fi
    echo "$QJS_SDIST_SHA256  $CACHE/dl/$QJS_SDIST_FILE" | sha256sum -c --quiet - >&2 \
        || die "$QJS_SDIST_FILE: SHA-256 mismatch"
    rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp"
    tar xzf "$CACHE/dl/$QJS_SDIST_FILE" -C "$SRC.tmp" --strip-components=2 \
        "quickjs_ng-0.17.0.2/upstream-quickjs" "quickjs_ng-0.17.0.2/LICENSE"
    rm -rf "$SRC" && mv "$SRC.tmp" "$SRC"
fi

# The engine's objects: compiled once per version and flags.
OBJ="$CACHE/obj"
mkdir -p "$OBJ"
objs=()
for f in $QJS_SOURCES; do
    o="$OBJ/$f.o"
    if [ ! -f "$o" ]; then
        clang "${CFLAGS[@]}" -D_GNU_SOURCE -w -I "$SRC" -c "$SRC/$f.c" -o "$o.tmp" \
            || die "compiling QuickJS's $f.c failed"
        mv "$o.tmp" "$o"
    fi
    objs+=("$o")
done

# The driver and the link: redone when the driver or this script changes.
if [ ! -f "$OUT" ] || [ "$HERE/qjs-faaslet.c" -nt "$OUT" ] || [ "$HERE/build.sh" -nt "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")"
    clang "${CFLAGS[@]}" -Wall -Wextra -Werror -I "$SRC" -c "$HERE/qjs-faaslet.c" -o "$OBJ/qjs-faaslet.o" \
        || die "compiling qjs-faaslet.c failed"
    # 1 MiB of shadow stack (the driver lets JavaScript use 192 KiB of it).
    # Linked at -O0: the objects are optimised already, and at -O1 and up
    # clang runs binaryen's wasm-opt on the result when it is installed,
    # which drops the name section (and inlines across functions). Faaslet
    # asyncifies the functions that qjs-faaslet.c's custom section
    # `faaslet.asyncify-onlylist` names, so the names must survive, and the
    # build is then the same whether or not binaryen is installed.
    clang --target=wasm32-wasi -O0 -Wl,--strip-debug -Wl,-z,stack-size=1048576 "$OBJ/qjs-faaslet.o" "${objs[@]}" -lm -o "$OUT.tmp" \
        || die "linking qjs-faaslet.wasm failed"
    # The functions on the path from the entry point to the read of
    # standard input (qjs-faaslet.c's read_stdin), by their names in the
    # name section: wasi-libc's start-up (_start, __original_main,
    # __main_void), main, read_stdin, read(2) and its fd_read wrapper.
    # Faaslet's asyncify transform instruments only the functions a module
    # names in a custom section `faaslet.asyncify-onlylist` (comma
    # separated), so QuickJS's interpreter runs untransformed; a name that
    # does not exist in the module makes the transform fail with the name.
    python3 - "$OUT.tmp" <<'PY' || die "adding the asyncify-onlylist section failed"
import sys
def leb(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)
name = b"faaslet.asyncify-onlylist"
names = b"_start,_start.command_export,__original_main,__main_void,main,read_stdin,read,__wasi_fd_read"
body = leb(len(name)) + name + names
with open(sys.argv[1], "ab") as f:
    f.write(b"\x00" + leb(len(body)) + body)
PY
    mv "$OUT.tmp" "$OUT"
fi
# The host build, for comparison with a native start.
if [ "$NATIVE" = 1 ]; then
    NOBJ="$CACHE/obj-native"
    NATIVE_OUT="$(dirname "$OUT")/qjs-faaslet-native"
    mkdir -p "$NOBJ"
    nobjs=()
    for f in $QJS_SOURCES; do
        o="$NOBJ/$f.o"
        if [ ! -f "$o" ]; then
            clang -O2 -D_GNU_SOURCE -w -I "$SRC" -c "$SRC/$f.c" -o "$o.tmp" \
                || die "compiling QuickJS's $f.c for the host failed"
            mv "$o.tmp" "$o"
        fi
        nobjs+=("$o")
    done
    if [ ! -f "$NATIVE_OUT" ] || [ "$HERE/qjs-faaslet.c" -nt "$NATIVE_OUT" ] || [ "$HERE/build.sh" -nt "$NATIVE_OUT" ]; then
        clang -O2 -Wall -Wextra -Werror -I "$SRC" "$HERE/qjs-faaslet.c" "${nobjs[@]}" -lm -lpthread -o "$NATIVE_OUT.tmp" \
            || die "building qjs-faaslet-native failed"
        mv "$NATIVE_OUT.tmp" "$NATIVE_OUT"
    fi
fi
echo "$OUT"
