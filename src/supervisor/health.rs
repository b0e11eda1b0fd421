//! Healthcheck scheduling and the health state machine: pure logic, no processes.

use std::time::{Duration, Instant};

use crate::state::Health;

/// A healthcheck's settings (`[healthcheck]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// The check; exit 0 means healthy.
    pub command: Vec<String>,
    /// Time between the end of one check and the start of the next (first check one interval
    /// after start).
    pub interval: Duration,
    /// A check still running after this counts as failed (and is killed).
    pub timeout: Duration,
    /// Consecutive failures that make the container unhealthy.
    pub retries: u32,
    /// Failures within this time after start do not count.
    pub start_period: Duration,
}

impl From<&crate::spec::Healthcheck> for HealthConfig {
    fn from(h: &crate::spec::Healthcheck) -> Self {
        HealthConfig {
            command: h.command.clone(),
            interval: h.interval,
            timeout: h.timeout,
            retries: h.retries,
            start_period: h.start_period,
        }
    }
}

/// Tracks one run's health: when the next check is due and what the results add up to.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    cfg: HealthConfig,
    started: Instant,
    next_due: Instant,
    failures: u32,
    health: Health,
}

impl HealthMonitor {
    /// A monitor for a run that started at `started` (health `starting`).
    pub fn new(cfg: HealthConfig, started: Instant) -> HealthMonitor {
        HealthMonitor {
            next_due: started + cfg.interval,
            cfg,
            started,
            failures: 0,
            health: Health::Starting,
        }
    }

    /// The settings.
    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// When the next check should start.
    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    /// True when a check should start now.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_due
    }

    /// Records a finished check (`passed` false for a failure or a timeout) at `now`, schedules
    /// the next one and returns the new health.
    pub fn record(&mut self, now: Instant, passed: bool) -> Health {
        self.next_due = now + self.cfg.interval;
        if passed {
            self.failures = 0;
            self.health = Health::Healthy;
        } else if now.duration_since(self.started) < self.cfg.start_period {
            // Still starting: failures do not count.
        } else {
            self.failures += 1;
            if self.failures >= self.cfg.retries.max(1) {
                self.health = Health::Unhealthy;
            }
        }
        self.health
    }
}
