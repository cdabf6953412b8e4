#!/usr/bin/env python3
"""Run a WASI preview1 command under wasmtime (PyPI `wasmtime`), the peer
that `faaslet run` is compared against.

Usage mirrors `faaslet run`:
    wasmtime_run.py FILE.wasm [--input S | --input-file F] [--stdin-file F]
                    [--mount HOST:GUEST[:ro]]... [-- ARGS...]

argv[0] is the file's stem (as faaslet passes the function name), the
environment is empty, stdout/stderr go to this process's stdout/stderr, and
the exit code follows the guest (`proc_exit` code, 0 on return, 134 on a
trap, 1 on another wasmtime error).
"""
import argparse
import os
import sys
import tempfile

import wasmtime


def main() -> int:
    argv = sys.argv[1:]
    rest = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser()
    p.add_argument("file")
    p.add_argument("--input")
    p.add_argument("--input-file")
    p.add_argument("--mount", action="append", default=[])
    a = p.parse_args(argv)

    cfg = wasmtime.Config()
    try:
        cfg.cache = True
    except Exception:  # noqa: BLE001 - cache is an optimisation only
        pass
    engine = wasmtime.Engine(cfg)
    module = wasmtime.Module.from_file(engine, a.file)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    wasi = wasmtime.WasiConfig()
    stem = os.path.splitext(os.path.basename(a.file))[0]
    wasi.argv = [stem] + rest
    tmp = None
    if a.input is not None:
        tmp = tempfile.NamedTemporaryFile(delete=False)
        tmp.write(a.input.encode())
        tmp.close()
        wasi.stdin_file = tmp.name
    elif a.input_file is not None:
        wasi.stdin_file = a.input_file
    sys.stdout.flush()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    for m in a.mount:
        parts = m.split(":")
        ro = len(parts) == 3 and parts[2] == "ro"
        host, guest = parts[0], parts[1]
        wasi.preopen_dir(host, guest, not ro)
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    start = instance.exports(store)["_start"]
    code = 0
    try:
        start(store)
    except wasmtime.ExitTrap as e:
        code = e.code
    except wasmtime.Trap as e:
        print(f"wasmtime: trap: {str(e).splitlines()[0]}", file=sys.stderr)
        code = 134
    except wasmtime.WasmtimeError as e:
        # e.g. proc_exit with a status >= 126, which wasmtime refuses
        lines = [l for l in str(e).splitlines() if l.strip()]
        print(f"wasmtime: error: {lines[-1] if lines else e}", file=sys.stderr)
        code = 1
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    return code & 0xFF


if __name__ == "__main__":
    sys.exit(main())
