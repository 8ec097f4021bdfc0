//! Makes sure the eBPF build can run: finds a toolchain and a matching
//! bpf-linker (`toolchain.rs`), and on Debian as root installs what is
//! missing: `rustc-web`, `cargo-web`, `rust-web-src` (a rustc with `core`
//! sources, linked into rustup as `web`) and `bpf-linker` built against the
//! same LLVM major. Elsewhere it prints the commands to run.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::{
    cmd::status,
    toolchain::{self, EbpfToolchain},
};

/// The bpf-linker release this project is tested with.
const BPF_LINKER_VERSION: &str = "0.13.0";

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn has_apt() -> bool {
    std::path::Path::new("/usr/bin/apt-get").exists()
        && std::path::Path::new("/etc/debian_version").exists()
}

fn manual_steps() -> String {
    "install them with:\n  \
     apt-get install rustc-web cargo-web rust-web-src llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev\n  \
     rustup toolchain link web /usr\n  \
     LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \\\n    \
     cargo install bpf-linker --no-default-features --features llvm-22\n\
     (use the LLVM major that `rustc +web -vV` prints), or use rustup nightly with the \
     rust-src component and a bpf-linker built for its LLVM"
        .to_owned()
}

fn apt_install(packages: &[&str]) -> Result<()> {
    eprintln!("xtask: installing {}", packages.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages),
    )
}

fn install_toolchain() -> Result<EbpfToolchain> {
    apt_install(&["rustc-web", "cargo-web", "rust-web-src"])?;
    status(Command::new("rustup").args(["toolchain", "link", "web", "/usr"]))?;
    toolchain::check_toolchain("web")
        .map_err(|e| anyhow::anyhow!("Debian's rustc-web is installed but unusable: {e}"))
}

fn install_linker(llvm: u32) -> Result<()> {
    apt_install(&[
        &format!("llvm-{llvm}-dev"),
        &format!("libpolly-{llvm}-dev"),
        "zlib1g-dev",
        "libzstd-dev",
    ])?;
    let prefix = format!("/usr/lib/llvm-{llvm}");
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm}");
    status(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .env(format!("LLVM_SYS_{llvm}1_PREFIX"), &prefix)
            .args(["install", "bpf-linker", "--locked", "--force", "--version"])
            .arg(BPF_LINKER_VERSION)
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{llvm}")),
    )
}

fn works(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What the integration tests run besides the profiler: gcc (fixtures),
/// perf (the reference profiler), setpriv (the not-root test), openssl
/// (certificates for the TLS test) and Go
/// (`go tool pprof`). On Debian as root the packages are installed; Go is
/// expected on PATH (`.ci/run` provides it where it is missing).
pub fn ensure_test_tools() -> Result<()> {
    let wanted = [
        ("gcc", "--version", "gcc"),
        ("perf", "--version", "linux-perf"),
        ("setpriv", "--version", "util-linux"),
        ("openssl", "version", "openssl"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(tool, arg, _)| !works(tool, arg))
        .map(|&(_, _, package)| package)
        .collect();
    if !missing.is_empty() {
        if !is_root() || !has_apt() {
            bail!("the tests need these packages: {}", missing.join(" "));
        }
        apt_install(&missing)?;
    }
    if !works("go", "version") {
        bail!("the tests need Go on PATH (for `go tool pprof`); see .ci/run");
    }
    Ok(())
}

/// The toolchain and linker for the eBPF build; with `install`, installs
/// what is missing where that is possible.
pub fn ensure(install: bool) -> Result<(EbpfToolchain, PathBuf)> {
    let missing = match toolchain::detect() {
        Ok(found) => return Ok(found),
        Err(m) => m,
    };
    if !install || !is_root() || !has_apt() {
        bail!(
            "the eBPF build cannot run: {missing}.\nThe Debian route is automatic as root \
             (`cargo xtask setup`); otherwise {}",
            manual_steps()
        );
    }
    eprintln!("xtask: the eBPF toolchain is incomplete ({missing}); installing it");
    let tc = match toolchain::detect_toolchain() {
        Ok(tc) => tc,
        Err(_) => install_toolchain()?,
    };
    let linker_ok = toolchain::find_bpf_linker()
        .is_some_and(|l| toolchain::bpf_linker_llvm_major(&l).is_none_or(|m| m == tc.llvm_major));
    if !linker_ok {
        install_linker(tc.llvm_major)?;
    }
    toolchain::detect()
        .map_err(|m| anyhow::anyhow!("still missing after setup: {m}"))
        .context("installing the eBPF toolchain did not complete")
}
