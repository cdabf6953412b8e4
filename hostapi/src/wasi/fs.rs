//! The virtual file system's host side: confined path lookup, directory
//! listings and stat conversion.

use super::types::{filetype, Errno};
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// One directory entry of a listing.
#[derive(Debug, Clone)]
pub(crate) struct DirEntry {
    pub(crate) ino: u64,
    pub(crate) ty: u8,
    pub(crate) name: Vec<u8>,
}

/// A fresh, unused temporary directory path (not yet created).
pub(crate) fn unique_temp_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "faaslet-scratch-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Opens a host directory to serve as a mount root.
pub(crate) fn open_dir(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// The longest guest path accepted (Linux's PATH_MAX).
pub(crate) const PATH_MAX: usize = 4096;

/// A guest path as a NUL-terminated string in a stack buffer, so path
/// calls do not allocate.
pub(crate) struct CPath {
    buf: [u8; PATH_MAX + 1],
    len: usize,
}

impl std::ops::Deref for CPath {
    type Target = CStr;
    fn deref(&self) -> &CStr {
        // SAFETY: `c_path` copied a path without NUL bytes and put one NUL
        // right after it.
        unsafe { CStr::from_bytes_with_nul_unchecked(&self.buf[..=self.len]) }
    }
}

/// Guest path bytes as a C string: no NUL inside, not empty, at most
/// [`PATH_MAX`] bytes.
pub(crate) fn c_path(path: &[u8]) -> Result<CPath, Errno> {
    if path.is_empty() {
        return Err(Errno::NoEnt);
    }
    if path.len() > PATH_MAX {
        return Err(Errno::NameTooLong);
    }
    if path.contains(&0) {
        return Err(Errno::Ilseq);
    }
    let mut p = CPath {
        buf: [0; PATH_MAX + 1],
        len: path.len(),
    };
    p.buf[..path.len()].copy_from_slice(path);
    Ok(p)
}

/// Whether paths are resolved manually (openat2 is missing or forced off).
static MANUAL: AtomicBool = AtomicBool::new(false);

/// Makes every later lookup in this process use the manual resolver
/// instead of `openat2(RESOLVE_BENEATH)` (which is used unless the kernel
/// lacks it). For tests and for hosts whose seccomp policy blocks openat2.
pub fn force_manual_resolution(on: bool) {
    MANUAL.store(on, Ordering::Relaxed);
}

/// Opens `path` beneath `dir`: any lookup — through `..`, an absolute
/// path, or a symlink — that would leave `dir` fails with `EPERM`.
pub(crate) fn open_beneath(dir: RawFd, path: &CStr, flags: i32, mode: u32) -> Result<File, Errno> {
    if MANUAL.load(Ordering::Relaxed) {
        return open_manual(dir, path.to_bytes(), flags, mode);
    }
    match openat2_beneath(dir, path, flags, mode) {
        Err(Errno::NoSys) => {
            MANUAL.store(true, Ordering::Relaxed);
            open_manual(dir, path.to_bytes(), flags, mode)
        }
        r => r,
    }
}

/// The most symlinks one lookup follows (as Linux).
const MAX_SYMLINKS: usize = 40;

/// `openat(dir, name, flags)` for one component (no `/`).
fn openat(dir: RawFd, name: &[u8], flags: i32, mode: u32) -> Result<File, Errno> {
    let name = c_path(name)?;
    // SAFETY: valid C string; the result is a new descriptor we own.
    let r = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if r < 0 {
        return Err(Errno::last());
    }
    // SAFETY: as above.
    Ok(unsafe { File::from_raw_fd(r) })
}

/// The symlink target of `name` in `dir`, or None if it is not a symlink.
fn symlink_target(dir: RawFd, name: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    let c = c_path(name)?;
    match stat_at(dir, &c, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {}
        Ok(_) | Err(Errno::NoEnt) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; PATH_MAX];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(Errno::last());
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

/// Resolves `path` beneath `dir` one component at a time: `..` may not
/// climb above `dir`, absolute paths and absolute symlinks are refused,
/// relative symlinks are expanded in place. Each step opens with
/// `O_NOFOLLOW`, so a symlink swapped in concurrently fails the open
/// rather than being followed.
fn open_manual(dir: RawFd, path: &[u8], flags: i32, mode: u32) -> Result<File, Errno> {
    use std::collections::VecDeque;
    if path.first() == Some(&b'/') {
        return Err(Errno::Perm);
    }
    let follow_last = flags & libc::O_NOFOLLOW == 0;
    let mut queue: VecDeque<Vec<u8>> = path.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
    let mut stack: Vec<File> = Vec::new();
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        let cur = stack.last().map_or(dir, |f| f.as_raw_fd());
        let last = queue.is_empty();
        match &c[..] {
            b"" | b"." => continue,
            b".." => {
                if stack.pop().is_none() {
                    return Err(Errno::Perm);
                }
                continue;
            }
            _ => {}
        }
        if !last || follow_last {
            if let Some(target) = symlink_target(cur, &c)? {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Errno::Loop);
                }
                if target.first() == Some(&b'/') {
                    return Err(Errno::Perm);
                }
                for part in target.split(|&b| b == b'/').rev() {
                    queue.push_front(part.to_vec());
                }
                continue;
            }
        }
        if last {
            return openat(cur, &c, flags | libc::O_NOFOLLOW, mode);
        }
        stack.push(openat(
            cur,
            &c,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?);
    }
    // The path ended in `.`, `..` or `/`: open the directory reached.
    let cur = stack.last().map_or(dir, |f| f.as_raw_fd());
    openat(cur, b".", flags & !libc::O_NOFOLLOW, mode)
}

