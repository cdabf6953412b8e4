//! JavaScript functions: a script uploaded with `PUT /js/{user}/{function}`
//! runs in QuickJS ([`WorkerConfig::js`]: `qjs-faaslet.wasm`, our driver
//! around QuickJS-NG built for WASI by `sdk/js/build.sh`), and every call
//! resumes a Proto-Faaslet of the interpreter captured where the driver
//! reads its input (see [`at_input`](crate::at_input)): the runtime has
//! started and the script has been compiled; the call runs the script.
//!
//! The driver reads stdin in `main`, after compiling the script and before
//! running it, and `readInput()` hands out what it read. Reading under
//! `readInput()` instead (as a first version did) put QuickJS's
//! interpreter on the path to the read, and asyncify then instrumented
//! the interpreter and nearly everything it calls: CPU-bound JavaScript
//! ran about 3.5x slower than in the unmodified command. The driver's
//! build names `main`'s path in the module's
//! [`ONLYLIST_SECTION`](crate::at_input::ONLYLIST_SECTION), so only those
//! few functions are transformed and the interpreter runs as built. The
//! price: a script's top-level code runs in every call instead of once at
//! the capture (Python's imports, by contrast, are captured).
//!
//! The driver evaluates its first argument as a global script; the script
//! reads the call's input with `readInput()` (the whole of stdin, as a
//! string) and writes its output with `print` / `console.log` (stdout);
//! `console.error` writes stderr. An uncaught exception (or a promise
//! rejected with no handler) writes `Uncaught VALUE` and the stack to
//! stderr and exits with 1: a failed call whose error carries them
//! ([`WorkerError::Exception`], as for Python). `sdk/js/qjs-faaslet.c`
//! documents the whole interface.
//!
//! The machinery (preparing the interpreter, capturing, storing,
//! reloading, publishing with a `+js` version) is shared with Python in
//! [`script`](super::script).
//!
//! [`WorkerConfig::js`]: super::WorkerConfig::js
//! [`WorkerError::Exception`]: super::WorkerError::Exception

use crate::worker::core::{Worker, WorkerError};
use crate::worker::language::Language;
use faaslet::Module;

/// Native stack (`Config::max_wasm_stack`) an engine running JavaScript
/// functions should give wasm: 7 MiB, against the default 1 MiB.
/// QuickJS's interpreter function takes about 1.5 KiB of native stack
/// per JavaScript call level, so its own limit (a `RangeError` at about
/// 580 levels of a plain recursive function, counted on the shadow stack
/// in linear memory) comes at about 0.9 MiB: close to the default, and
/// native recursion QuickJS does not count (comparators, getters,
/// conversions calling back into JavaScript) goes deeper per level. A
/// trap there would be a worse error than the `RangeError`. (While
/// asyncify instrumented the interpreter, a level took 12 KiB, which is
/// why this was raised.) The worker's executor threads have 8 MiB stacks,
/// and an engine never lets wasm use more than the thread has. `faaslet
/// serve --js` sets it.
pub const JS_WASM_STACK: usize = 7 << 20;

impl Worker {
    /// The interpreter JavaScript functions run on: the configured QuickJS
    /// command, asyncified (once: kept under `DATA/runtimes/`) and
    /// compiled (once: the code cache). Blocking, and slow the very first
    /// time (about half a minute).
    pub fn js_runtime(&self) -> Result<Module, WorkerError> {
        self.script_runtime(Language::JavaScript)
    }

    /// Uploads the JavaScript script `script` as `user/function`: captures
    /// QuickJS at the script's first read of stdin, stores the script, the
    /// snapshot and the point, and makes it callable. Blocking: call it on
    /// an executor thread.
    pub fn upload_js(&self, user: &str, function: &str, script: &[u8]) -> Result<(), WorkerError> {
        self.upload_script(Language::JavaScript, user, function, script)
    }
}
