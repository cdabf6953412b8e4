"""The peer of gc_alloc.rs: wasmtime's GC (its default collector, the
deferred reference-counting one) on the same module.

    python3 -m venv /tmp/wtvenv && /tmp/wtvenv/bin/pip install wasmtime==50.0.1
    /tmp/wtvenv/bin/python benches/examples/gc_alloc_wasmtime.py 20000000 100000

Prints nanoseconds per allocation (wall clock, collections included).
"""

import pathlib
import re
import sys
import time

import wasmtime

SRC = (pathlib.Path(__file__).parent / "gc_alloc.rs").read_text()
WAT = re.search(r'pub const WAT: &str = r#"(.*?)"#;', SRC, re.S).group(1)


def main() -> None:
    n, live = int(sys.argv[1]), int(sys.argv[2])
    config = wasmtime.Config()
    config.wasm_gc = True
    config.wasm_function_references = True
    config.gc_support = True
    engine = wasmtime.Engine(config)
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, WAT)
    inst = wasmtime.Instance(store, module, [])
    run = inst.exports(store)["run"]
    t = time.perf_counter()
    last = run(store, n, live)
    elapsed = time.perf_counter() - t
    assert last == n - 1, last
    print(
        f"wasmtime {wasmtime.__version__ if hasattr(wasmtime, '__version__') else ''}: "
        f"{n} allocations, live set {live} structs: {elapsed * 1e9 / n:.1f} ns/allocation"
    )


if __name__ == "__main__":
    main()
