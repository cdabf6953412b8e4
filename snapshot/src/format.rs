//! The file format of faaslet snapshots.
//!
//! It checks what a file is (magic, version, checksums, lengths) before
//! anything is trusted, and says which module a snapshot belongs to by the
//! module's fingerprint ([`fingerprint`]), so a file taken from another
//! module is refused instead of resumed. The format needs nothing from the
//! engine but its checksum.
//!
//! # Layout (versions 1 and 2, all integers little endian)
//!
//! Version 2 differs from version 1 only in the GC section (version 1's
//! heap held module type indices in its headers, and no tables). A file
//! whose store held no GC object is written as version 1, byte for byte
//! what builds before GC heaps wrote, so data directories and workers of
//! either age read it; a file with a GC heap is version 2. Both are read;
//! a version 1 file with a GC section is refused (its heap would need
//! rewriting that this build no longer does: capture it again).
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `FAASNAP\0` |
//! | 4 | format version |
//! | 4 | flags (0) |
//! | 8 | module fingerprint |
//! | 8 | payload length |
//! | 8 | payload checksum |
//! | 8 | header checksum (of the 40 bytes above) |
//! | … | payload: memories (runs of non-zero pages), globals, tables, dropped segments, and, only when the store's GC heap held objects, its image (u64 length, bytes; u32 count and that many u32 type indices; u32 count and that many u32 function indices) |
//!
//! # Example
//!
//! ```
//! use faaslet_snapshot::format::{SnapshotFile, MemoryRecord, FormatError};
//!
//! let mut bytes = vec![0u8; 65536];
//! bytes[100] = 42;
//! let snap = SnapshotFile {
//!     module_fingerprint: faaslet_snapshot::format::fingerprint(b"\0asm..."),
//!     memories: vec![MemoryRecord { bytes }],
//!     globals: vec![7],
//!     tables: vec![vec![0, 3]],
//!     data_dropped: vec![true],
//!     elem_dropped: vec![],
//!     gc_heap: vec![],
//!     gc_types: vec![],
//!     gc_funcs: vec![],
//! };
//! let file = snap.encode();
//! assert_eq!(SnapshotFile::decode(&file)?, snap);
//!
//! // A flipped byte or a cut file is refused with a typed error.
//! let mut bad = file.clone();
//! *bad.last_mut().unwrap() ^= 1;
//! assert!(matches!(SnapshotFile::decode(&bad), Err(FormatError::ChecksumMismatch { .. })));
//! assert!(matches!(SnapshotFile::decode(&file[..20]), Err(FormatError::Truncated { .. })));
//! # Ok::<(), FormatError>(())
//! ```

/// The magic bytes every snapshot file starts with.
pub const MAGIC: [u8; 8] = *b"FAASNAP\0";
/// The newest format version this crate writes and reads (it writes it
/// only for a file with a GC heap; see the [module docs](self)).
pub const VERSION: u32 = 2;
/// The oldest format version this crate reads (and writes, for a file
/// without a GC heap).
pub const OLDEST_VERSION: u32 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 48;
/// The granule in which memory runs are stored (zero granules are skipped).
const GRANULE: usize = 4096;

/// Why a snapshot file was refused.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The file does not start with [`MAGIC`]: not a snapshot.
    #[error("not a faaslet snapshot (bad magic)")]
    BadMagic,
    /// The file was written by another format version.
    #[error(
        "snapshot format version {found} is not supported (this build reads versions 1 to {supported})"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The newest version this build reads (it reads 1 up to it).
        supported: u32,
    },
    /// The file ends before a part it announces.
    #[error("snapshot is truncated: {what} needs {needed} bytes, {available} left")]
    Truncated {
        /// The part being read.
        what: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The header or the payload does not match its checksum: corrupt.
    #[error("snapshot is corrupt: {part} checksum {found:#018x}, expected {expected:#018x}")]
    ChecksumMismatch {
        /// `"header"` or `"payload"`.
        part: &'static str,
        /// Checksum recorded in the file.
        expected: u64,
        /// Checksum of what was read.
        found: u64,
    },
    /// The snapshot was taken from another module.
    #[error("snapshot was taken from another module (fingerprint {found:#018x}, this module is {expected:#018x})")]
    ModuleMismatch {
        /// The module's fingerprint.
        expected: u64,
        /// The fingerprint in the file.
        found: u64,
    },
    /// The payload is well-checksummed but does not fit the module or the
    /// format (wrong counts, values out of range, trailing bytes).
    #[error("snapshot does not fit: {0}")]
    Malformed(String),
}

pub use faaslet::checksum;

/// The fingerprint of a module: the [`checksum`] of its wasm bytes, what
/// [`faaslet::Module::fingerprint`] returns.
pub fn fingerprint(wasm: &[u8]) -> u64 {
    checksum(wasm)
}

