//! [`CodeCache`]: machine code compiled once and kept on disk, so a module
//! uploaded (or run) before loads in milliseconds instead of compiling
//! again, after a restart too.
//!
//! Each entry is one file, `DIR/KEY.code`, where `KEY` is
//! [`Engine::artifact_key`] of the wasm: the SHA-256 of the wasm and of
//! everything that changes the code (bounds mode, guard size, features,
//! JIT version and sources, CPU flags). An engine with another
//! configuration computes another key and so never even opens a file it
//! must not run; should such a file be found under its key anyway
//! (renamed, damaged, truncated, written by another build), the engine
//! refuses it with a typed [`ArtifactError`](faaslet::ArtifactError), the cache says so
//! ([`CacheOutcome::Rejected`]), compiles the wasm and replaces the file.
//!
//! Files are written to a temporary name and renamed into place, so a
//! crash leaves either the old entry or the new one, never half of one.
//! A cache that cannot be written (read-only or full disk) only costs the
//! next load a compilation: the module is returned regardless.
//!
//! ```
//! use faaslet::Engine;
//! use faaslet_platform::code_cache::{CacheOutcome, CodeCache};
//!
//! let dir = std::env::temp_dir().join(format!("faaslet-doc-cache-{}", std::process::id()));
//! let cache = CodeCache::new(&dir).unwrap();
//! let engine = Engine::default();
//! let wasm = faaslet::wat_to_wasm("(module (func (export \"f\")))").unwrap();
//! let (_, first) = cache.module(&engine, &wasm).unwrap();
//! assert_eq!(first, CacheOutcome::Miss);
//! let (_, second) = cache.module(&engine, &wasm).unwrap();
//! assert_eq!(second, CacheOutcome::Hit);
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```

use crate::compile_child::CompileChild;
use faaslet::{Engine, Error, Module};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How a cache miss may compile.
#[derive(Clone, Copy)]
enum Budget<'a> {
    None,
    Time(Duration),
    Child(&'a CompileChild),
}

/// How [`CodeCache::module`] obtained a module.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheOutcome {
    /// Loaded from the cache without compiling.
    Hit,
    /// Not in the cache: compiled (and stored, if the cache is writable).
    Miss,
    /// A file was there but was refused (why): compiled and replaced.
    Rejected(String),
}

/// Totals of a cache's lookups since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Modules loaded from the cache.
    pub hits: u64,
    /// Modules compiled because no entry existed.
    pub misses: u64,
    /// Entries refused (corrupt, truncated, foreign) and recompiled.
    pub rejected: u64,
    /// Entries that could not be written (the module still worked).
    pub write_errors: u64,
}

/// A directory of compiled code keyed by [`Engine::artifact_key`]. Shared
/// by threads (`&self` everywhere); several processes may share the
/// directory too, since entries are replaced atomically.
#[derive(Debug)]
pub struct CodeCache {
    dir: PathBuf,
    hits: AtomicU64,
    misses: AtomicU64,
    rejected: AtomicU64,
    write_errors: AtomicU64,
}

/// Why the cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("code cache {path}: {source}")]
pub struct CacheDirError {
    /// The directory.
    pub path: String,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

impl CodeCache {
    /// A cache in `dir`, created if missing.
    pub fn new(dir: impl Into<PathBuf>) -> Result<CodeCache, CacheDirError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| CacheDirError {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(CodeCache {
            dir,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds (or would hold) `wasm`'s code for `engine`.
    pub fn path_of(&self, engine: &Engine, wasm: &[u8]) -> PathBuf {
        self.dir
            .join(format!("{}.code", engine.artifact_key(wasm).to_hex()))
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            write_errors: self.write_errors.load(Ordering::Relaxed),
        }
    }

    /// `wasm` compiled for `engine`: loaded from the cache if a valid
    /// entry exists, otherwise compiled and stored. Like [`Module::new`],
    /// it takes a wasm binary or WAT text (cached under the binary it
    /// encodes to). A compile error (the wasm is malformed or invalid) is
    /// the only error; cache trouble is reported through the outcome and
    /// logged.
    pub fn module(&self, engine: &Engine, wasm: &[u8]) -> Result<(Module, CacheOutcome), Error> {
        self.module_within(engine, wasm, None)
    }

    /// [`module`](Self::module), compiling (on a miss) within `budget`:
    /// past it the module is refused with a compile error of kind
    /// [`Budget`](faaslet::CompileErrorKind::Budget).
    pub fn module_within(
        &self,
        engine: &Engine,
        wasm: &[u8],
        budget: Option<std::time::Duration>,
    ) -> Result<(Module, CacheOutcome), Error> {
        self.module_budgeted(engine, wasm, budget.map_or(Budget::None, Budget::Time))
    }

    /// [`module`](Self::module), compiling (on a miss) in a child process
    /// within its time and memory budgets (see [`CompileChild`]): for
    /// modules written by someone else. Past a budget the module is
    /// refused with a compile error of kind
    /// [`Budget`](faaslet::CompileErrorKind::Budget) naming it.
    pub fn module_in_child(
        &self,
        engine: &Engine,
        wasm: &[u8],
        child: &CompileChild,
    ) -> Result<(Module, CacheOutcome), Error> {
        self.module_budgeted(engine, wasm, Budget::Child(child))
    }

    fn module_budgeted(
        &self,
        engine: &Engine,
        wasm: &[u8],
        budget: Budget<'_>,
    ) -> Result<(Module, CacheOutcome), Error> {
        if !wasm.starts_with(b"\0asm") {
            let text = std::str::from_utf8(wasm).map_err(|_| {
                Error::Compile(faaslet::CompileError {
                    kind: faaslet::CompileErrorKind::Malformed,
                    message: "neither a wasm binary (no \\0asm magic) nor UTF-8 text".into(),
                    section: None,
                    func_index: None,
                    offset: Some(0),
                })
            })?;
            return self.module_budgeted(engine, &faaslet::wat_to_wasm(text)?, budget);
        }
        let path = self.path_of(engine, wasm);
        let outcome = match std::fs::read(&path) {
            Ok(bytes) => {
                let start = Instant::now();
                match Module::from_artifact(engine, wasm, &bytes) {
                    Ok(m) => {
                        self.hits.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            "code cache hit {} ({} KiB) in {:?}",
                            path.display(),
                            bytes.len() >> 10,
                            start.elapsed()
                        );
                        return Ok((m, CacheOutcome::Hit));
                    }
                    Err(e) => {
                        self.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("code cache: refusing {}: {e}; recompiling", path.display());
                        CacheOutcome::Rejected(e.to_string())
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                CacheOutcome::Miss
            }
            Err(e) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "code cache: cannot read {}: {e}; recompiling",
                    path.display()
                );
                CacheOutcome::Miss
            }
        };
        let start = Instant::now();
        let (module, artifact) = match budget {
            Budget::Time(b) => Module::from_binary_with_artifact_within(engine, wasm, b)?,
            Budget::None => Module::from_binary_with_artifact(engine, wasm)?,
            Budget::Child(child) => {
                let artifact = child.compile(engine, wasm)?;
                let module = Module::from_artifact(engine, wasm, &artifact).map_err(|e| {
                    Error::Resource(format!(
                        "the compile process made an artefact this engine refuses: {e}"
                    ))
                })?;
                (module, Ok(artifact))
            }
        };
        let took = start.elapsed();
        match artifact {
            Ok(bytes) => {
                if let Err(e) = write_atomically(&path, &bytes) {
                    self.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("code cache: cannot write {}: {e}", path.display());
                } else {
                    tracing::debug!(
                        "code cache: compiled in {took:?}, stored {} ({} KiB)",
                        path.display(),
                        bytes.len() >> 10
                    );
                }
            }
            Err(e) => {
                self.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("code cache: not caching: {e}");
            }
        }
        Ok((module, outcome))
    }

    /// Loads `wasm` from the cache only (no compiling): `None` when there
    /// is no valid entry. With the time the load took, for reports.
    pub fn load(&self, engine: &Engine, wasm: &[u8]) -> Option<(Module, Duration)> {
        let bytes = std::fs::read(self.path_of(engine, wasm)).ok()?;
        let start = Instant::now();
        let m = Module::from_artifact(engine, wasm, &bytes).ok()?;
        Some((m, start.elapsed()))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same
/// directory, flushed before the rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
