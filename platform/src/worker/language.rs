//! The languages of script functions ([`Language`]), and how each is
//! stored and named: the extension of its scripts in the data directory
//! and the suffix of its published versions in a cluster.

/// The end of the version of a Python function (its "wasm" is the script).
pub const PYTHON_SUFFIX: &str = "+python";

/// The end of the version of a JavaScript function (its "wasm" is the
/// script).
pub const JS_SUFFIX: &str = "+js";

/// The language of a script function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// Python, on the worker's CPython ([`WorkerConfig::python`](super::WorkerConfig::python));
    /// uploaded to `/p/`.
    Python,
    /// JavaScript, on the worker's QuickJS command
    /// ([`WorkerConfig::js`](super::WorkerConfig::js), built by `sdk/js/build.sh`); uploaded to
    /// `/js/`.
    JavaScript,
}

impl Language {
    /// Every language.
    pub const ALL: [Language; 2] = [Language::Python, Language::JavaScript];

    /// Its name for people ("Python", "JavaScript").
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "Python",
            Language::JavaScript => "JavaScript",
        }
    }

    /// Its short name: the `language` of an upload's reply, the prefix of
    /// the prepared interpreter's file ("python", "js").
    pub fn key(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "js",
        }
    }

    /// The extension its scripts are stored with ("py", "js").
    pub fn extension(self) -> &'static str {
        match self {
            Language::Python => "py",
            Language::JavaScript => "js",
        }
    }

    /// The end of the published version of its functions in a cluster
    /// ([`PYTHON_SUFFIX`], [`JS_SUFFIX`]).
    pub fn version_suffix(self) -> &'static str {
        match self {
            Language::Python => PYTHON_SUFFIX,
            Language::JavaScript => JS_SUFFIX,
        }
    }

    /// The language whose scripts are stored with extension `ext`.
    pub fn from_extension(ext: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|l| l.extension() == ext)
    }

    /// The language of a published version (by its suffix), if a script's.
    pub fn from_version(version: &str) -> Option<Language> {
        Language::ALL
            .into_iter()
            .find(|l| version.ends_with(l.version_suffix()))
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