/// One linear memory's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryRecord {
    /// All bytes of the memory (its length is the memory's size).
    pub bytes: Vec<u8>,
}

/// A snapshot as data: what the engine captured, independent of any process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// [`fingerprint`] of the module it was taken from.
    pub module_fingerprint: u64,
    /// The module's defined memories, in order.
    pub memories: Vec<MemoryRecord>,
    /// The module's defined globals' bits, in order (a funcref is stored as
    /// function index + 1, 0 for null).
    pub globals: Vec<u128>,
    /// The module's defined tables: function index + 1 per element, 0 for null.
    pub tables: Vec<Vec<u32>>,
    /// For each data segment, whether it was dropped.
    pub data_dropped: Vec<bool>,
    /// For each element segment, whether it was dropped.
    pub elem_dropped: Vec<bool>,
    /// The GC heap image (`faaslet::ImageParts::gc_heap`), empty when the
    /// store held no GC object. Written last and only when non-empty.
    /// (Version 2: headers hold heap-local type numbers and function
    /// reference fields heap-local function numbers, named by the two
    /// tables below; a version 1 file with a GC heap, whose headers held
    /// module type indices, is refused.)
    pub gc_heap: Vec<u8>,
    /// For each heap-local type number, the module's type index
    /// (`faaslet::ImageParts::gc_types`); empty without a GC heap.
    pub gc_types: Vec<u32>,
    /// For each heap-local function number - 1, the module's function
    /// index (`faaslet::ImageParts::gc_funcs`); empty without a GC heap.
    pub gc_funcs: Vec<u32>,
}

