//! Finds a toolchain that can build the eBPF crate, and says precisely what
//! is missing when there is none.
//!
//! Building `profiler-ebpf` for `bpfel-unknown-none` needs three things: a
//! rustc that can build `core` for that target (`-Z build-std=core`, so the
//! standard library sources), `bpf-linker`, and the two agreeing on the LLVM
//! major version. Two routes are known to work:
//!
//! * `web`: Debian's `rustc-web`/`cargo-web`/`rust-web-src` packages, linked
//!   into rustup with `rustup toolchain link web /usr`, used with
//!   `RUSTC_BOOTSTRAP=1` (it is a stable compiler);
//! * `nightly`: rustup's nightly with the `rust-src` component.
//!
//! This file is plain `std` on purpose: it is compiled into `xtask` and, by
//! `#[path]`, into `profiler/build.rs`, so the build script and the developer
//! tool can never disagree about which toolchain is used.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Environment variable that forces a rustup toolchain name for the eBPF build.
pub const TOOLCHAIN_ENV: &str = "PROFILER_EBPF_TOOLCHAIN";

/// A toolchain able to build the eBPF crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EbpfToolchain {
    /// Rustup toolchain name (`web`, `nightly`, ...).
    pub name: String,
    /// Whether `RUSTC_BOOTSTRAP=1` is needed for `-Z build-std` (not nightly).
    pub needs_bootstrap: bool,
    /// LLVM major version of its rustc.
    pub llvm_major: u32,
}

/// What `detect` looked at, for a precise error message.
#[derive(Clone, Debug, Default)]
pub struct Missing {
    /// Human-readable reasons, one per candidate or tool.
    pub reasons: Vec<String>,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reasons.join("; "))
    }
}

/// `rustc -vV` facts of a rustup toolchain.
struct RustcInfo {
    nightly: bool,
    llvm_major: u32,
    sysroot: PathBuf,
}

fn rustc_info(toolchain: &str) -> Result<RustcInfo, String> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !out.status.success() {
        return Err(format!("rustup has no toolchain `{toolchain}`"));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let release = field(&text, "release:").unwrap_or_default();
    let llvm = field(&text, "LLVM version:")
        .ok_or_else(|| format!("`{toolchain}` rustc does not report its LLVM version"))?;
    let llvm_major =
        llvm_major(&llvm).ok_or_else(|| format!("`{toolchain}` rustc reports LLVM `{llvm}`"))?;
    let sysroot = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    Ok(RustcInfo {
        nightly: release.contains("nightly"),
        llvm_major,
        sysroot,
    })
}

fn field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_owned())
}

/// The major of an LLVM version string such as `22.1.8`.
pub fn llvm_major(version: &str) -> Option<u32> {
    version.split('.').next()?.trim().parse().ok()
}

fn has_core_sources(sysroot: &Path) -> bool {
    sysroot
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .is_file()
}

/// Checks one named toolchain.
pub fn check_toolchain(name: &str) -> Result<EbpfToolchain, String> {
    let info = rustc_info(name)?;
    if !has_core_sources(&info.sysroot) {
        return Err(format!(
            "toolchain `{name}` has no standard library sources under {}/lib/rustlib/src",
            info.sysroot.display()
        ));
    }
    Ok(EbpfToolchain {
        name: name.to_owned(),
        needs_bootstrap: !info.nightly,
        llvm_major: info.llvm_major,
    })
}

/// Picks the toolchain: `$PROFILER_EBPF_TOOLCHAIN`, else `web`, else `nightly`.
pub fn detect_toolchain() -> Result<EbpfToolchain, Missing> {
    let mut missing = Missing::default();
    let forced = env::var(TOOLCHAIN_ENV).ok().filter(|s| !s.is_empty());
    let candidates: Vec<String> = match forced {
        Some(name) => vec![name],
        None => vec!["web".into(), "nightly".into()],
    };
    for name in candidates {
        match check_toolchain(&name) {
            Ok(tc) => return Ok(tc),
            Err(reason) => missing.reasons.push(reason),
        }
    }
    Err(missing)
}

/// Finds `bpf-linker` on PATH or in cargo's bin directory.
pub fn find_bpf_linker() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    } else if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}

/// The LLVM major `bpf-linker` is linked against, read from its dynamic
/// `libLLVM.so.N` dependency (it does not print it); `None` if statically linked.
pub fn bpf_linker_llvm_major(linker: &Path) -> Option<u32> {
    let out = Command::new("ldd").arg(linker).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let rest = l.trim().strip_prefix("libLLVM")?;
        let ver = rest.split_whitespace().next()?;
        // libLLVM.so.22.1, libLLVM-22.so
        let digits: String = ver
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}

/// Everything the eBPF build needs, or what is missing.
pub fn detect() -> Result<(EbpfToolchain, PathBuf), Missing> {
    let toolchain = detect_toolchain();
    let linker = find_bpf_linker();
    let mut missing = Missing::default();
    if let Err(m) = &toolchain {
        missing.reasons.extend(m.reasons.iter().cloned());
    }
    match (&toolchain, &linker) {
        (_, None) => missing
            .reasons
            .push("bpf-linker is not installed (not on PATH nor in ~/.cargo/bin)".into()),
        (Ok(tc), Some(l)) => {
            if let Some(major) = bpf_linker_llvm_major(l)
                && major != tc.llvm_major
            {
                missing.reasons.push(format!(
                    "bpf-linker at {} uses LLVM {major} but toolchain `{}` uses LLVM {}",
                    l.display(),
                    tc.name,
                    tc.llvm_major
                ));
            }
        }
        (Err(_), Some(_)) => {}
    }
    match (toolchain, linker) {
        (Ok(tc), Some(l)) if missing.reasons.is_empty() => Ok((tc, l)),
        _ => Err(missing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_llvm_major() {
        assert_eq!(llvm_major("22.1.8"), Some(22));
        assert_eq!(llvm_major("21"), Some(21));
        assert_eq!(llvm_major("x"), None);
    }

    #[test]
    fn reads_rustc_fields() {
        let text = "rustc 1.96.0\nrelease: 1.96.0\nLLVM version: 22.1.8\n";
        assert_eq!(field(text, "LLVM version:").as_deref(), Some("22.1.8"));
        assert_eq!(field(text, "release:").as_deref(), Some("1.96.0"));
    }
}
