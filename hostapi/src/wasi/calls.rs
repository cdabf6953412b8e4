//! The `wasi_snapshot_preview1` host calls.
//!
//! Each function takes the context, the guest memory and the call's wasm
//! arguments (`i32` as `u32`, `i64` as `u64`, signed deltas as `i64`) and
//! returns the errno for the guest. Output pointers are checked before any
//! side effect, so a call with a bad pointer does nothing but return
//! [`Errno::Fault`].

use super::ctx::{
    DirFd, Fd, FileFd, Input, InterruptProbe, Output, Slot, SocketFd, WasiCtx, WasiTrap,
};
use super::fs::{self, c_path, open_beneath, split};
use super::types::Errno;
use super::types::{clockid, fdflags, filetype, fstflags, oflags, rights};
use crate::memory::GuestMemory;
use std::io::Write;
use std::os::fd::AsRawFd;

type R = Result<(), Errno>;

fn done(r: R) -> Result<Errno, WasiTrap> {
    Ok(match r {
        Ok(()) => Errno::Success,
        Err(e) => e,
    })
}

/// Linux's IOV_MAX: longer iovec arrays are served in part (a short read or
/// write, which callers must handle anyway).
const IOV_MAX: u32 = 1024;

/// Fills `out` with host iovecs for the guest iovec array, checking every
/// buffer against the memory. Empty buffers are skipped.
fn host_iovs(
    out: &mut Vec<libc::iovec>,
    mem: &mut GuestMemory<'_>,
    iovs: u32,
    n: u32,
) -> Result<(), Errno> {
    out.clear();
    // The whole array must lie in memory (EFAULT otherwise, as wasmtime
    // answers), even if only the first IOV_MAX entries are used.
    mem.range(iovs, n as u64 * 8)?;
    let n = n.min(IOV_MAX);
    for i in 0..n {
        let v = mem.iovec(iovs, i)?;
        let base = mem.ptr(v.buf, v.len as u64)?;
        if v.len > 0 {
            out.push(libc::iovec {
                iov_base: base.cast(),
                iov_len: v.len as usize,
            });
        }
    }
    Ok(())
}

/// Runs `f` with the context's reusable iovec buffer filled for the call.
fn with_iovs<T>(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    iovs: u32,
    n: u32,
    f: impl FnOnce(&mut WasiCtx, &[libc::iovec]) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let mut v = std::mem::take(&mut ctx.iov_scratch);
    let r = host_iovs(&mut v, mem, iovs, n).and_then(|()| f(ctx, &v));
    v.clear();
    ctx.iov_scratch = v;
    r
}

fn check_ret(r: isize) -> Result<usize, Errno> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as usize)
    }
}

// ---------------------------------------------------------------- args, env

fn strings_get(mem: &mut GuestMemory<'_>, data: &[u8], count: u32, ptrs: u32, buf: u32) -> R {
    mem.range(ptrs, count as u64 * 4)?;
    mem.write_bytes(buf, data)?;
    let mut at = 0usize;
    for i in 0..count {
        mem.write_u32(ptrs + i * 4, buf + at as u32)?;
        at += data[at..].iter().position(|&b| b == 0).unwrap_or(0) + 1;
    }
    Ok(())
}

/// `args_get(argv, argv_buf)`.
pub fn args_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    argv: u32,
    buf: u32,
) -> Result<Errno, WasiTrap> {
    done(strings_get(mem, &ctx.args, ctx.argc, argv, buf))
}

/// `args_sizes_get(argc_out, argv_buf_size_out)`.
pub fn args_sizes_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    argc: u32,
    size: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(argc, 4)?;
        mem.range(size, 4)?;
        mem.write_u32(argc, ctx.argc)?;
        Ok(mem.write_u32(size, ctx.args.len() as u32)?)
    })())
}

/// `environ_get(environ, environ_buf)`.
pub fn environ_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    env: u32,
    buf: u32,
) -> Result<Errno, WasiTrap> {
    done(strings_get(mem, &ctx.env, ctx.envc, env, buf))
}

/// `environ_sizes_get(count_out, buf_size_out)`.
pub fn environ_sizes_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    count: u32,
    size: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(count, 4)?;
        mem.range(size, 4)?;
        mem.write_u32(count, ctx.envc)?;
        Ok(mem.write_u32(size, ctx.env.len() as u32)?)
    })())
}

// ---------------------------------------------------------------- clocks, random

fn host_clock(id: u32) -> Result<libc::clockid_t, Errno> {
    Ok(match id {
        clockid::REALTIME => libc::CLOCK_REALTIME,
        clockid::MONOTONIC => libc::CLOCK_MONOTONIC,
        clockid::PROCESS_CPUTIME_ID => libc::CLOCK_PROCESS_CPUTIME_ID,
        clockid::THREAD_CPUTIME_ID => libc::CLOCK_THREAD_CPUTIME_ID,
        _ => return Err(Errno::Inval),
    })
}

fn now(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; the clock id is one of ours.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// `clock_res_get(id, resolution_out)`.
pub fn clock_res_get(
    _ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    id: u32,
    out: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let c = host_clock(id)?;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer.
        unsafe { libc::clock_getres(c, &mut ts) };
        let ns = (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64;
        Ok(mem.write_u64(out, ns.max(1))?)
    })())
}

/// `clock_time_get(id, precision, time_out)`.
pub fn clock_time_get(
    _ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    id: u32,
    _precision: u64,
    out: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let c = host_clock(id)?;
        mem.range(out, 8)?;
        Ok(mem.write_u64(out, now(c))?)
    })())
}

/// `random_get(buf, len)`: bytes from the host's `getrandom`.
pub fn random_get(
    _ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    buf: u32,
    len: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let base = mem.ptr(buf, len as u64)?;
        let mut done = 0usize;
        while done < len as usize {
            // SAFETY: `base .. base + len` was checked to lie inside the
            // guest memory, which lives for the whole host call; the
            // kernel writes into it like a guest store would.
            let r = unsafe { libc::getrandom(base.add(done).cast(), len as usize - done, 0) };
            if r < 0 {
                let e = Errno::last();
                if e == Errno::Intr {
                    continue;
                }
                return Err(e);
            }
            done += r as usize;
        }
        Ok(())
    })())
}

// ---------------------------------------------------------------- fd I/O

fn read_into(
    ctx: &mut WasiCtx,
    fd: u32,
    iov: &[libc::iovec],
    offset: Option<u64>,
) -> Result<usize, Errno> {
    if iov.is_empty() {
        ctx.fd_need(fd, rights::FD_READ)?;
        return Ok(0);
    }
    let probe = ctx.interrupt.clone();
    match ctx.fd_need(fd, rights::FD_READ)? {
        Fd::Stdin => {
            if offset.is_some() {
                return Err(Errno::Spipe);
            }
            match &ctx.stdin {
                Input::Empty => Ok(0),
                Input::Bytes(b) => {
                    let mut n = 0;
                    for v in iov {
                        let rest = &b[ctx.stdin_pos + n..];
                        let k = rest.len().min(v.iov_len);
                        // SAFETY: `v` was built by host_iovs from a checked
                        // guest range; `rest` is a host buffer that cannot
                        // overlap guest memory.
                        unsafe {
                            std::ptr::copy_nonoverlapping(rest.as_ptr(), v.iov_base.cast(), k)
                        };
                        n += k;
                        if k < v.iov_len {
                            break;
                        }
                    }
                    ctx.stdin_pos += n;
                    Ok(n)
                }
                Input::Inherit => {
                    // SAFETY: the iovecs point at checked guest ranges.
                    check_ret(unsafe { libc::readv(0, iov.as_ptr(), iov.len() as i32) })
                }
            }
        }
        Fd::File(f) if f.read => {
            let raw = f.file.as_raw_fd();
            // SAFETY: the iovecs point at checked guest ranges.
            check_ret(unsafe {
                match offset {
                    None => libc::readv(raw, iov.as_ptr(), iov.len() as i32),
                    Some(o) => libc::preadv(raw, iov.as_ptr(), iov.len() as i32, o as i64),
                }
            })
        }
        Fd::Socket(sock) => {
            if offset.is_some() {
                return Err(Errno::Spipe);
            }
            let (raw, nonblock) = (sock.fd.as_raw_fd(), sock.nonblock);
            // SAFETY: the iovecs point at checked guest ranges.
            retry_blocking(raw, libc::POLLIN, probe.as_ref(), nonblock, || unsafe {
                libc::readv(raw, iov.as_ptr(), iov.len() as i32)
            })
            .map_err(Blocked::errno)
        }
        Fd::Dir(_) => Err(Errno::IsDir),
        _ => Err(Errno::Badf),
    }
}

