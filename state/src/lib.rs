//! Function state: the [`StateStore`] trait, the local tier
//! ([`LocalStateStore`]) and the global tier behind it ([`GlobalTier`]:
//! [`InProcessTier`] or [`RedisTier`]).
//!
//! This crate knows nothing of WebAssembly: it keeps byte arrays named by
//! keys, their locks and dirty runs. The host interface (`faaslet-hostapi`)
//! implements the Faasm state calls on top of it.
//!
//! # Tiers
//!
//! The local tier keeps one copy of each value per process, in a memfd
//! ([`Segment`]: page-aligned, sparse until touched), so Faaslets can map
//! the same pages. The global tier holds the authoritative copy; values move
//! between the tiers only on explicit pull and push. Without a Redis URL an
//! [`InProcessTier`] serves, with the same semantics as Redis.
//!
//! # Limits
//!
//! Every size a guest chooses is bounded ([`StateLimits`]): declared value
//! lengths and appended bytes count against a per-user quota (default
//! 1 GiB, charged when a value grows, before any memory is touched), keys
//! are at most 1 KiB, a user has at most 65536 keys, an appended list at
//! most 65536 elements of at most 1 MiB. Host buffers are allocated with
//! `try_reserve`, so exhaustion is a [`StateError::OutOfMemory`], not an
//! abort. Keys are namespaced by user: `alice`'s `counter` is not `bob`'s.
//!
//! # Key layout in the global tier
//!
//! With `U` the user (no `/`) and `K` the key:
//! - `faaslet:v:U/K` — the value, a Redis string (pull: STRLEN + GETRANGE
//!   in 4 MiB chunks; full push: SET; partial push: one MULTI/EXEC of
//!   SETRANGE per dirty run, so it applies all or nothing).
//! - `faaslet:a:U/K` — appended elements, a list (RPUSH via a Lua script
//!   that refuses past the count limit; read: LRANGE; clear: DEL).
//! - `faaslet:l:U/K:w` — the global write lock: `SET NX PX` of a random
//!   128-bit token, leased for [`LOCK_LEASE`]; released by a Lua
//!   compare-and-delete, so only its owner can release it.
//! - `faaslet:l:U/K:r` — the global read lock: a sorted set of reader tokens
//!   scored by lease expiry (server time); a writer waits until it is empty
//!   and no reader enters while the write key exists.
//!
//! # Consistency
//!
//! Local reads and writes see the process's copy immediately. Between
//! processes nothing is shared except through push and pull: a full push is
//! one SET and a partial push one MULTI/EXEC (atomic), a pull of up to
//! 4 MiB is one GETRANGE (atomic); larger pulls are chunked and may see
//! concurrent pushes unless a global lock is held. Last writer wins.
//! Under the global write lock, pull–modify–push of a key is a
//! linearizable read-modify-write of that key, as long as the holder
//! finishes within the lease (a holder that outlives it may lose the lock
//! to another process; the lease bounds how long a crashed process blocks
//! others). Locks wait with backoff until the call's deadline and are
//! released when the call ends or traps.
//!
//! # Faults
//!
//! [`RedisTier::connect`] fails with an error naming the address if the
//! server does not answer. A server that goes away later makes operations
//! fail with [`StateError::Global`]; the failed connection is dropped and
//! the next operation reconnects, so the process keeps serving.

mod error;
mod global;
mod limits;
mod redis_tier;
mod segment;
mod store;
mod value;

