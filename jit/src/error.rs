//! Compilation errors.

use std::fmt;

/// What kind of problem stopped compilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileErrorKind {
    /// The bytes are not a well-formed WebAssembly binary.
    Malformed,
    /// The module is well formed but fails validation.
    Invalid,
    /// The module uses a feature this JIT does not support.
    Unsupported,
    /// Cranelift failed to generate code.
    Codegen,
    /// Compilation did not finish within its time budget.
    Budget,
}

impl fmt::Display for CompileErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompileErrorKind::Malformed => "malformed module",
            CompileErrorKind::Invalid => "invalid module",
            CompileErrorKind::Unsupported => "unsupported feature",
            CompileErrorKind::Codegen => "code generation failed",
            CompileErrorKind::Budget => "compile budget exceeded",
        })
    }
}

/// An error from [`Compiler`](crate::Compiler): what is wrong and where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.describe())]
pub struct CompileError {
    /// The kind of error.
    pub kind: CompileErrorKind,
    /// Human-readable description.
    pub message: String,
    /// The section being processed, if known.
    pub section: Option<&'static str>,
    /// The function (full index space) being processed, if known.
    pub func_index: Option<u32>,
    /// Byte offset in the module, if known.
    pub offset: Option<usize>,
}

impl CompileError {
    /// Builds an error with no location.
    pub(crate) fn new(kind: CompileErrorKind, message: impl Into<String>) -> CompileError {
        CompileError {
            kind,
            message: message.into(),
            section: None,
            func_index: None,
            offset: None,
        }
    }

    pub(crate) fn from_wasm(kind: CompileErrorKind, e: &wasmparser::BinaryReaderError) -> Self {
        let mut err = CompileError::new(kind, e.message().to_string());
        err.offset = Some(e.offset() as usize);
        err
    }

    pub(crate) fn malformed(e: wasmparser::BinaryReaderError) -> Self {
        Self::from_wasm(CompileErrorKind::Malformed, &e)
    }

    pub(crate) fn invalid(e: wasmparser::BinaryReaderError) -> Self {
        Self::from_wasm(CompileErrorKind::Invalid, &e)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        CompileError::new(CompileErrorKind::Unsupported, message)
    }

    pub(crate) fn codegen(message: impl Into<String>) -> Self {
        CompileError::new(CompileErrorKind::Codegen, message)
    }

    pub(crate) fn in_section(mut self, section: &'static str) -> Self {
        self.section.get_or_insert(section);
        self
    }

    pub(crate) fn in_func(mut self, func_index: u32) -> Self {
        self.func_index.get_or_insert(func_index);
        self
    }

    pub(crate) fn at(mut self, offset: usize) -> Self {
        self.offset.get_or_insert(offset);
        self
    }

    fn describe(&self) -> String {
        let mut s = format!("{}: {}", self.kind, self.message);
        if let Some(section) = self.section {
            s.push_str(&format!(" (in {section} section"));
        } else {
            s.push_str(" (");
        }
        if let Some(f) = self.func_index {
            if self.section.is_some() {
                s.push_str(", ");
            }
            s.push_str(&format!("function {f}"));
        }
        if let Some(o) = self.offset {
            if self.section.is_some() || self.func_index.is_some() {
                s.push_str(", ");
            }
            s.push_str(&format!("at offset {o:#x}"));
        }
        if self.section.is_none() && self.func_index.is_none() && self.offset.is_none() {
            s.truncate(s.len() - 2);
        } else {
            s.push(')');
        }
        s
    }
}
