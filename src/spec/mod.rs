//! Container specs: the TOML a user writes, parsed and validated into [`Spec`].
//!
//! [`load`] reads a file and returns a fully checked [`Spec`]: every path resolved, every value
//! converted to its unit, or a [`SpecError`] that names `file:line:column`.

mod types;

pub use types::*;

use std::path::Path;

/// A spec that failed to parse or validate, with the place at fault.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// The whole message, formatted as `file:line:column: error: ...` plus any hint lines.
    pub message: String,
}

/// Reads, parses and validates the spec at `path`.
pub fn load(path: &Path) -> Result<Spec, SpecError> {
    let _ = path;
    todo!("spec parser")
}