fn write_from(
    ctx: &mut WasiCtx,
    fd: u32,
    iov: &[libc::iovec],
    offset: Option<u64>,
) -> Result<usize, Errno> {
    let probe = ctx.interrupt.clone();
    let (out, buf, host) = match ctx.fd_need(fd, rights::FD_WRITE)? {
        Fd::Stdout => (ctx.stdout, &mut ctx.stdout_buf, 1),
        Fd::Stderr => (ctx.stderr, &mut ctx.stderr_buf, 2),
        Fd::File(f) if f.write => {
            if iov.is_empty() {
                return Ok(0);
            }
            let raw = f.file.as_raw_fd();
            // SAFETY: the iovecs point at checked guest ranges.
            return check_ret(unsafe {
                match offset {
                    None => libc::writev(raw, iov.as_ptr(), iov.len() as i32),
                    Some(o) => libc::pwritev(raw, iov.as_ptr(), iov.len() as i32, o as i64),
                }
            });
        }
        Fd::Socket(sock) => {
            if offset.is_some() {
                return Err(Errno::Spipe);
            }
            let (raw, nonblock) = (sock.fd.as_raw_fd(), sock.nonblock);
            return retry_blocking(raw, libc::POLLOUT, probe.as_ref(), nonblock, || {
                send_iovs(raw, iov, 0).map_or(-1, |n| n as isize)
            })
            .map_err(Blocked::errno);
        }
        Fd::Dir(_) => return Err(Errno::IsDir),
        _ => return Err(Errno::Badf),
    };
    if offset.is_some() {
        return Err(Errno::Spipe);
    }
    let total: usize = iov.iter().map(|v| v.iov_len).sum();
    match out {
        Output::Discard => Ok(total),
        Output::Capture => {
            // Past the capture limit the stream is full: a short write,
            // then ENOSPC, as on a full disk.
            let mut room = ctx.capture_limit.saturating_sub(buf.len());
            if room == 0 && total > 0 {
                return Err(Errno::NoSpc);
            }
            let mut n = 0;
            for v in iov {
                let k = v.iov_len.min(room);
                buf.reserve(k);
                let at = buf.len();
                // SAFETY: `v` was built by host_iovs from a checked guest
                // range and the memory outlives this call; k <= v.iov_len.
                // A raw copy, never a slice: other threads may write the
                // guest bytes (see `crate::memory`). `buf` has room for `k`
                // more bytes, initialised by the copy before the length
                // covers them.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        v.iov_base as *const u8,
                        buf.as_mut_ptr().add(at),
                        k,
                    );
                    buf.set_len(at + k);
                }
                n += k;
                room -= k;
            }
            Ok(n)
        }
        Output::Inherit => {
            if iov.is_empty() {
                return Ok(0);
            }
            // Rust's own buffered stdout may hold host output: keep order.
            let _ = std::io::stdout().flush();
            // SAFETY: the iovecs point at checked guest ranges.
            check_ret(unsafe { libc::writev(host, iov.as_ptr(), iov.len() as i32) })
        }
    }
}

/// `fd_read(fd, iovs, iovs_len, nread_out)`.
pub fn fd_read(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nread: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(nread, 4)?;
        let n = with_iovs(ctx, mem, iovs, iovs_len, |ctx, v| {
            read_into(ctx, fd, v, None)
        })?;
        Ok(mem.write_u32(nread, n as u32)?)
    })())
}

/// `fd_pread(fd, iovs, iovs_len, offset, nread_out)`.
pub fn fd_pread(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    offset: u64,
    nread: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(nread, 4)?;
        if offset > i64::MAX as u64 {
            return Err(Errno::Inval);
        }
        let n = with_iovs(ctx, mem, iovs, iovs_len, |ctx, v| {
            read_into(ctx, fd, v, Some(offset))
        })?;
        Ok(mem.write_u32(nread, n as u32)?)
    })())
}

/// `fd_write(fd, iovs, iovs_len, nwritten_out)`.
pub fn fd_write(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nwritten: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(nwritten, 4)?;
        let n = with_iovs(ctx, mem, iovs, iovs_len, |ctx, v| {
            write_from(ctx, fd, v, None)
        })?;
        Ok(mem.write_u32(nwritten, n as u32)?)
    })())
}

/// `fd_pwrite(fd, iovs, iovs_len, offset, nwritten_out)`.
pub fn fd_pwrite(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    offset: u64,
    nwritten: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(nwritten, 4)?;
        if offset > i64::MAX as u64 {
            return Err(Errno::Inval);
        }
        let n = with_iovs(ctx, mem, iovs, iovs_len, |ctx, v| {
            write_from(ctx, fd, v, Some(offset))
        })?;
        Ok(mem.write_u32(nwritten, n as u32)?)
    })())
}

fn seek(ctx: &mut WasiCtx, fd: u32, offset: i64, whence: u32, need: u64) -> Result<u64, Errno> {
    let whence = match whence {
        0 => libc::SEEK_SET,
        1 => libc::SEEK_CUR,
        2 => libc::SEEK_END,
        _ => return Err(Errno::Inval),
    };
    match ctx.fd_need(fd, need)? {
        Fd::File(f) => {
            // SAFETY: plain syscall on an open descriptor.
            let r = unsafe { libc::lseek(f.file.as_raw_fd(), offset, whence) };
            if r < 0 {
                Err(Errno::last())
            } else {
                Ok(r as u64)
            }
        }
        Fd::Dir(_) => Err(Errno::Badf),
        _ => Err(Errno::Spipe),
    }
}

/// `fd_seek(fd, offset, whence, newoffset_out)`.
pub fn fd_seek(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    offset: i64,
    whence: u32,
    out: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(out, 8)?;
        // The spec lets a seek that only reports the position (offset 0 from
        // the current one) make do with `fd_tell`.
        let need = if offset == 0 && whence == 1 {
            rights::FD_TELL
        } else {
            rights::FD_SEEK
        };
        let pos = seek(ctx, fd, offset, whence, need)?;
        Ok(mem.write_u64(out, pos)?)
    })())
}

/// `fd_tell(fd, offset_out)`.
pub fn fd_tell(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    out: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(out, 8)?;
        let pos = seek(ctx, fd, 0, 1, rights::FD_TELL)?;
        Ok(mem.write_u64(out, pos)?)
    })())
}

/// `fd_close(fd)`.
pub fn fd_close(ctx: &mut WasiCtx, _mem: &mut GuestMemory<'_>, fd: u32) -> Result<Errno, WasiTrap> {
    done((|| {
        ctx.fd(fd)?;
        ctx.fds[fd as usize] = None;
        Ok(())
    })())
}

/// `fd_renumber(from, to)`: moves `from` onto `to` (which must be open),
/// closing what `to` held.
pub fn fd_renumber(
    ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    from: u32,
    to: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        ctx.fd(from)?;
        ctx.fd(to)?;
        if from != to {
            let f = ctx.fds[from as usize].take();
            ctx.fds[to as usize] = f;
        }
        Ok(())
    })())
}

fn sync(ctx: &mut WasiCtx, fd: u32, data_only: bool) -> R {
    let need = if data_only {
        rights::FD_DATASYNC
    } else {
        rights::FD_SYNC
    };
    let raw = match ctx.fd_need(fd, need)? {
        Fd::File(f) => f.file.as_raw_fd(),
        Fd::Dir(d) => d.file.as_raw_fd(),
        _ => return Err(Errno::Inval),
    };
    // SAFETY: plain syscall on an open descriptor.
    let r = unsafe {
        if data_only {
            libc::fdatasync(raw)
        } else {
            libc::fsync(raw)
        }
    };
    check_ret(r as isize).map(|_| ())
}

