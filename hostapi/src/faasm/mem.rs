//! Checked access to a guest's linear memory: every guest pointer and
//! length is validated against the memory before any byte is touched.

use super::error::FaasmError;
pub use super::error::MAX_NAME_LEN;

/// The range `ptr..ptr+len` of `mem`, or an error naming `what`.
pub fn range(
    mem_len: usize,
    ptr: u32,
    len: u32,
    what: &'static str,
) -> Result<std::ops::Range<usize>, FaasmError> {
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .filter(|&end| end <= mem_len)
        .ok_or(FaasmError::OutOfBounds {
            what,
            ptr,
            len: len as u64,
        })?;
    Ok(start..end)
}

/// The bytes `ptr..ptr+len` of `mem`.
pub fn slice<'a>(
    mem: &'a [u8],
    ptr: u32,
    len: u32,
    what: &'static str,
) -> Result<&'a [u8], FaasmError> {
    let r = range(mem.len(), ptr, len, what)?;
    Ok(&mem[r])
}

/// The bytes `ptr..ptr+len` of `mem`, mutably.
pub fn slice_mut<'a>(
    mem: &'a mut [u8],
    ptr: u32,
    len: u32,
    what: &'static str,
) -> Result<&'a mut [u8], FaasmError> {
    let r = range(mem.len(), ptr, len, what)?;
    Ok(&mut mem[r])
}

/// Converts a guest length (a C `long`, i32 on wasm32) to a byte count,
/// refusing negative values.
pub fn len(len: i32, what: &'static str) -> Result<u32, FaasmError> {
    u32::try_from(len).map_err(|_| FaasmError::NegativeLength { what, len })
}

/// The NUL-terminated UTF-8 string at `ptr`, without its NUL. Scans at most
/// [`MAX_NAME_LEN`] + 1 bytes, so an unterminated string is an error, not a
/// walk to the end of memory.
pub fn cstr<'a>(mem: &'a [u8], ptr: u32, what: &'static str) -> Result<&'a str, FaasmError> {
    let start = ptr as usize;
    let tail = mem
        .get(start..)
        .filter(|t| !t.is_empty())
        .ok_or(FaasmError::OutOfBounds { what, ptr, len: 1 })?;
    let window = &tail[..tail.len().min(MAX_NAME_LEN + 1)];
    let n = window
        .iter()
        .position(|&b| b == 0)
        .ok_or(FaasmError::Unterminated { what, ptr })?;
    std::str::from_utf8(&window[..n]).map_err(|_| FaasmError::NotUtf8 { what, ptr })
}

/// Writes a little-endian u32 at `ptr`.
pub fn write_u32(
    mem: &mut [u8],
    ptr: u32,
    value: u32,
    what: &'static str,
) -> Result<(), FaasmError> {
    slice_mut(mem, ptr, 4, what)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let mem = [1u8, 2, 3, 4];
        assert_eq!(slice(&mem, 1, 3, "x").unwrap(), &[2, 3, 4]);
        assert!(slice(&mem, 1, 4, "x").is_err());
        assert!(slice(&mem, u32::MAX, 2, "x").is_err());
        assert_eq!(slice(&mem, 4, 0, "x").unwrap(), &[] as &[u8]);
        assert!(len(-1, "x").is_err());
    }

    #[test]
    fn strings_must_be_terminated_and_utf8() {
        let mem = b"key\0abc";
        assert_eq!(cstr(mem, 0, "k").unwrap(), "key");
        assert!(matches!(
            cstr(mem, 4, "k"),
            Err(FaasmError::Unterminated { .. })
        ));
        assert!(matches!(
            cstr(mem, 7, "k"),
            Err(FaasmError::OutOfBounds { .. })
        ));
        assert!(matches!(
            cstr(b"\xff\0", 0, "k"),
            Err(FaasmError::NotUtf8 { .. })
        ));
        let long = vec![b'a'; MAX_NAME_LEN + 10];
        assert!(matches!(
            cstr(&long, 0, "k"),
            Err(FaasmError::Unterminated { .. })
        ));
    }
}
