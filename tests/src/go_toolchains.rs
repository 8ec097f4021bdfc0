//! Where `cargo xtask go-toolchains` puts the official Go toolchains
//! (`DIR/<version>/lib/python*/site-packages/go/bin/go`), and finding them.
//! Plain `std`, compiled into the integration tests and, by `#[path]`, into
//! the profiler's unit-test helpers, so both look in the same way.

use std::path::{Path, PathBuf};

/// The toolchains under `dir` as (version, `go` binary), oldest first.
pub fn discover(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().into_string().ok()?;
            let go = std::fs::read_dir(e.path().join("lib"))
                .ok()?
                .flatten()
                .map(|p| p.path().join("site-packages/go/bin/go"))
                .find(|go| go.is_file())?;
            Some((version, go))
        })
        .collect();
    found.sort_by_key(|(v, _)| {
        v.split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    found
}