fn openat2_beneath(dir: RawFd, path: &CStr, flags: i32, mode: u32) -> Result<File, Errno> {
    let mut how: libc::open_how =
        // SAFETY: open_how is a plain struct of integers; all-zero is valid.
        unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    // O_TMPFILE includes O_DIRECTORY's bit: test it whole.
    how.mode = if flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE {
        mode as u64
    } else {
        0
    };
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: `path` is a valid C string and `how` a valid open_how of
        // the size passed; the kernel only reads both.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            // SAFETY: the kernel returned a new descriptor that we own.
            return Ok(unsafe { File::from_raw_fd(r as RawFd) });
        }
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // EAGAIN: a concurrent rename raced the lookup; retry.
        if e != libc::EINTR && e != libc::EAGAIN {
            return Err(Errno::from_host(e));
        }
    }
}

/// A path split for the `*at` calls that must not follow the last
/// component: the parent directory (opened beneath the mount) and the last
/// component as a C string.
pub(crate) struct Split {
    pub(crate) parent: File,
    pub(crate) name: CPath,
}

/// Splits `path` (relative to `dir`) into an opened parent and the last
/// component. `.` and `..` as last component are refused with `errno_dot`
/// (they name a directory that must not be created, removed or renamed).
pub(crate) fn split(dir: RawFd, path: &[u8], errno_dot: Errno) -> Result<Split, Errno> {
    c_path(path)?;
    let trimmed_len = path.len() - path.iter().rev().take_while(|&&b| b == b'/').count();
    if trimmed_len == 0 {
        // "/" or "///": an absolute path, outside any mount.
        return Err(Errno::Perm);
    }
    let trimmed = &path[..trimmed_len];
    let (parent, last) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i + 1], &path[i + 1..]),
        None => (&b"."[..], path),
    };
    let last_name = &last[..last.len() - (path.len() - trimmed_len)];
    if last_name == b"." || last_name == b".." {
        return Err(errno_dot);
    }
    let parent_c = c_path(parent)?;
    let parent = open_beneath(dir, &parent_c, libc::O_PATH | libc::O_DIRECTORY, 0)?;
    Ok(Split {
        parent,
        name: c_path(last)?,
    })
}

