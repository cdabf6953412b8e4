//! Rights and sockets as the preview1 specification defines them, called
//! directly on a byte-slice memory: directories open whatever rights are
//! asked for, a directory reports only the rights that apply to it, rights
//! only shrink and a dropped right is `ENOTCAPABLE`, and the `sock_*` calls
//! on a descriptor that is not a socket are `ENOTSOCK`.

mod common;

use common::TempDir;
use faaslet_hostapi::memory::GuestMemory;
use faaslet_hostapi::wasi::{self as w, filetype, oflags, rights, Errno, MountMode, WasiCtx};

const OK: Result<Errno, w::WasiTrap> = Ok(Errno::Success);

struct T {
    ctx: WasiCtx,
    mem: Vec<u8>,
    dir: TempDir,
}

impl T {
    /// fd 3 = `/rw` (read-write: `f.txt` = "0123456789", directory `sub`),
    /// fd 4 = `/ro` (the same directory, read-only).
    fn new() -> T {
        let dir = TempDir::new("rights");
        std::fs::write(dir.path().join("f.txt"), "0123456789").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let ctx = WasiCtx::builder()
            .mount(dir.path(), "/rw", MountMode::ReadWrite)
            .mount(dir.path(), "/ro", MountMode::ReadOnly)
            .build()
            .unwrap();
        T {
            ctx,
            mem: vec![0; 65536],
            dir,
        }
    }
    fn m(&mut self) -> (&mut WasiCtx, GuestMemory<'_>) {
        (&mut self.ctx, GuestMemory::new(&mut self.mem))
    }
    fn open(&mut self, dir: u32, path: &str, of: u16, base: u64, inh: u64) -> Result<u32, Errno> {
        self.mem[1000..1000 + path.len()].copy_from_slice(path.as_bytes());
        let (c, mut m) = self.m();
        let r = w::path_open(
            c,
            &mut m,
            dir,
            1,
            1000,
            path.len() as u32,
            of as u32,
            base,
            inh,
            0,
            8,
        );
        match r.unwrap() {
            Errno::Success => Ok(u32::from_le_bytes(self.mem[8..12].try_into().unwrap())),
            e => Err(e),
        }
    }
    /// (filetype, rights_base, rights_inheriting) of `fd`.
    fn fdstat(&mut self, fd: u32) -> (u8, u64, u64) {
        let (c, mut m) = self.m();
        assert_eq!(w::fd_fdstat_get(c, &mut m, fd, 100), OK);
        let u64_at = |o: usize| u64::from_le_bytes(self.mem[o..o + 8].try_into().unwrap());
        (self.mem[100], u64_at(108), u64_at(116))
    }
    /// `fd_read` of up to 4 bytes into 200.
    fn read(&mut self, fd: u32) -> Result<Errno, w::WasiTrap> {
        let (c, mut m) = self.m();
        m.write_u32(300, 200).unwrap();
        m.write_u32(304, 4).unwrap();
        w::fd_read(c, &mut m, fd, 300, 1, 310)
    }
}

#[test]
fn directories_open_with_all_rights_and_report_only_directory_rights() {
    let mut t = T::new();
    // The preopen: directory rights only; everything may be inherited.
    let (ty, base, inh) = t.fdstat(3);
    assert_eq!(ty, filetype::DIRECTORY);
    assert_eq!(base & (rights::FD_SEEK | rights::FD_FILESTAT_SET_SIZE), 0);
    assert_eq!(base & (rights::FD_READ | rights::FD_WRITE), 0);
    assert_ne!(base & rights::PATH_OPEN, 0);
    assert_eq!(inh & rights::FD_WRITE, rights::FD_WRITE);
    // ".", O_DIRECTORY, with every right including fd_write: opens (Linux
    // refuses O_RDWR on a directory; the rights that need it do not apply).
    let d = t
        .open(3, ".", oflags::DIRECTORY, rights::ALL, rights::ALL)
        .expect("directory opens with all rights");
    let (ty, base, _) = t.fdstat(d);
    assert_eq!(ty, filetype::DIRECTORY);
    assert_eq!(base & (rights::FD_SEEK | rights::FD_FILESTAT_SET_SIZE), 0);
    // Without O_DIRECTORY, write rights on a path that is a directory.
    let s = t
        .open(3, "sub", 0, rights::ALL, rights::ALL)
        .expect("a directory opened with write rights");
    assert_eq!(t.fdstat(s).0, filetype::DIRECTORY);
    // Exactly the rights the preopen reports, on the read-only mount too.
    let (_, base4, inh4) = t.fdstat(4);
    let ro = t.open(4, ".", oflags::DIRECTORY, base4, inh4).unwrap();
    assert_eq!(t.fdstat(ro).0, filetype::DIRECTORY);
    // A file opened below a directory gets only file rights.
    let f = t.open(d, "f.txt", 0, rights::ALL, rights::ALL).unwrap();
    let (ty, base, _) = t.fdstat(f);
    assert_eq!(ty, filetype::REGULAR_FILE);
    assert_ne!(base & rights::FD_SEEK, 0);
    assert_eq!(base & rights::PATH_OPEN, 0);
}

