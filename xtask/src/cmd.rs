//! Building, running and linting, on top of `setup`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::setup;

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Runs `cmd` in the workspace root, failing if it fails.
pub fn status(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(root());
    let shown = format!("{cmd:?}");
    let st = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds the daemon (and, through its build script, the eBPF object);
/// returns the binary's path.
pub fn build(release: bool) -> Result<PathBuf> {
    setup::ensure(true)?;
    let mut c = cargo();
    c.args(["build", "--package", "profiler", "--bin", "profiler"]);
    if release {
        c.arg("--release");
    }
    status(&mut c)?;
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("profiler"))
}

/// Builds, then runs the profiler with `args`, exiting with its status.
pub fn run(release: bool, args: &[String]) -> Result<()> {
    let bin = build(release)?;
    let st = Command::new(&bin)
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    std::process::exit(st.code().unwrap_or(1));
}

/// Formatting and clippy, warnings as errors.
pub fn lint() -> Result<()> {
    setup::ensure(true)?;
    status(cargo().args(["fmt", "--all", "--", "--check"]))?;
    status(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))
}
