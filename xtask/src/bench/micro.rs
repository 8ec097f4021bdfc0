//! The criterion micro-benchmarks (`profiler/benches/`), run through
//! `cargo bench -p profiler` and read back from criterion's estimate files
//! under `target/criterion/`.

use std::{path::Path, process::Command};

use anyhow::Result;

use super::json::{self, Value};
use crate::cmd::{root, status};

pub const BENCHES: [&str; 3] = ["symbolize", "aggregate", "encode"];

/// One criterion benchmark's result.
#[derive(Clone, Debug)]
pub struct Estimate {
    /// "group/function".
    pub id: String,
    /// Mean time per iteration, ns, and its 95% confidence interval.
    pub mean_ns: f64,
    pub low_ns: f64,
    pub high_ns: f64,
    /// Elements per iteration (criterion `Throughput::Elements`).
    pub elements: Option<u64>,
}

impl Estimate {
    /// Elements per second at the mean.
    pub fn per_second(&self) -> Option<f64> {
        self.elements.map(|n| n as f64 / self.mean_ns * 1e9)
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn bench_args(c: &mut Command) -> &mut Command {
    c.args(["bench", "-p", "profiler"]);
    for b in BENCHES {
        c.args(["--bench", b]);
    }
    c
}

/// Compiles the benches without running them.
pub fn build() -> Result<()> {
    status(bench_args(&mut cargo()).arg("--no-run"))
}

/// Runs them (criterion prints its own report) and collects the estimates.
pub fn run() -> Result<Vec<Estimate>> {
    let dir = root().join("target/criterion");
    let _ = std::fs::remove_dir_all(&dir);
    status(bench_args(&mut cargo()))?;
    let mut out = Vec::new();
    collect(&dir, &mut out);
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<Estimate>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        if p.file_name().is_some_and(|n| n == "new") {
            if let Some(est) = read(&p) {
                out.push(est);
            }
        } else {
            collect(&p, out);
        }
    }
}

fn read(new: &Path) -> Option<Estimate> {
    let bench = json::parse(&std::fs::read_to_string(new.join("benchmark.json")).ok()?).ok()?;
    let est = json::parse(&std::fs::read_to_string(new.join("estimates.json")).ok()?).ok()?;
    let mean = est.get("mean")?;
    let ci = mean.get("confidence_interval")?;
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    Some(Estimate {
        id: bench.get("full_id")?.as_str()?.to_owned(),
        mean_ns: f(mean, "point_estimate")?,
        low_ns: f(ci, "lower_bound")?,
        high_ns: f(ci, "upper_bound")?,
        elements: bench
            .get("throughput")
            .and_then(|t| t.get("Elements"))
            .and_then(Value::as_u64),
    })
}
