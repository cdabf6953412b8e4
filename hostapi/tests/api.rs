//! The engine-agnostic WASI functions called directly on a byte-slice
//! memory: the calls the guest programs do not reach, setup errors, and
//! descriptor-table semantics.

mod common;

use common::TempDir;
use faaslet_hostapi::memory::GuestMemory;
use faaslet_hostapi::wasi::{
    self as w, fdflags, filetype, rights, Errno, Input, MountMode, Output, WasiCtx, WasiSetupError,
    WasiTrap,
};

const OK: Result<Errno, WasiTrap> = Ok(Errno::Success);

struct T {
    ctx: WasiCtx,
    mem: Vec<u8>,
    _dir: TempDir,
}

impl T {
    /// fd 3 = `/rw` (read-write, with file `f.txt` = "0123456789"),
    /// fd 4 = `/ro` (read-only, the same directory).
    fn new() -> T {
        let dir = TempDir::new("api");
        std::fs::write(dir.path().join("f.txt"), "0123456789").unwrap();
        let ctx = WasiCtx::builder()
            .mount(dir.path(), "/rw", MountMode::ReadWrite)
            .mount(dir.path(), "/ro", MountMode::ReadOnly)
            .stdin(Input::Bytes(b"abc".to_vec()))
            .stdout(Output::Capture)
            .build()
            .unwrap();
        T {
            ctx,
            mem: vec![0; 65536],
            _dir: dir,
        }
    }
    fn m(&mut self) -> (&mut WasiCtx, GuestMemory<'_>) {
        (&mut self.ctx, GuestMemory::new(&mut self.mem))
    }
    fn put(&mut self, at: u32, s: &str) -> (u32, u32) {
        self.mem[at as usize..at as usize + s.len()].copy_from_slice(s.as_bytes());
        (at, s.len() as u32)
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.mem[at..at + 4].try_into().unwrap())
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.mem[at..at + 8].try_into().unwrap())
    }
    /// Opens `path` in dir fd 3 or 4 with `rights`, returning the new fd.
    fn open(
        &mut self,
        dir: u32,
        path: &str,
        oflags: u32,
        rights: u64,
        fdfl: u32,
    ) -> Result<u32, Errno> {
        let (p, l) = self.put(1000, path);
        let (c, mut m) = self.m();
        match w::path_open(c, &mut m, dir, 1, p, l, oflags, rights, 0, fdfl, 8).unwrap() {
            Errno::Success => Ok(self.u32(8)),
            e => Err(e),
        }
    }
}

#[test]
fn setup_errors_are_typed() {
    let e = WasiCtx::builder().arg("a\0b").build().unwrap_err();
    assert!(matches!(e, WasiSetupError::Nul(_)), "{e}");
    let e = WasiCtx::builder().env("A=B", "c").build().unwrap_err();
    assert!(matches!(e, WasiSetupError::Nul(_)), "{e}");
    let e = WasiCtx::builder()
        .mount("/nonexistent/faaslet", "/x", MountMode::ReadOnly)
        .build()
        .unwrap_err();
    assert!(matches!(e, WasiSetupError::Mount { .. }), "{e}");
}

#[test]
fn scratch_is_private_and_removed_on_drop() {
    let a = WasiCtx::builder().scratch("/tmp").build().unwrap();
    let b = WasiCtx::builder().scratch("/tmp").build().unwrap();
    let (pa, pb) = (
        a.scratch_dir().unwrap().to_owned(),
        b.scratch_dir().unwrap().to_owned(),
    );
    assert_ne!(pa, pb);
    assert!(pa.is_dir());
    drop(a);
    assert!(!pa.exists());
    assert!(pb.is_dir());
    // A configured scratch directory stays.
    let keep = TempDir::new("keep");
    let c = WasiCtx::builder()
        .scratch_at(keep.path().join("s"), "/tmp")
        .build()
        .unwrap();
    drop(c);
    assert!(keep.path().join("s").is_dir());
}

