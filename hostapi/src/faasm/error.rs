//! [`FaasmError`]: why a Faasm host call failed.

use faaslet_state::StateError;

/// Longest key or function name accepted from a guest, in bytes (without
/// the terminating NUL).
pub const MAX_NAME_LEN: usize = 4096;

/// Why a Faasm host call failed. The engine reports it to the guest as a
/// trap carrying this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FaasmError {
    /// A guest pointer/length pair reaches outside the memory.
    #[error("{what}: {len} bytes at {ptr:#x} are outside the guest memory")]
    OutOfBounds {
        /// Which argument.
        what: &'static str,
        /// The pointer.
        ptr: u32,
        /// The length.
        len: u64,
    },
    /// `__faasm_write_output` was given more bytes than the call may write.
    #[error("write_output: {len} bytes of output, more than the limit of {limit}")]
    OutputTooLarge {
        /// Bytes given.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The host could not allocate a copy of guest bytes.
    #[error("{what}: no host memory for a copy of {len} bytes")]
    NoHostMemory {
        /// Which argument.
        what: &'static str,
        /// The length asked for.
        len: u64,
    },
    /// A negative length or offset.
    #[error("{what}: negative length {len}")]
    NegativeLength {
        /// Which argument.
        what: &'static str,
        /// The value passed.
        len: i32,
    },
    /// A string without a NUL within bounds and the length limit.
    #[error(
        "{what}: string at {ptr:#x} is not NUL-terminated within {} bytes",
        MAX_NAME_LEN
    )]
    Unterminated {
        /// Which argument.
        what: &'static str,
        /// The pointer.
        ptr: u32,
    },
    /// A key or name that is not UTF-8.
    #[error("{what}: string at {ptr:#x} is not UTF-8")]
    NotUtf8 {
        /// Which argument.
        what: &'static str,
        /// The pointer.
        ptr: u32,
    },
    /// A state value would exceed [`MAX_VALUE_LEN`](faaslet_state::MAX_VALUE_LEN).
    #[error("state value of {len} bytes is too large")]
    ValueTooLarge {
        /// The requested length.
        len: u64,
    },
    /// An access past the declared total length of a state value.
    #[error("state range {offset}+{len} is past the value's length {total}")]
    StateRange {
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Declared total length.
        total: u64,
    },
    /// Fewer appended elements than asked for.
    #[error("{wanted} appended elements requested, {have} present")]
    NotEnoughAppended {
        /// Requested.
        wanted: u64,
        /// Present.
        have: u64,
    },
    /// A guest buffer too small for the data.
    #[error("buffer of {len} bytes is too small, {needed} needed")]
    BufferTooSmall {
        /// Needed.
        needed: u64,
        /// Given.
        len: u64,
    },
    /// The memory could not be grown for a mapping or an output copy.
    #[error("cannot grow the guest memory by {pages} pages")]
    MemoryFull {
        /// Pages asked for.
        pages: u64,
    },
    /// The state store failed.
    #[error("state: {0}")]
    State(String),
    /// A state value could not be mapped into the guest's memory.
    #[error("cannot map state value {key:?} into the guest memory: {reason}")]
    MapState {
        /// The key.
        key: String,
        /// Why not.
        reason: String,
    },
    /// No such function to chain to.
    #[error("no function {0:?}")]
    UnknownFunction(String),
    /// No call with this id was started by this Faaslet.
    #[error("no chained call {0}")]
    UnknownCall(u32),
    /// A lock call that would deadlock or unlock what is not held.
    #[error("state lock misuse on {key:?}: {problem}")]
    LockMisuse {
        /// The key.
        key: String,
        /// What went wrong.
        problem: &'static str,
    },
    /// The chained call could not be started.
    #[error("chaining failed: {0}")]
    Chain(String),
    /// A wait for a state lock or a chained call that would never end:
    /// the calls involved wait for each other (see
    /// [`waits`](crate::faasm::waits)).
    #[error(transparent)]
    Deadlock(#[from] crate::faasm::waits::Deadlock),
}

impl From<StateError> for FaasmError {
    fn from(e: StateError) -> FaasmError {
        match e {
            StateError::ValueTooLarge { len } => FaasmError::ValueTooLarge { len },
            StateError::NotEnoughAppended { wanted, have } => {
                FaasmError::NotEnoughAppended { wanted, have }
            }
            StateError::BufferTooSmall { needed, len } => {
                FaasmError::BufferTooSmall { needed, len }
            }
            // `StateError` is non-exhaustive: a new kind of failure still
            // reaches the guest as a trap with its message.
            other => FaasmError::State(other.to_string()),
        }
    }
}
