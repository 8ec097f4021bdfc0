//! `cargo xtask test`: the whole suite, in order of cost: formatting and
//! clippy, then every unit test and the root integration tests (`tests/`),
//! which profile real programs with the release binary.
//!
//! `PROFILER_REQUIRE_ROOT_TESTS=1` makes the integration tests fail, instead
//! of skipping with a message, when they cannot run (not root, no perf, no
//! Go): through xtask nothing is skipped silently.

use std::process::Command;

use anyhow::Result;

use crate::{
    cmd::{self, status},
    gotoolchains, otlptools, setup,
};

/// Runs everything.
pub fn run(harness_args: &[String]) -> Result<()> {
    cmd::lint()?;
    setup::ensure_test_tools()?;
    gotoolchains::install()?;
    otlptools::install_venv()?;
    // The Collector needs the Go module proxy; without it the tests say so
    // and run against the Python receiver only.
    if let Err(e) = otlptools::build_collector() {
        eprintln!(
            "xtask: WARNING: the OpenTelemetry Collector could not be built ({e:#}); its tests will be skipped"
        );
    }
    let bin = cmd::build(true)?;
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.args([
        "test",
        "--workspace",
        "--exclude",
        "profiler-ebpf",
        "--no-fail-fast",
    ])
    .env("PROFILER_BIN", &bin)
    .env("PROFILER_REQUIRE_ROOT_TESTS", "1")
    .env("PROFILER_REQUIRE_GO_TOOLCHAINS", "1")
    .env("PROFILER_GO_TOOLCHAINS", gotoolchains::dir())
    .env("PROFILER_OTLP_PYTHON", otlptools::venv().join("bin/python"))
    .env("PROFILER_OTELCOL", otlptools::collector());
    if !harness_args.is_empty() {
        c.arg("--").args(harness_args);
    }
    status(&mut c)
}
