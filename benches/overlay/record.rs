//! Every measured sample, tagged with the run id, written to `bench-results/run-<id>.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// What a row measures: elapsed time (lower is better) or throughput (higher is better).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Seconds per iteration.
    Time,
    /// `work` units per second.
    Throughput,
}

#[derive(Debug, Default)]
struct Row {
    kind: Option<Kind>,
    work: f64,
    unit: String,
    samples: Vec<f64>,
    failed: Option<String>,
}

/// Collects samples of one run and rewrites its JSON file after each change of substance.
pub struct Recorder {
    run_id: String,
    path: PathBuf,
    meta: Value,
    rows: BTreeMap<(String, String), Row>,
    order: Vec<(String, String)>,
    extras: Vec<Value>,
    not_run: Vec<Value>,
}

impl Recorder {
    /// A recorder writing to `dir/run-<run_id>.json`.
    pub fn new(dir: &Path, run_id: String, meta: Value) -> Self {
        let _ = fs::create_dir_all(dir);
        Recorder {
            path: dir.join(format!("run-{run_id}.json")),
            run_id,
            meta,
            rows: BTreeMap::new(),
            order: Vec::new(),
            extras: Vec::new(),
            not_run: Vec::new(),
        }
    }

    /// The file this run is written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn row(&mut self, workload: &str, imp: &str) -> &mut Row {
        let key = (workload.to_string(), imp.to_string());
        if !self.rows.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.rows.entry(key).or_default()
    }

    /// Declares a row: its kind and the work done by one iteration (`work` in `unit`).
    pub fn declare(&mut self, workload: &str, imp: &str, kind: Kind, work: f64, unit: &str) {
        let r = self.row(workload, imp);
        r.kind = Some(kind);
        r.work = work;
        r.unit = unit.to_string();
    }

    /// Adds one iteration's elapsed seconds.
    pub fn sample(&mut self, workload: &str, imp: &str, secs: f64) {
        self.row(workload, imp).samples.push(secs);
    }

    /// Marks a row as failed (its samples are then not reported).
    pub fn fail(&mut self, workload: &str, imp: &str, why: &str) {
        eprintln!("rcl-bench: {workload} on {imp} FAILED: {why}");
        let r = self.row(workload, imp);
        if r.failed.is_none() {
            r.failed = Some(why.to_string());
        }
    }

    /// True when the row has failed.
    pub fn failed(&self, workload: &str, imp: &str) -> bool {
        self.rows
            .get(&(workload.to_string(), imp.to_string()))
            .is_some_and(|r| r.failed.is_some())
    }

    /// Records something measured once (peak RSS and the like).
    pub fn extra(&mut self, v: Value) {
        let mut v = v;
        v["run_id"] = json!(self.run_id);
        self.extras.push(v);
    }

    /// Records a workload or implementation that was not run, and why.
    pub fn not_run(&mut self, what: &str, why: &str) {
        eprintln!("rcl-bench: not run: {what}: {why}");
        self.not_run
            .push(json!({"what": what, "why": why, "run_id": self.run_id}));
    }

    /// Writes the JSON file (the whole run so far).
    pub fn flush(&self) {
        let results: Vec<Value> = self
            .order
            .iter()
            .map(|k| {
                let r = &self.rows[k];
                json!({
                    "run_id": self.run_id,
                    "workload": k.0,
                    "impl": k.1,
                    "kind": match r.kind { Some(Kind::Throughput) => "throughput", _ => "time" },
                    "work": r.work,
                    "unit": r.unit,
                    "samples_s": r.samples,
                    "failed": r.failed,
                })
            })
            .collect();
        let doc = json!({
            "run_id": self.run_id,
            "meta": self.meta,
            "results": results,
            "extras": self.extras,
            "not_run": self.not_run,
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = fs::write(&self.path, text) {
            eprintln!("rcl-bench: cannot write {}: {e}", self.path.display());
        }
    }
}
