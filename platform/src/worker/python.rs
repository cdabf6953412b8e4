//! Python functions: a script uploaded with `PUT /p/{user}/{function}` runs
//! in CPython (a WASI build of the interpreter, [`WorkerConfig::python`]),
//! and every call resumes a Proto-Faaslet of the interpreter captured where
//! the script first reads its input (see [`at_input`](crate::at_input)):
//! the interpreter has started and the script's imports have run.
//!
//! The machinery (preparing the interpreter, capturing, storing,
//! reloading, publishing) is shared with JavaScript in
//! [`script`](super::script), which also holds the driver CPython runs a
//! script with.
//!
//! [`WorkerConfig::python`]: super::WorkerConfig::python

use crate::worker::core::{Worker, WorkerError};
use crate::worker::language::Language;
use faaslet::Module;

impl Worker {
    /// The interpreter Python functions run on: the configured CPython,
    /// asyncified (once: kept under `DATA/runtimes/`) and compiled (once:
    /// the code cache). Blocking, and slow the very first time.
    pub fn python_runtime(&self) -> Result<Module, WorkerError> {
        self.script_runtime(Language::Python)
    }

    /// Uploads the Python script `script` as `user/function`: captures the
    /// interpreter at the script's first read of stdin (its imports done),
    /// stores the script, the snapshot and the point, and makes it
    /// callable. Blocking: call it on an executor thread.
    pub fn upload_python(
        &self,
        user: &str,
        function: &str,
        script: &[u8],
    ) -> Result<(), WorkerError> {
        self.upload_script(Language::Python, user, function, script)
    }
}
