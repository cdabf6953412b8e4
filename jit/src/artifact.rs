//! Compiled code that outlives the process: the artefact format of the
//! code cache.
//!
//! An artefact holds the machine code of a module's functions and array
//! trampolines *before* relocation, with their relocations and trap and
//! source-location tables, so loading it is only placing bytes and
//! patching calls: no translation, no Cranelift. The module's description
//! ([`ModuleInfo`](crate::ModuleInfo)) is not stored: loading re-parses the
//! wasm (without validating function bodies again), so an artefact can
//! only ever be loaded beside the very wasm it was compiled from.
//!
//! # Why the key matters for safety
//!
//! Code compiled for one configuration is not safe in another: code whose
//! bounds checks were elided because the guard region covers them
//! ([`BoundsChecks::GuardPages`](crate::BoundsChecks)) would read and
//! write past a memory placed in an explicit-bounds reservation, which has
//! no such guard. So every artefact carries a [`key`](ArtifactKey): the
//! SHA-256 of the wasm and of everything that changes the code (artefact
//! format, this crate's version and a hash of its sources, the whole
//! [`CompileConfig`], the target triple and every
//! Cranelift and CPU-feature flag). Loading recomputes the key from the
//! wasm and the loading compiler and refuses an artefact whose key
//! differs. A SHA-256 of the payload detects corruption; every table is
//! bounds-checked as it is decoded, so a damaged file is a typed
//! [`ArtifactError`], never a panic.
//!
//! # Canonical type ids
//!
//! `call_indirect` compares the callee's canonical type id (assigned by
//! the engine's type registry, in the order types are first seen) with
//! the caller's, which the code holds as an immediate. Another engine, or
//! the same one later, may have given the same types other ids: code
//! compiled under one assignment and run under another would accept a
//! function of the wrong type (a type confusion) or refuse the right one.
//! So the artefact records the id of every declared type as compiled, and
//! loading refuses it ([`ArtifactError::TypeIds`]) unless the loading
//! engine gives every type the same id; the caller compiles instead.
//!
//! The key is not a signature: whoever can write the cache can make the
//! host run any code, exactly as whoever can replace the binary can. Keep
//! the cache directory as private as the binary.
//!
//! # Layout (all integers little-endian)
//!
//! ```text
//! header   magic "FSLTCODE" | format u32 | key [32] | payload length u64 | payload SHA-256 [32]
//! payload  type ids u32, then per declared type: its canonical id u32
//!          functions u32, then per function: a blob
//!          trampolines u32, then per distinct function type (first-seen order): a blob
//! blob     func index u32 | align log2 u8 | code length u32 | code
//!          | relocations u32 × (offset u32, kind u8, target, addend i64)
//!          | traps u32 × (offset u32, code u8)
//!          | source locations u32 × (start u32, end u32, wasm offset u32)
//! target   0 function (id u32) | 1 libcall (index u16) | 2 known symbol (index u8)
//!          | 3 function offset (id u32, offset u32)
//! ```

use crate::CompileConfig;
use cranelift_codegen::binemit::Reloc;
use cranelift_codegen::ir::{KnownSymbol, LibCall, TrapCode};
use cranelift_codegen::isa::TargetIsa;
use cranelift_module::{FuncId, ModuleReloc, ModuleRelocTarget};
use sha2::{Digest, Sha256};
use std::num::NonZeroU8;

/// The first eight bytes of every artefact.
pub const MAGIC: &[u8; 8] = b"FSLTCODE";
/// The artefact format this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes before the payload.
const HEADER_LEN: usize = 8 + 4 + 32 + 8 + 32;
/// The largest alignment a function may ask for (log2): Cranelift asks
/// for 16 or 32 bytes; anything past a page is corruption.
const MAX_ALIGN_LOG2: u8 = 12;

/// What identifies compiled code: the SHA-256 of the wasm and of every
/// setting that changes the code. Two compilers with the same key produce
/// interchangeable code; [`ArtifactKey::to_hex`] names a cache file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArtifactKey(pub [u8; 32]);

