//! Real WASI programs written in C (tests/guests/tool.c), built with
//! clang + wasi-libc and run unchanged under faaslet's WASI.

mod common;

use common::{build_c, run, TempDir};
use faaslet_hostapi::wasi::{Input, MountMode, WasiCtx};
use std::sync::OnceLock;

fn tool() -> Option<&'static [u8]> {
    static TOOL: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    TOOL.get_or_init(|| build_c("tool.c")).as_deref()
}

macro_rules! tool_or_skip {
    () => {
        match tool() {
            Some(t) => t,
            None => return,
        }
    };
}

#[test]
fn cat_reads_stdin_and_mounted_files() {
    let t = tool_or_skip!();
    let data = TempDir::new("cat");
    std::fs::write(data.path().join("a.txt"), "alpha\n").unwrap();
    std::fs::write(data.path().join("b.txt"), vec![b'x'; 100_000]).unwrap();
    let o = run(
        t,
        WasiCtx::builder()
            .args(["cat", "cat", "/data/a.txt", "/data/b.txt"])
            .mount(data.path(), "/data", MountMode::ReadOnly),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.stdout.len(), 6 + 100_000);
    assert!(o.stdout.starts_with("alpha\nxxx"));

    let o = run(
        t,
        WasiCtx::builder()
            .args(["cat", "cat"])
            .stdin(Input::Bytes(b"from stdin\n".to_vec())),
    );
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), "from stdin\n"));

    let o = run(
        t,
        WasiCtx::builder().args(["cat", "cat", "/data/nope"]).mount(
            data.path(),
            "/data",
            MountMode::ReadOnly,
        ),
    );
    assert_eq!(o.code, Some(1));
    assert_eq!(o.stderr, "cat: /data/nope: No such file or directory\n");
}

#[test]
fn wc_counts_like_coreutils() {
    let t = tool_or_skip!();
    let data = TempDir::new("wc");
    std::fs::write(
        data.path().join("t.txt"),
        "one two three\nfour five\n\nsix\n",
    )
    .unwrap();
    let o = run(
        t,
        WasiCtx::builder().args(["wc", "wc", "/d/t.txt"]).mount(
            data.path(),
            "/d",
            MountMode::ReadOnly,
        ),
    );
    assert_eq!((o.code, o.stdout.as_str()), (Some(0), "4 6 29\n"));
}

