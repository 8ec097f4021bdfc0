//! Checks made before loading anything, each failing with one line that says
//! what is wrong and what to do: privileges, kernel version, kernel BTF.

use std::path::Path;

use anyhow::{Result, bail};

/// Linux capability numbers (include/uapi/linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The oldest kernel with the BPF ring buffer (5.8).
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// Runs every check.
pub fn check(btf: &Path) -> Result<()> {
    check_privileges(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())?;
    check_kernel(&kernel_release())?;
    check_btf(btf)
}

/// Needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which implies both).
pub fn check_privileges(proc_status: &str) -> Result<()> {
    let caps = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "not enough privileges: loading BPF programs needs root (CAP_BPF and CAP_PERFMON, \
         or CAP_SYS_ADMIN); run with sudo"
    )
}

/// The running kernel's release string (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: `uname` fills the zeroed struct; the release is NUL-terminated.
    unsafe {
        let mut uts: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut uts) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(uts.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// `major.minor` of a release such as `6.18.44-fc-v669`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Fails on kernels older than [`MIN_KERNEL`].
pub fn check_kernel(release: &str) -> Result<()> {
    match parse_release(release) {
        Some(v) if v >= MIN_KERNEL => Ok(()),
        Some(_) => bail!(
            "kernel {release} is too old: the profiler needs Linux {}.{} or newer \
             (BPF ring buffer)",
            MIN_KERNEL.0,
            MIN_KERNEL.1
        ),
        None => bail!("cannot tell the kernel version from release string {release:?}"),
    }
}

/// The BTF file must exist and be BTF.
pub fn check_btf(path: &Path) -> Result<()> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no kernel BTF at {}: the kernel needs CONFIG_DEBUG_INFO_BTF=y, or pass --btf FILE",
            path.display()
        ),
        Err(e) => bail!("cannot read kernel BTF {}: {e}", path.display()),
    };
    // struct btf_header starts with the magic 0xEB9F.
    if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != 0xEB9F {
        bail!("{} is not a BTF file (bad magic)", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn rejects_old_kernels() {
        assert!(check_kernel("5.8.0").is_ok());
        assert!(check_kernel("6.18.44").is_ok());
        let err = check_kernel("5.4.0-150-generic").unwrap_err().to_string();
        assert!(err.contains("too old"), "{err}");
    }

    #[test]
    fn reads_effective_capabilities() {
        assert!(check_privileges("CapEff:\t000001ffffffffff\n").is_ok());
        // CAP_BPF | CAP_PERFMON only.
        assert!(check_privileges("CapEff:\t000000c000000000\n").is_ok());
        let err = check_privileges("CapEff:\t0000000000000000\n").unwrap_err();
        assert!(err.to_string().contains("sudo"));
    }

    #[test]
    fn btf_must_exist_and_have_magic() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none");
        assert!(
            check_btf(&missing)
                .unwrap_err()
                .to_string()
                .contains("no kernel BTF")
        );
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"not btf at all, definitely not").unwrap();
        assert!(
            check_btf(&bad)
                .unwrap_err()
                .to_string()
                .contains("bad magic")
        );
    }
}
