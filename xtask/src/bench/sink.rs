//! The OTLP receiver the OpenTelemetry profiler exports to: the project's
//! own `tests/otlp/receiver.py` in `--count-only` mode, on 127.0.0.1, in
//! its own cgroup (its CPU is reported apart, not charged to the profiler).
//! It logs each request's sample timestamps, so samples are counted by when
//! they were taken, not when they arrived.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{
    cgroup::Group,
    json::{self, Value},
    sys,
};

pub struct Receiver {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

/// One logged request.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// Wall-clock seconds.
    pub received_at: f64,
    pub samples: u64,
    /// Sample times, ns since the epoch.
    pub timestamps: Vec<u64>,
    /// (profile start ns, count) of samples without timestamps.
    pub untimed: Vec<(u64, u64)>,
}

/// Starts the receiver in `group`, logging to `log`.
pub fn start(
    python: &Path,
    script: &Path,
    group: &Group,
    dir: &Path,
    log: PathBuf,
) -> Result<Receiver> {
    let ready = dir.join("receiver.ready");
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&log);
    let args = vec![
        script.to_string_lossy().into_owned(),
        "--count-only".into(),
        "--out".into(),
        log.to_string_lossy().into_owned(),
        "--ready".into(),
        ready.to_string_lossy().into_owned(),
    ];
    let err = std::fs::File::create(dir.join("receiver.stderr"))?;
    let mut cmd = group.wrap(python, &args);
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let child = cmd.spawn().context("cannot start the OTLP receiver")?;
    let mut r = Receiver {
        child,
        port: 0,
        log,
    };
    for _ in 0..300 {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v = json::parse(&text)?;
            r.port = v
                .get("grpc")
                .and_then(Value::as_u64)
                .context("no grpc port")? as u16;
            return Ok(r);
        }
        if let Some(st) = r.child.try_wait()? {
            bail!("the OTLP receiver exited ({st}); see receiver.stderr");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the OTLP receiver did not start within 15 s")
}

impl Receiver {
    /// Every request logged so far.
    pub fn requests(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| json::parse(l).ok())
            .filter(|v| v.get("fault").is_none())
            .map(|v| Request {
                received_at: v.get("received_at").and_then(Value::as_f64).unwrap_or(0.0),
                samples: v.get("samples").and_then(Value::as_u64).unwrap_or(0),
                timestamps: v
                    .get("timestamps")
                    .map(|t| t.as_array().iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default(),
                untimed: v
                    .get("untimed")
                    .map(|t| {
                        t.as_array()
                            .iter()
                            .filter_map(|p| {
                                let p = p.as_array();
                                Some((p.first()?.as_u64()?, p.get(1)?.as_u64()?))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Samples taken in `[from, to)` (wall ns); untimed ones by profile start.
    pub fn samples_in(&self, from_ns: u64, to_ns: u64) -> u64 {
        self.requests()
            .iter()
            .map(|r| {
                r.timestamps
                    .iter()
                    .filter(|t| (from_ns..to_ns).contains(t))
                    .count() as u64
                    + r.untimed
                        .iter()
                        .filter(|(t, _)| (from_ns..to_ns).contains(t))
                        .map(|(_, n)| n)
                        .sum::<u64>()
            })
            .sum()
    }

    pub fn stop(&mut self) {
        sys::signal_group(self.child.id(), sys::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}
