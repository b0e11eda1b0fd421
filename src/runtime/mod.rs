//! The container runtime: namespaces, the union root filesystem, isolation and PID 1.

use crate::spec::Spec;

/// Options of `rcl run` that are not part of the spec.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replaces the spec's command (and entrypoint) when non-empty.
    pub command: Vec<String>,
    /// Pass stdin to the container even when it is not a terminal.
    pub interactive: bool,
    /// Fail when a resource limit cannot be applied instead of warning.
    pub require_limits: bool,
}

/// Runs the container described by `spec` in the foreground and returns its exit status
/// (128+N when killed by signal N). Leaves nothing behind.
pub fn run(spec: &Spec, opts: &RunOptions) -> anyhow::Result<i32> {
    let _ = (spec, opts);
    todo!("runtime")
}