impl SnapshotFile {
    /// Serialises to bytes. Memory is stored as runs of non-zero 4 KiB
    /// granules, so untouched memory costs nothing in the file.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        put_u32(&mut p, self.memories.len() as u32);
        for m in &self.memories {
            put_u64(&mut p, m.bytes.len() as u64);
            let runs = nonzero_runs(&m.bytes);
            put_u32(&mut p, runs.len() as u32);
            for (from, to) in runs {
                put_u64(&mut p, from as u64);
                put_u64(&mut p, (to - from) as u64);
                p.extend_from_slice(&m.bytes[from..to]);
            }
        }
        put_u32(&mut p, self.globals.len() as u32);
        for g in &self.globals {
            p.extend_from_slice(&g.to_le_bytes());
        }
        put_u32(&mut p, self.tables.len() as u32);
        for t in &self.tables {
            put_u32(&mut p, t.len() as u32);
            for e in t {
                put_u32(&mut p, *e);
            }
        }
        for flags in [&self.data_dropped, &self.elem_dropped] {
            put_u32(&mut p, flags.len() as u32);
            p.extend(flags.iter().map(|&b| b as u8));
        }
        if !self.gc_heap.is_empty() {
            put_u64(&mut p, self.gc_heap.len() as u64);
            p.extend_from_slice(&self.gc_heap);
            for table in [&self.gc_types, &self.gc_funcs] {
                put_u32(&mut p, table.len() as u32);
                for x in table {
                    put_u32(&mut p, *x);
                }
            }
        }
        let mut out = Vec::with_capacity(HEADER_LEN + p.len());
        out.extend_from_slice(&MAGIC);
        put_u32(
            &mut out,
            if self.gc_heap.is_empty() {
                OLDEST_VERSION
            } else {
                VERSION
            },
        );
        put_u32(&mut out, 0);
        put_u64(&mut out, self.module_fingerprint);
        put_u64(&mut out, p.len() as u64);
        put_u64(&mut out, checksum(&p));
        let hc = checksum(&out[..40]);
        put_u64(&mut out, hc);
        out.extend_from_slice(&p);
        out
    }

    /// Reads only the header and returns the module fingerprint, after
    /// checking magic, version and the header checksum.
    pub fn peek_fingerprint(file: &[u8]) -> Result<u64, FormatError> {
        Ok(Header::parse(file)?.fingerprint)
    }

    /// Parses and checks a snapshot file.
    pub fn decode(file: &[u8]) -> Result<SnapshotFile, FormatError> {
        let h = Header::parse(file)?;
        let payload = &file[HEADER_LEN..];
        if (payload.len() as u64) < h.payload_len {
            return Err(FormatError::Truncated {
                what: "payload",
                needed: h.payload_len,
                available: payload.len() as u64,
            });
        }
        if payload.len() as u64 > h.payload_len {
            return Err(FormatError::Malformed(format!(
                "{} bytes after the payload",
                payload.len() as u64 - h.payload_len
            )));
        }
        let found = checksum(payload);
        if found != h.payload_checksum {
            return Err(FormatError::ChecksumMismatch {
                part: "payload",
                expected: h.payload_checksum,
                found,
            });
        }
        let mut r = Reader { buf: payload };
        let n = r.u32("memory count")?;
        let mut memories = Vec::new();
        for _ in 0..n {
            let len = r.u64("memory length")?;
            if len > 1u64 << 32 {
                return Err(FormatError::Malformed(format!(
                    "memory of {len} bytes is larger than 4 GiB"
                )));
            }
            let mut bytes = vec![0u8; len as usize];
            let runs = r.u32("run count")?;
            for _ in 0..runs {
                let from = r.u64("run offset")?;
                let n = r.u64("run length")?;
                let src = r.take("memory run", n)?;
                let end = from
                    .checked_add(n)
                    .filter(|&e| e <= len)
                    .ok_or_else(|| FormatError::Malformed("memory run beyond the memory".into()))?;
                bytes[from as usize..end as usize].copy_from_slice(src);
            }
            memories.push(MemoryRecord { bytes });
        }
        let n = r.u32("global count")?;
        let mut globals = Vec::new();
        for _ in 0..n {
            let b = r.take("global", 16)?;
            globals.push(u128::from_le_bytes(b.try_into().expect("16 bytes")));
        }
        let n = r.u32("table count")?;
        let mut tables = Vec::new();
        for _ in 0..n {
            let len = r.u32("table length")?;
            let raw = r.take("table elements", len as u64 * 4)?;
            tables.push(
                raw.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            );
        }
        let mut flags = [Vec::new(), Vec::new()];
        for f in &mut flags {
            let n = r.u32("segment count")?;
            let raw = r.take("segment flags", n as u64)?;
            for &b in raw {
                if b > 1 {
                    return Err(FormatError::Malformed(format!("segment flag {b}")));
                }
                f.push(b == 1);
            }
        }
        let mut gc_heap = Vec::new();
        let (mut gc_types, mut gc_funcs) = (Vec::new(), Vec::new());
        if !r.buf.is_empty() {
            if h.version < 2 {
                return Err(FormatError::Malformed(
                    "a version 1 snapshot with a GC heap (its object headers need a rewrite this build no longer makes): capture the snapshot again".into(),
                ));
            }
            let len = r.u64("GC heap length")?;
            if len == 0 || len > 1u64 << 32 {
                return Err(FormatError::Malformed(format!("a GC heap of {len} bytes")));
            }
            gc_heap = r.take("GC heap", len)?.to_vec();
            for (what, table) in [
                ("GC type table", &mut gc_types),
                ("GC function table", &mut gc_funcs),
            ] {
                let n = r.u32(what)?;
                let raw = r.take(what, u64::from(n) * 4)?;
                table.extend(
                    raw.chunks_exact(4)
                        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))),
                );
            }
        }
        if !r.buf.is_empty() {
            return Err(FormatError::Malformed(format!(
                "{} unread bytes at the end of the payload",
                r.buf.len()
            )));
        }
        let [data_dropped, elem_dropped] = flags;
        Ok(SnapshotFile {
            module_fingerprint: h.fingerprint,
            memories,
            globals,
            tables,
            data_dropped,
            elem_dropped,
            gc_heap,
            gc_types,
            gc_funcs,
        })
    }

    /// Checks that this snapshot belongs to the module with `fingerprint`.
    pub fn check_module(&self, fingerprint: u64) -> Result<(), FormatError> {
        if self.module_fingerprint != fingerprint {
            return Err(FormatError::ModuleMismatch {
                expected: fingerprint,
                found: self.module_fingerprint,
            });
        }
        Ok(())
    }
}

struct Header {
    version: u32,
    fingerprint: u64,
    payload_len: u64,
    payload_checksum: u64,
}