#[test]
fn stdio_descriptors() {
    let mut t = T::new();
    let (c, mut m) = t.m();
    assert_eq!(w::fd_seek(c, &mut m, 0, 0, 0, 16), Ok(Errno::Spipe));
    assert_eq!(w::fd_tell(c, &mut m, 1, 16), Ok(Errno::Spipe));
    assert_eq!(w::fd_pwrite(c, &mut m, 1, 0, 0, 0, 16), Ok(Errno::Spipe));
    assert_eq!(
        w::fd_seek(c, &mut m, 3, 0, 0, 16),
        Ok(Errno::Badf),
        "seek on a directory"
    );
    assert_eq!(
        w::fd_seek(c, &mut m, 0, 0, 9, 16),
        Ok(Errno::Inval),
        "bad whence"
    );
    assert_eq!(w::fd_fdstat_get(c, &mut m, 1, 16), OK);
    assert_eq!(t.mem[16], filetype::CHARACTER_DEVICE);
    let base = t.u64(24);
    assert_eq!(base & rights::FD_WRITE, rights::FD_WRITE);
    assert_eq!(base & rights::FD_READ, 0);
    // Poll: stdin holds 3 bytes, stdout is writable; both ready now.
    let m = &mut t.mem;
    m[2000..2096].fill(0);
    m[2000] = 7;
    m[2008] = 1; // fd_read
    m[2016] = 0; // fd 0
    m[2048] = 9;
    m[2056] = 2; // fd_write
    m[2064] = 1; // fd 1
    let (c, mut m) = t.m();
    assert_eq!(w::poll_oneoff(c, &mut m, 2000, 3000, 2, 16), OK);
    assert_eq!(t.u32(16), 2);
    assert_eq!((t.mem[3000], t.mem[3010], t.u64(3016)), (7, 1, 3));
    assert_eq!((t.mem[3032], t.mem[3042]), (9, 2));
    let (c, mut m) = t.m();
    assert_eq!(w::sched_yield(c, &mut m), OK);
    assert_eq!(w::proc_raise(c, &mut m, 9), Ok(Errno::NotSup));
    assert_eq!(w::clock_res_get(c, &mut m, 1, 16), OK);
    assert!(t.u64(16) >= 1);
}

#[test]
fn renumber_and_close() {
    let mut t = T::new();
    let fd = t.open(3, "f.txt", 0, rights::FD_READ, 0).unwrap();
    assert_eq!(fd, 5);
    let (c, mut m) = t.m();
    assert_eq!(
        w::fd_renumber(c, &mut m, fd, 9),
        Ok(Errno::Badf),
        "target must be open"
    );
    assert_eq!(w::fd_renumber(c, &mut m, fd, 0), OK);
    assert_eq!(w::fd_fdstat_get(c, &mut m, fd, 16), Ok(Errno::Badf));
    // fd 0 is now the file.
    m.write_u32(100, 200).unwrap();
    m.write_u32(104, 4).unwrap();
    assert_eq!(w::fd_read(c, &mut m, 0, 100, 1, 16), OK);
    assert_eq!(&t.mem[200..204], b"0123");
    let (c, mut m) = t.m();
    assert_eq!(w::fd_close(c, &mut m, 0), OK);
    assert_eq!(w::fd_read(c, &mut m, 0, 100, 1, 16), Ok(Errno::Badf));
    // The lowest free slot is reused.
    assert_eq!(t.open(3, "f.txt", 0, rights::FD_READ, 0), Ok(0));
}

