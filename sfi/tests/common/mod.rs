//! Shared helpers: tiny hand-assembled x86_64 functions in an executable
//! page, a `CodeLookup` that calls every PC a trap site, and a fork helper.
#![allow(dead_code)]

use faaslet_sfi::{register_code, CodeLookup, CodeRegistration};
use std::sync::Arc;

/// Every PC in the registered range is a trap site.
pub struct AllTrapSites;
impl CodeLookup for AllTrapSites {
    fn is_trap_site(&self, _pc: usize) -> bool {
        true
    }
}

/// No PC is a trap site.
pub struct NoTrapSites;
impl CodeLookup for NoTrapSites {
    fn is_trap_site(&self, _pc: usize) -> bool {
        false
    }
}

/// An executable page holding a few stubs, unmapped on drop.
pub struct Code {
    page: *mut u8,
    len: usize,
}
// SAFETY: the page is owned by `Code`, immutable (R+X) after `new`, and
// only unmapped on drop.
unsafe impl Send for Code {}
// SAFETY: as above; sharing only reads and executes it.
unsafe impl Sync for Code {}

/// Offsets of the stubs inside the page.
pub const UD2: usize = 0; // ud2
pub const LOAD: usize = 16; // mov al, [rdi]; ret
pub const DIV: usize = 32; // mov eax, edi; cdq; idiv esi; ret
pub const RET: usize = 48; // ret

impl Code {
    pub fn new() -> Code {
        let len = 4096;
        // SAFETY: a fresh private anonymous page we own; every write stays
        // inside it (offsets < 64, stubs < 8 bytes), and it is made R+X
        // before any stub runs.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let p = p.cast::<u8>();
            std::ptr::write_bytes(p, 0xcc, len); // int3 padding
            let put = |off: usize, bytes: &[u8]| {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(off), bytes.len())
            };
            put(UD2, &[0x0f, 0x0b]);
            put(LOAD, &[0x8a, 0x07, 0xc3]);
            put(DIV, &[0x89, 0xf8, 0x99, 0xf7, 0xfe, 0xc3]);
            put(RET, &[0xc3]);
            assert_eq!(
                libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_EXEC),
                0
            );
            Code { page: p, len }
        }
    }
    pub fn start(&self) -> usize {
        self.page as usize
    }
    pub fn end(&self) -> usize {
        self.page as usize + self.len
    }
    pub fn register_all(&self) -> CodeRegistration {
        register_code(self.start(), self.end(), Arc::new(AllTrapSites))
    }
    pub fn ud2(&self) {
        // SAFETY: the stub at UD2 is `ud2`, a valid function body of this type.
        let f: extern "C" fn() = unsafe { std::mem::transmute(self.page.add(UD2)) };
        f()
    }
    pub fn load(&self, addr: *const u8) -> u8 {
        // SAFETY: the stub at LOAD loads a byte from its first argument and returns it.
        let f: extern "C" fn(*const u8) -> u8 = unsafe { std::mem::transmute(self.page.add(LOAD)) };
        f(addr)
    }
    pub fn div(&self, a: i32, b: i32) -> i32 {
        // SAFETY: the stub at DIV divides its first i32 argument by its second.
        let f: extern "C" fn(i32, i32) -> i32 = unsafe { std::mem::transmute(self.page.add(DIV)) };
        f(a, b)
    }
    pub fn ret(&self) {
        // SAFETY: the stub at RET is a bare `ret`.
        let f: extern "C" fn() = unsafe { std::mem::transmute(self.page.add(RET)) };
        f()
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        // SAFETY: unmaps the page `new` mapped; no stub runs after drop.
        unsafe { libc::munmap(self.page.cast(), self.len) };
    }
}

/// Runs `f` in a forked child (no core dumps) and returns how it ended:
/// `Ok(exit_code)` or `Err(signal)`.
pub fn in_child(f: impl FnOnce()) -> Result<i32, i32> {
    // SAFETY: fork in a test process; the child only runs `f` and exits
    // with `_exit`, the parent only waits for it.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            f();
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        if libc::WIFSIGNALED(status) {
            Err(libc::WTERMSIG(status))
        } else {
            Ok(libc::WEXITSTATUS(status))
        }
    }
}

/// [`in_child`], with the child's stderr captured: (how it ended, what it
/// wrote to stderr).
#[allow(dead_code)]
pub fn in_child_stderr(f: impl FnOnce()) -> (Result<i32, i32>, String) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let status = in_child(|| {
        // SAFETY: in the child: stderr becomes the pipe's write end.
        unsafe {
            libc::close(fds[0]);
            libc::dup2(fds[1], 2);
        }
        f();
    });
    let mut out = Vec::new();
    // SAFETY: closing our copy of the write end, then reading what the
    // (now exited) child wrote into our own buffer.
    unsafe {
        libc::close(fds[1]);
        let mut buf = [0u8; 4096];
        loop {
            let n = libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len());
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        libc::close(fds[0]);
    }
    (status, String::from_utf8_lossy(&out).into_owned())
}
