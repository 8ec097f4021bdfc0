//! The workloads (sources under `bench/`, built here): what they are, how
//! they are built and started, and how much work they did. Each reports its
//! progress through a shared counter file the harness reads at the edges of
//! a window, so the throughput with and without a profiler is measured over
//! exactly the window.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{cgroup::Group, sys};
use crate::cmd::{root, status};

/// gcc flags of the native workload: frame pointers everywhere, leaf too.
pub const CFLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-pthread",
    "-Wall",
    "-Wextra",
];

/// Exec rate of the churn workload, per second.
pub const CHURN_RATE: u32 = 100;
/// CPU each churn child burns before it exits, µs.
pub const CHURN_CHILD_US: u32 = 2000;
/// Goroutines of the Go workload.
pub const GOROUTINES: u32 = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Both CPUs busy with the frame-pointer C program, 30 frames deep.
    Cpu,
    /// Go goroutines doing CPU work under pprof.Do labels.
    Go,
    /// Short-lived processes, CHURN_RATE execs a second.
    Churn,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::Cpu, Workload::Go, Workload::Churn];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Cpu => "cpu",
            Workload::Go => "go",
            Workload::Churn => "churn",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }

    /// One line for the report.
    pub fn describe(self) -> String {
        match self {
            Workload::Cpu => format!(
                "native C (`bench/cwork.c spin`), one thread per CPU, every unit of work \
                 30 frames deep (f30→…→f1→leaf), gcc {}",
                CFLAGS[..4].join(" ")
            ),
            Workload::Go => format!(
                "Go (`bench/gowork`), {GOROUTINES} goroutines under `pprof.Do` with 16 labels \
                 each, 20-deep recursion ending in SHA-256, GOMAXPROCS = CPUs"
            ),
            Workload::Churn => format!(
                "process churn (`bench/cwork.c churn`): {CHURN_RATE} fork+exec a second of \
                 `cwork burn {CHURN_CHILD_US}` (each child burns {} ms of CPU 30 frames deep, \
                 then exits)",
                CHURN_CHILD_US / 1000
            ),
        }
    }

    /// What a unit of throughput is.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Cpu => "calls of the 30-frame chain",
            Workload::Go => "20-deep SHA-256 units",
            Workload::Churn => "children started",
        }
    }
}

/// The built workload binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub cwork: PathBuf,
    pub gowork: PathBuf,
}

/// Builds `bench/cwork.c` and `bench/gowork` into `dir`.
pub fn build(dir: &Path) -> Result<Binaries> {
    std::fs::create_dir_all(dir)?;
    let cwork = dir.join("cwork");
    status(
        Command::new("gcc")
            .args(CFLAGS)
            .arg("-o")
            .arg(&cwork)
            .arg(root().join("bench/cwork.c")),
    )
    .context("building bench/cwork.c")?;
    let gowork = dir.join("gowork");
    status(
        Command::new("go")
            .args(["build", "-C", "bench/gowork", "-trimpath", "-o"])
            .arg(&gowork)
            .arg(".")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0"),
    )
    .context("building bench/gowork (go on PATH)")?;
    Ok(Binaries { cwork, gowork })
}

/// A running workload.
pub struct Running {
    child: Child,
    counters: PathBuf,
}

/// Starts `kind` in `group`, counting into `dir/counters`.
pub fn start(kind: Workload, bins: &Binaries, group: &Group, dir: &Path) -> Result<Running> {
    let counters = dir.join(format!("{}-counters", kind.name()));
    let _ = std::fs::remove_file(&counters);
    let c = counters.to_string_lossy().into_owned();
    let (bin, args): (&Path, Vec<String>) = match kind {
        Workload::Cpu => (&bins.cwork, vec!["spin".into(), c]),
        Workload::Go => (
            &bins.gowork,
            vec![
                "-counters".into(),
                c,
                "-goroutines".into(),
                GOROUTINES.to_string(),
            ],
        ),
        Workload::Churn => (
            &bins.cwork,
            vec![
                "churn".into(),
                c,
                CHURN_RATE.to_string(),
                CHURN_CHILD_US.to_string(),
            ],
        ),
    };
    let log = std::fs::File::create(dir.join(format!("{}.log", kind.name())))?;
    let mut cmd = group.wrap(bin, &args);
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut running = Running { child, counters };
    // Wait for the counter file and the first unit of work.
    for _ in 0..200 {
        if running.units().is_some_and(|u| u > 0) {
            return Ok(running);
        }
        if let Some(st) = running.child.try_wait()? {
            bail!("the {} workload exited at start ({st})", kind.name());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    running.stop();
    bail!("the {} workload did no work within 5 s", kind.name())
}

impl Running {
    /// Units of work done so far (sum of the counter file's u64 words).
    pub fn units(&self) -> Option<u64> {
        let bytes = std::fs::read(&self.counters).ok()?;
        Some(
            bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .sum(),
        )
    }

    /// True while the workload runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the workload and everything it started.
    pub fn stop(&mut self) {
        let pgid = self.child.id();
        sys::signal_group(pgid, sys::SIGKILL);
        let _ = self.child.wait();
        // Churn children still burning their last milliseconds.
        std::thread::sleep(Duration::from_millis(50));
        sys::signal_group(pgid, sys::SIGKILL);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.alive() {
            self.stop();
        }
    }
}
