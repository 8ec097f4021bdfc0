//! The OTLP peers of the integration tests: the independent Python
//! receiver (tests/otlp/receiver.py, official opentelemetry-proto classes)
//! and the real OpenTelemetry Collector, both started on 127.0.0.1.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{Running, workspace};

/// The receiver venv's python: `$PROFILER_OTLP_PYTHON` or target/otlp-venv.
pub fn python() -> PathBuf {
    std::env::var_os("PROFILER_OTLP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/otlp-venv/bin/python"))
}

/// The Collector binary, if built (`cargo xtask otlp-tools`).
pub fn collector_bin() -> Option<PathBuf> {
    let p = std::env::var_os("PROFILER_OTELCOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/otelcol/dist/otelcol-profiler-tests"));
    p.is_file().then_some(p)
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running Python receiver.
pub struct Receiver {
    pub proc: Running,
    pub out: PathBuf,
    pub grpc: u16,
    pub http: u16,
}

impl Receiver {
    /// Starts the receiver writing to `out`, on the given ports (0: any),
    /// with extra fault arguments; waits until it listens.
    pub fn start(dir: &Path, name: &str, grpc: u16, http: u16, extra: &[&str]) -> Receiver {
        let out = dir.join(format!("{name}.jsonl"));
        let ready = dir.join(format!("{name}.ready"));
        let _ = std::fs::remove_file(&ready);
        let proc = Running::spawn(
            Command::new(python())
                .arg(workspace().join("tests/otlp/receiver.py"))
                .arg("--out")
                .arg(&out)
                .arg("--ready")
                .arg(&ready)
                .args([
                    "--grpc-port",
                    &grpc.to_string(),
                    "--http-port",
                    &http.to_string(),
                ])
                .args(extra)
                .stdout(Stdio::null()),
        );
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                let v: Value = serde_json::from_str(&text).unwrap();
                return Receiver {
                    proc,
                    out,
                    grpc: v["grpc"].as_u64().unwrap() as u16,
                    http: v["http"].as_u64().unwrap() as u16,
                };
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every line written so far (requests and faults).
    pub fn lines(&self) -> Vec<Value> {
        read_lines(&self.out)
    }

    /// Decoded requests so far (fault lines excluded).
    pub fn requests(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|v| v.get("fault").is_none())
            .collect()
    }

    /// Waits until `pred(requests)` holds or `limit` passes.
    pub fn wait_until(&self, limit: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if pred(&self.requests()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// The JSON lines of a receiver output file. A last line without its
/// newline is still being written by the receiver and is left for the next
/// read; every complete line must parse.
pub fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("receiver JSON"))
        .collect()
}

/// Total samples in decoded requests.
pub fn sample_total(requests: &[Value]) -> u64 {
    requests
        .iter()
        .flat_map(|r| r["resources"].as_array().cloned().unwrap_or_default())
        .flat_map(|res| res["samples"].as_array().cloned().unwrap_or_default())
        .map(|s| s["count"].as_u64().unwrap_or(0))
        .sum()
}

/// Distinct profile ids in decoded requests (one per exported window).
pub fn profile_ids(requests: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for r in requests {
        for res in r["resources"].as_array().cloned().unwrap_or_default() {
            let id = res["profile_id"].as_str().unwrap_or_default().to_owned();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// A running Collector: OTLP gRPC and HTTP receivers, exporting to a
/// receiver's gRPC port.
pub struct Collector {
    pub proc: Running,
    pub grpc: u16,
    pub http: u16,
}

impl Collector {
    /// Starts the Collector if it was built; waits until its port listens.
    pub fn start(dir: &Path, bin: &Path, forward_to: u16) -> Collector {
        let (grpc, http) = (free_port(), free_port());
        let config = dir.join("otelcol.yaml");
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc}\n      http:\n        endpoint: 127.0.0.1:{http}\n\
                 exporters:\n  otlp_grpc:\n    endpoint: 127.0.0.1:{forward_to}\n    tls:\n      insecure: true\n  debug:\n    verbosity: basic\n\
                 service:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    profiles:\n      receivers: [otlp]\n      exporters: [otlp_grpc, debug]\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("otelcol.log")).unwrap();
        let proc = Running::spawn(
            Command::new(bin)
                .arg("--config")
                .arg(&config)
                .arg("--feature-gates=+service.profilesSupport")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "collector did not start: {}",
                std::fs::read_to_string(dir.join("otelcol.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Collector { proc, grpc, http }
    }
}