/// `fd_sync(fd)`.
pub fn fd_sync(ctx: &mut WasiCtx, _mem: &mut GuestMemory<'_>, fd: u32) -> Result<Errno, WasiTrap> {
    done(sync(ctx, fd, false))
}

/// `fd_datasync(fd)`.
pub fn fd_datasync(
    ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    fd: u32,
) -> Result<Errno, WasiTrap> {
    done(sync(ctx, fd, true))
}

/// `fd_advise(fd, offset, len, advice)`.
pub fn fd_advise(
    ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    fd: u32,
    offset: u64,
    len: u64,
    advice: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let adv = match advice {
            0 => libc::POSIX_FADV_NORMAL,
            1 => libc::POSIX_FADV_SEQUENTIAL,
            2 => libc::POSIX_FADV_RANDOM,
            3 => libc::POSIX_FADV_WILLNEED,
            4 => libc::POSIX_FADV_DONTNEED,
            5 => libc::POSIX_FADV_NOREUSE,
            _ => return Err(Errno::Inval),
        };
        let Fd::File(f) = ctx.fd_need(fd, rights::FD_ADVISE)? else {
            return Err(Errno::Badf);
        };
        // SAFETY: plain syscall on an open descriptor.
        let r = unsafe { libc::posix_fadvise(f.file.as_raw_fd(), offset as i64, len as i64, adv) };
        if r != 0 {
            return Err(Errno::from_host(r));
        }
        Ok(())
    })())
}

/// `fd_allocate(fd, offset, len)`.
pub fn fd_allocate(
    ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    fd: u32,
    offset: u64,
    len: u64,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let Fd::File(f) = ctx.fd_need(fd, rights::FD_ALLOCATE)? else {
            return Err(Errno::Badf);
        };
        if !f.write {
            return Err(Errno::Badf);
        }
        if offset > i64::MAX as u64 || len > i64::MAX as u64 {
            return Err(Errno::Inval);
        }
        // SAFETY: plain syscall on an open descriptor.
        let r = unsafe { libc::posix_fallocate(f.file.as_raw_fd(), offset as i64, len as i64) };
        if r != 0 {
            return Err(Errno::from_host(r));
        }
        Ok(())
    })())
}

// ---------------------------------------------------------------- fd metadata

fn stdio_type() -> u8 {
    filetype::CHARACTER_DEVICE
}

/// Rights of a standard stream: an inherited host terminal is reported as
/// a tty (no seek/tell rights), so wasi-libc line-buffers it as natively.
fn stdio_rights(base: u64, inherited: bool, host_fd: i32) -> u64 {
    // SAFETY: isatty only inspects the descriptor number.
    if inherited && unsafe { libc::isatty(host_fd) } == 1 {
        base & !(rights::FD_SEEK | rights::FD_TELL)
    } else {
        base
    }
}

/// `fd_fdstat_get(fd, fdstat_out)`: 24 bytes of type, flags and rights.
pub fn fd_fdstat_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    out: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(out, 24)?;
        let slot = ctx.slot(fd)?;
        let (held, held_inh) = (slot.base, slot.inheriting);
        let (ty, flags, base, inh) = match &slot.fd {
            Fd::Stdin => {
                let inherit = ctx.stdin == Input::Inherit;
                let r = stdio_rights(rights::ALL & !rights::WRITE, inherit, 0);
                (stdio_type(), 0, r, 0)
            }
            Fd::Stdout => {
                let inherit = ctx.stdout == Output::Inherit;
                let r = stdio_rights(rights::ALL & !rights::READ, inherit, 1);
                (stdio_type(), fdflags::APPEND, r, 0)
            }
            Fd::Stderr => {
                let inherit = ctx.stderr == Output::Inherit;
                let r = stdio_rights(rights::ALL & !rights::READ, inherit, 2);
                (stdio_type(), fdflags::APPEND, r, 0)
            }
            Fd::Dir(_) => (filetype::DIRECTORY, 0, held, held_inh),
            Fd::Listener(s) | Fd::Socket(s) => {
                let flags = if s.nonblock { fdflags::NONBLOCK } else { 0 };
                (filetype::SOCKET_STREAM, flags, held, held_inh)
            }
            Fd::File(f) => {
                let st = fs::fstat(f.file.as_raw_fd())?;
                // SAFETY: plain syscall on an open descriptor.
                let fl = unsafe { libc::fcntl(f.file.as_raw_fd(), libc::F_GETFL) };
                let mut flags = 0;
                if fl & libc::O_APPEND != 0 {
                    flags |= fdflags::APPEND;
                }
                if fl & libc::O_NONBLOCK != 0 {
                    flags |= fdflags::NONBLOCK;
                }
                if fl & libc::O_SYNC == libc::O_SYNC {
                    flags |= fdflags::SYNC;
                } else if fl & libc::O_DSYNC != 0 {
                    flags |= fdflags::DSYNC;
                }
                (fs::filetype_of(st.st_mode), flags, held, held_inh)
            }
        };
        // Stdio rights depend on what the stream is (a terminal cannot
        // seek); never more than the guest still holds.
        let (base, inh) = (base & held, inh & held_inh);
        let mut b = [0u8; 24];
        b[0] = ty;
        b[2..4].copy_from_slice(&flags.to_le_bytes());
        b[8..16].copy_from_slice(&base.to_le_bytes());
        b[16..24].copy_from_slice(&inh.to_le_bytes());
        Ok(mem.write_bytes(out, &b)?)
    })())
}

/// `fd_fdstat_set_flags(fd, flags)`: append and nonblock can be changed.
pub fn fd_fdstat_set_flags(
    ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    fd: u32,
    flags: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let flags = flags as u16;
        let raw = match ctx.fd_need(fd, rights::FD_FDSTAT_SET_FLAGS)? {
            Fd::File(f) => f.file.as_raw_fd(),
            // A socket's host descriptor stays non-blocking; the guest's
            // choice is kept beside it.
            Fd::Listener(s) | Fd::Socket(s) if flags & fdflags::APPEND == 0 => {
                if flags & !fdflags::NONBLOCK != 0 {
                    return Err(Errno::NotSup);
                }
                s.nonblock = flags & fdflags::NONBLOCK != 0;
                return Ok(());
            }
            Fd::Listener(_) | Fd::Socket(_) => return Err(Errno::Inval),
            _ => return Err(Errno::Badf),
        };
        if flags & !(fdflags::APPEND | fdflags::NONBLOCK) != 0 {
            return Err(Errno::NotSup);
        }
        let mut fl = 0;
        if flags & fdflags::APPEND != 0 {
            fl |= libc::O_APPEND;
        }
        if flags & fdflags::NONBLOCK != 0 {
            fl |= libc::O_NONBLOCK;
        }
        // SAFETY: plain syscall on an open descriptor.
        let r = unsafe { libc::fcntl(raw, libc::F_SETFL, fl) };
        check_ret(r as isize).map(|_| ())
    })())
}

/// `fd_fdstat_set_rights(fd, base, inheriting)`: rights only shrink; asking
/// for one the descriptor does not hold is `ENOTCAPABLE`. Later calls that
/// need a dropped right fail with `ENOTCAPABLE`.
pub fn fd_fdstat_set_rights(
    ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    fd: u32,
    base: u64,
    inh: u64,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let slot = ctx.slot(fd)?;
        if base & !slot.base != 0 || inh & !slot.inheriting != 0 {
            return Err(Errno::NotCapable);
        }
        slot.base = base;
        slot.inheriting = inh;
        Ok(())
    })())
}

/// `fd_filestat_get(fd, filestat_out)`.
pub fn fd_filestat_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    out: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(out, 64)?;
        let b = match ctx.fd_need(fd, rights::FD_FILESTAT_GET)?.raw() {
            Some(raw) => fs::filestat_bytes(&fs::fstat(raw)?),
            None => {
                let mut b = [0u8; 64];
                b[16] = stdio_type();
                b
            }
        };
        Ok(mem.write_bytes(out, &b)?)
    })())
}

