//! Container specs: the TOML a user writes, parsed and validated into [`Spec`].
//!
//! [`load`] reads a file and returns a fully checked [`Spec`]: every path resolved, every value
//! converted to its unit, or a [`SpecError`] that names `file:line:column` for each problem,
//! shows the source line with a caret, and suggests the right key for a misspelt one.

mod diag;
mod parse;
mod types;
mod units;

pub use diag::Diagnostic;
pub use types::*;
pub use units::{parse_duration, parse_signal, parse_size, CAPABILITIES};

use std::path::Path;

/// A spec that failed to parse or validate, with every place at fault.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// The whole message: each problem as `file:line:column: error: ...`, the source line with
    /// a caret, and any `help:` line; problems separated by blank lines.
    pub message: String,
    /// The problems one by one (at least one), in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl SpecError {
    fn from_diagnostics(file: &Path, src: &str, mut diagnostics: Vec<Diagnostic>) -> Self {
        // Problems with a place first, in file order; then those about the file as a whole.
        diagnostics.sort_by_key(|d| d.span.as_ref().map_or(usize::MAX, |s| s.start));
        let mut message = diagnostics
            .iter()
            .map(|d| d.render(file, src))
            .collect::<Vec<_>>()
            .join("\n\n");
        if diagnostics.len() > 1 {
            message.push_str(&format!(
                "\n\n{} errors in {}",
                diagnostics.len(),
                file.display()
            ));
        }
        SpecError {
            message,
            diagnostics,
        }
    }
}

/// Reads, parses and validates the spec at `path`.
///
/// Relative paths in the spec (layers, upper, bind sources) are resolved against the spec
/// file's directory. Nothing is created or changed on disk.
pub fn load(path: &Path) -> Result<Spec, SpecError> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        let d = Diagnostic::new("", None, format!("cannot read the spec file: {e}"), None);
        SpecError::from_diagnostics(path, "", vec![d])
    })?;
    load_str(path, &src)
}

/// Reads, parses and validates a spec file that may hold several containers
/// (`[containers.NAME]` tables with `depends_on`, `[lifecycle] restart` and `[healthcheck]`).
/// A plain single-container spec gives a project of one container.
pub fn load_project(path: &Path) -> Result<Project, SpecError> {
    let src = std::fs::read_to_string(path).map_err(|e| {
        let d = Diagnostic::new("", None, format!("cannot read the spec file: {e}"), None);
        SpecError::from_diagnostics(path, "", vec![d])
    })?;
    load_project_str(path, &src)
}

/// [`load_project`] on text `src` as if read from `path`.
pub fn load_project_str(path: &Path, src: &str) -> Result<Project, SpecError> {
    parse::parse_project(path, src).map_err(|d| SpecError::from_diagnostics(path, src, d))
}

/// Parses and validates spec text `src` as if it had been read from `path` (used for messages,
/// the default name, and resolving relative paths).
pub fn load_str(path: &Path, src: &str) -> Result<Spec, SpecError> {
    parse::parse(path, src).map_err(|d| SpecError::from_diagnostics(path, src, d))
}