#[test]
fn rights_only_shrink_and_dropped_rights_are_not_capable() {
    let mut t = T::new();
    let f = t
        .open(
            3,
            "f.txt",
            0,
            rights::FD_READ | rights::FD_WRITE | rights::FD_SEEK,
            0,
        )
        .unwrap();
    assert_eq!(t.read(f), OK);
    let (_, base, _) = t.fdstat(f);
    let (c, mut m) = t.m();
    let fewer = base & !(rights::FD_READ | rights::FD_WRITE);
    assert_eq!(w::fd_fdstat_set_rights(c, &mut m, f, fewer, 0), OK);
    let (_, now, _) = t.fdstat(f);
    assert_eq!(now, fewer, "the rights reported are the ones kept");
    assert_eq!(t.read(f), Ok(Errno::NotCapable));
    let (c, mut m) = t.m();
    m.write_u32(300, 200).unwrap();
    m.write_u32(304, 4).unwrap();
    assert_eq!(
        w::fd_write(c, &mut m, f, 300, 1, 310),
        Ok(Errno::NotCapable)
    );
    // Seeking was kept.
    assert_eq!(w::fd_seek(c, &mut m, f, 2, 0, 320), OK);
    // Growing back is refused, and changes nothing.
    assert_eq!(
        w::fd_fdstat_set_rights(c, &mut m, f, base, 0),
        Ok(Errno::NotCapable)
    );
    assert_eq!(t.fdstat(f).1, fewer);
    // A directory that dropped path_open cannot open anything, and what
    // it opened before is unaffected.
    let (_, dbase, dinh) = t.fdstat(3);
    let (c, mut m) = t.m();
    assert_eq!(
        w::fd_fdstat_set_rights(c, &mut m, 3, dbase & !rights::PATH_OPEN, dinh),
        OK
    );
    assert_eq!(
        t.open(3, "f.txt", 0, rights::FD_READ, 0),
        Err(Errno::NotCapable)
    );
    // Dropped inheriting rights are not granted to what opens below.
    let (_, base4, inh4) = t.fdstat(4);
    let (c, mut m) = t.m();
    assert_eq!(
        w::fd_fdstat_set_rights(c, &mut m, 4, base4, inh4 & !rights::FD_SEEK),
        OK
    );
    let g = t
        .open(4, "f.txt", 0, rights::FD_READ | rights::FD_SEEK, 0)
        .unwrap();
    assert_eq!(t.fdstat(g).1 & rights::FD_SEEK, 0);
    let (c, mut m) = t.m();
    assert_eq!(w::fd_seek(c, &mut m, g, 1, 0, 320), Ok(Errno::NotCapable));
    assert_eq!(t.read(g), OK);
    drop(t.dir);
}

#[test]
fn socket_calls_on_other_descriptors_are_not_sockets() {
    let mut t = T::new();
    let f = t.open(3, "f.txt", 0, rights::FD_READ, 0).unwrap();
    let (c, mut m) = t.m();
    for fd in [0, 1, 3, f] {
        assert_eq!(
            w::sock_shutdown(c, &mut m, fd, 3),
            Ok(Errno::NotSock),
            "fd {fd}"
        );
        assert_eq!(
            w::sock_accept(c, &mut m, fd, 0, 16),
            Ok(Errno::NotSock),
            "fd {fd}"
        );
        assert_eq!(
            w::sock_recv(c, &mut m, fd, 300, 1, 0, 16, 20),
            Ok(Errno::NotSock)
        );
        assert_eq!(
            w::sock_send(c, &mut m, fd, 300, 1, 0, 16),
            Ok(Errno::NotSock)
        );
    }
    assert_eq!(w::sock_shutdown(c, &mut m, 99, 3), Ok(Errno::Badf));
}

#[test]
fn a_handed_in_listener_accepts_and_serves() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut ctx = WasiCtx::builder().tcp_listener(listener).build().unwrap();
    let mut mem = vec![0u8; 65536];
    let (ty, base, _) = {
        let mut m = GuestMemory::new(&mut mem);
        assert_eq!(w::fd_fdstat_get(&mut ctx, &mut m, 3, 100), OK);
        let u = |o: usize| u64::from_le_bytes(mem[o..o + 8].try_into().unwrap());
        (mem[100], u(108), u(116))
    };
    assert_eq!(ty, filetype::SOCKET_STREAM);
    assert_ne!(base & rights::SOCK_ACCEPT, 0);
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"ping").unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        back
    });
    let mut m = GuestMemory::new(&mut mem);
    // Blocking accept.
    assert_eq!(w::sock_accept(&mut ctx, &mut m, 3, 0, 16), OK);
    let conn = m.read_u32(16).unwrap();
    // recv into [200, 204) with WAITALL, then send it back twice, once
    // through sock_send and once through fd_write.
    m.write_u32(300, 200).unwrap();
    m.write_u32(304, 4).unwrap();
    assert_eq!(w::sock_recv(&mut ctx, &mut m, conn, 300, 1, 2, 16, 20), OK);
    assert_eq!(m.read_u32(16).unwrap(), 4);
    assert_eq!(w::sock_send(&mut ctx, &mut m, conn, 300, 1, 0, 16), OK);
    assert_eq!(m.read_u32(16).unwrap(), 4);
    assert_eq!(w::fd_write(&mut ctx, &mut m, conn, 300, 1, 16), OK);
    assert_eq!(w::sock_shutdown(&mut ctx, &mut m, conn, 2), OK);
    assert_eq!(client.join().unwrap(), b"pingping");
    // The peer closed: a read sees the end.
    assert_eq!(w::sock_recv(&mut ctx, &mut m, conn, 300, 1, 0, 16, 20), OK);
    assert_eq!(m.read_u32(16).unwrap(), 0);
    assert_eq!(
        w::sock_shutdown(&mut ctx, &mut m, conn, 9),
        Ok(Errno::Inval)
    );
    // A non-blocking accept with nobody connecting.
    assert_eq!(w::sock_accept(&mut ctx, &mut m, 3, 4, 16), Ok(Errno::Again));
    // The listener is not a connection.
    assert_eq!(
        w::sock_recv(&mut ctx, &mut m, 3, 300, 1, 0, 16, 20),
        Ok(Errno::NotConn)
    );
}
