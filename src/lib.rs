//! rcl: rootless containers declared in TOML, on the `fsimpl` union filesystem.
//!
//! The launcher is split by concern: [`spec`] parses and validates a spec file, [`cgroup`]
//! applies resource limits, [`runtime`] builds the isolated process tree, and the `rcl` binary
//! is a thin command line over them.

pub mod cgroup;
pub mod hostlayer;
pub mod layerdiff;
pub mod lifecycle_cli;
pub mod logs;
pub mod paths;
pub mod pty;
pub mod runtime;
pub mod security;
pub mod spec;
pub mod state;
pub mod supervisor;
