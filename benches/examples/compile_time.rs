//! Compiles one module with faaslet or with wasmtime 48 (the same
//! Cranelift, 0.135), for comparing their compile cost under
//! `/usr/bin/time` (user CPU time is less disturbed than wall time by
//! other load on a shared machine):
//!
//! ```sh
//! cargo build --release -p faaslet-benches --example compile_time
//! for e in faaslet wasmtime; do
//!   /usr/bin/time -f "$e %e s wall %U s user %M KB" target/release/examples/compile_time $e python.wasm
//! done
//! ```

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, engine, path] = &args[..] else {
        eprintln!("usage: compile_time faaslet|wasmtime FILE.wasm");
        std::process::exit(2);
    };
    let wasm = std::fs::read(path).expect("read the module");
    let t = std::time::Instant::now();
    match engine.as_str() {
        // As the worker compiles: epoch checks off (signal interruption).
        "faaslet" => {
            let config = faaslet::Config {
                signal_interruption: true,
                ..faaslet::Config::default()
            };
            let e = faaslet::Engine::new(&config).expect("engine");
            faaslet::Module::new(&e, &wasm).expect("compile");
        }
        "wasmtime" => {
            let e = wasmtime::Engine::default();
            wasmtime::Module::new(&e, &wasm).expect("compile");
        }
        other => panic!("unknown engine {other}"),
    }
    eprintln!("{engine}: compiled in {:.2} s", t.elapsed().as_secs_f64());
}