impl ArtifactKey {
    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why an artefact could not be loaded. Every variant means "compile the
/// wasm instead"; none leaves anything half-loaded behind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArtifactError {
    /// The bytes do not start with [`MAGIC`]: not a faaslet artefact.
    #[error("not a faaslet code artefact (bad magic)")]
    BadMagic,
    /// Written by a build using another artefact format.
    #[error("artefact format {found}, this build reads format {expected}")]
    Version {
        /// The format in the file.
        found: u32,
        /// The format this build reads.
        expected: u32,
    },
    /// The file ends before what its header or tables announce.
    #[error("artefact truncated: {0}")]
    Truncated(String),
    /// The payload's SHA-256 differs from the header's: the file is damaged.
    #[error("artefact corrupt: payload checksum mismatch")]
    Checksum,
    /// Compiled from another wasm, or by a compiler with another
    /// configuration, version or CPU: its code must not run here.
    #[error(
        "artefact compiled for another module or configuration (key {found}, expected {expected})"
    )]
    Foreign {
        /// The key in the file.
        found: ArtifactKey,
        /// The key of this wasm under this compiler.
        expected: ArtifactKey,
    },
    /// Compiled under canonical type ids that differ from the loading
    /// engine's (see the [module docs](self)): its signature checks would
    /// compare the wrong types.
    #[error("artefact compiled with other canonical type ids (type {index}: id {found} there, {expected} here)")]
    TypeIds {
        /// The first declared type whose id differs.
        index: u32,
        /// Its id when compiled.
        found: u32,
        /// Its id in the loading engine.
        expected: u32,
    },
    /// Decoded, but inconsistent with itself or with the wasm.
    #[error("artefact malformed: {0}")]
    Malformed(String),
    /// The wasm beside the artefact does not parse, or the code could not
    /// be placed in memory.
    #[error("loading artefact: {0}")]
    Load(#[from] crate::CompileError),
    /// The code cannot be written as an artefact (a relocation kind this
    /// format does not know). The module itself compiled and works.
    #[error("code cannot be serialised: {0}")]
    Unserializable(String),
}

/// One function (or trampoline) compiled but not placed: machine code
/// before relocation, and its tables.
pub(crate) struct Blob {
    pub func_index: u32,
    pub align: u64,
    pub bytes: Vec<u8>,
    pub relocs: Vec<ModuleReloc>,
    /// (offset from start, code), sorted by offset.
    pub traps: Box<[(u32, TrapCode)]>,
    /// (start, end, wasm offset), sorted by start.
    pub srclocs: Box<[(u32, u32, u32)]>,
}

/// The relocation kinds the format knows, by index. Cranelift emits only
/// a few of these for our code on any one host; the rest make the format
/// complete for the targets Cranelift supports natively.
const RELOCS: &[Reloc] = &[
    Reloc::Abs4,
    Reloc::Abs8,
    Reloc::X86PCRel4,
    Reloc::X86CallPCRel4,
    Reloc::X86CallPLTRel4,
    Reloc::X86GOTPCRel4,
    Reloc::Arm64Call,
    Reloc::S390xPCRel32Dbl,
    Reloc::S390xPLTRel32Dbl,
    Reloc::RiscvCallPlt,
];

const KNOWN_SYMBOLS: &[KnownSymbol] =
    &[KnownSymbol::ElfGlobalOffsetTable, KnownSymbol::CoffTlsIndex];

/// Bytes a relocation of `kind` patches, for bounds-checking its offset.
fn reloc_width(kind: Reloc) -> u32 {
    match kind {
        Reloc::Abs8 | Reloc::RiscvCallPlt => 8,
        _ => 4,
    }
}

