//! [`GuestMemory`]: a bounds-checked view of a guest's linear memory.
//!
//! Every guest pointer is a `u32` offset with a length chosen by the guest;
//! nothing here trusts either. Each access checks `ptr + len <= memory
//! length` in 64-bit arithmetic (so no wrap-around) and fails with a typed
//! [`GuestError`] instead of touching memory outside the slice. Values are
//! little-endian, as in wasm, and need no alignment.

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
}

/// One `{buf, buf_len}` pair of an iovec array in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoVec {
    /// Guest address of the buffer.
    pub buf: u32,
    /// Length of the buffer.
    pub len: u32,
}

/// A bounds-checked view of a guest's linear memory.
#[derive(Debug)]
pub struct GuestMemory<'a> {
    bytes: &'a mut [u8],
}

macro_rules! rw {
    ($($read:ident $write:ident $t:ty),*) => {$(
        #[doc = concat!("Reads a little-endian `", stringify!($t), "` at `ptr`.")]
        pub fn $read(&self, ptr: u32) -> Result<$t, GuestError> {
            let r = self.range(ptr, std::mem::size_of::<$t>() as u64)?;
            Ok(<$t>::from_le_bytes(self.bytes[r].try_into().expect("range has the type's size")))
        }
        #[doc = concat!("Writes a little-endian `", stringify!($t), "` at `ptr`.")]
        pub fn $write(&mut self, ptr: u32, v: $t) -> Result<(), GuestError> {
            let r = self.range(ptr, std::mem::size_of::<$t>() as u64)?;
            self.bytes[r].copy_from_slice(&v.to_le_bytes());
            Ok(())
        }
    )*};
}

impl<'a> GuestMemory<'a> {
    /// A view of `bytes`, the whole linear memory.
    pub fn new(bytes: &'a mut [u8]) -> GuestMemory<'a> {
        GuestMemory { bytes }
    }

    /// The memory's size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the memory has no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The host range of `ptr .. ptr + len`, if it lies inside the memory.
    pub fn range(&self, ptr: u32, len: u64) -> Result<Range<usize>, GuestError> {
        let end = ptr as u64 + len;
        if len > u32::MAX as u64 + 1 || end > self.bytes.len() as u64 {
            return Err(GuestError::OutOfBounds { ptr, len });
        }
        Ok(ptr as usize..end as usize)
    }

    /// The bytes `ptr .. ptr + len`.
    pub fn slice(&self, ptr: u32, len: u32) -> Result<&[u8], GuestError> {
        let r = self.range(ptr, len as u64)?;
        Ok(&self.bytes[r])
    }

    /// The bytes `ptr .. ptr + len`, mutably.
    pub fn slice_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], GuestError> {
        let r = self.range(ptr, len as u64)?;
        Ok(&mut self.bytes[r])
    }

    /// The whole memory.
    pub fn as_slice(&self) -> &[u8] {
        self.bytes
    }

    /// The whole memory, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.bytes
    }

    /// Copies `data` to `ptr`.
    pub fn write_bytes(&mut self, ptr: u32, data: &[u8]) -> Result<(), GuestError> {
        let r = self.range(ptr, data.len() as u64)?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }

    rw!(read_u8 write_u8 u8, read_u16 write_u16 u16, read_u32 write_u32 u32,
        read_u64 write_u64 u64, read_i32 write_i32 i32, read_i64 write_i64 i64);

    /// The UTF-8 string of `len` bytes at `ptr`.
    pub fn str(&self, ptr: u32, len: u32) -> Result<&str, GuestError> {
        std::str::from_utf8(self.slice(ptr, len)?).map_err(|_| GuestError::Utf8 { ptr })
    }

    /// The bytes of the NUL-terminated string at `ptr` (without the NUL),
    /// searching at most `max` bytes.
    pub fn cstr(&self, ptr: u32, max: u32) -> Result<&[u8], GuestError> {
        if ptr as usize > self.bytes.len() {
            return Err(GuestError::OutOfBounds { ptr, len: 1 });
        }
        let rest = &self.bytes[ptr as usize..];
        let window = &rest[..rest.len().min(max as usize)];
        match window.iter().position(|&b| b == 0) {
            Some(n) => Ok(&window[..n]),
            None => Err(GuestError::Unterminated { ptr, max }),
        }
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
        let at = at as u32;
        Ok(IoVec {
            buf: self.read_u32(at)?,
            len: self
                .read_u32(at.wrapping_add(4))
                .map_err(|_| GuestError::OutOfBounds { ptr: at, len: 8 })?,
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

    /// The memory's base pointer, for handing checked ranges to the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.bytes.as_mut_ptr()
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
        assert!(m.slice(u32::MAX, u32::MAX).is_err());
        assert_eq!(m.slice(16, 0).unwrap(), b"");
        assert!(m.slice(17, 0).is_err());
        assert!(m.range(0, u64::MAX).is_err());
    }

    #[test]
    fn strings() {
        let mut b = b"abc\0\xff\xfe".to_vec();
        let m = GuestMemory::new(&mut b);
        assert_eq!(m.str(0, 3).unwrap(), "abc");
        assert_eq!(m.str(4, 2), Err(GuestError::Utf8 { ptr: 4 }));
        assert_eq!(m.cstr(0, 100).unwrap(), b"abc");
        assert!(matches!(
            m.cstr(4, 100),
            Err(GuestError::Unterminated { .. })
        ));
        assert!(matches!(m.cstr(0, 2), Err(GuestError::Unterminated { .. })));
        assert!(m.cstr(7, 1).is_err());
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
}
