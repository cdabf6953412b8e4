//! WASI preview1 constants and the [`Errno`] type.

use crate::memory::GuestError;
use std::io;

macro_rules! errnos {
    ($($name:ident = $v:literal $doc:literal,)*) => {
        /// A WASI preview1 error number, as returned to the guest.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Errno {
            $(#[doc = $doc] $name = $v,)*
        }
        impl Errno {
            /// The errno for a WASI number, if it is one.
            pub fn from_raw(v: u16) -> Option<Errno> {
                match v { $($v => Some(Errno::$name),)* _ => None }
            }
        }
    };
}

errnos! {
    Success = 0 "No error.", TooBig = 1 "Argument list too long.", Acces = 2 "Permission denied.",
    AddrInUse = 3 "Address in use.", AddrNotAvail = 4 "Address not available.",
    AfNoSupport = 5 "Address family not supported.", Again = 6 "Try again.",
    Already = 7 "Connection already in progress.", Badf = 8 "Bad file descriptor.",
    BadMsg = 9 "Bad message.", Busy = 10 "Device or resource busy.", Canceled = 11 "Operation canceled.",
    Child = 12 "No child processes.", ConnAborted = 13 "Connection aborted.",
    ConnRefused = 14 "Connection refused.", ConnReset = 15 "Connection reset.",
    Deadlk = 16 "Resource deadlock would occur.", DestAddrReq = 17 "Destination address required.",
    Dom = 18 "Argument out of domain.", Dquot = 19 "Quota exceeded.", Exist = 20 "File exists.",
    Fault = 21 "Bad address.", Fbig = 22 "File too large.", HostUnreach = 23 "Host is unreachable.",
    Idrm = 24 "Identifier removed.", Ilseq = 25 "Illegal byte sequence.",
    InProgress = 26 "Operation in progress.", Intr = 27 "Interrupted function.",
    Inval = 28 "Invalid argument.", Io = 29 "I/O error.", IsConn = 30 "Socket is connected.",
    IsDir = 31 "Is a directory.", Loop = 32 "Too many levels of symbolic links.",
    Mfile = 33 "File descriptor value too large.", Mlink = 34 "Too many links.",
    MsgSize = 35 "Message too large.", Multihop = 36 "Multihop attempted.",
    NameTooLong = 37 "Filename too long.", NetDown = 38 "Network is down.",
    NetReset = 39 "Connection aborted by network.", NetUnreach = 40 "Network unreachable.",
    Nfile = 41 "Too many files open in system.", NoBufs = 42 "No buffer space available.",
    NoDev = 43 "No such device.", NoEnt = 44 "No such file or directory.",
    NoExec = 45 "Executable file format error.", NoLck = 46 "No locks available.",
    NoLink = 47 "Link has been severed.", NoMem = 48 "Not enough space.",
    NoMsg = 49 "No message of the desired type.", NoProtoOpt = 50 "Protocol not available.",
    NoSpc = 51 "No space left on device.", NoSys = 52 "Function not supported.",
    NotConn = 53 "The socket is not connected.", NotDir = 54 "Not a directory.",
    NotEmpty = 55 "Directory not empty.", NotRecoverable = 56 "State not recoverable.",
    NotSock = 57 "Not a socket.", NotSup = 58 "Not supported.", NoTty = 59 "Inappropriate I/O control operation.",
    Nxio = 60 "No such device or address.", Overflow = 61 "Value too large.",
    OwnerDead = 62 "Previous owner died.", Perm = 63 "Operation not permitted.",
    Pipe = 64 "Broken pipe.", Proto = 65 "Protocol error.", ProtoNoSupport = 66 "Protocol not supported.",
    ProtoType = 67 "Protocol wrong type for socket.", Range = 68 "Result too large.",
    Rofs = 69 "Read-only file system.", Spipe = 70 "Invalid seek.", Srch = 71 "No such process.",
    Stale = 72 "Stale file handle.", TimedOut = 73 "Connection timed out.",
    TxtBsy = 74 "Text file busy.", Xdev = 75 "Cross-device link.",
    NotCapable = 76 "Extension: capabilities insufficient.",
}

