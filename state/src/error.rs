//! [`StateError`]: why a state operation failed.

/// Why a state operation failed. Every limit a guest can hit has its own
/// variant naming the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// A value would exceed [`MAX_VALUE_LEN`](crate::limits::MAX_VALUE_LEN).
    #[error("state value of {len} bytes is too large")]
    ValueTooLarge {
        /// The requested length.
        len: u64,
    },
    /// Growing a value would take the user past their state quota.
    #[error(
        "state quota of user {user:?} exceeded: {requested} more bytes requested, \
         {used} of {quota} in use (limit: state quota)"
    )]
    QuotaExceeded {
        /// The user.
        user: String,
        /// Bytes the operation needed.
        requested: u64,
        /// Bytes already declared.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// A key longer than the limit.
    #[error("state key of {len} bytes is longer than the limit of {max} (limit: key length)")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A user name that cannot name a state namespace.
    #[error("invalid state user {0:?} (1 to 64 bytes, no '/')")]
    BadUser(String),
    /// The user already has the maximum number of keys.
    #[error("user {user:?} already has {max} state keys (limit: key count)")]
    TooManyKeys {
        /// The user.
        user: String,
        /// The limit.
        max: usize,
    },
    /// An appended-state list is full.
    #[error("appended state {key:?} already has {max} elements (limit: append count)")]
    TooManyAppends {
        /// The key.
        key: String,
        /// The limit.
        max: u64,
    },
    /// An appended element larger than the limit.
    #[error("appended element of {len} bytes exceeds the limit of {max} (limit: append bytes)")]
    AppendTooLarge {
        /// The element's length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The host could not allocate memory for the operation.
    #[error("out of host memory for {bytes} bytes of state")]
    OutOfMemory {
        /// Bytes asked for.
        bytes: u64,
    },
    /// Fewer appended elements than asked for.
    #[error("{wanted} appended elements requested, {have} present")]
    NotEnoughAppended {
        /// Requested.
        wanted: u64,
        /// Present.
        have: u64,
    },
    /// A buffer too small for the data.
    #[error("buffer of {len} bytes is too small, {needed} needed")]
    BufferTooSmall {
        /// Needed.
        needed: u64,
        /// Given.
        len: u64,
    },
    /// The global tier failed (unreachable, restarted, protocol error).
    #[error("global state tier: {op} failed: {cause}")]
    Global {
        /// The operation (`pull`, `push`, `lock`, ...).
        op: &'static str,
        /// What went wrong.
        cause: String,
    },
    /// A global lock was not granted before the call's deadline.
    #[error("global {kind} lock on {key:?} not granted before the deadline")]
    LockTimeout {
        /// The key.
        key: String,
        /// `read` or `write`.
        kind: &'static str,
    },
    /// A local lock was not granted before the call's deadline (another
    /// call holds it; one that awaits this call while holding it never
    /// lets go: a deadlock, ended here).
    #[error("local {kind} lock on {key:?} not granted before the call's deadline (held by another call, perhaps one awaiting this one)")]
    LocalLockTimeout {
        /// The key.
        key: String,
        /// `read` or `write`.
        kind: &'static str,
    },
    /// A system call on the value's shared memory failed.
    #[error("state memory: {0}")]
    Os(String),
}
