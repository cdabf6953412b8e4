//! A real WASI program written in Rust (tests/guests/rtool.rs), built with
//! `rustc --target wasm32-wasip1` and run unchanged: Rust's std drives WASI
//! differently from wasi-libc's stdio.

mod common;

use common::{build_rust, run, TempDir};
use faaslet_hostapi::wasi::{Input, MountMode, WasiCtx};
use std::sync::OnceLock;

fn rtool() -> Option<&'static [u8]> {
    static T: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    T.get_or_init(|| build_rust("rtool.rs")).as_deref()
}

macro_rules! rtool_or_skip {
    () => {
        match rtool() {
            Some(t) => t,
            None => return,
        }
    };
}

#[test]
fn rust_std_fs_in_scratch() {
    let t = rtool_or_skip!();
    let o = run(
        t,
        WasiCtx::builder()
            .args(["rtool", "fs", "/scratch"])
            .scratch("/scratch"),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(
        o.stdout,
        "size 4000 file true dir false\nat 400: 100\nafter set_len [0, 0, 0, 0, 1, 0, 0, 0]\n\
         listing [\"moved.bin:false\", \"note.txt:false\", \"y:true\"]\nexists after remove false\n"
    );
}

#[test]
fn rust_std_env_stdin_clocks_exit() {
    let t = rtool_or_skip!();
    let o = run(
        t,
        WasiCtx::builder()
            .args(["rtool", "env", "a b", "ü"])
            .env("B", "2")
            .env("A", "1")
            .stdin(Input::Bytes(b"piped input".to_vec())),
    );
    assert_eq!(o.code, Some(3), "{o:?}");
    assert_eq!(
        o.stdout,
        "args [\"a b\", \"ü\"]\nvars [(\"A\", \"1\"), (\"B\", \"2\")]\nstdin \"PIPED INPUT\"\n\
         slept true\nepoch>2020 true\n"
    );
    assert_eq!(o.stderr, "to stderr\n");
}

#[test]
fn rust_std_escapes_are_refused() {
    let t = rtool_or_skip!();
    let data = TempDir::new("rs-esc");
    std::fs::write(data.path().join("in.txt"), "in").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", data.path().join("pw")).unwrap();
    let o = run(
        t,
        WasiCtx::builder()
            .args([
                "rtool",
                "escape",
                "/d/in.txt",
                "/d/../../etc/passwd",
                "/etc/passwd",
                "/d/pw",
            ])
            .mount(data.path(), "/d", MountMode::ReadOnly),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(
        o.stdout,
        "/d/in.txt: read\n/d/../../etc/passwd: PermissionDenied\n/etc/passwd: NotFound\n\
         /d/pw: PermissionDenied\n"
    );
}

#[test]
fn rust_panic_is_a_trap_not_a_host_fault() {
    let t = rtool_or_skip!();
    let o = run(t, WasiCtx::builder().args(["rtool", "panic"]));
    assert_eq!(o.code, None, "{o:?}");
    assert!(o.trap.is_some());
    assert!(o.stderr.contains("guest panic"), "{o:?}");
}

#[test]
fn rust_std_walks_and_removes_a_mounted_tree() {
    let t = rtool_or_skip!();
    let data = TempDir::new("rs-tree");
    let d = data.path();
    std::fs::create_dir_all(d.join("a/b")).unwrap();
    std::fs::write(d.join("a/one.txt"), "1").unwrap();
    std::fs::write(d.join("a/b/two.txt"), "22").unwrap();
    std::fs::create_dir_all(d.join("victim/x/y")).unwrap();
    std::fs::write(d.join("victim/x/y/z.bin"), [0u8; 300]).unwrap();
    std::fs::write(d.join("victim/top"), "t").unwrap();
    let o = run(
        t,
        WasiCtx::builder()
            .args(["rtool", "tree", "/data"])
            .mount(d, "/data", MountMode::ReadWrite),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(
        o.stdout,
        "a/\na/b/\na/b/two.txt 2\na/one.txt 1\nvictim/\nvictim/top 1\nvictim/x/\n\
         victim/x/y/\nvictim/x/y/z.bin 300\nvictim exists false\n"
    );
    assert!(!d.join("victim").exists(), "removed on the host too");
    assert!(d.join("a/b/two.txt").exists());
}

#[test]
fn rust_std_serves_a_connection_on_a_handed_in_listener() {
    use std::io::{Read, Write};
    let t = rtool_or_skip!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"hello over wasi").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = String::new();
        s.read_to_string(&mut back).unwrap();
        back
    });
    let o = run(
        t,
        WasiCtx::builder()
            .args(["rtool", "serve"])
            .tcp_listener(listener),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout, "served 15 bytes\n");
    assert_eq!(client.join().unwrap(), "HELLO OVER WASI");
}