/// `fd_filestat_set_size(fd, size)`.
pub fn fd_filestat_set_size(
    ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    fd: u32,
    size: u64,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let Fd::File(f) = ctx.fd_need(fd, rights::FD_FILESTAT_SET_SIZE)? else {
            return Err(Errno::Badf);
        };
        if !f.write {
            return Err(Errno::Badf);
        }
        if size > i64::MAX as u64 {
            return Err(Errno::Inval);
        }
        // SAFETY: plain syscall on an open descriptor.
        let r = unsafe { libc::ftruncate(f.file.as_raw_fd(), size as i64) };
        check_ret(r as isize).map(|_| ())
    })())
}

fn times(atim: u64, mtim: u64, fst: u32) -> Result<[libc::timespec; 2], Errno> {
    let fst = fst as u16;
    let one = |t: u64, set: u16, now: u16| -> Result<libc::timespec, Errno> {
        Ok(match (fst & set != 0, fst & now != 0) {
            (true, true) => return Err(Errno::Inval),
            (true, false) => libc::timespec {
                tv_sec: (t / 1_000_000_000) as i64,
                tv_nsec: (t % 1_000_000_000) as i64,
            },
            (false, true) => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            (false, false) => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
        })
    };
    Ok([
        one(atim, fstflags::ATIM, fstflags::ATIM_NOW)?,
        one(mtim, fstflags::MTIM, fstflags::MTIM_NOW)?,
    ])
}

/// `fd_filestat_set_times(fd, atim, mtim, fst_flags)`.
pub fn fd_filestat_set_times(
    ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    fd: u32,
    atim: u64,
    mtim: u64,
    fst: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let ts = times(atim, mtim, fst)?;
        let raw = match ctx.fd_need(fd, rights::FD_FILESTAT_SET_TIMES)? {
            Fd::File(f) if f.mount_writable => f.file.as_raw_fd(),
            Fd::Dir(d) if d.writable => d.file.as_raw_fd(),
            Fd::File(_) | Fd::Dir(_) => return Err(Errno::Rofs),
            _ => return Err(Errno::Badf),
        };
        // SAFETY: `ts` holds two timespecs, as futimens requires.
        let r = unsafe { libc::futimens(raw, ts.as_ptr()) };
        check_ret(r as isize).map(|_| ())
    })())
}

/// `fd_prestat_get(fd, prestat_out)`.
pub fn fd_prestat_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    out: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(out, 8)?;
        let Fd::Dir(DirFd {
            preopen: Some(name),
            ..
        }) = ctx.fd(fd)?
        else {
            return Err(Errno::Badf);
        };
        let len = name.len() as u32;
        mem.write_u32(out, 0)?;
        Ok(mem.write_u32(out + 4, len)?)
    })())
}

/// `fd_prestat_dir_name(fd, buf, len)`.
pub fn fd_prestat_dir_name(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    buf: u32,
    len: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let Fd::Dir(DirFd {
            preopen: Some(name),
            ..
        }) = ctx.fd(fd)?
        else {
            return Err(Errno::Badf);
        };
        if (len as usize) < name.len() {
            return Err(Errno::NameTooLong);
        }
        Ok(mem.write_bytes(buf, name.as_bytes())?)
    })())
}

/// `fd_readdir(fd, buf, buf_len, cookie, bufused_out)`: `.` and `..` and
/// the directory's entries, each a 24-byte header and its name, the last
/// one cut off when the buffer is full (as the ABI prescribes).
pub fn fd_readdir(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    buf: u32,
    buf_len: u32,
    cookie: u64,
    used: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(used, 4)?;
        let out = mem.range(buf, buf_len as u64)?;
        let Fd::Dir(d) = ctx.fd_need(fd, rights::FD_READDIR)? else {
            return Err(Errno::NotDir);
        };
        if cookie == 0 || d.entries.is_empty() {
            let mut entries = std::mem::take(&mut d.entries);
            fs::list_dir(&d.file, &mut entries)?;
            d.entries = entries;
        }
        let room = out.len();
        let mut at = 0usize;
        let start = usize::try_from(cookie).unwrap_or(usize::MAX);
        for (i, e) in d.entries.iter().enumerate().skip(start) {
            if at >= room {
                break;
            }
            let mut h = [0u8; 24];
            h[0..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            h[8..16].copy_from_slice(&e.ino.to_le_bytes());
            h[16..20].copy_from_slice(&(e.name.len() as u32).to_le_bytes());
            h[20] = e.ty;
            for part in [&h[..], &e.name[..]] {
                let k = part.len().min(room - at);
                mem.write_bytes(buf + at as u32, &part[..k])?;
                at += k;
            }
        }
        Ok(mem.write_u32(used, at as u32)?)
    })())
}

// ---------------------------------------------------------------- paths

/// The directory `fd` and whether its mount is writable.
/// Directory `fd` (its descriptor and whether its mount is writable), if it
/// holds the rights in `need`.
fn dir_of(ctx: &mut WasiCtx, fd: u32, need: u64) -> Result<(i32, bool), Errno> {
    match ctx.fd_need(fd, need)? {
        Fd::Dir(d) => Ok((d.file.as_raw_fd(), d.writable)),
        _ => Err(Errno::NotDir),
    }
}

/// A guest path copied out of guest memory into a stack buffer, so path
/// calls do not allocate and the bytes checked are the bytes used.
struct GuestPath {
    buf: [u8; fs::PATH_MAX],
    len: usize,
}