/// The key of `wasm` compiled by a compiler with `config` for `isa`.
pub(crate) fn key(wasm: &[u8], config: &CompileConfig, isa: &dyn TargetIsa) -> ArtifactKey {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    };
    field("format", &FORMAT_VERSION.to_le_bytes());
    field("version", env!("CARGO_PKG_VERSION").as_bytes());
    // Any change to the translator changes the code (and may change the
    // VM ABI the code assumes) without changing the version number.
    field("sources", env!("FAASLET_JIT_SOURCE_HASH").as_bytes());
    // Debug prints every field, so a setting added later joins the key
    // without anyone remembering to add it here.
    field("config", format!("{config:?}").as_bytes());
    field("triple", isa.triple().to_string().as_bytes());
    field("flags", isa.flags().to_string().as_bytes());
    for f in isa.isa_flags() {
        field("isa flag", f.to_string().as_bytes());
    }
    field("wasm", &Sha256::digest(wasm));
    ArtifactKey(h.finalize().into())
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn len_u32(n: usize, what: &str) -> Result<u32, ArtifactError> {
    u32::try_from(n).map_err(|_| ArtifactError::Unserializable(format!("{what}: {n} is too many")))
}

fn put_blob(out: &mut Vec<u8>, b: &Blob) -> Result<(), ArtifactError> {
    put_u32(out, b.func_index);
    if !b.align.is_power_of_two() || b.align.trailing_zeros() > u32::from(MAX_ALIGN_LOG2) {
        return Err(ArtifactError::Unserializable(format!(
            "alignment {}",
            b.align
        )));
    }
    out.push(b.align.trailing_zeros() as u8);
    put_u32(out, len_u32(b.bytes.len(), "code bytes")?);
    out.extend_from_slice(&b.bytes);
    put_u32(out, len_u32(b.relocs.len(), "relocations")?);
    for r in &b.relocs {
        put_u32(out, r.offset);
        let kind = RELOCS.iter().position(|k| *k == r.kind).ok_or_else(|| {
            ArtifactError::Unserializable(format!("relocation kind {:?}", r.kind))
        })?;
        out.push(kind as u8);
        match &r.name {
            ModuleRelocTarget::User {
                namespace: 0,
                index,
            } => {
                out.push(0);
                put_u32(out, *index);
            }
            ModuleRelocTarget::User { namespace, .. } => {
                return Err(ArtifactError::Unserializable(format!(
                    "relocation to namespace {namespace}"
                )))
            }
            ModuleRelocTarget::LibCall(l) => {
                let i = LibCall::all_libcalls()
                    .iter()
                    .position(|x| x == l)
                    .ok_or_else(|| ArtifactError::Unserializable(format!("libcall {l}")))?;
                out.push(1);
                out.extend_from_slice(&(i as u16).to_le_bytes());
            }
            ModuleRelocTarget::KnownSymbol(s) => {
                let i = KNOWN_SYMBOLS
                    .iter()
                    .position(|x| x == s)
                    .ok_or_else(|| ArtifactError::Unserializable(format!("symbol {s}")))?;
                out.push(2);
                out.push(i as u8);
            }
            ModuleRelocTarget::FunctionOffset(id, off) => {
                out.push(3);
                put_u32(out, id.as_u32());
                put_u32(out, *off);
            }
        }
        out.extend_from_slice(&r.addend.to_le_bytes());
    }
    put_u32(out, len_u32(b.traps.len(), "trap sites")?);
    for (off, code) in b.traps.iter() {
        put_u32(out, *off);
        out.push(code.as_raw().get());
    }
    put_u32(out, len_u32(b.srclocs.len(), "source locations")?);
    for (s, e, l) in b.srclocs.iter() {
        put_u32(out, *s);
        put_u32(out, *e);
        put_u32(out, *l);
    }
    Ok(())
}

/// Writes the artefact of a module's compiled functions and trampolines.
pub(crate) fn serialize(
    key: ArtifactKey,
    type_ids: &[u32],
    funcs: &[Blob],
    trampolines: &[Blob],
) -> Result<Vec<u8>, ArtifactError> {
    let code: usize = funcs.iter().chain(trampolines).map(|b| b.bytes.len()).sum();
    let mut payload =
        Vec::with_capacity(code + 64 * (funcs.len() + trampolines.len()) + 4 * type_ids.len() + 12);
    put_u32(&mut payload, len_u32(type_ids.len(), "types")?);
    for &id in type_ids {
        put_u32(&mut payload, id);
    }
    put_u32(&mut payload, len_u32(funcs.len(), "functions")?);
    for b in funcs {
        put_blob(&mut payload, b)?;
    }
    put_u32(&mut payload, len_u32(trampolines.len(), "trampolines")?);
    for b in trampolines {
        put_blob(&mut payload, b)?;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, FORMAT_VERSION);
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    Ok(out)
}