impl Header {
    fn parse(file: &[u8]) -> Result<Header, FormatError> {
        if file.len() >= 8 && file[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if file.len() < HEADER_LEN {
            return Err(FormatError::Truncated {
                what: "header",
                needed: HEADER_LEN as u64,
                available: file.len() as u64,
            });
        }
        let u32_at = |o: usize| u32::from_le_bytes(file[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(file[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        let expected = u64_at(40);
        let found = checksum(&file[..40]);
        if found != expected {
            return Err(FormatError::ChecksumMismatch {
                part: "header",
                expected,
                found,
            });
        }
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(FormatError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        Ok(Header {
            version,
            fingerprint: u64_at(16),
            payload_len: u64_at(24),
            payload_checksum: u64_at(32),
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, what: &'static str, n: u64) -> Result<&'a [u8], FormatError> {
        if n > self.buf.len() as u64 {
            return Err(FormatError::Truncated {
                what,
                needed: n,
                available: self.buf.len() as u64,
            });
        }
        let (a, b) = self.buf.split_at(n as usize);
        self.buf = b;
        Ok(a)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(
            self.take(what, 4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(
            self.take(what, 8)?.try_into().expect("8 bytes"),
        ))
    }
}

fn put_u32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put_u64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// Byte ranges covering the non-zero granules of `bytes`.
fn nonzero_runs(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, g) in bytes.chunks(GRANULE).enumerate() {
        if g.iter().all(|&b| b == 0) {
            continue;
        }
        let from = i * GRANULE;
        let to = from + g.len();
        match runs.last_mut() {
            Some(last) if last.1 == from => last.1 = to,
            _ => runs.push((from, to)),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotFile {
        let mut bytes = vec![0u8; 3 * 65536];
        bytes[5] = 1;
        bytes[70000] = 2;
        SnapshotFile {
            module_fingerprint: 77,
            memories: vec![MemoryRecord { bytes }],
            globals: vec![1, u128::MAX],
            tables: vec![vec![0, 1, 2], vec![]],
            data_dropped: vec![false, true],
            elem_dropped: vec![true],
            gc_heap: vec![],
            gc_types: vec![],
            gc_funcs: vec![],
        }
    }

    #[test]
    fn gc_heap_round_trips_and_is_absent_when_empty() {
        let plain = sample().encode();
        let mut s = sample();
        s.gc_heap = (0..64u8).collect();
        s.gc_types = vec![3, 1];
        s.gc_funcs = vec![u32::MAX, 0, 9];
        let f = s.encode();
        assert_eq!(f.len(), plain.len() + 8 + 64 + 4 + 2 * 4 + 4 + 3 * 4);
        assert_eq!(SnapshotFile::decode(&f).unwrap(), s);
        // Every cut inside the GC section (heap or tables) is refused.
        for cut in plain.len() - HEADER_LEN..f.len() - HEADER_LEN {
            let mut payload = f[HEADER_LEN..HEADER_LEN + cut].to_vec();
            let mut file = f[..HEADER_LEN].to_vec();
            // Re-seal the header for the shorter payload, so the parser
            // (not the checksum) must find the cut.
            file[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
            file[32..40].copy_from_slice(&checksum(&payload).to_le_bytes());
            let hc = checksum(&file[..40]);
            file[40..48].copy_from_slice(&hc.to_le_bytes());
            file.append(&mut payload);
            if cut == plain.len() - HEADER_LEN {
                assert!(SnapshotFile::decode(&file).unwrap().gc_heap.is_empty());
            } else {
                assert!(
                    SnapshotFile::decode(&file).is_err(),
                    "a GC section cut at {cut} was accepted"
                );
            }
        }
        assert!(SnapshotFile::decode(&plain).unwrap().gc_heap.is_empty());
        // Without a GC heap a file is version 1, as before GC heaps, which
        // older builds read; with one, version 2.
        let version = |f: &[u8]| u32::from_le_bytes(f[8..12].try_into().unwrap());
        assert_eq!((version(&plain), version(&f)), (OLDEST_VERSION, VERSION));
        // A version 1 file with a GC section (as builds before the
        // heap-local numbers wrote them) is refused with the reason.
        let mut old = f.clone();
        old[8..12].copy_from_slice(&1u32.to_le_bytes());
        let hc = checksum(&old[..40]);
        old[40..48].copy_from_slice(&hc.to_le_bytes());
        match SnapshotFile::decode(&old) {
            Err(FormatError::Malformed(m)) => assert!(m.contains("version 1"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_and_sparse() {
        let s = sample();
        let f = s.encode();
        assert!(
            f.len() < 3 * 4096 + 200,
            "zero pages are not stored: {}",
            f.len()
        );
        assert_eq!(SnapshotFile::decode(&f).unwrap(), s);
    }

    #[test]
    fn every_truncation_is_refused() {
        let f = sample().encode();
        for n in 0..f.len() {
            assert!(
                SnapshotFile::decode(&f[..n]).is_err(),
                "prefix of {n} accepted"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let f = sample().encode();
        for i in (0..f.len()).step_by(7) {
            let mut g = f.clone();
            g[i] ^= 0x10;
            assert!(SnapshotFile::decode(&g).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn version_and_module_checks() {
        let mut f = sample().encode();
        f[8] = 9;
        let hc = checksum(&f[..40]);
        f[40..48].copy_from_slice(&hc.to_le_bytes());
        assert_eq!(
            SnapshotFile::decode(&f),
            Err(FormatError::UnsupportedVersion {
                found: 9,
                supported: VERSION
            })
        );
        assert_eq!(
            sample().check_module(78),
            Err(FormatError::ModuleMismatch {
                expected: 78,
                found: 77
            })
        );
        assert_eq!(
            SnapshotFile::decode(b"hello world, no snapshot here!!!!!!!!!!!!!!!!!!!!!"),
            Err(FormatError::BadMagic)
        );
    }
}