impl std::ops::Deref for GuestPath {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// The guest path `ptr, len`: inside memory, at most `PATH_MAX` bytes,
/// valid UTF-8, as a host copy.
fn path(mem: &GuestMemory<'_>, ptr: u32, len: u32) -> Result<GuestPath, Errno> {
    mem.range(ptr, len as u64)?;
    let len = len as usize;
    if len > fs::PATH_MAX {
        return Err(Errno::NameTooLong);
    }
    let mut p = GuestPath {
        buf: [0; fs::PATH_MAX],
        len,
    };
    mem.read_into(ptr, &mut p.buf[..len])?;
    std::str::from_utf8(&p).map_err(|_| Errno::Ilseq)?;
    Ok(p)
}

const SYMLINK_FOLLOW: u32 = 1;

/// `path_open(fd, dirflags, path, path_len, oflags, rights_base,
/// rights_inheriting, fdflags, fd_out)`.
#[allow(clippy::too_many_arguments)]
pub fn path_open(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    dirflags: u32,
    path_ptr: u32,
    path_len: u32,
    oflags: u32,
    rights_base: u64,
    _rights_inheriting: u64,
    fdflags: u32,
    fd_out: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(fd_out, 4)?;
        let (oflags, fdfl) = (oflags as u16, fdflags as u16);
        let mut need = rights::PATH_OPEN;
        if oflags & oflags::CREAT != 0 {
            need |= rights::PATH_CREATE_FILE;
        }
        if oflags & oflags::TRUNC != 0 {
            need |= rights::PATH_FILESTAT_SET_SIZE;
        }
        let (dir, writable) = dir_of(ctx, fd, need)?;
        // The rights asked for choose the open mode (reading, writing). The
        // new descriptor then holds every right of its kind that the
        // directory passes on, as wasmtime grants them: programs ask for
        // rights loosely (wasi-libc asks for everything), and a right a
        // guest never asked for is no capability it lacks. What a directory
        // does not pass on (its inheriting rights, which only shrink) is
        // never granted; asking for it is not an error.
        let parent_inh = ctx.slot(fd)?.inheriting;
        let want = rights_base & parent_inh;
        let p = c_path(&path(mem, path_ptr, path_len)?)?;
        let want_dir = oflags & oflags::DIRECTORY != 0;
        // A directory is opened read-only whatever rights were asked for:
        // the rights that need write access do not apply to directories.
        let read = want & rights::READ != 0;
        let write = !want_dir && (want & rights::WRITE != 0 || fdfl & fdflags::APPEND != 0);
        if (write || oflags & (oflags::CREAT | oflags::TRUNC) != 0) && !writable {
            return Err(Errno::Rofs);
        }
        let mut flags = libc::O_NOCTTY
            | match (read, write) {
                (_, false) => libc::O_RDONLY,
                (false, true) => libc::O_WRONLY,
                (true, true) => libc::O_RDWR,
            };
        if oflags & oflags::CREAT != 0 {
            flags |= libc::O_CREAT;
        }
        if oflags & oflags::DIRECTORY != 0 {
            flags |= libc::O_DIRECTORY;
        }
        if oflags & oflags::EXCL != 0 {
            flags |= libc::O_EXCL;
        }
        if oflags & oflags::TRUNC != 0 {
            flags |= libc::O_TRUNC;
        }
        if fdfl & fdflags::APPEND != 0 {
            flags |= libc::O_APPEND;
        }
        if fdfl & fdflags::NONBLOCK != 0 {
            flags |= libc::O_NONBLOCK;
        }
        if fdfl & fdflags::SYNC != 0 || fdfl & fdflags::RSYNC != 0 {
            flags |= libc::O_SYNC;
        } else if fdfl & fdflags::DSYNC != 0 {
            flags |= libc::O_DSYNC;
        }
        if dirflags & SYMLINK_FOLLOW == 0 {
            flags |= libc::O_NOFOLLOW;
        }
        let creates = oflags & (oflags::CREAT | oflags::TRUNC) != 0;
        let file = match open_beneath(dir, &p, flags, 0o666) {
            // Write rights on a path that turns out to be a directory: open
            // it as the directory it is (Linux refuses O_WRONLY/O_RDWR).
            Err(Errno::IsDir) if write && !creates => {
                let ro = (flags & !(libc::O_WRONLY | libc::O_RDWR | libc::O_APPEND))
                    | libc::O_RDONLY
                    | libc::O_DIRECTORY;
                open_beneath(dir, &p, ro, 0)?
            }
            r => r?,
        };
        let st = fs::fstat(file.as_raw_fd())?;
        let slot = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            Slot {
                fd: Fd::Dir(DirFd {
                    file,
                    writable,
                    preopen: None,
                    entries: Vec::new(),
                }),
                base: parent_inh & rights::DIRECTORY,
                inheriting: parent_inh,
            }
        } else {
            // Asking for neither reading nor writing opens read-only.
            let read = !write || read;
            let mut base = parent_inh & rights::FILE;
            if !read {
                base &= !rights::READ;
            }
            if !write {
                base &= !rights::WRITE;
            }
            Slot {
                fd: Fd::File(FileFd {
                    file,
                    read,
                    write,
                    mount_writable: writable,
                }),
                base,
                inheriting: 0,
            }
        };
        let new = ctx.insert_slot(slot)?;
        Ok(mem.write_u32(fd_out, new)?)
    })())
}

/// `path_filestat_get(fd, flags, path, path_len, filestat_out)`.
pub fn path_filestat_get(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    flags: u32,
    path_ptr: u32,
    path_len: u32,
    out: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(out, 64)?;
        let (dir, _) = dir_of(ctx, fd, rights::PATH_FILESTAT_GET)?;
        let p = c_path(&path(mem, path_ptr, path_len)?)?;
        let mut fl = libc::O_PATH;
        if flags & SYMLINK_FOLLOW == 0 {
            fl |= libc::O_NOFOLLOW;
        }
        let f = open_beneath(dir, &p, fl, 0)?;
        let st = fs::fstat(f.as_raw_fd())?;
        Ok(mem.write_bytes(out, &fs::filestat_bytes(&st))?)
    })())
}

/// `path_filestat_set_times(fd, flags, path, path_len, atim, mtim, fst_flags)`.
#[allow(clippy::too_many_arguments)]
pub fn path_filestat_set_times(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    flags: u32,
    path_ptr: u32,
    path_len: u32,
    atim: u64,
    mtim: u64,
    fst: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let (dir, writable) = dir_of(ctx, fd, rights::PATH_FILESTAT_SET_TIMES)?;
        let p = &path(mem, path_ptr, path_len)?;
        if !writable {
            return Err(Errno::Rofs);
        }
        let ts = times(atim, mtim, fst)?;
        let follow = flags & SYMLINK_FOLLOW != 0;
        let nofollow_split = if follow {
            None
        } else {
            split(dir, p, Errno::Inval).ok()
        };
        let r = match nofollow_split {
            // SAFETY: valid descriptor, C string and two timespecs.
            Some(s) => unsafe {
                libc::utimensat(
                    s.parent.as_raw_fd(),
                    s.name.as_ptr(),
                    ts.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            },
            None => {
                // Resolve beneath the mount (following symlinks there), then
                // set the times of what was found through its descriptor.
                let f = open_beneath(dir, &c_path(p)?, libc::O_PATH, 0)?;
                let proc = std::ffi::CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))
                    .expect("no NUL in a number");
                // SAFETY: valid C string and two timespecs.
                unsafe { libc::utimensat(libc::AT_FDCWD, proc.as_ptr(), ts.as_ptr(), 0) }
            }
        };
        check_ret(r as isize).map(|_| ())
    })())
}

fn writable_dir(ctx: &mut WasiCtx, fd: u32) -> Result<i32, Errno> {
    let (dir, writable) = dir_of(ctx, fd, 0)?;
    if !writable {
        return Err(Errno::Rofs);
    }
    Ok(dir)
}

/// `path_create_directory(fd, path, path_len)`.
pub fn path_create_directory(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    path_ptr: u32,
    path_len: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let dir = dir_of(ctx, fd, rights::PATH_CREATE_DIRECTORY)?.0;
        let p = &path(mem, path_ptr, path_len)?;
        let s = split(dir, p, Errno::Exist)?;
        writable_dir(ctx, fd)?;
        // SAFETY: valid descriptor and C string.
        let r = unsafe { libc::mkdirat(s.parent.as_raw_fd(), s.name.as_ptr(), 0o777) };
        check_ret(r as isize).map(|_| ())
    })())
}

fn unlink(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    path_ptr: u32,
    path_len: u32,
    dir_flag: i32,
) -> R {
    let dir = dir_of(
        ctx,
        fd,
        if dir_flag != 0 {
            rights::PATH_REMOVE_DIRECTORY
        } else {
            rights::PATH_UNLINK_FILE
        },
    )?
    .0;
    let p = &path(mem, path_ptr, path_len)?;
    let s = split(
        dir,
        p,
        if dir_flag != 0 {
            Errno::Inval
        } else {
            Errno::IsDir
        },
    )?;
    writable_dir(ctx, fd)?;
    // SAFETY: valid descriptor and C string.
    let r = unsafe { libc::unlinkat(s.parent.as_raw_fd(), s.name.as_ptr(), dir_flag) };
    check_ret(r as isize).map(|_| ())
}

/// `path_remove_directory(fd, path, path_len)`.
pub fn path_remove_directory(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    path_ptr: u32,
    path_len: u32,
) -> Result<Errno, WasiTrap> {
    done(unlink(ctx, mem, fd, path_ptr, path_len, libc::AT_REMOVEDIR))
}

/// `path_unlink_file(fd, path, path_len)`.
pub fn path_unlink_file(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    path_ptr: u32,
    path_len: u32,
) -> Result<Errno, WasiTrap> {
    done(unlink(ctx, mem, fd, path_ptr, path_len, 0))
}

/// `path_rename(fd, old_path, old_len, new_fd, new_path, new_len)`.
#[allow(clippy::too_many_arguments)]
pub fn path_rename(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    old: u32,
    old_len: u32,
    new_fd: u32,
    new: u32,
    new_len: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let d1 = dir_of(ctx, fd, rights::PATH_RENAME_SOURCE)?.0;
        let d2 = dir_of(ctx, new_fd, rights::PATH_RENAME_TARGET)?.0;
        let a = split(d1, &path(mem, old, old_len)?, Errno::Busy)?;
        let b = split(d2, &path(mem, new, new_len)?, Errno::Busy)?;
        writable_dir(ctx, fd)?;
        writable_dir(ctx, new_fd)?;
        // SAFETY: valid descriptors and C strings.
        let r = unsafe {
            libc::renameat(
                a.parent.as_raw_fd(),
                a.name.as_ptr(),
                b.parent.as_raw_fd(),
                b.name.as_ptr(),
            )
        };
        check_ret(r as isize).map(|_| ())
    })())
}

