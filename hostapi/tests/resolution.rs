//! The manual path resolver (used when the kernel lacks `openat2`) against
//! the kernel's `openat2(RESOLVE_BENEATH)`: the same lookups give the same
//! errno and the same file, and escapes fail in both.
//!
//! One test function, because the resolver choice is process-wide.

mod common;

use common::TempDir;
use faaslet_hostapi::memory::GuestMemory;
use faaslet_hostapi::wasi::{self, force_manual_resolution, Errno, MountMode, WasiCtx};
use std::os::unix::fs::symlink;

/// path_open(3, follow, path) for reading; then the opened file's inode.
fn open(ctx: &mut WasiCtx, path: &str, follow: bool, dir: bool) -> Result<u64, Errno> {
    let mut bytes = vec![0u8; 8192];
    let mut mem = GuestMemory::new(&mut bytes);
    mem.write_bytes(100, path.as_bytes()).unwrap();
    let e = wasi::path_open(
        ctx,
        &mut mem,
        3,
        follow as u32,
        100,
        path.len() as u32,
        if dir { 2 } else { 0 },
        0x2,
        0,
        0,
        8,
    )
    .unwrap();
    if e != Errno::Success {
        return Err(e);
    }
    let fd = mem.read_u32(8).unwrap();
    assert_eq!(
        wasi::fd_filestat_get(ctx, &mut mem, fd, 4096).unwrap(),
        Errno::Success
    );
    let ino = mem.read_u64(4096 + 8).unwrap();
    assert_eq!(wasi::fd_close(ctx, &mut mem, fd).unwrap(), Errno::Success);
    Ok(ino)
}

#[test]
fn manual_resolver_matches_openat2() {
    let root = TempDir::new("resolve");
    let m = root.path().join("mount");
    std::fs::create_dir_all(m.join("a/b/c")).unwrap();
    std::fs::write(m.join("a/b/c/f"), "f").unwrap();
    std::fs::write(root.path().join("outside"), "secret").unwrap();
    symlink("b/c", m.join("a/lc")).unwrap();
    symlink("../a/b", m.join("a/up")).unwrap();
    symlink("../../outside", m.join("a/out")).unwrap();
    symlink("/etc", m.join("abs")).unwrap();
    symlink("loop2", m.join("loop1")).unwrap();
    symlink("loop1", m.join("loop2")).unwrap();
    symlink("a/b/c/f", m.join("tofile")).unwrap();
    symlink("nowhere", m.join("dangling")).unwrap();

    let cases: &[(&str, bool, bool)] = &[
        ("a/b/c/f", true, false),
        ("a/b/../b/c/f", true, false),
        ("a/lc/f", true, false),
        ("a/up/c/f", true, false),
        ("a/b/c/", true, true),
        ("a/b/c/..", true, true),
        (".", true, true),
        ("a/..", true, true),
        ("tofile", true, false),
        ("tofile", false, false),
        ("a/lc", true, true),
        ("a/lc", false, true),
        ("..", true, true),
        ("a/../..", true, true),
        ("../mount/a/b/c/f", true, false),
        ("a/out", true, false),
        ("abs", true, true),
        ("abs/passwd", true, false),
        ("/etc/passwd", true, false),
        ("loop1", true, false),
        ("loop1/x", true, false),
        ("dangling", true, false),
        ("missing/x", true, false),
        ("a/b/c/f/x", true, false),
    ];
    let ctx = || {
        WasiCtx::builder()
            .mount(&m, "/m", MountMode::ReadOnly)
            .build()
            .unwrap()
    };
    let (mut k, mut u) = (ctx(), ctx());
    let mut kernel = Vec::new();
    force_manual_resolution(false);
    for &(p, follow, dir) in cases {
        kernel.push(open(&mut k, p, follow, dir));
    }
    force_manual_resolution(true);
    for (&(p, follow, dir), expect) in cases.iter().zip(&kernel) {
        let got = open(&mut u, p, follow, dir);
        assert_eq!(&got, expect, "{p} follow={follow}");
    }
    force_manual_resolution(false);
    // Spot checks of what both agree on.
    let ino = |p: &str| {
        std::fs::metadata(m.join(p))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap()
    };
    assert_eq!(kernel[0], Ok(ino("a/b/c/f")));
    assert_eq!(kernel[2], Ok(ino("a/b/c/f")));
    assert_eq!(kernel[9], Err(Errno::Loop), "no-follow open of a symlink");
    for i in 12..19 {
        assert_eq!(
            kernel[i],
            Err(Errno::Perm),
            "case {:?} must be refused",
            cases[i]
        );
    }
    assert_eq!(kernel[19], Err(Errno::Loop));
    assert_eq!(kernel[21], Err(Errno::NoEnt));
    assert_eq!(kernel[23], Err(Errno::NotDir));
    // The host keeps its open descriptors in check: nothing leaked.
    assert_eq!(k.open_fds(), 4);
    assert_eq!(u.open_fds(), 4);
}
