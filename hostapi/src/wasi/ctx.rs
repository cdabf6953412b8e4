//! [`WasiCtx`]: one guest's WASI state (arguments, environment, the
//! descriptor table, mounts), its builder, and the errors of setting it up.

use super::fs;
use super::types::{rights, Errno};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// How a call ended abnormally: the guest must stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WasiTrap {
    /// The guest called `proc_exit` with this code.
    #[error("wasi exit: {0}")]
    Exit(i32),
    /// The host cannot continue the guest.
    #[error("wasi host error: {0}")]
    Fatal(String),
    /// A blocking call (a `poll_oneoff` sleep or stdin wait) was cut short
    /// because the [interrupt probe](WasiCtx::set_interrupt_probe) fired.
    #[error("interrupted while blocked in a WASI call")]
    Interrupted,
}

/// Asked while a WASI call blocks: `true` ends the call with
/// [`WasiTrap::Interrupted`]. The engine wires this to the store's epoch
/// deadline, so timeouts also end guests that sleep.
pub type InterruptProbe = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// Whether a mount may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMode {
    /// Reads only; writes fail with `EROFS`.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

/// Where the guest's standard output or error goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// To the host process's own descriptor.
    Inherit,
    /// Into a buffer in the context ([`WasiCtx::stdout_bytes`]).
    Capture,
    /// Nowhere.
    Discard,
}

/// Where the guest's standard input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Nothing: reads return end of file.
    Empty,
    /// These bytes.
    Bytes(Vec<u8>),
    /// The host process's standard input.
    Inherit,
}

/// An error setting up a [`WasiCtx`].
#[derive(Debug, thiserror::Error)]
pub enum WasiSetupError {
    /// A mounted host directory could not be opened.
    #[error("cannot mount {path}: {source}")]
    Mount {
        /// The host directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The scratch directory could not be created.
    #[error("cannot create scratch directory {path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A listening socket handed to the guest could not be set up.
    #[error("tcp listener: {0}")]
    Listener(std::io::Error),
    /// An argument or environment entry contains a NUL byte.
    #[error("argument or environment entry contains a NUL byte: {0:?}")]
    Nul(String),
}

pub(crate) struct DirFd {
    pub(crate) file: File,
    pub(crate) writable: bool,
    /// The guest path, for preopens.
    pub(crate) preopen: Option<String>,
    /// A listing taken at the first `fd_readdir` (cookie 0 retakes it).
    pub(crate) entries: Vec<fs::DirEntry>,
}

pub(crate) struct FileFd {
    pub(crate) file: File,
    pub(crate) read: bool,
    pub(crate) write: bool,
    /// Whether the file's mount is writable (for metadata changes).
    pub(crate) mount_writable: bool,
}

/// One entry of the descriptor table: what it is and the rights the
/// guest holds on it. Rights only ever shrink (`fd_fdstat_set_rights`), and
/// a call that needs a right the entry lacks fails with `ENOTCAPABLE`.
pub(crate) struct Slot {
    pub(crate) fd: Fd,
    pub(crate) base: u64,
    pub(crate) inheriting: u64,
}

impl Slot {
    /// Every right an entry of this kind can hold.
    pub(crate) fn max_rights(fd: &Fd) -> u64 {
        match fd {
            Fd::Stdin => rights::FILE & !rights::WRITE,
            Fd::Stdout | Fd::Stderr => rights::FILE & !rights::READ,
            Fd::Dir(_) => rights::DIRECTORY,
            Fd::Listener(_) => {
                rights::SOCK_ACCEPT
                    | rights::POLL_FD_READWRITE
                    | rights::FD_FDSTAT_SET_FLAGS
                    | rights::FD_FILESTAT_GET
            }
            Fd::Socket(_) => rights::SOCKET & !rights::SOCK_ACCEPT,
            Fd::File(f) => {
                let mut r = rights::FILE;
                if !f.read {
                    r &= !rights::READ;
                }
                if !f.write {
                    r &= !rights::WRITE;
                }
                r
            }
        }
    }

