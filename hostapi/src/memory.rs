//! [`GuestMemory`]: a bounds-checked view of a guest's linear memory.
//!
//! Every guest pointer is a `u32` offset with a length chosen by the guest;
//! nothing here trusts either. Each access checks `ptr + len <= memory
//! length` in 64-bit arithmetic (so no wrap-around) and fails with a typed
//! [`GuestError`] instead of touching memory outside the view. Values are
//! little-endian, as in wasm, and need no alignment.
//!
//! # Why there is no `&[u8]` of guest memory here
//!
//! A linear memory is not always private to the thread that runs the host
//! call. A shared memory (threads proposal) is written by other threads at
//! any time, and a state value mapped with `__faasm_read_state_ptr` is the
//! same physical pages in every Faaslet of the process that maps it, so
//! other guests write into *this* memory while the host call runs. A Rust
//! `&[u8]` or `&mut [u8]` over such bytes promises the compiler that nobody
//! else changes them for the reference's lifetime; that promise would be
//! false, and the compiler may then read a byte twice and get two answers
//! (for example validate a path as UTF-8, then use different bytes).
//!
//! So this view holds a raw base pointer and a length, as wasmtime's views
//! of shared memory do, and every access is a copy made through raw
//! pointers: values and strings are copied *out* into host memory before
//! they are checked or used ([`string`](GuestMemory::string),
//! [`cstr`](GuestMemory::cstr), [`read_into`](GuestMemory::read_into)), and
//! results are copied *in* ([`write_bytes`](GuestMemory::write_bytes)).
//! A check made on the host's copy therefore stays true. Bulk transfers
//! that the kernel performs (`readv`, `writev`, `getrandom`) get a checked
//! raw pointer from [`ptr`](GuestMemory::ptr); the kernel copies with the
//! same semantics. What another thread writes during a copy may or may not
//! be seen by it, exactly as if the guest had raced with itself; the host
//! never reads outside the checked range whatever the bytes are.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::Range;

/// A guest memory access that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// `ptr .. ptr + len` does not lie inside the memory.
    #[error("guest range {ptr:#x}+{len} is outside the memory")]
    OutOfBounds {
        /// The guest pointer.
        ptr: u32,
        /// The length the guest asked for.
        len: u64,
    },
    /// The bytes at `ptr` are not valid UTF-8.
    #[error("guest string at {ptr:#x} is not valid UTF-8")]
    Utf8 {
        /// Where the string starts.
        ptr: u32,
    },
    /// No NUL terminator within the limit or before the end of memory.
    #[error("guest string at {ptr:#x} has no terminator within {max} bytes")]
    Unterminated {
        /// Where the string starts.
        ptr: u32,
        /// How far the search went.
        max: u32,
    },
    /// The host could not allocate a copy of `len` guest bytes.
    #[error("no host memory for a copy of {len} guest bytes")]
    NoMemory {
        /// The number of bytes asked for.
        len: u64,
    },
}

/// One `{buf, buf_len}` pair of an iovec array in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoVec {
    /// Guest address of the buffer.
    pub buf: u32,
    /// Length of the buffer.
    pub len: u32,
}

/// A bounds-checked view of a guest's linear memory that never hands out a
/// Rust reference to guest bytes (see the [module docs](self)).
#[derive(Debug)]
pub struct GuestMemory<'a> {
    base: *mut u8,
    len: usize,
    /// The view borrows the memory for `'a`, like a slice of cells would:
    /// bytes that may change under it, never a `&[u8]`.
    _memory: PhantomData<&'a [UnsafeCell<u8>]>,
}

macro_rules! rw {
    ($($read:ident $write:ident $t:ty),*) => {$(
        #[doc = concat!("Reads a little-endian `", stringify!($t), "` at `ptr`.")]
        pub fn $read(&self, ptr: u32) -> Result<$t, GuestError> {
            let mut b = [0u8; std::mem::size_of::<$t>()];
            self.read_into(ptr, &mut b)?;
            Ok(<$t>::from_le_bytes(b))
        }
        #[doc = concat!("Writes a little-endian `", stringify!($t), "` at `ptr`.")]
        pub fn $write(&mut self, ptr: u32, v: $t) -> Result<(), GuestError> {
            self.write_bytes(ptr, &v.to_le_bytes())
        }
    )*};
}

impl<'a> GuestMemory<'a> {
    /// A view of `bytes`, a memory this thread owns (tests, embedders with
    /// a private buffer).
    pub fn new(bytes: &'a mut [u8]) -> GuestMemory<'a> {
        GuestMemory {
            base: bytes.as_mut_ptr(),
            len: bytes.len(),
            _memory: PhantomData,
        }
    }

    /// A view of the `len` bytes at `base`, which other threads may write
    /// while the view lives.
    ///
    /// # Safety
    ///
    /// `base .. base + len` must be readable and writable memory (or `len`
    /// must be 0) for all of `'a`, and must not be unmapped, shrunk or
    /// moved while the view lives. Other threads may read and write it
    /// concurrently: the view only ever accesses it by raw-pointer copies.
    pub unsafe fn from_raw(base: *mut u8, len: usize) -> GuestMemory<'a> {
        GuestMemory {
            base,
            len,
            _memory: PhantomData,
        }
    }