/// `path_link(old_fd, old_flags, old_path, old_len, new_fd, new_path, new_len)`.
#[allow(clippy::too_many_arguments)]
pub fn path_link(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    flags: u32,
    old: u32,
    old_len: u32,
    new_fd: u32,
    new: u32,
    new_len: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let d1 = dir_of(ctx, fd, rights::PATH_LINK_SOURCE)?.0;
        let d2 = dir_of(ctx, new_fd, rights::PATH_LINK_TARGET)?.0;
        let a = split(d1, &path(mem, old, old_len)?, Errno::Perm)?;
        let b = split(d2, &path(mem, new, new_len)?, Errno::Exist)?;
        writable_dir(ctx, new_fd)?;
        if flags & SYMLINK_FOLLOW != 0 {
            // Link what the symlink names, found beneath the mount.
            let f = open_beneath(a.parent.as_raw_fd(), &a.name, libc::O_PATH, 0)?;
            // SAFETY: valid descriptors and C strings.
            let r = unsafe {
                libc::linkat(
                    f.as_raw_fd(),
                    c"".as_ptr(),
                    b.parent.as_raw_fd(),
                    b.name.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            };
            return check_ret(r as isize).map(|_| ());
        }
        // SAFETY: valid descriptors and C strings.
        let r = unsafe {
            libc::linkat(
                a.parent.as_raw_fd(),
                a.name.as_ptr(),
                b.parent.as_raw_fd(),
                b.name.as_ptr(),
                0,
            )
        };
        check_ret(r as isize).map(|_| ())
    })())
}

/// `path_symlink(old_path, old_len, fd, new_path, new_len)`: creates a
/// symlink whose target is `old_path`. Absolute targets are refused with
/// `EPERM`: they could never be followed inside the sandbox, and would
/// point host programs that share the mount out of it.
pub fn path_symlink(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    old: u32,
    old_len: u32,
    fd: u32,
    new: u32,
    new_len: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let dir = dir_of(ctx, fd, rights::PATH_SYMLINK)?.0;
        let target = c_path(&path(mem, old, old_len)?)?;
        if target.to_bytes().first() == Some(&b'/') {
            return Err(Errno::Perm);
        }
        let s = split(dir, &path(mem, new, new_len)?, Errno::Exist)?;
        writable_dir(ctx, fd)?;
        // SAFETY: valid descriptor and C strings.
        let r = unsafe { libc::symlinkat(target.as_ptr(), s.parent.as_raw_fd(), s.name.as_ptr()) };
        check_ret(r as isize).map(|_| ())
    })())
}

/// `path_readlink(fd, path, path_len, buf, buf_len, bufused_out)`: the
/// target, cut to `buf_len` bytes.
#[allow(clippy::too_many_arguments)]
pub fn path_readlink(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    path_ptr: u32,
    path_len: u32,
    buf: u32,
    buf_len: u32,
    used: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        mem.range(used, 4)?;
        let dir = dir_of(ctx, fd, rights::PATH_READLINK)?.0;
        let s = split(dir, &path(mem, path_ptr, path_len)?, Errno::Inval)?;
        let dst = mem.ptr(buf, buf_len as u64)?;
        // SAFETY: `dst .. dst + buf_len` was checked to lie inside the
        // guest memory, alive for the whole host call; the kernel writes
        // at most `buf_len` bytes there.
        let r = unsafe {
            libc::readlinkat(
                s.parent.as_raw_fd(),
                s.name.as_ptr(),
                dst.cast(),
                buf_len as usize,
            )
        };
        let n = check_ret(r)?;
        Ok(mem.write_u32(used, n as u32)?)
    })())
}

// ---------------------------------------------------------------- poll, proc

const SUB_SIZE: u64 = 48;
const EVENT_SIZE: u64 = 32;

struct Sub {
    userdata: u64,
    tag: u8,
    /// For clocks: nanoseconds from the start of the call; for fds: the fd.
    clock_rel: u64,
    fd: u32,
    clock_err: Option<Errno>,
}

fn read_sub(mem: &GuestMemory<'_>, at: u32, rt: u64, mono: u64) -> Result<Sub, Errno> {
    let userdata = mem.read_u64(at)?;
    let tag = mem.read_u8(at + 8)?;
    let mut s = Sub {
        userdata,
        tag,
        clock_rel: 0,
        fd: 0,
        clock_err: None,
    };
    match tag {
        0 => {
            let id = mem.read_u32(at + 16)?;
            let timeout = mem.read_u64(at + 24)?;
            let abs = mem.read_u16(at + 40)? & 1 != 0;
            let base = match id {
                clockid::REALTIME => rt,
                clockid::MONOTONIC => mono,
                _ => {
                    s.clock_err = Some(Errno::Inval);
                    0
                }
            };
            s.clock_rel = if abs {
                timeout.saturating_sub(base)
            } else {
                timeout
            };
        }
        1 | 2 => s.fd = mem.read_u32(at + 16)?,
        _ => s.clock_err = Some(Errno::Inval),
    }
    Ok(s)
}

fn write_event(
    mem: &mut GuestMemory<'_>,
    at: u32,
    s: &Sub,
    err: Errno,
    nbytes: u64,
    hangup: bool,
) -> R {
    let mut b = [0u8; 32];
    b[0..8].copy_from_slice(&s.userdata.to_le_bytes());
    b[8..10].copy_from_slice(&err.raw().to_le_bytes());
    b[10] = s.tag;
    b[16..24].copy_from_slice(&nbytes.to_le_bytes());
    b[24..26].copy_from_slice(&(hangup as u16).to_le_bytes());
    Ok(mem.write_bytes(at, &b)?)
}

/// Readiness of an fd subscription now: None if it must wait (host stdin).
/// Whether an fd subscription is ready now (error, bytes available, hang
/// up), or which host descriptor to poll for it.
enum Readiness {
    Now(Errno, u64, bool),
    Host(i32, i16),
}

fn fd_ready(ctx: &mut WasiCtx, s: &Sub) -> Readiness {
    let read = s.tag == 1;
    let events = if read { libc::POLLIN } else { libc::POLLOUT };
    match ctx.fd_need(s.fd, rights::POLL_FD_READWRITE) {
        Err(e) => Readiness::Now(e, 0, false),
        Ok(Fd::Stdin) if read => match &ctx.stdin {
            Input::Empty => Readiness::Now(Errno::Success, 0, true),
            Input::Bytes(b) => {
                let left = (b.len() - ctx.stdin_pos) as u64;
                Readiness::Now(Errno::Success, left, left == 0)
            }
            Input::Inherit => Readiness::Host(0, events),
        },
        Ok(Fd::Stdout | Fd::Stderr) if !read => Readiness::Now(Errno::Success, 0, false),
        Ok(Fd::Stdin | Fd::Stdout | Fd::Stderr) => Readiness::Now(Errno::Badf, 0, false),
        Ok(Fd::File(_)) => Readiness::Now(Errno::Success, 0, false),
        Ok(Fd::Dir(_)) => Readiness::Now(Errno::Badf, 0, false),
        Ok(Fd::Listener(sock) | Fd::Socket(sock)) => Readiness::Host(sock.fd.as_raw_fd(), events),
    }
}

/// Most fd subscriptions of one `poll_oneoff` that wait on host
/// descriptors (sockets, host stdin); more is `EINVAL`, so a guest cannot
/// make the host allocate without bound.
const MAX_POLLED_FDS: usize = 1024;