#[test]
fn file_descriptor_calls() {
    let mut t = T::new();
    let ro = t.open(3, "f.txt", 0, rights::FD_READ, 0).unwrap();
    let rw = t
        .open(3, "f.txt", 0, rights::FD_READ | rights::FD_WRITE, 0)
        .unwrap();
    let (c, mut m) = t.m();
    assert_eq!(w::fd_fdstat_get(c, &mut m, ro, 16), OK);
    assert_eq!(t.mem[16], filetype::REGULAR_FILE);
    assert_eq!(t.u64(24) & rights::FD_WRITE, 0);
    let (c, mut m) = t.m();
    assert_eq!(w::fd_filestat_set_size(c, &mut m, ro, 3), Ok(Errno::Badf));
    assert_eq!(w::fd_allocate(c, &mut m, ro, 0, 100), Ok(Errno::Badf));
    assert_eq!(w::fd_advise(c, &mut m, ro, 0, 10, 1), OK);
    assert_eq!(w::fd_advise(c, &mut m, ro, 0, 10, 77), Ok(Errno::Inval));
    assert_eq!(w::fd_allocate(c, &mut m, rw, 0, 100), OK);
    assert_eq!(w::fd_filestat_get(c, &mut m, rw, 16), OK);
    assert_eq!(t.u64(16 + 32), 100);
    let (c, mut m) = t.m();
    assert_eq!(w::fd_datasync(c, &mut m, rw), OK);
    assert_eq!(w::fd_sync(c, &mut m, 3), OK);
    assert_eq!(
        w::fd_fdstat_set_flags(c, &mut m, rw, fdflags::APPEND as u32),
        OK
    );
    assert_eq!(w::fd_fdstat_get(c, &mut m, rw, 16), OK);
    assert_eq!(t.mem[18] as u16 & fdflags::APPEND, fdflags::APPEND);
    let (c, mut m) = t.m();
    assert_eq!(
        w::fd_fdstat_set_flags(c, &mut m, rw, fdflags::SYNC as u32),
        Ok(Errno::NotSup)
    );
    // Rights only shrink (tests/rights.rs covers dropping them).
    assert_eq!(
        w::fd_fdstat_set_rights(c, &mut m, rw, rights::ALL, 0),
        Ok(Errno::NotCapable)
    );
    // Times: set mtime to 1 s after the epoch, atime to now.
    assert_eq!(
        w::fd_filestat_set_times(c, &mut m, rw, 0, 1_000_000_000, 2 | 4),
        OK
    );
    assert_eq!(
        w::fd_filestat_set_times(c, &mut m, rw, 0, 0, 1 | 2),
        Ok(Errno::Inval)
    );
    assert_eq!(w::fd_filestat_get(c, &mut m, rw, 16), OK);
    assert_eq!(t.u64(16 + 48), 1_000_000_000);
    // Through the read-only mount, metadata changes are refused too.
    let ro2 = t.open(4, "f.txt", 0, rights::FD_READ, 0).unwrap();
    let (c, mut m) = t.m();
    assert_eq!(
        w::fd_filestat_set_times(c, &mut m, ro2, 0, 0, 8),
        Ok(Errno::Rofs)
    );
    assert_eq!(
        w::fd_filestat_set_times(c, &mut m, 4, 0, 0, 8),
        Ok(Errno::Rofs)
    );
    // Rights asked for on the read-only mount.
    assert_eq!(t.open(4, "f.txt", 0, rights::FD_WRITE, 0), Err(Errno::Rofs));
    assert_eq!(
        t.open(4, "f.txt", 8, rights::FD_READ, 0),
        Err(Errno::Rofs),
        "O_TRUNC"
    );
    assert_eq!(
        t.open(4, "f.txt", 0, rights::FD_READ, fdflags::APPEND as u32),
        Err(Errno::Rofs)
    );
    assert_eq!(
        t.open(3, "f.txt", 2, rights::FD_READ, 0),
        Err(Errno::NotDir)
    );
    assert_eq!(
        t.open(3, "new", 1 | 4, rights::FD_WRITE, 0).map(|_| ()),
        Ok(())
    );
    assert_eq!(
        t.open(3, "new", 1 | 4, rights::FD_WRITE, 0),
        Err(Errno::Exist)
    );
}

