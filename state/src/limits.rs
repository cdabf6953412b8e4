//! [`StateLimits`] and the per-user [`Quota`]: every size a guest chooses
//! is bounded before the host allocates it.

use crate::error::StateError;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Largest state value, in bytes.
pub const MAX_VALUE_LEN: usize = 1 << 30;

/// The bounds on what a user's functions may make the host hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Bytes of declared value lengths (and appended elements) per user.
    pub quota_bytes: u64,
    /// Longest key, in bytes.
    pub max_key_len: usize,
    /// Keys (values plus appended lists) per user.
    pub max_keys: usize,
    /// Elements per appended list.
    pub max_appends: u64,
    /// Bytes of one appended element.
    pub max_append_bytes: u64,
}

impl Default for StateLimits {
    /// 1 GiB quota, 1 KiB keys, 65536 keys, 65536 appends of at most 1 MiB.
    fn default() -> StateLimits {
        StateLimits {
            quota_bytes: 1 << 30,
            max_key_len: 1024,
            max_keys: 65536,
            max_appends: 65536,
            max_append_bytes: 1 << 20,
        }
    }
}

/// One user's accounting: bytes declared and keys created.
#[derive(Debug)]
pub struct Quota {
    user: String,
    limit: u64,
    used: AtomicU64,
    keys: AtomicUsize,
    max_keys: usize,
}

impl Quota {
    /// A fresh account for `user`.
    pub fn new(user: &str, limits: &StateLimits) -> Quota {
        Quota {
            user: user.to_string(),
            limit: limits.quota_bytes,
            used: AtomicU64::new(0),
            keys: AtomicUsize::new(0),
            max_keys: limits.max_keys,
        }
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the quota, or fails without taking anything.
    pub fn charge(&self, bytes: u64) -> Result<(), StateError> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .map(|_| ())
            .map_err(|used| StateError::QuotaExceeded {
                user: self.user.clone(),
                requested: bytes,
                used,
                quota: self.limit,
            })
    }

    /// Gives `bytes` back.
    pub fn credit(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Counts one more key, or fails at the limit.
    pub fn add_key(&self) -> Result<(), StateError> {
        self.keys
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| {
                (k < self.max_keys).then_some(k + 1)
            })
            .map(|_| ())
            .map_err(|_| StateError::TooManyKeys {
                user: self.user.clone(),
                max: self.max_keys,
            })
    }
}
