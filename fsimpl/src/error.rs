//! Errors raised while setting a union mount up.

use std::path::PathBuf;

/// What went wrong while opening the layers or mounting, with the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer, upper or work directory could not be opened or used.
    #[error("{role} {path}: {source}")]
    Layer {
        /// Which part of the mount the path is: "lowerdir", "upperdir", "workdir".
        role: &'static str,
        /// The path given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is inconsistent (e.g. an upper without a work directory).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Any other I/O failure while setting up.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
