//! Builds the kernel side (`profiler-ebpf`) for the BPF target with aya-build
//! and leaves the object in `OUT_DIR/profiler`, where `src/bpf/load.rs`
//! embeds it. The toolchain choice lives in `xtask/src/toolchain.rs`, shared
//! with `cargo xtask` so both always agree.

#[path = "../xtask/src/toolchain.rs"]
#[allow(dead_code)]
mod toolchain;

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed={}", toolchain::TOOLCHAIN_ENV);
    println!("cargo:rerun-if-changed=../xtask/src/toolchain.rs");
    let (tc, linker) = match toolchain::detect() {
        Ok(found) => found,
        Err(missing) => {
            eprintln!(
                "error: cannot build the eBPF program: {missing}.\n\
                 Run `cargo xtask setup` (installs Debian's rustc-web and a matching bpf-linker), \
                 or install rustup nightly with rust-src and `cargo install bpf-linker`."
            );
            std::process::exit(1);
        }
    };
    // aya-build runs `cargo build` for the BPF target, which needs bpf-linker
    // on PATH; make sure the one we found is.
    if let Some(dir) = linker.parent() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<_> = std::env::split_paths(&path).collect();
        if !dirs.iter().any(|d| d == dir) {
            dirs.insert(0, dir.to_path_buf());
            let joined = std::env::join_paths(dirs).expect("PATH entries are valid");
            // SAFETY: build scripts are single-threaded here.
            unsafe { std::env::set_var("PATH", joined) };
        }
    }
    if tc.needs_bootstrap {
        // A stable rustc (Debian's rustc-web) needs this for `-Z build-std=core`.
        // SAFETY: build scripts are single-threaded here.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiler-ebpf");
    let root = root
        .canonicalize()
        .expect("profiler-ebpf exists beside profiler");
    let package = aya_build::Package {
        name: "profiler-ebpf",
        root_dir: root.to_str().expect("UTF-8 path"),
        ..Default::default()
    };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&tc.name)) {
        eprintln!(
            "error: building the eBPF program with toolchain `{}` failed: {e:#}",
            tc.name
        );
        std::process::exit(1);
    }
}