    /// An entry with every right that applies to its kind.
    pub(crate) fn new(fd: Fd) -> Slot {
        let base = Slot::max_rights(&fd);
        let inheriting = match &fd {
            Fd::Dir(_) => rights::DIRECTORY_INHERITING,
            _ => 0,
        };
        Slot {
            fd,
            base,
            inheriting,
        }
    }
}

pub(crate) enum Fd {
    Stdin,
    Stdout,
    Stderr,
    File(FileFd),
    Dir(DirFd),
    /// A listening TCP socket the host handed in (`--tcplisten`).
    Listener(SocketFd),
    /// A connection accepted from a listener.
    Socket(SocketFd),
}

/// A socket. The host descriptor is always non-blocking, so no call can
/// block a thread beyond the call's deadline (blocking calls wait in
/// slices, asking the interrupt probe); whether the *guest* asked for
/// non-blocking I/O is `nonblock`.
pub(crate) struct SocketFd {
    pub(crate) fd: std::os::fd::OwnedFd,
    pub(crate) nonblock: bool,
}

/// Default for [`WasiCtxBuilder::capture_limit`].
pub const DEFAULT_CAPTURE_LIMIT: usize = 64 << 20;

/// The most descriptors one guest may hold by default: 1,024, or a quarter
/// of the process's soft `RLIMIT_NOFILE` if that is less (at least 16), so
/// that one guest cannot take the descriptors every other Faaslet of the
/// process (and the host itself) needs. A guest opening more gets `EMFILE`.
pub fn default_max_open_fds() -> usize {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the `rlimit` we own.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        usize::try_from(rl.rlim_cur).unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    (cur / 4).clamp(16, 1024)
}

/// Builds a [`WasiCtx`].
#[derive(Debug)]
pub struct WasiCtxBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<(PathBuf, String, MountMode)>,
    listeners: Vec<std::net::TcpListener>,
    scratch: Option<(Option<PathBuf>, String)>,
    stdin: Input,
    stdout: Output,
    stderr: Output,
    capture_limit: usize,
    max_open_fds: Option<usize>,
}

/// The WASI state of one guest.
pub struct WasiCtx {
    pub(crate) args: Vec<u8>,
    pub(crate) argc: u32,
    pub(crate) env: Vec<u8>,
    pub(crate) envc: u32,
    pub(crate) fds: Vec<Option<Slot>>,
    pub(crate) stdin: Input,
    pub(crate) stdin_pos: usize,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
    pub(crate) stdout_buf: Vec<u8>,
    pub(crate) stderr_buf: Vec<u8>,
    /// Most bytes kept per captured stream.
    pub(crate) capture_limit: usize,
    /// Most entries the descriptor table may have (see
    /// [`WasiCtxBuilder::max_open_fds`]).
    max_fds: usize,
    /// Reused for readv/writev so calls do not allocate.
    pub(crate) iov_scratch: Vec<libc::iovec>,
    scratch_dir: Option<(PathBuf, bool)>,
    pub(crate) exit_code: Option<i32>,
    /// Asked every few milliseconds while a call blocks.
    pub(crate) interrupt: Option<InterruptProbe>,
}

impl std::fmt::Debug for WasiCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiCtx")
            .field("argc", &self.argc)
            .field("envc", &self.envc)
            .field("fds", &self.fds.iter().filter(|f| f.is_some()).count())
            .field("scratch", &self.scratch_dir)
            .finish()
    }
}

// SAFETY: the only non-Send fields are the `iovec` pointers in
// `iov_scratch`, which are cleared after every call and never dereferenced
// outside the call that filled them.
unsafe impl Send for WasiCtx {}

impl Default for WasiCtxBuilder {
    fn default() -> Self {
        WasiCtxBuilder {
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            listeners: Vec::new(),
            scratch: None,
            stdin: Input::Empty,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            capture_limit: DEFAULT_CAPTURE_LIMIT,
            max_open_fds: None,
        }
    }
}