impl Errno {
    /// The raw number.
    pub fn raw(self) -> u16 {
        self as u16
    }

    /// The WASI errno for a host (Linux) errno.
    pub fn from_host(e: i32) -> Errno {
        use libc::*;
        match e {
            0 => Errno::Success,
            E2BIG => Errno::TooBig,
            EACCES => Errno::Acces,
            EAGAIN => Errno::Again,
            EBADF => Errno::Badf,
            EBUSY => Errno::Busy,
            EDQUOT => Errno::Dquot,
            EEXIST => Errno::Exist,
            EFAULT => Errno::Fault,
            EFBIG => Errno::Fbig,
            EILSEQ => Errno::Ilseq,
            EINTR => Errno::Intr,
            EINVAL => Errno::Inval,
            EIO => Errno::Io,
            EISDIR => Errno::IsDir,
            ELOOP => Errno::Loop,
            EMFILE => Errno::Mfile,
            EMLINK => Errno::Mlink,
            ENAMETOOLONG => Errno::NameTooLong,
            ENFILE => Errno::Nfile,
            ENODEV => Errno::NoDev,
            ENOENT => Errno::NoEnt,
            ENOMEM => Errno::NoMem,
            ENOSPC => Errno::NoSpc,
            ENOSYS => Errno::NoSys,
            ENOTDIR => Errno::NotDir,
            ENOTEMPTY => Errno::NotEmpty,
            ENOTSUP => Errno::NotSup,
            ENOTTY => Errno::NoTty,
            ENXIO => Errno::Nxio,
            EOVERFLOW => Errno::Overflow,
            EPERM => Errno::Perm,
            EPIPE => Errno::Pipe,
            ERANGE => Errno::Range,
            EROFS => Errno::Rofs,
            ESPIPE => Errno::Spipe,
            ETXTBSY => Errno::TxtBsy,
            // openat2 with RESOLVE_BENEATH reports an escape as EXDEV: to the
            // guest that is a path it may not use, as in wasmtime.
            EXDEV => Errno::Perm,
            _ => Errno::Io,
        }
    }