#[test]
fn path_times_links_and_readlink() {
    let mut t = T::new();
    let (p, l) = t.put(1000, "f.txt");
    let (c, mut m) = t.m();
    assert_eq!(
        w::path_filestat_set_times(c, &mut m, 3, 1, p, l, 0, 5_000_000_000, 4),
        OK
    );
    assert_eq!(
        w::path_filestat_set_times(c, &mut m, 4, 1, p, l, 0, 0, 8),
        Ok(Errno::Rofs)
    );
    assert_eq!(w::path_filestat_get(c, &mut m, 3, 1, p, l, 16), OK);
    assert_eq!(t.u64(16 + 48), 5_000_000_000);
    let (q, ql) = t.put(1100, "hard");
    let (c, mut m) = t.m();
    assert_eq!(w::path_link(c, &mut m, 3, 0, p, l, 3, q, ql), OK);
    assert_eq!(
        w::path_link(c, &mut m, 3, 0, p, l, 4, q, ql),
        Ok(Errno::Rofs)
    );
    assert_eq!(w::path_filestat_get(c, &mut m, 3, 0, q, ql, 16), OK);
    assert_eq!(t.u64(16 + 24), 2, "two links");
    let (e, el) = t.put(1200, "../escape");
    let (c, mut m) = t.m();
    assert_eq!(
        w::path_link(c, &mut m, 3, 0, p, l, 3, e, el),
        Ok(Errno::Perm)
    );
    assert_eq!(
        w::path_link(c, &mut m, 3, 0, e, el, 3, q, ql),
        Ok(Errno::Perm)
    );
    // A symlink with a long target; readlink cuts it to the buffer.
    let (s, sl) = t.put(1300, "sym");
    let (tg, tl) = t.put(1400, "some/long/target");
    let (c, mut m) = t.m();
    assert_eq!(w::path_symlink(c, &mut m, tg, tl, 3, s, sl), OK);
    assert_eq!(w::path_readlink(c, &mut m, 3, s, sl, 2000, 4, 16), OK);
    assert_eq!((t.u32(16), &t.mem[2000..2004]), (4, &b"some"[..]));
    let (c, mut m) = t.m();
    assert_eq!(
        w::path_readlink(c, &mut m, 3, s, sl, 65530, 100, 16),
        Ok(Errno::Fault)
    );
    assert_eq!(
        w::path_readlink(c, &mut m, 3, p, l, 2000, 100, 16),
        Ok(Errno::Inval),
        "not a link"
    );
    // "." and ".." as the last component of destructive calls.
    let (d, dl) = t.put(1500, "..");
    let (c, mut m) = t.m();
    assert_eq!(
        w::path_remove_directory(c, &mut m, 3, d, dl),
        Ok(Errno::Inval)
    );
    assert_eq!(w::path_unlink_file(c, &mut m, 3, d, dl), Ok(Errno::IsDir));
    assert_eq!(
        w::path_create_directory(c, &mut m, 3, d, dl),
        Ok(Errno::Exist)
    );
    assert_eq!(
        w::path_rename(c, &mut m, 3, p, l, 3, d, dl),
        Ok(Errno::Busy)
    );
}

#[test]
fn every_call_survives_garbage_arguments() {
    // Random pointers and lengths into the memory-heavy calls (poll_oneoff
    // is left out: random clock subscriptions would sleep for years): only errnos come back
    // (or Exit for proc_exit); the host never faults or panics.
    let mut t = T::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Mostly wild values, sometimes small valid-looking ones.
        match x % 4 {
            0 => (x >> 8) as u32 % 70_000,
            1 => u32::MAX - (x >> 40) as u32 % 16,
            2 => (x >> 16) as u32 % 8,
            _ => (x >> 20) as u32,
        }
    };
    for _ in 0..3000 {
        let a: [u32; 9] = std::array::from_fn(|_| rnd());
        let (c, mut m) = t.m();
        let r = [
            w::fd_write(c, &mut m, a[0] % 8, a[1], a[2], a[3]),
            w::fd_read(c, &mut m, a[0] % 8, a[1], a[2], a[3]),
            w::fd_pread(c, &mut m, a[0] % 8, a[1], a[2], a[3] as u64, a[4]),
            w::fd_readdir(c, &mut m, a[0] % 8, a[1], a[2], a[3] as u64, a[4]),
            w::path_filestat_get(c, &mut m, a[0] % 8, a[1], a[2], a[3], a[4]),
            w::path_readlink(c, &mut m, a[0] % 8, a[1], a[2], a[3], a[4], a[5]),
            w::args_get(c, &mut m, a[0], a[1]),
            w::environ_sizes_get(c, &mut m, a[0], a[1]),
            w::fd_prestat_dir_name(c, &mut m, a[0] % 8, a[1], a[2]),
            w::random_get(c, &mut m, a[0], a[1] % 100_000),
            w::fd_fdstat_get(c, &mut m, a[0], a[1]),
            w::clock_time_get(c, &mut m, a[0] % 5, 0, a[1]),
            w::fd_seek(c, &mut m, a[0] % 8, a[1] as i64, a[2] % 4, a[3]),
        ];
        for e in r {
            assert!(e.is_ok());
        }
    }
    // Read-only paths were not written through; the context still works.
    assert_eq!(
        t.open(4, "f.txt", 0, rights::FD_READ, 0).map(|_| ()),
        Ok(())
    );
    let (c, mut m) = t.m();
    assert_eq!(w::proc_exit(c, &mut m, 5), Err(WasiTrap::Exit(5)));
    assert_eq!(t.ctx.exit_code(), Some(5));
}