pub use error::StateError;
pub use global::{ByteSource, GlobalTier, InProcessTier, LockMode};
pub use limits::{Quota, StateLimits, MAX_VALUE_LEN};
pub use redis_tier::RedisTier;
pub use segment::{page_size, Segment};
pub use store::{
    GlobalLock, LocalStateStore, StateStore, StateUsage, DEFAULT_LOCK_WAIT, LOCK_LEASE,
};
pub use value::{
    ranges_of_mask, ExplicitRwLock, LiveWrites, StateValue, ValueBytes, MAX_DIRTY_RUNS,
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn writes_mark_dirty_and_push_clears() {
        let s = LocalStateStore::new();
        let v = s.value("u", "a").unwrap();
        v.ensure_len(16).unwrap();
        assert!(v.dirty_ranges().is_empty());
        v.write_at(2, b"xy").unwrap();
        v.mark_dirty(10, 100);
        assert_eq!(v.dirty_ranges(), vec![2..4, 10..16]);
        s.push(&v, None).unwrap();
        assert!(v.dirty_ranges().is_empty());
        assert!(Arc::ptr_eq(&v, &s.value("u", "a").unwrap()));
    }

    #[test]
    fn read_pads_with_zeros() {
        let s = LocalStateStore::new();
        let v = s.value("u", "k").unwrap();
        v.set(b"abc").unwrap();
        let mut buf = [9u8; 5];
        assert_eq!(v.read_at(1, &mut buf), 3);
        assert_eq!(&buf, b"bc\0\0\0");
        assert_eq!(v.read_at(10, &mut buf), 3);
        assert_eq!(buf, [0; 5]);
    }

    #[test]
    fn appended_reads_in_order_and_checks_space() {
        let s = LocalStateStore::new();
        s.append("u", "l", b"ab").unwrap();
        s.append("u", "l", b"cde").unwrap();
        let mut buf = [0u8; 5];
        assert_eq!(s.read_appended("u", "l", &mut buf, 2).unwrap(), 5);
        assert_eq!(&buf, b"abcde");
        assert!(s.read_appended("u", "l", &mut buf[..4], 2).is_err());
        assert!(s.read_appended("u", "l", &mut buf, 3).is_err());
        s.clear_appended("u", "l").unwrap();
        assert!(s.read_appended("u", "l", &mut buf, 1).is_err());
    }

    #[test]
    fn limits_are_typed_errors() {
        let limits = StateLimits {
            quota_bytes: 1 << 20,
            max_key_len: 8,
            max_keys: 2,
            max_appends: 2,
            max_append_bytes: 4,
        };
        let s = LocalStateStore::with_global(Arc::new(InProcessTier::new()), limits);
        let v = s.value("u", "a").unwrap();
        v.ensure_len(1 << 20).unwrap();
        let w = s.value("u", "b").unwrap();
        assert!(matches!(
            w.ensure_len(1),
            Err(StateError::QuotaExceeded { .. })
        ));
        // Another user has their own quota.
        s.value("v", "a").unwrap().ensure_len(1 << 20).unwrap();
        assert!(matches!(
            s.value("u", "c"),
            Err(StateError::TooManyKeys { .. })
        ));
        assert!(matches!(
            s.value("u", "123456789"),
            Err(StateError::KeyTooLong { .. })
        ));
        assert!(matches!(s.value("a/b", "k"), Err(StateError::BadUser(_))));
        assert!(matches!(
            s.append("v", "l", b"12345"),
            Err(StateError::AppendTooLarge { .. })
        ));
        s.value("u", "a").unwrap().set(b"x").unwrap(); // shrinking credits the quota
        s.append("u", "l", b"1").unwrap();
        s.append("u", "l", b"2").unwrap();
        assert!(matches!(
            s.append("u", "l", b"3"),
            Err(StateError::TooManyAppends { .. })
        ));
        assert!(v.ensure_len(MAX_VALUE_LEN + 1).is_err());
    }

    #[test]
    fn pull_and_partial_push_through_the_global_tier() {
        let g: Arc<dyn GlobalTier> = Arc::new(InProcessTier::new());
        let a = LocalStateStore::with_global(g.clone(), StateLimits::default());
        let b = LocalStateStore::with_global(g, StateLimits::default());
        let va = a.value("u", "k").unwrap();
        va.set(b"hello world").unwrap();
        a.push(&va, None).unwrap();
        let vb = b.value("u", "k").unwrap();
        b.pull(&vb, None).unwrap();
        let mut buf = [0u8; 11];
        vb.read_at(0, &mut buf);
        assert_eq!(&buf, b"hello world");
        vb.write_at(0, b"J").unwrap();
        vb.write_at(6, b"W").unwrap();
        b.push(&vb, Some(&vb.dirty_ranges())).unwrap();
        a.pull(&va, Some(6..7)).unwrap();
        va.read_at(0, &mut buf);
        assert_eq!(&buf, b"hello World");
    }

    #[test]
    fn global_locks_exclude_and_need_the_token() {
        let s = LocalStateStore::new();
        let v = s.value("u", "k").unwrap();
        let w = s.lock_global(&v, LockMode::Write, None).unwrap();
        let soon = Some(std::time::Instant::now());
        assert!(matches!(
            s.lock_global(&v, LockMode::Read, soon),
            Err(StateError::LockTimeout { .. })
        ));
        s.unlock_global(&w).unwrap();
        let r1 = s.lock_global(&v, LockMode::Read, None).unwrap();
        let _r2 = s.lock_global(&v, LockMode::Read, None).unwrap();
        assert!(s.lock_global(&v, LockMode::Write, soon).is_err());
        s.unlock_global(&r1).unwrap();
    }

    #[test]
    fn write_lock_excludes_readers() {
        let l = Arc::new(ExplicitRwLock::default());
        l.lock_write();
        let l2 = l.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            l2.lock_read();
            tx.send(()).unwrap();
            l2.unlock_read();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(50))
            .is_err());
        l.unlock_write();
        rx.recv().unwrap();
        t.join().unwrap();
    }
}
