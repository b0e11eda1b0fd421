//! Restart policy and back-off: pure logic, no processes.

use std::time::Duration;

/// When the supervisor restarts a container whose command exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never (the default).
    #[default]
    No,
    /// After a non-zero exit, at most `max_retries` times when given.
    OnFailure {
        /// Give up after this many restarts.
        max_retries: Option<u32>,
    },
    /// Whenever it exits, until a user stops it; a later `rcl up` starts it again even then.
    Always,
    /// Whenever it exits, until a user stops it; a later `rcl up` leaves it stopped.
    UnlessStopped,
}

impl RestartPolicy {
    /// Parses `no`, `on-failure`, `on-failure:N`, `always` or `unless-stopped`.
    pub fn parse(s: &str) -> Result<RestartPolicy, String> {
        match s {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: None }),
            _ => match s.strip_prefix("on-failure:").map(str::parse::<u32>) {
                Some(Ok(n)) => Ok(RestartPolicy::OnFailure {
                    max_retries: Some(n),
                }),
                _ => Err(format!(
                    "invalid restart policy {s:?}: expected no, on-failure, on-failure:N, \
                     always or unless-stopped"
                )),
            },
        }
    }

    /// Whether to restart after the command exited with `code`, having been restarted
    /// `restarts` times already; never once a user stopped it.
    pub fn should_restart(self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max_retries } => {
                code != 0 && max_retries.is_none_or(|n| restarts < n)
            }
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }

    /// Whether `rcl up` should start again a container a user stopped.
    pub fn up_restarts_stopped(self) -> bool {
        !matches!(self, RestartPolicy::UnlessStopped)
    }
}

impl From<crate::spec::Restart> for RestartPolicy {
    fn from(r: crate::spec::Restart) -> Self {
        match r {
            crate::spec::Restart::No => RestartPolicy::No,
            crate::spec::Restart::OnFailure { max_retries } => {
                RestartPolicy::OnFailure { max_retries }
            }
            crate::spec::Restart::Always => RestartPolicy::Always,
            crate::spec::Restart::UnlessStopped => RestartPolicy::UnlessStopped,
        }
    }
}

/// Exponential back-off between restarts: `initial` (100 ms), doubled after each quick
/// failure up to `max` (10 s); a run that stayed up at least `reset_after` (10 s) starts the
/// sequence over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Uptime after which the delay goes back to `initial`.
    pub reset_after: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(10),
        )
    }
}

impl Backoff {
    /// A back-off with the given bounds.
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            reset_after,
            next: initial,
        }
    }

    /// The delay before the next restart, given how long the last run stayed up.
    pub fn delay(&mut self, uptime: Duration) -> Duration {
        if uptime >= self.reset_after {
            self.next = self.initial;
        }
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}