/// `poll_oneoff(in, out, nsubscriptions, nevents_out)`: clock and fd
/// subscriptions. Files and buffered stdio are always ready; host stdin and
/// sockets are polled; otherwise the call sleeps until the earliest clock.
pub fn poll_oneoff(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    subs: u32,
    events: u32,
    n: u32,
    nevents: u32,
) -> Result<Errno, WasiTrap> {
    let probe = ctx.interrupt.clone();
    let mut interrupted = false;
    let r = done((|| {
        if n == 0 {
            return Err(Errno::Inval);
        }
        mem.range(subs, n as u64 * SUB_SIZE)?;
        mem.range(events, n as u64 * EVENT_SIZE)?;
        mem.range(nevents, 4)?;
        let (rt, mono) = (now(libc::CLOCK_REALTIME), now(libc::CLOCK_MONOTONIC));
        let mut count = 0u32;
        let mut min_clock: Option<u64> = None;
        // (subscription index, what to poll).
        let mut polled: Vec<(u32, libc::pollfd)> = Vec::new();
        for i in 0..n {
            let s = read_sub(mem, subs + i * SUB_SIZE as u32, rt, mono)?;
            let ready = if let Some(e) = s.clock_err {
                Some((e, 0, false))
            } else if s.tag == 0 {
                if s.clock_rel == 0 {
                    Some((Errno::Success, 0, false))
                } else {
                    min_clock = Some(min_clock.map_or(s.clock_rel, |m: u64| m.min(s.clock_rel)));
                    None
                }
            } else {
                match fd_ready(ctx, &s) {
                    Readiness::Now(e, nb, hup) => Some((e, nb, hup)),
                    Readiness::Host(fd, ev) => {
                        if polled.len() >= MAX_POLLED_FDS {
                            return Err(Errno::Inval);
                        }
                        polled.push((
                            i,
                            libc::pollfd {
                                fd,
                                events: ev,
                                revents: 0,
                            },
                        ));
                        None
                    }
                }
            };
            if let Some((e, nb, hup)) = ready {
                write_event(mem, events + count * EVENT_SIZE as u32, &s, e, nb, hup)?;
                count += 1;
            }
        }
        if count == 0 {
            let mut fds: Vec<libc::pollfd> = polled.iter().map(|p| p.1).collect();
            let mut any_ready = false;
            if !fds.is_empty() {
                let timeout = match min_clock {
                    None => -1,
                    Some(ns) => ns.div_ceil(1_000_000).min(i32::MAX as u64) as i32,
                };
                // With a probe, poll in slices so an interruption is seen.
                let start = now(libc::CLOCK_MONOTONIC);
                loop {
                    let slice = match (&probe, timeout) {
                        (None, t) => t,
                        (Some(_), -1) => POLL_SLICE_MS,
                        (Some(_), t) => {
                            let spent = (now(libc::CLOCK_MONOTONIC) - start) / 1_000_000;
                            (t as u64).saturating_sub(spent).min(POLL_SLICE_MS as u64) as i32
                        }
                    };
                    // SAFETY: `fds` is a live array of `fds.len()` pollfds.
                    let r =
                        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, slice) };
                    any_ready = r > 0;
                    if any_ready || slice == timeout || slice == 0 {
                        break;
                    }
                    if probe.as_ref().is_some_and(|f| f()) {
                        interrupted = true;
                        return Ok(());
                    }
                }
            } else if let Some(ns) = min_clock {
                if !sleep_interruptible(ns, probe.as_ref()) {
                    interrupted = true;
                    return Ok(());
                }
            }
            let slept = now(libc::CLOCK_MONOTONIC).saturating_sub(mono);
            for i in 0..n {
                let s = read_sub(mem, subs + i * SUB_SIZE as u32, rt, mono)?;
                let (fire, hup) = if s.tag == 0 {
                    let f = s.clock_rel <= slept || (!any_ready && Some(s.clock_rel) == min_clock);
                    (f, false)
                } else {
                    match polled.iter().position(|p| p.0 == i) {
                        Some(k) => {
                            let rev = fds[k].revents;
                            (rev != 0, rev & libc::POLLHUP != 0)
                        }
                        None => (false, false),
                    }
                };
                if fire {
                    write_event(
                        mem,
                        events + count * EVENT_SIZE as u32,
                        &s,
                        Errno::Success,
                        0,
                        hup,
                    )?;
                    count += 1;
                }
            }
        }
        Ok(mem.write_u32(nevents, count)?)
    })());
    if interrupted {
        return Err(WasiTrap::Interrupted);
    }
    r
}

/// Longest a blocking call waits between looks at the interrupt probe.
const POLL_SLICE_MS: i32 = 5;

/// Sleeps `ns` nanoseconds, in slices of [`POLL_SLICE_MS`] when there is a
/// probe; `false` if the probe fired first.
fn sleep_interruptible(ns: u64, probe: Option<&InterruptProbe>) -> bool {
    let Some(probe) = probe else {
        std::thread::sleep(std::time::Duration::from_nanos(ns));
        return true;
    };
    let end = std::time::Instant::now().checked_add(std::time::Duration::from_nanos(ns));
    loop {
        if probe() {
            return false;
        }
        let now = std::time::Instant::now();
        let left = match end {
            Some(e) if now >= e => return true,
            Some(e) => e - now,
            None => std::time::Duration::MAX,
        };
        std::thread::sleep(left.min(std::time::Duration::from_millis(POLL_SLICE_MS as u64)));
    }
}

/// `proc_exit(code)`: ends the guest with [`WasiTrap::Exit`].
pub fn proc_exit(
    ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    code: u32,
) -> Result<Errno, WasiTrap> {
    ctx.exit_code = Some(code as i32);
    Err(WasiTrap::Exit(code as i32))
}

/// `proc_raise(signal)`: not supported.
pub fn proc_raise(
    _ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    _sig: u32,
) -> Result<Errno, WasiTrap> {
    Ok(Errno::NotSup)
}

/// `sched_yield()`.
pub fn sched_yield(_ctx: &mut WasiCtx, _mem: &mut GuestMemory<'_>) -> Result<Errno, WasiTrap> {
    std::thread::yield_now();
    Ok(Errno::Success)
}

// ---------------------------------------------------------------- sockets
//
// Sockets come from the host (`WasiCtxBuilder::tcp_listener`, as
// wasmtime's `--tcplisten`): the guest accepts connections on them and
// serves each one. Every other descriptor is `ENOTSOCK` to the `sock_*`
// calls. Blocking waits (accept, receive, send) poll in slices so the
// call's deadline still ends them.

/// `riflags` of `sock_recv`.
const RECV_PEEK: u16 = 1;
const RECV_WAITALL: u16 = 2;
/// `roflags` of `sock_recv`: the data was truncated (datagrams only).
const RECV_DATA_TRUNCATED: u16 = 1;
/// `sdflags` of `sock_shutdown`.
const SHUT_RD: u32 = 1;
const SHUT_WR: u32 = 2;
/// `fdflags::NONBLOCK` as the `flags` of `sock_accept`.
const ACCEPT_NONBLOCK: u16 = fdflags::NONBLOCK;

/// How a blocking socket call failed: an errno for the guest, or the
/// call's deadline passed while it waited.
enum Blocked {
    E(Errno),
    Interrupted,
}

impl Blocked {
    /// For calls that can only answer an errno: an interrupted wait is
    /// `EINTR` (the deadline then stops the guest at its next check).
    fn errno(self) -> Errno {
        match self {
            Blocked::E(e) => e,
            Blocked::Interrupted => Errno::Intr,
        }
    }
}

impl<T: Into<Errno>> From<T> for Blocked {
    fn from(e: T) -> Blocked {
        Blocked::E(e.into())
    }
}

/// Waits until `fd` is ready for `events`, asking `probe` every few
/// milliseconds; `Err(true)` if the call was interrupted.
fn wait_ready(fd: i32, events: i16, probe: Option<&InterruptProbe>) -> Result<(), bool> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        let slice = if probe.is_some() { POLL_SLICE_MS } else { -1 };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, slice) };
        if r > 0 {
            return Ok(());
        }
        if r < 0 && Errno::last() != Errno::Intr {
            return Err(false);
        }
        if probe.is_some_and(|f| f()) {
            return Err(true);
        }
    }
}

