//! What the OTLP integration tests talk to: a Python virtualenv with the
//! official OTLP classes and gRPC (the independent receiver,
//! tests/otlp/receiver.py), and the real OpenTelemetry Collector built with
//! its builder from the Go module proxy. Both live under target/.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::cmd::{root, status};

/// The Collector release the tests use (its confmap providers are 1.71.0).
const COLLECTOR: &str = "v0.165.0";
const PROVIDERS: &str = "v1.71.0";

/// The virtualenv with opentelemetry-proto (v1.10 wire) and grpcio.
pub fn venv() -> PathBuf {
    root().join("target/otlp-venv")
}

/// The Collector binary.
pub fn collector() -> PathBuf {
    root().join("target/otelcol/dist/otelcol-profiler-tests")
}

/// Creates the receiver's virtualenv if missing.
pub fn install_venv() -> Result<PathBuf> {
    let python = venv().join("bin/python");
    let ok = Command::new(&python)
        .args([
            "-c",
            "import grpc, grpc_status, opentelemetry.proto.collector.profiles.v1development",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "xtask: creating {} (opentelemetry-proto, grpcio)",
            venv().display()
        );
        status(Command::new("python3").args(["-m", "venv"]).arg(venv()))
            .context("python3 -m venv (apt-get install python3-venv)")?;
        status(
            Command::new(venv().join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .args([
                    "opentelemetry-proto>=1.43",
                    "grpcio",
                    "grpcio-status",
                    "googleapis-common-protos",
                ]),
        )?;
    }
    Ok(python)
}

/// Builds the Collector if missing.
pub fn build_collector() -> Result<PathBuf> {
    let bin = collector();
    if bin.is_file() {
        return Ok(bin);
    }
    let dir = root().join("target/otelcol");
    std::fs::create_dir_all(&dir)?;
    let gobin = dir.join("bin");
    let go_env = |c: &mut Command| {
        c.env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "https://proxy.golang.org")
            .env("GOFLAGS", "-mod=mod")
            .env("GOBIN", &gobin)
            .env("GOPATH", dir.join("gopath"))
            .env("GOCACHE", dir.join("gocache"));
    };
    eprintln!("xtask: building the OpenTelemetry Collector {COLLECTOR} (about two minutes)");
    let mut install = Command::new("go");
    go_env(&mut install);
    install.arg("install").arg(format!(
        "go.opentelemetry.io/collector/cmd/builder@{COLLECTOR}"
    ));
    status(&mut install)?;
    let manifest = dir.join("manifest.yaml");
    std::fs::write(
        &manifest,
        format!(
            "dist:\n  name: otelcol-profiler-tests\n  description: Collector for the profiler's OTLP tests\n  output_path: {out}\n\
             receivers:\n  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver {COLLECTOR}\n\
             exporters:\n  - gomod: go.opentelemetry.io/collector/exporter/debugexporter {COLLECTOR}\n  \
             - gomod: go.opentelemetry.io/collector/exporter/otlpexporter {COLLECTOR}\n  \
             - gomod: go.opentelemetry.io/collector/exporter/otlphttpexporter {COLLECTOR}\n\
             providers:\n  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider {PROVIDERS}\n  \
             - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider {PROVIDERS}\n  \
             - gomod: go.opentelemetry.io/collector/confmap/provider/yamlprovider {PROVIDERS}\n",
            out = dir.join("dist").display()
        ),
    )?;
    let mut build = Command::new(gobin.join("builder"));
    go_env(&mut build);
    build.arg("--config").arg(&manifest);
    status(&mut build)?;
    if !bin.is_file() {
        bail!("the builder produced no {}", bin.display());
    }
    Ok(bin)
}