/// A bounds-checked cursor over the payload.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ArtifactError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                ArtifactError::Truncated(format!(
                    "{what}: {n} bytes at offset {} of {}",
                    self.pos,
                    self.bytes.len()
                ))
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ArtifactError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, ArtifactError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ArtifactError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64, ArtifactError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    /// A count of entries of at least `min_size` bytes each: refused if
    /// the rest of the payload cannot hold them, so a damaged count never
    /// makes the loader reserve memory it names.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize, ArtifactError> {
        let n = self.u32(what)? as usize;
        let rest = self.bytes.len() - self.pos;
        if n.saturating_mul(min_size.max(1)) > rest {
            return Err(ArtifactError::Truncated(format!(
                "{n} {what} announced, {rest} bytes left"
            )));
        }
        Ok(n)
    }
}

fn malformed(msg: String) -> ArtifactError {
    ArtifactError::Malformed(msg)
}

/// Decodes one blob. `num_ids` is how many function ids the module
/// declares (functions, then trampolines): relocation targets must be
/// among them.
fn get_blob(r: &mut Reader<'_>, num_ids: u32) -> Result<Blob, ArtifactError> {
    let func_index = r.u32("function index")?;
    let align_log2 = r.u8("alignment")?;
    if align_log2 > MAX_ALIGN_LOG2 {
        return Err(malformed(format!("alignment 2^{align_log2}")));
    }
    let len = r.u32("code length")? as usize;
    let bytes = r.take(len, "code")?.to_vec();
    let code_len = len as u64;
    let n = r.count(4 + 1 + 1 + 4 + 8, "relocations")?;
    let mut relocs = Vec::with_capacity(n);
    for _ in 0..n {
        let offset = r.u32("relocation offset")?;
        let k = r.u8("relocation kind")? as usize;
        let kind = *RELOCS
            .get(k)
            .ok_or_else(|| malformed(format!("relocation kind {k}")))?;
        if u64::from(offset) + u64::from(reloc_width(kind)) > code_len {
            return Err(malformed(format!(
                "relocation at {offset} past the end of {code_len} bytes of code"
            )));
        }
        let check_id = |id: u32| {
            if id < num_ids {
                Ok(FuncId::from_u32(id))
            } else {
                Err(malformed(format!(
                    "relocation to function id {id} of {num_ids}"
                )))
            }
        };
        let name = match r.u8("relocation target")? {
            0 => ModuleRelocTarget::User {
                namespace: 0,
                index: check_id(r.u32("function id")?)?.as_u32(),
            },
            1 => {
                let i = r.u16("libcall")? as usize;
                ModuleRelocTarget::LibCall(
                    *LibCall::all_libcalls()
                        .get(i)
                        .ok_or_else(|| malformed(format!("libcall {i}")))?,
                )
            }
            2 => {
                let i = r.u8("known symbol")? as usize;
                ModuleRelocTarget::KnownSymbol(
                    *KNOWN_SYMBOLS
                        .get(i)
                        .ok_or_else(|| malformed(format!("known symbol {i}")))?,
                )
            }
            3 => {
                let id = check_id(r.u32("function id")?)?;
                ModuleRelocTarget::FunctionOffset(id, r.u32("function offset")?)
            }
            t => return Err(malformed(format!("relocation target tag {t}"))),
        };
        let addend = r.u64("addend")? as i64;
        relocs.push(ModuleReloc {
            offset,
            kind,
            name,
            addend,
        });
    }
    let n = r.count(5, "trap sites")?;
    let mut traps = Vec::with_capacity(n);
    let mut last = None;
    for _ in 0..n {
        let off = r.u32("trap offset")?;
        let code = NonZeroU8::new(r.u8("trap code")?)
            .map(TrapCode::from_raw)
            .ok_or_else(|| malformed("trap code 0".into()))?;
        if u64::from(off) > code_len || last.is_some_and(|l| l > off) {
            return Err(malformed(format!(
                "trap site at {off} out of order or past the code"
            )));
        }
        last = Some(off);
        traps.push((off, code));
    }
    let n = r.count(12, "source locations")?;
    let mut srclocs = Vec::with_capacity(n);
    for _ in 0..n {
        let s = r.u32("location start")?;
        let e = r.u32("location end")?;
        let l = r.u32("wasm offset")?;
        if s > e || u64::from(e) > code_len {
            return Err(malformed(format!("source location {s}..{e} past the code")));
        }
        srclocs.push((s, e, l));
    }
    Ok(Blob {
        func_index,
        align: 1u64 << align_log2,
        bytes,
        relocs,
        traps: traps.into(),
        srclocs: srclocs.into(),
    })
}

