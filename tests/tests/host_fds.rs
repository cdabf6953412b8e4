//! Issue 13: a guest's open descriptors are capped per Faaslet (and
//! against the process's RLIMIT_NOFILE), not by a process-wide 65,536.

use faaslet::{Engine, Module};
use faaslet_hostapi::wasi::default_max_open_fds;
use faaslet_platform::{Faaslet, FaasletConfig, MountMode};

#[test]
fn a_guest_opening_descriptors_in_a_loop_gets_emfile_at_its_cap() {
    let dir = std::env::temp_dir().join(format!("faaslet-fds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // main: opens "." under the mount (fd 3) until an error; returns
    // (opened << 8) | errno.
    let wat = r#"(module
      (import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) ".")
      (func (export "main") (result i32) (local $n i32) (local $e i32)
        (block $done (loop $l
          (local.set $e (call $open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1)
            (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 16)))
          (br_if $done (local.get $e))
          (local.set $n (i32.add (local.get $n) (i32.const 1)))
          (br $l)))
        (i32.or (i32.shl (local.get $n) (i32.const 8)) (local.get $e))))"#;
    let engine = Engine::default();
    let module = Module::new(&engine, wat).unwrap();
    let mut config = FaasletConfig::new("fds");
    config
        .mounts
        .push((dir.clone(), "/data".into(), MountMode::ReadOnly));
    let mut f = Faaslet::new(&engine, &module, config).unwrap();
    let rc = f.call(b"").unwrap().return_code;
    let (opened, errno) = (rc >> 8, rc & 0xff);
    let cap = default_max_open_fds();
    assert!((16..=1024).contains(&cap), "{cap}");
    // stdio and the mount take 4 of the cap; then EMFILE (33).
    assert_eq!((opened as usize, errno), (cap - 4, 33));
    // Each call starts from a fresh table: the next one gets as many.
    assert_eq!(f.call(b"").unwrap().return_code, rc);
    let _ = std::fs::remove_dir_all(&dir);
}
