//! Host-to-wasm calls in a loop, for counting their instructions with
//! valgrind (load-independent, unlike timings on a shared machine):
//!
//! ```sh
//! cargo build --release -p faaslet-benches --example call_count
//! for n in 1000000 2000000; do
//!   valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
//!     target/release/examples/call_count faaslet $n
//! done   # instructions per call: (I refs at 2M - I refs at 1M) / 1M
//! ```
//!
//! `ENGINE` is `faaslet`, `faaslet-typed`, `faaslet-checks` (the epoch
//! checks compiled in, as `Config::default()` has them) or `wasmtime`
//! (its typed call, the peer).

use std::hint::black_box;

const WAT: &str = r#"(module (func (export "add1") (param i32) (result i32)
    (i32.add (local.get 0) (i32.const 1))))"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (engine, n) = match &args[..] {
        [_, e, n] => (e.as_str(), n.parse::<u64>().expect("a number of calls")),
        _ => {
            eprintln!("usage: call_count faaslet|faaslet-typed|faaslet-checks|wasmtime CALLS");
            std::process::exit(2);
        }
    };
    let wasm = faaslet::wat_to_wasm(WAT).expect("encode");
    let mut sum = 0i64;
    match engine {
        "faaslet" | "faaslet-typed" | "faaslet-checks" => {
            let config = faaslet::Config {
                epoch_interruption: engine == "faaslet-checks",
                ..faaslet::Config::default()
            };
            let e = faaslet::Engine::new(&config).expect("engine");
            let module = faaslet::Module::new(&e, &wasm).expect("compile");
            let mut store = faaslet::Store::new(&e, ());
            let instance = faaslet::Instance::new(&mut store, &module, &[]).expect("instantiate");
            let f = instance
                .get_typed_func::<i32, i32, _>(&mut store, "add1")
                .expect("add1");
            for i in 0..n {
                sum += i64::from(f.call(&mut store, black_box(i as i32)).expect("call"));
            }
        }
        "wasmtime" => {
            let e = wasmtime::Engine::default();
            let module = wasmtime::Module::new(&e, &wasm).expect("compile");
            let mut store = wasmtime::Store::new(&e, ());
            let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instantiate");
            let f = instance
                .get_typed_func::<i32, i32>(&mut store, "add1")
                .expect("add1");
            for i in 0..n {
                sum += i64::from(f.call(&mut store, black_box(i as i32)).expect("call"));
            }
        }
        other => panic!("unknown engine {other}"),
    }
    println!("{sum}");
}