/// Checks the header of `bytes` against `expected` (magic, format, key,
/// payload length and checksum) and returns the payload.
pub(crate) fn check_header(bytes: &[u8], expected: ArtifactKey) -> Result<&[u8], ArtifactError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(ArtifactError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(ArtifactError::Truncated(format!(
            "header: {} of {HEADER_LEN} bytes",
            bytes.len()
        )));
    }
    let mut h = Reader { bytes, pos: 8 };
    let version = h.u32("format")?;
    if version != FORMAT_VERSION {
        return Err(ArtifactError::Version {
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let found = ArtifactKey(h.take(32, "key")?.try_into().unwrap());
    if found != expected {
        return Err(ArtifactError::Foreign { found, expected });
    }
    let len = h.u64("payload length")?;
    let sum: [u8; 32] = h.take(32, "payload checksum")?.try_into().unwrap();
    let payload = &bytes[HEADER_LEN..];
    if (payload.len() as u64) < len {
        return Err(ArtifactError::Truncated(format!(
            "payload: {} of {len} bytes",
            payload.len()
        )));
    }
    if payload.len() as u64 != len {
        return Err(malformed(format!(
            "{} bytes after a payload of {len}",
            payload.len() as u64 - len
        )));
    }
    if Sha256::digest(payload).as_slice() != sum {
        return Err(ArtifactError::Checksum);
    }
    Ok(payload)
}

/// Decodes a payload [`check_header`] returned: the canonical ids of the
/// module's `type_ids.len()` types, which must be `type_ids` (the loading
/// engine's), then `funcs` functions and `trampolines` trampolines.
pub(crate) fn decode(
    payload: &[u8],
    type_ids: &[u32],
    funcs: usize,
    trampolines: usize,
) -> Result<(Vec<Blob>, Vec<Blob>), ArtifactError> {
    let num_ids =
        u32::try_from(funcs + trampolines).map_err(|_| malformed("too many functions".into()))?;
    let mut r = Reader {
        bytes: payload,
        pos: 0,
    };
    let n = r.count(4, "types")?;
    if n != type_ids.len() {
        return Err(malformed(format!(
            "{n} types, the module has {}",
            type_ids.len()
        )));
    }
    for (index, &expected) in type_ids.iter().enumerate() {
        let found = r.u32("type id")?;
        if found != expected {
            return Err(ArtifactError::TypeIds {
                index: index as u32,
                found,
                expected,
            });
        }
    }
    let section = |r: &mut Reader<'_>, want: usize, what: &str| {
        let n = r.count(4 + 1 + 4 + 12, what)?;
        if n != want {
            return Err(malformed(format!("{n} {what}, the module has {want}")));
        }
        (0..n)
            .map(|_| get_blob(r, num_ids))
            .collect::<Result<Vec<_>, _>>()
    };
    let f = section(&mut r, funcs, "functions")?;
    let t = section(&mut r, trampolines, "trampolines")?;
    if r.pos != payload.len() {
        return Err(malformed(format!(
            "{} bytes after the last trampoline",
            payload.len() - r.pos
        )));
    }
    Ok((f, t))
}
