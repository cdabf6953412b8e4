//! JavaScript functions (`PUT /js/USER/FUNCTION`) over real loopback
//! sockets, on the real interpreter: QuickJS-NG with our driver
//! (`sdk/js/qjs-faaslet.c`, built by `sdk/js/build.sh`), asyncified and
//! captured at the script's first `readInput()`. Every reply must be what a
//! fresh run of the same script with the same stdin prints (a fresh
//! instance of the unmodified command, run from `_start`), calls must not
//! see each other's state, an uncaught exception must be a failed call
//! carrying the message and stack, and the function must survive a
//! restart.
//!
//! Needs clang (wasm32-wasi), pip (the first build fetches QuickJS-NG's
//! sources from PyPI) and binaryen's `wasm-opt`; skipped without them
//! unless `FAASLET_REQUIRE_QUICKJS` is set (CI sets it).

use faaslet::{Engine, Module};
use faaslet_cli::client::{request, Response};
use faaslet_platform::worker::js::JS_WASM_STACK;
use faaslet_platform::worker::{Language, Server, Worker, WorkerConfig};
use faaslet_platform::{Faaslet, FaasletConfig, Output};
use faaslet_tests::quickjs_wasm;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Keeps per-call state in globals and a module-level array, reads its
/// input once (a second `readInput()` is empty), prints from a promise
/// job, writes stderr, and throws from a nested function when asked.
const SCRIPT: &str = r#"print("loaded", typeof readInput, scriptArgs.length);
const calls = (globalThis.calls || 0) + 1;
globalThis.calls = calls;
const seen = [];
const x = JSON.parse(readInput());
seen.push(x);
function deep() { throw new RangeError("asked to fail"); }
if (x.fail) deep();
print(JSON.stringify({ sum: x.xs.reduce((a, b) => a + b, 0), n: x.xs.length, calls, seen: seen.length, again: readInput() }));
Promise.resolve(x.xs.length).then(n => console.log("then", n));
console.error("to stderr");
"#;

fn tmpdir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("js-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A data directory for a test whose QuickJS is already prepared: the
/// asyncified command and its compiled code are made once per test run
/// (in a template directory kept between runs) and copied in, as a
/// worker restarting on its own data would find them.
fn data_dir(name: &str, js: &Path) -> PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let t = Path::new(env!("CARGO_TARGET_TMPDIR")).join("js-template");
        let mut c = WorkerConfig::new(&t);
        c.js = Some(js.to_path_buf());
        let w = Worker::new(&js_engine(), c).unwrap();
        w.js_runtime().unwrap();
        t
    });
    let d = tmpdir(name);
    copy_dir(&template.join("runtimes"), &d.join("runtimes"));
    copy_dir(&template.join("code"), &d.join("code"));
    d
}

/// An engine as `faaslet serve --js` makes it.
fn js_engine() -> Engine {
    Engine::new(&faaslet::Config {
        max_wasm_stack: JS_WASM_STACK,
        ..faaslet::Config::default()
    })
    .unwrap()
}