impl WasiCtxBuilder {
    /// Appends an argument (the first is the program name).
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Appends arguments.
    pub fn args<S: Into<String>>(mut self, a: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Mounts host directory `host` at guest path `guest` (a preopen).
    pub fn mount(
        mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<String>,
        mode: MountMode,
    ) -> Self {
        self.mounts.push((host.into(), guest.into(), mode));
        self
    }

    /// Gives the guest a writable scratch directory mounted at `guest`: a
    /// fresh temporary directory, removed when the context is dropped.
    pub fn scratch(mut self, guest: impl Into<String>) -> Self {
        self.scratch = Some((None, guest.into()));
        self
    }

    /// Like [`scratch`](Self::scratch) but in `host` (created if missing,
    /// and left in place on drop).
    pub fn scratch_at(mut self, host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        self.scratch = Some((Some(host.into()), guest.into()));
        self
    }

    /// Hands the guest a listening TCP socket, as wasmtime's `--tcplisten`:
    /// listeners take the descriptors right after stdio (3, 4, ...), before
    /// the mounts, in the order given. The guest accepts connections with
    /// `sock_accept` and serves them with `sock_recv`/`sock_send` (or
    /// `fd_read`/`fd_write`) and `sock_shutdown`.
    pub fn tcp_listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Standard input.
    pub fn stdin(mut self, input: Input) -> Self {
        self.stdin = input;
        self
    }

    /// Standard output.
    pub fn stdout(mut self, out: Output) -> Self {
        self.stdout = out;
        self
    }

    /// Standard error.
    pub fn stderr(mut self, out: Output) -> Self {
        self.stderr = out;
        self
    }

    /// The most bytes kept per captured stream ([`Output::Capture`]);
    /// further writes are short, then fail with `ENOSPC`. Default 64 MiB.
    pub fn capture_limit(mut self, bytes: usize) -> Self {
        self.capture_limit = bytes;
        self
    }

    /// The most descriptors the guest may hold, stdio, listeners and
    /// mounts included (default [`default_max_open_fds`]); opening more
    /// fails with `EMFILE`.
    pub fn max_open_fds(mut self, n: usize) -> Self {
        self.max_open_fds = Some(n);
        self
    }

    /// Opens the mounts and creates the scratch directory.
    pub fn build(self) -> Result<WasiCtx, WasiSetupError> {
        let mut args = Vec::new();
        for a in &self.args {
            if a.contains('\0') {
                return Err(WasiSetupError::Nul(a.clone()));
            }
            args.extend_from_slice(a.as_bytes());
            args.push(0);
        }
        let mut env = Vec::new();
        for (k, v) in &self.env {
            if k.contains('\0') || v.contains('\0') || k.contains('=') {
                return Err(WasiSetupError::Nul(format!("{k}={v}")));
            }
            env.extend_from_slice(format!("{k}={v}").as_bytes());
            env.push(0);
        }
        let mut fds: Vec<Option<Slot>> = [Fd::Stdin, Fd::Stdout, Fd::Stderr]
            .into_iter()
            .map(|f| Some(Slot::new(f)))
            .collect();
        for l in self.listeners {
            l.set_nonblocking(true).map_err(WasiSetupError::Listener)?;
            fds.push(Some(Slot::new(Fd::Listener(SocketFd {
                fd: l.into(),
                nonblock: false,
            }))));
        }
        let mut scratch_dir = None;
        let mut mounts = self.mounts;
        if let Some((host, guest)) = self.scratch {
            let (path, owned) = match host {
                Some(p) => (p, false),
                None => (fs::unique_temp_dir(), true),
            };
            std::fs::create_dir_all(&path).map_err(|source| WasiSetupError::Scratch {
                path: path.clone(),
                source,
            })?;
            scratch_dir = Some((path.clone(), owned));
            mounts.push((path, guest, MountMode::ReadWrite));
        }
        for (host, guest, mode) in mounts {
            let file = fs::open_dir(&host)
                .map_err(|source| WasiSetupError::Mount { path: host, source })?;
            fds.push(Some(Slot::new(Fd::Dir(DirFd {
                file,
                writable: mode == MountMode::ReadWrite,
                preopen: Some(guest),
                entries: Vec::new(),
            }))));
        }
        Ok(WasiCtx {
            argc: self.args.len() as u32,
            args,
            envc: self.env.len() as u32,
            env,
            fds,
            stdin: self.stdin,
            stdin_pos: 0,
            stdout: self.stdout,
            stderr: self.stderr,
            stdout_buf: Vec::new(),
            stderr_buf: Vec::new(),
            capture_limit: self.capture_limit,
            max_fds: self.max_open_fds.unwrap_or_else(default_max_open_fds),
            iov_scratch: Vec::with_capacity(16),
            scratch_dir,
            exit_code: None,
            interrupt: None,
        })
    }
}

impl WasiCtx {
    /// A builder with no arguments, environment or mounts, empty stdin and
    /// inherited stdout/stderr.
    pub fn builder() -> WasiCtxBuilder {
        WasiCtxBuilder::default()
    }

