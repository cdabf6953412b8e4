//! Hostile and edge-case guests written in WAT: garbage pointers, huge
//! lengths, iovecs past the end of memory, bad strings and escaping paths.
//! Each call must return an errno and leave the host (and the store)
//! working.

mod common;

use common::{Host, TempDir};
use faaslet::{Engine, Instance, Linker, Module, Store};
use faaslet_hostapi::wasi::{Errno, MountMode, Output, WasiCtx};
use faaslet_platform::wasi::{self};

const FAULT: i32 = Errno::Fault as i32;

/// One page of memory; fd 3 is the mount `/d`. Strings at fixed places:
/// 1000 "ok.txt", 1100 "../etc/passwd", 1200 "/etc/passwd", 1300
/// "esc/passwd" (symlink to /etc), 1400 invalid UTF-8, 1500 "a\0b",
/// 1600 "inner/../ok.txt".
const WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_filestat_get" (func $path_filestat_get (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_send" (func $sock_send (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_create_directory" (func $mkdir (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 1000) "ok.txt")
  (data (i32.const 1100) "../etc/passwd")
  (data (i32.const 1200) "/etc/passwd")
  (data (i32.const 1300) "esc/passwd")
  (data (i32.const 1400) "\ff\fe\fd")
  (data (i32.const 1500) "a\00b")
  (data (i32.const 1600) "inner/../ok.txt")
  (data (i32.const 1700) "hello")

  ;; fd_write(1) of one iovec {buf, len} placed at `iov`, nwritten at `out`.
  (func (export "write") (param $iov i32) (param $buf i32) (param $len i32) (param $n i32) (param $out i32) (result i32)
    (if (i32.lt_u (local.get $iov) (i32.const 65528)) (then
      (i32.store (local.get $iov) (local.get $buf))
      (i32.store offset=4 (local.get $iov) (local.get $len))))
    (call $fd_write (i32.const 1) (local.get $iov) (local.get $n) (local.get $out)))
  (func (export "read_stdin") (param $buf i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $buf))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
  ;; path_open(3, follow, path, len) for reading; the new fd at 8.
  (func (export "open") (param $p i32) (param $len i32) (param $out i32) (result i32)
    (call $path_open (i32.const 3) (i32.const 1) (local.get $p) (local.get $len)
      (i32.const 0) (i64.const 0x2) (i64.const 0) (i32.const 0) (local.get $out)))
  (func (export "open_write") (param $p i32) (param $len i32) (result i32)
    (call $path_open (i32.const 3) (i32.const 1) (local.get $p) (local.get $len)
      (i32.const 1) (i64.const 0x40) (i64.const 0) (i32.const 0) (i32.const 8)))
  (func (export "stat") (param $p i32) (param $len i32) (param $out i32) (result i32)
    (call $path_filestat_get (i32.const 3) (i32.const 1) (local.get $p) (local.get $len) (local.get $out)))
  (func (export "args") (param i32 i32) (result i32) (call $args_get (local.get 0) (local.get 1)))
  (func (export "random") (param i32 i32) (result i32) (call $random_get (local.get 0) (local.get 1)))
  (func (export "poll") (param i32 i32 i32 i32) (result i32)
    (call $poll (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "dir_name") (param i32 i32) (result i32) (call $dir_name (i32.const 3) (local.get 0) (local.get 1)))
  (func (export "readdir") (param i32 i32 i64 i32) (result i32)
    (call $readdir (i32.const 3) (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "close") (param i32) (result i32) (call $close (local.get 0)))
  (func (export "sock_send") (param i32) (result i32)
    (call $sock_send (local.get 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 8)))
  (func (export "clock") (param i32 i32) (result i32) (call $clock (local.get 0) (i64.const 0) (local.get 1)))
  (func (export "mkdir") (param i32 i32) (result i32) (call $mkdir (i32.const 3) (local.get 0) (local.get 1)))
  (func (export "symlink") (param i32 i32 i32 i32) (result i32)
    (call $symlink (local.get 0) (local.get 1) (i32.const 3) (local.get 2) (local.get 3)))
  (func (export "exit") (param i32) (call $exit (local.get 0)))
)"#;

struct Guest {
    store: Store<Host>,
    inst: Instance,
    _dir: TempDir,
}

impl Guest {
    fn new(mode: MountMode) -> Guest {
        let dir = TempDir::new("wat");
        std::fs::write(dir.path().join("ok.txt"), "fine").unwrap();
        std::fs::create_dir(dir.path().join("inner")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("esc")).unwrap();
        let engine = Engine::default();
        let module = Module::new(&engine, WAT).unwrap();
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).unwrap();
        let ctx = WasiCtx::builder()
            .args(["prog", "arg"])
            .mount(dir.path(), "/d", mode)
            .stdin(faaslet_hostapi::wasi::Input::Bytes(b"0123456789".to_vec()))
            .stdout(Output::Capture)
            .build()
            .unwrap();
        let mut store = Store::new(&engine, Host { wasi: ctx });
        let inst = linker.instantiate(&mut store, &module).unwrap();
        Guest {
            store,
            inst,
            _dir: dir,
        }
    }

    fn call<P: faaslet::WasmParams>(&mut self, name: &str, p: P) -> i32 {
        let f = self
            .inst
            .get_typed_func::<P, i32, _>(&mut self.store, name)
            .unwrap();
        f.call(&mut self.store, p).unwrap()
    }

    fn mem(&mut self) -> &mut [u8] {
        let m = self.inst.get_memory(&mut self.store, "memory").unwrap();
        m.data_mut(&mut self.store).expect("a private memory")
    }

    fn stdout(&mut self) -> Vec<u8> {
        self.store.data_mut().wasi.take_stdout()
    }
}

#[test]
fn fd_write_with_bad_pointers_returns_efault() {
    let mut g = Guest::new(MountMode::ReadOnly);
    // Good call first.
    assert_eq!(g.call("write", (16u32, 1700u32, 5u32, 1u32, 24u32)), 0);
    assert_eq!(g.stdout(), b"hello");
    // Buffer runs past the end of memory.
    assert_eq!(
        g.call("write", (16u32, 65530u32, 100u32, 1u32, 24u32)),
        FAULT
    );
    // Buffer pointer near u32::MAX (would wrap in 32 bits).
    assert_eq!(
        g.call("write", (16u32, 0xffff_fff0u32, 0x20u32, 1u32, 24u32)),
        FAULT
    );
    // Huge length.
    assert_eq!(g.call("write", (16u32, 0u32, u32::MAX, 1u32, 24u32)), FAULT);
    // The iovec array itself lies past the end / is huge.
    assert_eq!(g.call("write", (65532u32, 0u32, 0u32, 1u32, 24u32)), FAULT);
    assert_eq!(
        g.call("write", (16u32, 1700u32, 5u32, u32::MAX, 24u32)),
        FAULT
    );
    // An array of 2^32-1 iovecs whose first 1,024 (IOV_MAX, all that is
    // used) are empty and in bounds: the array as a whole is not.
    assert_eq!(
        g.call("write", (30000u32, 0u32, 0u32, u32::MAX, 24u32)),
        FAULT
    );
    // nwritten out of bounds: nothing is written at all.
    assert_eq!(
        g.call("write", (16u32, 1700u32, 5u32, 1u32, 65533u32)),
        FAULT
    );
    assert_eq!(g.stdout(), b"");
    // Still working.
    assert_eq!(g.call("write", (16u32, 1700u32, 2u32, 1u32, 24u32)), 0);
    assert_eq!(g.stdout(), b"he");
    assert_eq!(u32::from_le_bytes(g.mem()[24..28].try_into().unwrap()), 2);
}

#[test]
fn fd_read_into_memory_bounds() {
    let mut g = Guest::new(MountMode::ReadOnly);
    assert_eq!(g.call("read_stdin", (65530u32, 100u32)), FAULT);
    // Exactly up to the end is fine.
    assert_eq!(g.call("read_stdin", (65532u32, 4u32)), 0);
    assert_eq!(&g.mem()[65532..], b"0123");
    assert_eq!(g.call("read_stdin", (100u32, 100u32)), 0);
    assert_eq!(&g.mem()[100..106], b"456789");
    assert_eq!(u32::from_le_bytes(g.mem()[8..12].try_into().unwrap()), 6);
}

#[test]
fn paths_that_escape_or_are_malformed() {
    let mut g = Guest::new(MountMode::ReadOnly);
    assert_eq!(g.call("open", (1000u32, 6u32, 8u32)), 0);
    let fd = u32::from_le_bytes(g.mem()[8..12].try_into().unwrap());
    assert_eq!(fd, 4);
    assert_eq!(
        g.call("open", (1600u32, 15u32, 8u32)),
        0,
        "inner/../ok.txt stays inside"
    );
    assert_eq!(
        g.call("open", (1100u32, 13u32, 8u32)),
        Errno::Perm as i32,
        "../ escape"
    );
    assert_eq!(
        g.call("open", (1200u32, 11u32, 8u32)),
        Errno::Perm as i32,
        "absolute path"
    );
    assert_eq!(
        g.call("open", (1300u32, 10u32, 8u32)),
        Errno::Perm as i32,
        "symlink to /etc"
    );
    assert_eq!(
        g.call("stat", (1300u32, 10u32, 64u32)),
        Errno::Perm as i32,
        "stat through symlink"
    );
    assert_eq!(
        g.call("open", (1400u32, 3u32, 8u32)),
        Errno::Ilseq as i32,
        "invalid UTF-8"
    );
    assert_eq!(
        g.call("open", (1500u32, 3u32, 8u32)),
        Errno::Ilseq as i32,
        "embedded NUL"
    );
    assert_eq!(
        g.call("open", (1000u32, 0u32, 8u32)),
        Errno::NoEnt as i32,
        "empty path"
    );
    assert_eq!(
        g.call("open", (65530u32, 100u32, 8u32)),
        FAULT,
        "path past the end"
    );
    assert_eq!(
        g.call("open", (1000u32, u32::MAX, 8u32)),
        FAULT,
        "huge path length"
    );
    assert_eq!(
        g.call("open", (1000u32, 6u32, 65535u32)),
        FAULT,
        "fd_out past the end"
    );
    // Read-only mount.
    assert_eq!(g.call("open_write", (1000u32, 6u32)), Errno::Rofs as i32);
    assert_eq!(g.call("mkdir", (1000u32, 2u32)), Errno::Rofs as i32);
    // stat of a good path works and fills 64 bytes: size 4, regular file.
    assert_eq!(g.call("stat", (1000u32, 6u32, 64u32)), 0);
    assert_eq!(g.mem()[64 + 16], 4);
    assert_eq!(
        u64::from_le_bytes(g.mem()[64 + 32..64 + 40].try_into().unwrap()),
        4
    );
}

#[test]
fn writable_mount_and_symlink_targets() {
    let mut g = Guest::new(MountMode::ReadWrite);
    g.mem()[2000..2003].copy_from_slice(b"new");
    assert_eq!(g.call("mkdir", (2000u32, 3u32)), 0);
    assert_eq!(g.call("mkdir", (2000u32, 3u32)), Errno::Exist as i32);
    assert!(g._dir.path().join("new").is_dir());
    // mkdir through an escaping path.
    assert_eq!(g.call("mkdir", (1100u32, 13u32)), Errno::Perm as i32);
    // An absolute symlink target is refused; a relative one is created.
    g.mem()[2100..2104].copy_from_slice(b"lnk1");
    assert_eq!(
        g.call("symlink", (1200u32, 11u32, 2100u32, 4u32)),
        Errno::Perm as i32
    );
    assert_eq!(g.call("symlink", (1100u32, 13u32, 2100u32, 4u32)), 0);
    // ... but following it is refused.
    assert_eq!(g.call("open", (2100u32, 4u32, 8u32)), Errno::Perm as i32);
}

#[test]
fn args_random_clock_poll_with_bad_pointers() {
    let mut g = Guest::new(MountMode::ReadOnly);
    assert_eq!(g.call("args", (3000u32, 3100u32)), 0);
    assert_eq!(&g.mem()[3100..3109], b"prog\0arg\0");
    assert_eq!(
        u32::from_le_bytes(g.mem()[3004..3008].try_into().unwrap()),
        3105
    );
    assert_eq!(g.call("args", (65534u32, 3100u32)), FAULT);
    assert_eq!(g.call("args", (3000u32, 65530u32)), FAULT);
    assert_eq!(g.call("random", (65000u32, 1000u32)), FAULT);
    assert_eq!(g.call("random", (0u32, u32::MAX)), FAULT);
    assert_eq!(g.call("random", (4000u32, 4096u32)), 0);
    assert!(g.mem()[4000..8096].iter().filter(|&&b| b != 0).count() > 3000);
    assert_eq!(g.call("clock", (1u32, 65530u32)), FAULT);
    assert_eq!(g.call("clock", (99u32, 16u32)), Errno::Inval as i32);
    assert_eq!(g.call("clock", (1u32, 16u32)), 0);
    // poll: zero subscriptions, huge counts, events past the end.
    assert_eq!(
        g.call("poll", (10000u32, 11000u32, 0u32, 8u32)),
        Errno::Inval as i32
    );
    assert_eq!(g.call("poll", (10000u32, 11000u32, u32::MAX, 8u32)), FAULT);
    assert_eq!(g.call("poll", (10000u32, 65520u32, 1u32, 8u32)), FAULT);
    // One relative 1 ms monotonic clock subscription fires with its userdata.
    let sub = 10000;
    let m = g.mem();
    m[sub..sub + 48].fill(0);
    m[sub..sub + 8].copy_from_slice(&0xabcdu64.to_le_bytes());
    m[sub + 16..sub + 20].copy_from_slice(&1u32.to_le_bytes());
    m[sub + 24..sub + 32].copy_from_slice(&1_000_000u64.to_le_bytes());
    let t = std::time::Instant::now();
    assert_eq!(g.call("poll", (10000u32, 11000u32, 1u32, 8u32)), 0);
    assert!(t.elapsed() >= std::time::Duration::from_millis(1));
    assert_eq!(u32::from_le_bytes(g.mem()[8..12].try_into().unwrap()), 1);
    assert_eq!(
        u64::from_le_bytes(g.mem()[11000..11008].try_into().unwrap()),
        0xabcd
    );
}

#[test]
fn descriptors_readdir_sockets_and_exit() {
    let mut g = Guest::new(MountMode::ReadOnly);
    assert_eq!(
        g.call("dir_name", (5000u32, 1u32)),
        Errno::NameTooLong as i32
    );
    assert_eq!(g.call("dir_name", (65535u32, 2u32)), FAULT);
    assert_eq!(g.call("dir_name", (5000u32, 2u32)), 0);
    assert_eq!(&g.mem()[5000..5002], b"/d");
    // readdir: a tiny buffer holds a cut-off first entry; the full listing
    // has ".", "..", "esc", "inner", "ok.txt".
    assert_eq!(g.call("readdir", (6000u32, 10u32, 0u64, 8u32)), 0);
    assert_eq!(u32::from_le_bytes(g.mem()[8..12].try_into().unwrap()), 10);
    assert_eq!(g.call("readdir", (6000u32, 4096u32, 0u64, 8u32)), 0);
    let used = u32::from_le_bytes(g.mem()[8..12].try_into().unwrap()) as usize;
    assert_eq!(used, 5 * 24 + 1 + 2 + 3 + 5 + 6);
    assert_eq!(g.call("readdir", (6000u32, 4096u32, 5u64, 8u32)), 0);
    assert_eq!(u32::from_le_bytes(g.mem()[8..12].try_into().unwrap()), 0);
    assert_eq!(g.call("readdir", (6000u32, 4096u32, u64::MAX, 8u32)), 0);
    assert_eq!(g.call("readdir", (65000u32, 4096u32, 0u64, 8u32)), FAULT);
    // stdout is not a socket; bad descriptors are EBADF.
    assert_eq!(g.call("sock_send", 1u32), Errno::NotSock as i32);
    assert_eq!(g.call("sock_send", 99u32), Errno::Badf as i32);
    assert_eq!(g.call("close", 3u32), 0);
    assert_eq!(g.call("close", 3u32), Errno::Badf as i32);
    assert_eq!(g.call("close", u32::MAX), Errno::Badf as i32);
    // proc_exit is a distinguishable trap; the store stays usable.
    let exit = g
        .inst
        .get_typed_func::<u32, (), _>(&mut g.store, "exit")
        .unwrap();
    let trap = exit.call(&mut g.store, 42).unwrap_err();
    assert_eq!(wasi::exit_code(&trap), Some(42));
    assert_eq!(g.store.data().wasi.exit_code(), Some(42));
    assert_eq!(g.call("clock", (0u32, 16u32)), 0);
}

#[test]
fn guest_without_memory_gets_efault() {
    let engine = Engine::default();
    let module = Module::new(
        &engine,
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
          (func (export "go") (result i32) (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 0))))"#,
    )
    .unwrap();
    let mut linker = Linker::new(&engine);
    wasi::add_to_linker(&mut linker).unwrap();
    let mut store = Store::new(
        &engine,
        Host {
            wasi: WasiCtx::builder().build().unwrap(),
        },
    );
    let inst = linker.instantiate(&mut store, &module).unwrap();
    let go = inst.get_typed_func::<(), i32, _>(&mut store, "go").unwrap();
    assert_eq!(go.call(&mut store, ()).unwrap(), FAULT);
}