fn start(data: &Path, js: Option<&Path>) -> Server {
    let mut c = WorkerConfig::new(data);
    c.js = js.map(Path::to_path_buf);
    c.threads = 2;
    let w = Worker::new(&js_engine(), c).unwrap();
    Server::start(w, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn req(s: &Server, method: &str, path: &str, body: &[u8]) -> Response {
    request(&s.addr().to_string(), method, path, body).unwrap()
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// What a fresh run prints: the unmodified command, a new instance run
/// from `_start` with `script` and `input` as its stdin.
struct Fresh {
    stdout: String,
    stderr: String,
    code: i32,
}

fn fresh(plain: &Module, script: &str, input: &str) -> Fresh {
    let config = FaasletConfig {
        args: vec![script.to_string()],
        stdout: Output::Capture,
        stderr: Output::Capture,
        ..FaasletConfig::new("qjs-faaslet")
    };
    let out = Faaslet::new(plain.engine(), plain, config)
        .unwrap()
        .call(input.as_bytes())
        .unwrap();
    Fresh {
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        code: out.return_code,
    }
}

fn plain_quickjs(js: &Path) -> Module {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    let engine = ENGINE.get_or_init(Engine::default);
    Module::new(engine, std::fs::read(js).unwrap()).unwrap()
}

#[test]
fn js_functions_over_http_behave_as_fresh_runs() {
    let Some(js) = quickjs_wasm() else {
        return;
    };
    let plain = plain_quickjs(&js);
    let data = data_dir("http", &js);
    let s = start(&data, Some(&js));
    // A wasm function of the same name is replaced by the script.
    let wat = r#"(module (func (export "main") (result i32) (i32.const 0)))"#;
    assert_eq!(req(&s, "PUT", "/f/demo/sum", wat.as_bytes()).status, 201);
    let r = req(&s, "PUT", "/js/demo/sum", SCRIPT.as_bytes());
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(json(&r)["language"], "js");
    let stored = data.join("functions/demo");
    assert!(stored.join("sum.js").exists() && stored.join("sum.point").exists());
    assert!(!stored.join("sum.wasm").exists(), "the wasm upload is gone");
    let point = std::fs::read(stored.join("sum.point")).unwrap();
    assert!(!point.is_empty(), "captured at the first readInput()");

    // Different inputs, through both paths: each reply is the fresh run's
    // stdout, and no call sees an earlier one's globals or arrays.
    let inputs = [
        ("/js/demo/sum", r#"{"xs": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}"#),
        ("/f/demo/sum", r#"{"xs": []}"#),
        ("/js/demo/sum", r#"{"xs": [40, 2]}"#),
    ];
    for (path, input) in inputs {
        let r = req(&s, "POST", path, input.as_bytes());
        let want = fresh(&plain, SCRIPT, input);
        assert_eq!(want.code, 0, "{}", want.stderr);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), want.stdout, "{path} {input}");
        assert!(
            r.text().contains("\"calls\":1,\"seen\":1,\"again\":\"\""),
            "{}",
            r.text()
        );
    }
    assert!(fresh(&plain, SCRIPT, r#"{"xs": [40, 2]}"#)
        .stdout
        .contains("\"sum\":42"));

    // An uncaught exception: a failed call with the message and stack the
    // fresh run writes to stderr, and the output written before it.
    let bad = r#"{"xs": [1], "fail": true}"#;
    let r = req(&s, "POST", "/js/demo/sum", bad.as_bytes());
    let want = fresh(&plain, SCRIPT, bad);
    assert_eq!(want.code, 1);
    assert_eq!(r.status, 500, "{}", r.text());
    let body = json(&r);
    assert_eq!(body["error"], "exception");
    assert_eq!(body["exit_code"], 1);
    assert_eq!(body["traceback"], want.stderr.as_str());
    assert_eq!(body["output"], want.stdout.as_str());
    let tb = body["traceback"].as_str().unwrap();
    assert!(
        tb.starts_with("Uncaught RangeError: asked to fail\n"),
        "{tb}"
    );
    assert!(tb.contains("at deep (<script>:7"), "{tb}");

    // Math.random is seeded again after the input is read: calls resumed
    // from one snapshot draw different numbers.
    let r = req(
        &s,
        "PUT",
        "/js/demo/dice",
        b"readInput(); print(Math.random());",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let draws: std::collections::HashSet<String> = (0..4)
        .map(|_| req(&s, "POST", "/js/demo/dice", b"").text())
        .collect();
    assert_eq!(draws.len(), 4, "{draws:?}");
    for d in &draws {
        let v: f64 = d.trim().parse().unwrap();
        assert!((0.0..1.0).contains(&v), "{d}");
    }

    // Recursion: a resumed call recurses as deep as a fresh run, and past
    // QuickJS's limit both end with the same RangeError.
    let deep = "const n = Number(readInput()); function f(k) { return k === 0 ? 0 : 1 + f(k - 1); } print(f(n));";
    assert_eq!(req(&s, "PUT", "/js/demo/deep", deep.as_bytes()).status, 201);
    let r = req(&s, "POST", "/js/demo/deep", b"500");
    assert_eq!(
        (r.status, r.text()),
        (200, fresh(&plain, deep, "500").stdout)
    );
    assert_eq!(r.text(), "500\n");
    let r = req(&s, "POST", "/js/demo/deep", b"100000");
    let want = fresh(&plain, deep, "100000");
    assert!(
        want.stderr
            .starts_with("Uncaught RangeError: Maximum call stack size exceeded"),
        "{}",
        want.stderr
    );
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(json(&r)["traceback"], want.stderr.as_str());

    // A script that never calls readInput() is captured all the same: the
    // driver reads stdin before it runs any script.
    let r = req(&s, "PUT", "/js/demo/hello", b"print('no input', 6 * 7);");
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        !std::fs::read(stored.join("hello.point"))
            .unwrap()
            .is_empty(),
        "captured at the driver's read"
    );
    for _ in 0..2 {
        assert_eq!(
            req(&s, "POST", "/js/demo/hello", b"x").text(),
            "no input 42\n"
        );
    }
    // A syntax error: the upload is stored (as for Python), every call
    // fails with QuickJS's message. The driver compiles the script before
    // it reads stdin, so it exits there and nothing is captured.
    let r = req(&s, "PUT", "/js/demo/broken", b"let = ;");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        std::fs::read(stored.join("broken.point")).unwrap(),
        b"",
        "nowhere to resume"
    );
    let r = req(&s, "POST", "/js/demo/broken", b"");
    assert_eq!(r.status, 500);
    let tb = json(&r)["traceback"].as_str().unwrap().to_string();
    assert!(tb.starts_with("Uncaught SyntaxError"), "{tb}");
    assert_eq!(tb, fresh(&plain, "let = ;", "").stderr);
    // A module uploaded over a script replaces it, on disk too.
    assert_eq!(req(&s, "PUT", "/js/demo/swap", b"print(1)").status, 201);
    let echo = r#"(module
      (import "env" "__faasm_write_output" (func $out (param i32 i32)))
      (memory (export "memory") 1) (data (i32.const 0) "wasm")
      (func (export "main") (result i32) (call $out (i32.const 0) (i32.const 4)) (i32.const 0)))"#;
    assert_eq!(req(&s, "PUT", "/f/demo/swap", echo.as_bytes()).status, 201);
    assert!(!stored.join("swap.js").exists() && !stored.join("swap.point").exists());
    assert_eq!(req(&s, "POST", "/f/demo/swap", b"").text(), "wasm");
    // Not text: refused.
    let r = req(&s, "PUT", "/js/demo/bin", b"print(1)\xff");
    assert_eq!(r.status, 400);
    assert_eq!(json(&r)["error"], "js_unavailable");
    s.stop().unwrap();

    // A restart reloads the function from the data directory (its
    // snapshot and point, not a new capture) and answers the same.
    let runtimes = std::fs::read_dir(data.join("runtimes")).unwrap().count();
    let s = start(&data, Some(&js));
    let input = r#"{"xs": [5, 5]}"#;
    assert_eq!(
        req(&s, "POST", "/js/demo/sum", input.as_bytes()).text(),
        fresh(&plain, SCRIPT, input).stdout
    );
    assert_eq!(
        req(&s, "POST", "/f/demo/hello", b"").text(),
        "no input 42\n"
    );
    assert_eq!(req(&s, "POST", "/f/demo/swap", b"").text(), "wasm");
    assert_eq!(
        std::fs::read_dir(data.join("runtimes")).unwrap().count(),
        runtimes,
        "the prepared QuickJS is reused"
    );
    s.stop().unwrap();
}

#[test]
fn a_worker_without_quickjs_refuses_js_uploads_clearly() {
    let data = tmpdir("none");
    let s = start(&data, None);
    let r = req(&s, "PUT", "/js/demo/f", b"print(readInput())");
    assert_eq!(r.status, 400, "{}", r.text());
    let body = json(&r);
    assert_eq!(body["error"], "js_unavailable");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("no JavaScript functions") && msg.contains("--js"),
        "{msg}"
    );
    assert_eq!(req(&s, "POST", "/js/demo/f", b"").status, 404);
    s.stop().unwrap();
}

#[test]
fn languages_are_named_by_extension_and_version() {
    assert_eq!(Language::from_extension("js"), Some(Language::JavaScript));
    assert_eq!(Language::from_extension("py"), Some(Language::Python));
    assert_eq!(Language::from_extension("wasm"), None);
    assert_eq!(Language::from_version("abc+js"), Some(Language::JavaScript));
    assert_eq!(Language::from_version("abc+python"), Some(Language::Python));
    assert_eq!(Language::from_version("abc+idempotent"), None);
}