    /// The memory's size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the memory has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host range of `ptr .. ptr + len`, if it lies inside the memory.
    pub fn range(&self, ptr: u32, len: u64) -> Result<Range<usize>, GuestError> {
        let end = ptr as u64 + len;
        if len > u32::MAX as u64 + 1 || end > self.len as u64 {
            return Err(GuestError::OutOfBounds { ptr, len });
        }
        Ok(ptr as usize..end as usize)
    }

    /// The host address of guest `ptr`, after checking that `ptr .. ptr +
    /// len` lies inside the memory: for the kernel (`readv`, `getrandom`)
    /// or a raw copy of exactly that range. Using the pointer is unsafe:
    /// it is valid for `len` bytes only while this view lives, and other
    /// threads may write those bytes.
    pub fn ptr(&self, ptr: u32, len: u64) -> Result<*mut u8, GuestError> {
        let r = self.range(ptr, len)?;
        Ok(self.base.wrapping_add(r.start))
    }

    /// Copies `dst.len()` bytes at `ptr` into `dst`.
    pub fn read_into(&self, ptr: u32, dst: &mut [u8]) -> Result<(), GuestError> {
        let src = self.ptr(ptr, dst.len() as u64)?;
        // SAFETY: `src .. src + dst.len()` lies inside the memory (checked
        // by `ptr`), which `from_raw`'s contract keeps valid while the view
        // lives; `dst` is host memory, which no guest range overlaps.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Appends the `len` bytes at `ptr` to `out`. The allocation is
    /// fallible (a guest can name up to 4 GiB): failure is
    /// [`GuestError::NoMemory`], never an abort.
    pub fn extend_vec(&self, ptr: u32, len: u32, out: &mut Vec<u8>) -> Result<(), GuestError> {
        let src = self.ptr(ptr, len as u64)?;
        let len = len as usize;
        out.try_reserve(len)
            .map_err(|_| GuestError::NoMemory { len: len as u64 })?;
        let at = out.len();
        // SAFETY: the guest range was checked by `ptr`; `out` has room for
        // `len` more bytes (reserved above) and is host memory, so the
        // ranges cannot overlap. The bytes are initialised by the copy
        // before the length covers them.
        unsafe {
            std::ptr::copy_nonoverlapping(src, out.as_mut_ptr().add(at), len);
            out.set_len(at + len);
        }
        Ok(())
    }

    /// A host copy of the `len` bytes at `ptr` (allocated fallibly).
    pub fn to_vec(&self, ptr: u32, len: u32) -> Result<Vec<u8>, GuestError> {
        let mut v = Vec::new();
        self.extend_vec(ptr, len, &mut v)?;
        Ok(v)
    }

    /// Copies `data` to `ptr`.
    pub fn write_bytes(&mut self, ptr: u32, data: &[u8]) -> Result<(), GuestError> {
        let dst = self.ptr(ptr, data.len() as u64)?;
        // SAFETY: the guest range was checked by `ptr`; `data` is host
        // memory (a guest range is never handed out as a slice), so the
        // two cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    rw!(read_u8 write_u8 u8, read_u16 write_u16 u16, read_u32 write_u32 u32,
        read_u64 write_u64 u64, read_i32 write_i32 i32, read_i64 write_i64 i64);

    /// A host copy of the UTF-8 string of `len` bytes at `ptr`, validated
    /// after the copy (so the guest cannot change it in between).
    pub fn string(&self, ptr: u32, len: u32) -> Result<String, GuestError> {
        String::from_utf8(self.to_vec(ptr, len)?).map_err(|_| GuestError::Utf8 { ptr })
    }

    /// A host copy of the NUL-terminated string at `ptr` (without the NUL),
    /// searching at most `max` bytes.
    pub fn cstr(&self, ptr: u32, max: u32) -> Result<Vec<u8>, GuestError> {
        if ptr as usize >= self.len {
            return Err(GuestError::OutOfBounds { ptr, len: 1 });
        }
        let window = (self.len - ptr as usize).min(max as usize);
        let mut out = Vec::new();
        let mut chunk = [0u8; 256];
        let mut at = 0usize;
        while at < window {
            let n = chunk.len().min(window - at);
            self.read_into(ptr + at as u32, &mut chunk[..n])?;
            if let Some(k) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..k]);
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..n]);
            at += n;
        }
        Err(GuestError::Unterminated { ptr, max })
    }

    /// The `index`th entry of the iovec array at `iovs` (8 bytes each). The
    /// buffer it names is not checked here; check it when using it.
    pub fn iovec(&self, iovs: u32, index: u32) -> Result<IoVec, GuestError> {
        let at = iovs as u64 + index as u64 * 8;
        if at > u32::MAX as u64 {
            return Err(GuestError::OutOfBounds {
                ptr: iovs,
                len: (index as u64 + 1) * 8,
            });
        }
        let mut b = [0u8; 8];
        self.read_into(at as u32, &mut b)?;
        Ok(IoVec {
            buf: u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
            len: u32::from_le_bytes(b[4..].try_into().expect("4 bytes")),
        })
    }

    /// Checks that an array of `count` iovecs at `iovs` lies in memory and
    /// returns its entries (whose buffers are not yet checked).
    pub fn iovecs(
        &self,
        iovs: u32,
        count: u32,
    ) -> Result<impl Iterator<Item = IoVec> + '_, GuestError> {
        self.range(iovs, count as u64 * 8)?;
        Ok((0..count).map(move |i| {
            self.iovec(iovs, i)
                .expect("array bounds were checked above")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_without_wrapping() {
        let mut b = vec![0u8; 16];
        let mut m = GuestMemory::new(&mut b);
        m.write_u32(12, 0xdead_beef).unwrap();
        assert_eq!(m.read_u32(12).unwrap(), 0xdead_beef);
        assert_eq!(m.read_u8(12).unwrap(), 0xef);
        assert!(matches!(
            m.read_u32(13),
            Err(GuestError::OutOfBounds { ptr: 13, len: 4 })
        ));
        assert!(m.read_u64(u32::MAX).is_err());
        assert!(m.to_vec(u32::MAX, u32::MAX).is_err());
        assert_eq!(m.to_vec(16, 0).unwrap(), b"");
        assert!(m.to_vec(17, 0).is_err());
        assert!(m.range(0, u64::MAX).is_err());
        assert!(m.ptr(8, 9).is_err());
        assert_eq!(
            m.ptr(8, 8).unwrap() as usize - m.ptr(0, 0).unwrap() as usize,
            8
        );
        let mut v = b"x".to_vec();
        m.extend_vec(12, 4, &mut v).unwrap();
        assert_eq!(v, b"x\xef\xbe\xad\xde");
    }

    #[test]
    fn strings() {
        let mut b = b"abc\0\xff\xfe".to_vec();
        let m = GuestMemory::new(&mut b);
        assert_eq!(m.string(0, 3).unwrap(), "abc");
        assert_eq!(m.string(4, 2), Err(GuestError::Utf8 { ptr: 4 }));
        assert_eq!(m.cstr(0, 100).unwrap(), b"abc");
        assert!(matches!(
            m.cstr(4, 100),
            Err(GuestError::Unterminated { .. })
        ));
        assert!(matches!(m.cstr(0, 2), Err(GuestError::Unterminated { .. })));
        assert!(m.cstr(6, 1).is_err());
        assert!(m.cstr(7, 1).is_err());
        // Longer than one internal chunk.
        let mut long = vec![b'a'; 1000];
        long[700] = 0;
        let m = GuestMemory::new(&mut long);
        assert_eq!(m.cstr(1, 1000).unwrap().len(), 699);
        assert!(m.cstr(1, 600).is_err());
    }

    #[test]
    fn iovec_arrays() {
        let mut b = vec![0u8; 24];
        let mut m = GuestMemory::new(&mut b);
        m.write_u32(0, 100).unwrap();
        m.write_u32(4, 7).unwrap();
        m.write_u32(8, 200).unwrap();
        m.write_u32(12, 9).unwrap();
        let v: Vec<_> = m.iovecs(0, 2).unwrap().collect();
        assert_eq!(v, [IoVec { buf: 100, len: 7 }, IoVec { buf: 200, len: 9 }]);
        assert!(m.iovecs(0, 4).is_err());
        assert!(m.iovecs(16, u32::MAX).is_err());
        assert!(m.iovec(u32::MAX - 3, 0).is_err());
    }

    /// A view over memory another thread keeps writing: every read is one
    /// copy, so a value checked on the host copy stays what was checked.
    #[test]
    fn concurrent_writers_are_copied_not_referenced() {
        use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
        let cells: Vec<AtomicU8> = (0..64).map(|_| AtomicU8::new(b'a')).collect();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut b = b'a';
                while !stop.load(Ordering::Relaxed) {
                    b = if b == b'a' { 0xff } else { b'a' };
                    for c in &cells[..8] {
                        c.store(b, Ordering::Relaxed);
                    }
                }
            });
            // SAFETY: `cells` is 64 bytes of live memory for the whole
            // scope; the writer uses atomics and the view raw copies.
            let m = unsafe { GuestMemory::from_raw(cells.as_ptr() as *mut u8, cells.len()) };
            for _ in 0..10_000 {
                // Whatever mix of bytes the copy caught, the string it
                // returns is the validated copy.
                if let Ok(s) = m.string(0, 8) {
                    assert!(s.bytes().all(|b| b == b'a'));
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
}