    /// The errno of the calling thread's last host error.
    pub fn last() -> Errno {
        Errno::from_host(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Errno {
        match e.raw_os_error() {
            Some(n) => Errno::from_host(n),
            None => Errno::Io,
        }
    }
}

impl From<GuestError> for Errno {
    fn from(e: GuestError) -> Errno {
        match e {
            GuestError::OutOfBounds { .. } => Errno::Fault,
            GuestError::Utf8 { .. } => Errno::Ilseq,
            GuestError::Unterminated { .. } => Errno::Inval,
            GuestError::NoMemory { .. } => Errno::NoMem,
        }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?} ({})", *self as u16)
    }
}

/// File types (`filetype`).
#[allow(missing_docs)]
pub mod filetype {
    pub const UNKNOWN: u8 = 0;
    pub const BLOCK_DEVICE: u8 = 1;
    pub const CHARACTER_DEVICE: u8 = 2;
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR_FILE: u8 = 4;
    pub const SOCKET_DGRAM: u8 = 5;
    pub const SOCKET_STREAM: u8 = 6;
    pub const SYMBOLIC_LINK: u8 = 7;
}

/// `oflags` of `path_open`.
#[allow(missing_docs)]
pub mod oflags {
    pub const CREAT: u16 = 1;
    pub const DIRECTORY: u16 = 2;
    pub const EXCL: u16 = 4;
    pub const TRUNC: u16 = 8;
}

/// `fdflags`.
#[allow(missing_docs)]
pub mod fdflags {
    pub const APPEND: u16 = 1;
    pub const DSYNC: u16 = 2;
    pub const NONBLOCK: u16 = 4;
    pub const RSYNC: u16 = 8;
    pub const SYNC: u16 = 16;
}

/// `rights` bits.
#[allow(missing_docs)]
pub mod rights {
    pub const FD_DATASYNC: u64 = 1 << 0;
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    pub const FD_SYNC: u64 = 1 << 4;
    pub const FD_TELL: u64 = 1 << 5;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_ADVISE: u64 = 1 << 7;
    pub const FD_ALLOCATE: u64 = 1 << 8;
    pub const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    pub const PATH_CREATE_FILE: u64 = 1 << 10;
    pub const PATH_LINK_SOURCE: u64 = 1 << 11;
    pub const PATH_LINK_TARGET: u64 = 1 << 12;
    pub const PATH_OPEN: u64 = 1 << 13;
    pub const FD_READDIR: u64 = 1 << 14;
    pub const PATH_READLINK: u64 = 1 << 15;
    pub const PATH_RENAME_SOURCE: u64 = 1 << 16;
    pub const PATH_RENAME_TARGET: u64 = 1 << 17;
    pub const PATH_FILESTAT_GET: u64 = 1 << 18;
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    pub const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    pub const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    pub const PATH_SYMLINK: u64 = 1 << 24;
    pub const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    pub const PATH_UNLINK_FILE: u64 = 1 << 26;
    pub const POLL_FD_READWRITE: u64 = 1 << 27;
    pub const SOCK_SHUTDOWN: u64 = 1 << 28;
    pub const SOCK_ACCEPT: u64 = 1 << 29;
    /// Every right defined by preview1.
    pub const ALL: u64 = (1 << 30) - 1;
    /// Rights that need write access to a file.
    pub const WRITE: u64 = FD_DATASYNC | FD_WRITE | FD_ALLOCATE | FD_FILESTAT_SET_SIZE;
    /// Rights that need read access.
    pub const READ: u64 = FD_READ | FD_READDIR;
    /// Every right that applies to a regular file (or a character device).
    pub const FILE: u64 = FD_DATASYNC
        | FD_READ
        | FD_SEEK
        | FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_TELL
        | FD_WRITE
        | FD_ADVISE
        | FD_ALLOCATE
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_SIZE
        | FD_FILESTAT_SET_TIMES
        | POLL_FD_READWRITE;
    /// Every right that applies to a directory: no reading, writing,
    /// seeking or resizing of the descriptor itself.
    pub const DIRECTORY: u64 = FD_FDSTAT_SET_FLAGS
        | FD_SYNC
        | FD_ADVISE
        | PATH_CREATE_DIRECTORY
        | PATH_CREATE_FILE
        | PATH_LINK_SOURCE
        | PATH_LINK_TARGET
        | PATH_OPEN
        | FD_READDIR
        | PATH_READLINK
        | PATH_RENAME_SOURCE
        | PATH_RENAME_TARGET
        | PATH_FILESTAT_GET
        | PATH_FILESTAT_SET_SIZE
        | PATH_FILESTAT_SET_TIMES
        | FD_FILESTAT_GET
        | FD_FILESTAT_SET_TIMES
        | PATH_SYMLINK
        | PATH_REMOVE_DIRECTORY
        | PATH_UNLINK_FILE
        | POLL_FD_READWRITE;
    /// What descriptors opened beneath a directory may have.
    pub const DIRECTORY_INHERITING: u64 = DIRECTORY | FILE;
    /// Every right that applies to a stream socket.
    pub const SOCKET: u64 = FD_READ
        | FD_WRITE
        | FD_FDSTAT_SET_FLAGS
        | FD_FILESTAT_GET
        | POLL_FD_READWRITE
        | SOCK_SHUTDOWN
        | SOCK_ACCEPT;
}

/// Clock ids.
#[allow(missing_docs)]
pub mod clockid {
    pub const REALTIME: u32 = 0;
    pub const MONOTONIC: u32 = 1;
    pub const PROCESS_CPUTIME_ID: u32 = 2;
    pub const THREAD_CPUTIME_ID: u32 = 3;
}

/// `fstflags` of the set_times calls.
#[allow(missing_docs)]
pub mod fstflags {
    pub const ATIM: u16 = 1;
    pub const ATIM_NOW: u16 = 2;
    pub const MTIM: u16 = 4;
    pub const MTIM_NOW: u16 = 8;
}