pub(crate) fn filetype_of(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => filetype::DIRECTORY,
        libc::S_IFREG => filetype::REGULAR_FILE,
        libc::S_IFLNK => filetype::SYMBOLIC_LINK,
        libc::S_IFCHR => filetype::CHARACTER_DEVICE,
        libc::S_IFBLK => filetype::BLOCK_DEVICE,
        libc::S_IFSOCK => filetype::SOCKET_STREAM,
        _ => filetype::UNKNOWN,
    }
}

/// `fstatat(dir, name, flags)`.
pub(crate) fn stat_at(dir: RawFd, name: &CStr, flags: i32) -> Result<libc::stat, Errno> {
    // SAFETY: stat is plain data; all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid C string and `st` a valid out-pointer.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, flags) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(st)
}

/// `fstat(fd)`.
pub(crate) fn fstat(fd: RawFd) -> Result<libc::stat, Errno> {
    stat_at(fd, c"", libc::AT_EMPTY_PATH)
}

fn nanos(s: i64, ns: i64) -> u64 {
    (s as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ns as u64)
}

/// The 64-byte `filestat` of `st`.
pub(crate) fn filestat_bytes(st: &libc::stat) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&st.st_dev.to_le_bytes());
    b[8..16].copy_from_slice(&st.st_ino.to_le_bytes());
    b[16] = filetype_of(st.st_mode);
    b[24..32].copy_from_slice(&st.st_nlink.to_le_bytes());
    b[32..40].copy_from_slice(&(st.st_size as u64).to_le_bytes());
    b[40..48].copy_from_slice(&nanos(st.st_atime, st.st_atime_nsec).to_le_bytes());
    b[48..56].copy_from_slice(&nanos(st.st_mtime, st.st_mtime_nsec).to_le_bytes());
    b[56..64].copy_from_slice(&nanos(st.st_ctime, st.st_ctime_nsec).to_le_bytes());
    b
}

/// Lists directory `dir`: `.` and `..` first, then the entries in the
/// order the host returns them.
pub(crate) fn list_dir(dir: &File, out: &mut Vec<DirEntry>) -> Result<(), Errno> {
    out.clear();
    let st = fstat(dir.as_raw_fd())?;
    out.push(DirEntry {
        ino: st.st_ino,
        ty: filetype::DIRECTORY,
        name: b".".to_vec(),
    });
    let parent_ino = stat_at(dir.as_raw_fd(), c"..", 0)
        .map(|s| s.st_ino)
        .unwrap_or(0);
    out.push(DirEntry {
        ino: parent_ino,
        ty: filetype::DIRECTORY,
        name: b"..".to_vec(),
    });
    // A fresh descriptor for the stream: fdopendir takes ownership and its
    // position must not be shared with the guest's descriptor.
    // SAFETY: `dir` is an open descriptor; "." is a valid C string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c".".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` is a directory descriptor we own; on success the stream
    // owns it, on failure we close it.
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let e = Errno::last();
        // SAFETY: fdopendir failed, so we still own `fd`.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    loop {
        // SAFETY: `stream` is a live DIR*; readdir's entry stays valid until
        // the next readdir/closedir, and we copy what we need before that.
        let ent = unsafe { libc::readdir(stream) };
        if ent.is_null() {
            break;
        }
        // SAFETY: `ent` is non-null and points at a valid dirent whose
        // d_name is NUL-terminated.
        let (ino, dtype, name) = unsafe {
            (
                (*ent).d_ino,
                (*ent).d_type,
                CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes(),
            )
        };
        if name == b"." || name == b".." {
            continue;
        }
        let ty = match dtype {
            libc::DT_DIR => filetype::DIRECTORY,
            libc::DT_REG => filetype::REGULAR_FILE,
            libc::DT_LNK => filetype::SYMBOLIC_LINK,
            libc::DT_CHR => filetype::CHARACTER_DEVICE,
            libc::DT_BLK => filetype::BLOCK_DEVICE,
            libc::DT_SOCK => filetype::SOCKET_STREAM,
            _ => filetype::UNKNOWN,
        };
        out.push(DirEntry {
            ino,
            ty,
            name: name.to_vec(),
        });
    }
    // SAFETY: `stream` is live and closed exactly once.
    unsafe { libc::closedir(stream) };
    Ok(())
}