/// Runs `op` (a syscall on a non-blocking host descriptor) until it does
/// not report `EAGAIN`, waiting for `events` between tries, unless the
/// guest asked for non-blocking I/O (`nonblock`: one try).
fn retry_blocking(
    fd: i32,
    events: i16,
    probe: Option<&InterruptProbe>,
    nonblock: bool,
    mut op: impl FnMut() -> isize,
) -> Result<usize, Blocked> {
    let guest_nonblocking = nonblock;
    loop {
        let r = op();
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = Errno::last();
        if e != Errno::Again || guest_nonblocking {
            return Err(Blocked::E(e));
        }
        match wait_ready(fd, events, probe) {
            Ok(()) => {}
            Err(true) => return Err(Blocked::Interrupted),
            Err(false) => return Err(Blocked::E(Errno::last())),
        }
    }
}

/// `sendmsg` of `iov` with `MSG_NOSIGNAL` (a peer that went away is `EPIPE`,
/// never a signal that kills the host).
fn send_iovs(fd: i32, iov: &[libc::iovec], flags: i32) -> Result<usize, Errno> {
    if iov.is_empty() {
        return Ok(0);
    }
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len();
    // SAFETY: the header points at `iov`, whose entries point at checked
    // guest ranges; no control data.
    check_ret(unsafe { libc::sendmsg(fd, &msg, flags | libc::MSG_NOSIGNAL) })
}

/// The socket behind `fd`: `ENOTSOCK` for anything else.
fn socket_of(ctx: &mut WasiCtx, fd: u32, need: u64) -> Result<(i32, bool), Errno> {
    match ctx.fd_need(fd, need)? {
        Fd::Socket(s) => Ok((s.fd.as_raw_fd(), s.nonblock)),
        Fd::Listener(_) => Err(Errno::NotConn),
        _ => Err(Errno::NotSock),
    }
}

/// Maps `Err(Blocked::Interrupted)` (interrupted) to the trap that ends the call.
fn sock_done(r: Result<(), Blocked>) -> Result<Errno, WasiTrap> {
    match r {
        Ok(()) => Ok(Errno::Success),
        Err(Blocked::E(e)) => Ok(e),
        Err(Blocked::Interrupted) => Err(WasiTrap::Interrupted),
    }
}

/// `sock_accept(fd, flags, fd_out)`: accepts a connection on a listener the
/// host handed in. Blocks (interruptibly) unless the listener or `flags`
/// ask for non-blocking; the new descriptor is non-blocking if `flags` say
/// so.
pub fn sock_accept(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    flags: u32,
    out: u32,
) -> Result<Errno, WasiTrap> {
    let probe = ctx.interrupt.clone();
    sock_done((|| {
        mem.range(out, 4)?;
        if flags as u16 & !ACCEPT_NONBLOCK != 0 {
            return Err(Blocked::E(Errno::Inval));
        }
        let (lfd, listener_nonblock) = match ctx.fd_need(fd, rights::SOCK_ACCEPT)? {
            Fd::Listener(l) => (l.fd.as_raw_fd(), l.nonblock),
            Fd::Socket(_) => return Err(Blocked::E(Errno::Inval)),
            _ => return Err(Blocked::E(Errno::NotSock)),
        };
        let fl = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        let nonblock = flags as u16 & ACCEPT_NONBLOCK != 0;
        let once = nonblock || listener_nonblock;
        let raw = retry_blocking(lfd, libc::POLLIN, probe.as_ref(), once, || {
            // SAFETY: plain syscall on an open listening socket; no address
            // is asked for.
            unsafe { libc::accept4(lfd, std::ptr::null_mut(), std::ptr::null_mut(), fl) as isize }
        })? as i32;
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let new = ctx.insert(Fd::Socket(SocketFd { fd, nonblock }))?;
        mem.write_u32(out, new)?;
        Ok(())
    })())
}

/// `sock_recv(fd, ri_data, ri_data_len, ri_flags, ro_datalen_out,
/// ro_flags_out)`: receives into the guest's iovecs (`RECV_PEEK`,
/// `RECV_WAITALL` honoured).
#[allow(clippy::too_many_arguments)]
pub fn sock_recv(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    ri: u32,
    ri_len: u32,
    flags: u32,
    len_out: u32,
    flags_out: u32,
) -> Result<Errno, WasiTrap> {
    let probe = ctx.interrupt.clone();
    sock_done((|| {
        mem.range(len_out, 4)?;
        mem.range(flags_out, 2)?;
        let flags = flags as u16;
        if flags & !(RECV_PEEK | RECV_WAITALL) != 0 {
            return Err(Blocked::E(Errno::Inval));
        }
        let (raw, nonblock) = socket_of(ctx, fd, rights::FD_READ)?;
        let mut host_flags = 0;
        if flags & RECV_PEEK != 0 {
            host_flags |= libc::MSG_PEEK;
        }
        if flags & RECV_WAITALL != 0 {
            host_flags |= libc::MSG_WAITALL;
        }
        let mut iov = std::mem::take(&mut ctx.iov_scratch);
        let r = host_iovs(&mut iov, mem, ri, ri_len)
            .map_err(Blocked::E)
            .and_then(|()| {
                if iov.is_empty() {
                    return Ok(0);
                }
                retry_blocking(raw, libc::POLLIN, probe.as_ref(), nonblock, || {
                    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
                    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                    msg.msg_iov = iov.as_mut_ptr();
                    msg.msg_iovlen = iov.len();
                    // SAFETY: the iovecs point at checked guest ranges; no control data.
                    unsafe { libc::recvmsg(raw, &mut msg, host_flags | libc::MSG_DONTWAIT) }
                })
            });
        iov.clear();
        ctx.iov_scratch = iov;
        let n = r?;
        mem.write_u32(len_out, n as u32)?;
        mem.write_bytes(flags_out, &0u16.to_le_bytes())?;
        let _ = RECV_DATA_TRUNCATED; // stream sockets never truncate
        Ok(())
    })())
}

/// `sock_send(fd, si_data, si_data_len, si_flags, so_datalen_out)`: sends
/// the guest's iovecs (no flags are defined).
pub fn sock_send(
    ctx: &mut WasiCtx,
    mem: &mut GuestMemory<'_>,
    fd: u32,
    si: u32,
    si_len: u32,
    flags: u32,
    len_out: u32,
) -> Result<Errno, WasiTrap> {
    let probe = ctx.interrupt.clone();
    sock_done((|| {
        mem.range(len_out, 4)?;
        if flags != 0 {
            return Err(Blocked::E(Errno::Inval));
        }
        let (raw, nonblock) = socket_of(ctx, fd, rights::FD_WRITE)?;
        let mut iov = std::mem::take(&mut ctx.iov_scratch);
        let r = host_iovs(&mut iov, mem, si, si_len)
            .map_err(Blocked::E)
            .and_then(|()| {
                retry_blocking(
                    raw,
                    libc::POLLOUT,
                    probe.as_ref(),
                    nonblock,
                    || match send_iovs(raw, &iov, libc::MSG_DONTWAIT) {
                        Ok(n) => n as isize,
                        Err(_) => -1,
                    },
                )
            });
        iov.clear();
        ctx.iov_scratch = iov;
        let n = r?;
        mem.write_u32(len_out, n as u32)?;
        Ok(())
    })())
}

/// `sock_shutdown(fd, how)`: shuts down the read side, the write side, or
/// both.
pub fn sock_shutdown(
    ctx: &mut WasiCtx,
    _mem: &mut GuestMemory<'_>,
    fd: u32,
    how: u32,
) -> Result<Errno, WasiTrap> {
    done((|| {
        let how = match how {
            SHUT_RD => libc::SHUT_RD,
            SHUT_WR => libc::SHUT_WR,
            h if h == SHUT_RD | SHUT_WR => libc::SHUT_RDWR,
            _ => return Err(Errno::Inval),
        };
        let (raw, _) = socket_of(ctx, fd, rights::SOCK_SHUTDOWN)?;
        // SAFETY: plain syscall on an open socket.
        check_ret(unsafe { libc::shutdown(raw, how) } as isize).map(|_| ())
    })())
}
