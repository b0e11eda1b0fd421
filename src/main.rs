//! The `rcl` command line: a thin layer over [`rcl::spec`] and [`rcl::runtime`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Rootless containers declared in TOML, on a userspace union filesystem.
#[derive(Debug, Parser)]
#[command(name = "rcl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a container in the foreground and exit with its status.
    Run {
        /// Pass stdin to the container even when it is not a terminal.
        #[arg(short, long)]
        interactive: bool,
        /// Fail instead of warning when a resource limit cannot be applied.
        #[arg(long)]
        require_limits: bool,
        /// Use a user namespace even when running as root.
        #[arg(long)]
        userns: bool,
        /// The container spec (TOML).
        spec: PathBuf,
        /// Command and arguments replacing the spec's command (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Validate a spec without running it.
    Check {
        /// The container spec (TOML).
        spec: PathBuf,
    },
    #[command(flatten)]
    Lifecycle(rcl::lifecycle_cli::LifecycleCmd),
}

fn load(path: &std::path::Path) -> Result<rcl::spec::Spec, ExitCode> {
    rcl::spec::load(path).map_err(|e| {
        eprintln!("{}", e.message.trim_end());
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            // Usage errors in rcl's own format: `rcl: error: ...`, then clap's usage lines.
            let text = e.render().to_string();
            eprint!("rcl: {text}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Cmd::Lifecycle(cmd) => match rcl::lifecycle_cli::dispatch(cmd) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("rcl: error: {e:#}");
                ExitCode::from(1)
            }
        },
        Cmd::Check { spec } => match load(&spec) {
            Ok(_) => ExitCode::SUCCESS,
            Err(code) => code,
        },
        Cmd::Run {
            interactive,
            require_limits,
            userns,
            spec,
            command,
        } => {
            let spec = match load(&spec) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let opts = rcl::runtime::RunOptions {
                command,
                interactive,
                require_limits,
                userns,
                terminal: std::io::IsTerminal::is_terminal(&std::io::stdin()),
            };
            match rcl::runtime::run(&spec, &opts) {
                Ok(exit) => {
                    if let Some(msg) = exit.exec_error {
                        eprintln!("rcl: error: {msg}");
                    }
                    ExitCode::from(exit.code.clamp(0, 255) as u8)
                }
                Err(e) => {
                    eprintln!("rcl: error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