#[test]
fn ls_lists_directories_with_stat() {
    let t = tool_or_skip!();
    let data = TempDir::new("ls");
    std::fs::create_dir(data.path().join("sub")).unwrap();
    std::fs::write(data.path().join("f1"), "12345").unwrap();
    std::fs::write(data.path().join("f2"), "").unwrap();
    std::os::unix::fs::symlink("f1", data.path().join("ln")).unwrap();
    // Many entries, so readdir needs several fd_readdir calls.
    for i in 0..150 {
        std::fs::write(
            data.path()
                .join("sub")
                .join(format!("entry-with-a-long-name-{i:03}")),
            "z",
        )
        .unwrap();
    }
    let o = run(
        t,
        WasiCtx::builder()
            .args(["ls", "ls", "/d"])
            .mount(data.path(), "/d", MountMode::ReadOnly),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    // lstat("/d/..") leaves the mount: refused, so `ls` prints "?".
    assert_eq!(o.stdout, ". d 0\n.. ?\nf1 f 5\nf2 f 0\nln l 0\nsub d 0\n");
    let o = run(
        t,
        WasiCtx::builder().args(["ls", "ls", "/d/sub"]).mount(
            data.path(),
            "/d",
            MountMode::ReadOnly,
        ),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 152);
    assert_eq!(lines[2], "entry-with-a-long-name-000 f 1");
    assert_eq!(lines[151], "entry-with-a-long-name-149 f 1");
}

#[test]
fn cp_from_read_only_mount_into_scratch() {
    let t = tool_or_skip!();
    let data = TempDir::new("cp");
    let content: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(data.path().join("src.bin"), &content).unwrap();
    let ctx = WasiCtx::builder()
        .args(["cp", "cp", "/in/src.bin", "/tmp/dst.bin"])
        .mount(data.path(), "/in", MountMode::ReadOnly)
        .scratch("/tmp");
    let engine_out = run(t, ctx);
    assert_eq!(engine_out.code, Some(0), "{engine_out:?}");
    // The scratch directory is gone with the context; copy into a RW mount
    // to check the bytes on the host.
    let out = TempDir::new("cp-out");
    let o = run(
        t,
        WasiCtx::builder()
            .args(["cp", "cp", "/in/src.bin", "/out/dst.bin"])
            .mount(data.path(), "/in", MountMode::ReadOnly)
            .mount(out.path(), "/out", MountMode::ReadWrite),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(std::fs::read(out.path().join("dst.bin")).unwrap(), content);
}

#[test]
fn file_system_operations() {
    let t = tool_or_skip!();
    let o = run(
        t,
        WasiCtx::builder()
            .args(["t", "fsops", "/tmp"])
            .scratch("/tmp"),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(
        o.stdout,
        "mkdir 0\nmkdir again File exists\nwrite 11\npwrite 1\nlseek 11\nftruncate 0\nfsync 0\n\
         pread 4 ello\nwrite to rdonly Bad file descriptor\nappended hello++\nrename 0\n\
         stat old No such file or directory\nsymlink 0\nreadlink 5 g.txt\nvia link hello++\n\
         lstat link symlink\nrmdir nonempty Directory not empty\nunlink 0 0\nrmdir 0\n"
    );
}

#[test]
fn read_only_mounts_refuse_writes() {
    let t = tool_or_skip!();
    let data = TempDir::new("ro");
    std::fs::write(data.path().join("keep.txt"), "keep").unwrap();
    let o = run(
        t,
        WasiCtx::builder()
            .args(["t", "rofs", "/ro", "keep.txt"])
            .mount(data.path(), "/ro", MountMode::ReadOnly),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(
        o.stdout,
        "open /ro/new.txt: Read-only file system\nopen /ro/keep.txt: Read-only file system\n\
         open /ro/keep.txt: ok\nunlink Read-only file system\nmkdir Read-only file system\n"
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("keep.txt")).unwrap(),
        "keep"
    );
    assert!(!data.path().join("new.txt").exists());
}

#[test]
fn escapes_fail_and_host_files_stay_unreachable() {
    let t = tool_or_skip!();
    let data = TempDir::new("esc");
    std::fs::create_dir(data.path().join("inner")).unwrap();
    std::fs::write(data.path().join("inner/ok.txt"), "ok").unwrap();
    std::os::unix::fs::symlink("/etc", data.path().join("etc-link")).unwrap();
    std::os::unix::fs::symlink("../../../../../etc/passwd", data.path().join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/proc/self/root/etc/passwd", data.path().join("proc-link"))
        .unwrap();
    let o = run(
        t,
        WasiCtx::builder()
            .args([
                "t",
                "escape",
                "/d/inner/../inner/ok.txt",
                "/d/../d/inner/ok.txt",
                "/d/inner/../../etc/passwd",
                "/etc/passwd",
                "/d/etc-link/passwd",
                "/d/rel-link",
                "/d/proc-link",
                "../etc/passwd",
            ])
            .mount(data.path(), "/d", MountMode::ReadOnly),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines[0], "open /d/inner/../inner/ok.txt: ok");
    // "../d/inner/ok.txt" relative to the preopen "/d" leaves it, even if it
    // comes back: refused, as under wasmtime.
    for l in &lines[1..] {
        assert!(
            l.ends_with("Operation not permitted")
                || l.ends_with("No such file or directory")
                || l.ends_with("Capabilities insufficient"),
            "escape was not refused: {l}"
        );
    }
    assert_eq!(lines.len(), 8);
}

#[test]
fn args_env_clocks_random_and_exit_code() {
    let t = tool_or_skip!();
    let o = run(
        t,
        WasiCtx::builder()
            .args(["prog", "env", "7"])
            .env("HOME", "/home/guest"),
    );
    assert_eq!(o.code, Some(7), "{o:?}");
    assert_eq!(
        o.stdout,
        "argc 3\nargv[0] prog\nargv[1] env\nargv[2] 7\nHOME=/home/guest\nMISSING=(null)\n\
         slept>=20ms 1\nrealtime>2020 1\nrandom nonzero 1\n"
    );
}
