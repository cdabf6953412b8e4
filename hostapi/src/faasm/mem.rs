//! Checked access to a guest's linear memory for the Faasm calls: every
//! guest pointer and length is validated against the memory before any
//! byte is touched, and errors name the argument. Bytes move by copies
//! through [`GuestMemory`] (never a Rust slice of guest memory: other
//! Faaslets write mapped state pages, see [`crate::memory`]).

use super::error::FaasmError;
pub use super::error::MAX_NAME_LEN;
use crate::memory::{GuestError, GuestMemory};

fn err(e: GuestError, what: &'static str, ptr: u32, len: u64) -> FaasmError {
    match e {
        GuestError::NoMemory { len } => FaasmError::NoHostMemory { what, len },
        _ => FaasmError::OutOfBounds { what, ptr, len },
    }
}

/// The host address of `ptr..ptr+len` in `mem`, after checking the range
/// (for raw copies between guest memory and a state value).
pub fn ptr(
    mem: &GuestMemory<'_>,
    ptr: u32,
    len: u32,
    what: &'static str,
) -> Result<*mut u8, FaasmError> {
    mem.ptr(ptr, len as u64)
        .map_err(|e| err(e, what, ptr, len as u64))
}

/// Checks that `ptr..ptr+len` lies inside `mem`.
pub fn check(
    mem: &GuestMemory<'_>,
    ptr: u32,
    len: u32,
    what: &'static str,
) -> Result<(), FaasmError> {
    self::ptr(mem, ptr, len, what).map(|_| ())
}

/// A host copy of the bytes `ptr..ptr+len` (allocated fallibly).
pub fn to_vec(
    mem: &GuestMemory<'_>,
    ptr: u32,
    len: u32,
    what: &'static str,
) -> Result<Vec<u8>, FaasmError> {
    mem.to_vec(ptr, len)
        .map_err(|e| err(e, what, ptr, len as u64))
}

/// Copies `data` to `ptr`.
pub fn write(
    mem: &mut GuestMemory<'_>,
    ptr: u32,
    data: &[u8],
    what: &'static str,
) -> Result<(), FaasmError> {
    mem.write_bytes(ptr, data)
        .map_err(|e| err(e, what, ptr, data.len() as u64))
}

/// Converts a guest length (a C `long`, i32 on wasm32) to a byte count,
/// refusing negative values.
pub fn len(len: i32, what: &'static str) -> Result<u32, FaasmError> {
    u32::try_from(len).map_err(|_| FaasmError::NegativeLength { what, len })
}

/// A host copy of the NUL-terminated UTF-8 string at `ptr`, without its
/// NUL. Scans at most [`MAX_NAME_LEN`] + 1 bytes, so an unterminated string
/// is an error, not a walk to the end of memory.
pub fn cstr(mem: &GuestMemory<'_>, ptr: u32, what: &'static str) -> Result<String, FaasmError> {
    let bytes = mem
        .cstr(ptr, MAX_NAME_LEN as u32 + 1)
        .map_err(|e| match e {
            GuestError::Unterminated { .. } => FaasmError::Unterminated { what, ptr },
            e => err(e, what, ptr, 1),
        })?;
    String::from_utf8(bytes).map_err(|_| FaasmError::NotUtf8 { what, ptr })
}

/// Writes a little-endian u32 at `ptr`.
pub fn write_u32(
    mem: &mut GuestMemory<'_>,
    ptr: u32,
    value: u32,
    what: &'static str,
) -> Result<(), FaasmError> {
    write(mem, ptr, &value.to_le_bytes(), what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let mut b = [1u8, 2, 3, 4];
        let mem = GuestMemory::new(&mut b);
        assert_eq!(to_vec(&mem, 1, 3, "x").unwrap(), [2, 3, 4]);
        assert!(matches!(
            to_vec(&mem, 1, 4, "x"),
            Err(FaasmError::OutOfBounds {
                what: "x",
                ptr: 1,
                len: 4
            })
        ));
        assert!(to_vec(&mem, u32::MAX, 2, "x").is_err());
        assert_eq!(to_vec(&mem, 4, 0, "x").unwrap(), [] as [u8; 0]);
        assert!(check(&mem, 0, 5, "x").is_err());
        assert!(len(-1, "x").is_err());
    }

    #[test]
    fn strings_must_be_terminated_and_utf8() {
        let mut b = *b"key\0abc";
        let mem = GuestMemory::new(&mut b);
        assert_eq!(cstr(&mem, 0, "k").unwrap(), "key");
        assert!(matches!(
            cstr(&mem, 4, "k"),
            Err(FaasmError::Unterminated { .. })
        ));
        assert!(matches!(
            cstr(&mem, 7, "k"),
            Err(FaasmError::OutOfBounds { .. })
        ));
        let mut bad = *b"\xff\0";
        assert!(matches!(
            cstr(&GuestMemory::new(&mut bad), 0, "k"),
            Err(FaasmError::NotUtf8 { .. })
        ));
        let mut long = vec![b'a'; MAX_NAME_LEN + 10];
        assert!(matches!(
            cstr(&GuestMemory::new(&mut long), 0, "k"),
            Err(FaasmError::Unterminated { .. })
        ));
    }
}