    /// Captured standard output ([`Output::Capture`]).
    pub fn stdout_bytes(&self) -> &[u8] {
        &self.stdout_buf
    }

    /// Captured standard error ([`Output::Capture`]).
    pub fn stderr_bytes(&self) -> &[u8] {
        &self.stderr_buf
    }

    /// Takes the captured standard output, leaving it empty.
    pub fn take_stdout(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.stdout_buf)
    }

    /// Takes the captured standard error, leaving it empty.
    pub fn take_stderr(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.stderr_buf)
    }

    /// Replaces the guest's standard input (reads start again at its
    /// beginning), e.g. with a new call's input.
    pub fn set_stdin(&mut self, input: Input) {
        self.stdin = input;
        self.stdin_pos = 0;
    }

    /// Sets what blocking calls ask, every few milliseconds, to learn that
    /// they must give up (see [`InterruptProbe`]). Without one they block
    /// for as long as the guest asked.
    pub fn set_interrupt_probe(&mut self, probe: Option<InterruptProbe>) {
        self.interrupt = probe;
    }

    /// Whether a probe is set.
    pub fn has_interrupt_probe(&self) -> bool {
        self.interrupt.is_some()
    }

    /// The code the guest passed to `proc_exit`, if it did.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// The host path of the scratch directory, if there is one.
    pub fn scratch_dir(&self) -> Option<&Path> {
        self.scratch_dir.as_ref().map(|(p, _)| p.as_path())
    }

    /// Number of open descriptors (including stdio and preopens).
    pub fn open_fds(&self) -> usize {
        self.fds.iter().filter(|f| f.is_some()).count()
    }

    pub(crate) fn fd(&mut self, fd: u32) -> Result<&mut Fd, Errno> {
        Ok(&mut self.slot(fd)?.fd)
    }

    /// Descriptor `fd`'s table entry.
    pub(crate) fn slot(&mut self, fd: u32) -> Result<&mut Slot, Errno> {
        self.fds
            .get_mut(fd as usize)
            .and_then(|f| f.as_mut())
            .ok_or(Errno::Badf)
    }

    /// Descriptor `fd`, if it holds every right in `need` (`ENOTCAPABLE`
    /// otherwise, `EBADF` if it is not open).
    ///
    /// Only a right the entry's kind could hold but the guest dropped gives
    /// `ENOTCAPABLE`; a right that does not apply to the kind at all (reading
    /// a directory) is left to the call, which answers as for any
    /// descriptor of that kind (`EISDIR`, `EBADF`...).
    pub(crate) fn fd_need(&mut self, fd: u32, need: u64) -> Result<&mut Fd, Errno> {
        let slot = self.slot(fd)?;
        let dropped = Slot::max_rights(&slot.fd) & !slot.base;
        if need & dropped != 0 {
            return Err(Errno::NotCapable);
        }
        Ok(&mut slot.fd)
    }

    /// Enters `fd` with every right that applies to it.
    pub(crate) fn insert(&mut self, fd: Fd) -> Result<u32, Errno> {
        self.insert_slot(Slot::new(fd))
    }

    /// Enters a table entry.
    pub(crate) fn insert_slot(&mut self, fd: Slot) -> Result<u32, Errno> {
        // Free entries are reused first, so the table's length is the most
        // descriptors ever open at once: capping it caps them.
        if let Some(i) = self.fds.iter().position(|f| f.is_none()) {
            self.fds[i] = Some(fd);
            return Ok(i as u32);
        }
        if self.fds.len() >= self.max_fds {
            return Err(Errno::Mfile);
        }
        self.fds.push(Some(fd));
        Ok(self.fds.len() as u32 - 1)
    }
}

impl Drop for WasiCtx {
    fn drop(&mut self) {
        self.fds.clear();
        if let Some((path, true)) = &self.scratch_dir {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

impl Fd {
    pub(crate) fn raw(&self) -> Option<i32> {
        match self {
            Fd::File(f) => Some(f.file.as_raw_fd()),
            Fd::Dir(d) => Some(d.file.as_raw_fd()),
            Fd::Listener(s) | Fd::Socket(s) => Some(s.fd.as_raw_fd()),
            _ => None,
        }
    }
}
