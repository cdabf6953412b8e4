//! The [`FunctionRegistry`]: the functions chained calls may name.

use crate::error::FaasletError;
use faaslet::{Engine, Module};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The functions chained calls may name: a directory of `NAME.wasm` (or
/// `NAME.wat`) files, each compiled once on first use and cached. Cheap to
/// clone; shared by every Faaslet of a host.
#[derive(Clone)]
pub struct FunctionRegistry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    engine: Engine,
    dir: PathBuf,
    cache: Mutex<HashMap<String, Module>>,
}

impl std::fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionRegistry")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

/// Whether `name` is a plain function name: ASCII letters, digits, `_`,
/// `-` and `.`, not starting with `.`, at most 255 bytes. Anything else
/// (a `/`, `..`, a NUL) could reach outside the function directory.
pub fn valid_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

impl FunctionRegistry {
    /// A registry over `dir`, compiling with `engine`.
    pub fn new(engine: &Engine, dir: impl Into<PathBuf>) -> FunctionRegistry {
        FunctionRegistry {
            inner: Arc::new(RegistryInner {
                engine: engine.clone(),
                dir: dir.into(),
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Registers an already compiled module under `name` (it then shadows
    /// any file of that name).
    pub fn insert(&self, name: &str, module: Module) {
        self.lock().insert(name.to_string(), module);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Module>> {
        self.inner.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The compiled module of function `name`.
    pub fn get(&self, name: &str) -> Result<Module, FaasletError> {
        if !valid_function_name(name) {
            return Err(FaasletError::BadName(name.to_string()));
        }
        // Held while compiling, so each function is compiled once.
        let mut cache = self.lock();
        if let Some(m) = cache.get(name) {
            return Ok(m.clone());
        }
        let mut found = None;
        for ext in ["wasm", "wat"] {
            let path = self.inner.dir.join(format!("{name}.{ext}"));
            if path.is_file() {
                found = Some(path);
                break;
            }
        }
        let path = found.ok_or_else(|| FaasletError::NoSuchFunction {
            name: name.to_string(),
            dir: self.inner.dir.display().to_string(),
        })?;
        let bytes = std::fs::read(&path).map_err(|e| FaasletError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let module = Module::new(&self.inner.engine, &bytes)?;
        cache.insert(name.to_string(), module.clone());
        Ok(module)
    }
}
