//! The real workload: a container made by [`crate::runtime::Container`], and healthchecks run
//! inside it with `rcl exec`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use super::{HealthProbe, Running, Workload};
use crate::runtime::{Container, RunOptions};
use crate::spec::Spec;

/// Starts the container `spec` on every run. Must be used from a single-threaded process (the
/// supervisor is): creating a container forks.
#[derive(Debug)]
pub struct ContainerWorkload {
    /// The container's spec.
    pub spec: Spec,
    /// Runtime options.
    pub opts: RunOptions,
}

struct ContainerRun(Container, Option<String>);

impl Running for ContainerRun {
    fn wait_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
    fn pid(&self) -> i32 {
        self.0.pid()
    }
    fn signal(&mut self, sig: i32) -> Result<()> {
        if sig == libc::SIGKILL {
            self.0.kill()
        } else {
            self.0.signal(sig)
        }
    }
    fn try_wait(&mut self) -> Result<Option<i32>> {
        // A run that failed in the runtime (its holder died, a setup step failed) is a failed
        // run for the restart policy, not the end of the supervisor.
        let exit = match self.0.try_wait() {
            Ok(e) => e,
            Err(e) => {
                let msg = format!("{e:#}");
                eprintln!("rcl: error: {msg}");
                self.1 = Some(msg);
                return Ok(Some(255));
            }
        };
        Ok(exit.map(|e| {
            if let Some(msg) = &e.exec_error {
                // Into the container's log too (fd 2 is the log pipe).
                eprintln!("rcl: error: {msg}");
            }
            self.1 = e.exec_error;
            e.code
        }))
    }
    fn failure(&self) -> Option<String> {
        self.1.clone()
    }
    fn id(&self) -> Option<String> {
        Some(self.0.id().to_string())
    }
}

impl Workload for ContainerWorkload {
    fn start(&mut self, stdout: BorrowedFd, stderr: BorrowedFd) -> Result<Box<dyn Running>> {
        // The container inherits fds 1 and 2: point them at the log pipes (the supervisor's
        // own messages then land in the log too, which is where a user looks).
        nix::unistd::dup2_stdout(stdout).context("redirecting stdout to the log pipe")?;
        nix::unistd::dup2_stderr(stderr).context("redirecting stderr to the log pipe")?;
        let mut c = Container::create(&self.spec, &self.opts)
            .with_context(|| format!("creating container {}", self.spec.name))?;
        c.start()
            .with_context(|| format!("starting container {}", self.spec.name))?;
        Ok(Box::new(ContainerRun(c, None)))
    }
}

/// Runs healthchecks inside the container with `rcl exec NAME -- COMMAND`.
#[derive(Debug, Clone)]
pub struct ExecProbe {
    /// The rcl binary.
    pub rcl: PathBuf,
    /// The container's name.
    pub name: String,
}

impl HealthProbe for ExecProbe {
    fn spawn(&mut self, command: &[String]) -> io::Result<Child> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&self.rcl);
        cmd.arg("exec")
            .arg(&self.name)
            .arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and only affects the child being set up.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn()
    }
}