#[test]
fn captured_output_is_bounded() {
    let mut ctx = WasiCtx::builder()
        .stdout(Output::Capture)
        .capture_limit(10)
        .build()
        .unwrap();
    let mut bytes = vec![0u8; 256];
    let mut m = GuestMemory::new(&mut bytes);
    m.write_bytes(100, b"0123456789abcdef").unwrap();
    m.write_u32(0, 100).unwrap();
    m.write_u32(4, 6).unwrap();
    m.write_u32(8, 106).unwrap();
    m.write_u32(12, 10).unwrap();
    // Two iovecs of 6 and 10 bytes: only 10 fit.
    assert_eq!(w::fd_write(&mut ctx, &mut m, 1, 0, 2, 16), OK);
    assert_eq!(m.read_u32(16).unwrap(), 10);
    assert_eq!(w::fd_write(&mut ctx, &mut m, 1, 0, 2, 16), Ok(Errno::NoSpc));
    assert_eq!(ctx.stdout_bytes(), b"0123456789");
    // Taking the output frees the room.
    assert_eq!(ctx.take_stdout().len(), 10);
    assert_eq!(w::fd_write(&mut ctx, &mut m, 1, 0, 1, 16), OK);
    assert_eq!(ctx.stdout_bytes(), b"012345");
}

/// Regression (found running CPython-on-WASI under `faaslet run --input`):
/// a call's input must reach the guest as standard input, so a prepared
/// context's stdin can be replaced, and reads start again at its beginning.
#[test]
fn set_stdin_replaces_input_and_rewinds() {
    let mut t = T::new();
    // iovec at 100: buf 200, len 2
    t.mem[100..104].copy_from_slice(&200u32.to_le_bytes());
    t.mem[104..108].copy_from_slice(&2u32.to_le_bytes());
    let (c, mut m) = t.m();
    assert_eq!(w::fd_read(c, &mut m, 0, 100, 1, 16), OK);
    assert_eq!((t.u32(16), &t.mem[200..202]), (2, &b"ab"[..]));
    t.ctx.set_stdin(Input::Bytes(b"xyz".to_vec()));
    t.mem[104..108].copy_from_slice(&8u32.to_le_bytes());
    let (c, mut m) = t.m();
    assert_eq!(w::fd_read(c, &mut m, 0, 100, 1, 16), OK);
    assert_eq!((t.u32(16), &t.mem[200..203]), (3, &b"xyz"[..]));
    let (c, mut m) = t.m();
    assert_eq!(w::fd_read(c, &mut m, 0, 100, 1, 16), OK);
    assert_eq!(t.u32(16), 0, "end of the new input");
    t.ctx.set_stdin(Input::Empty);
    let (c, mut m) = t.m();
    assert_eq!(w::fd_read(c, &mut m, 0, 100, 1, 16), OK);
    assert_eq!(t.u32(16), 0, "empty input");
}
