//! Test helpers: fixture binaries compiled by the tests themselves.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

#[path = "../../tests/src/go_toolchains.rs"]
mod layout;

/// Runs `cmd`, failing the test if it fails.
pub fn run(cmd: &mut Command) {
    assert!(cmd.status().unwrap().success(), "{cmd:?}");
}

/// Compiles C source `src` with gcc and `flags` into `dir/name`.
pub fn compile_c(dir: &Path, name: &str, src: &str, flags: &[&str]) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let bin = dir.join(name);
    run(Command::new("gcc").args(flags).arg("-o").arg(&bin).arg(&c));
    bin
}

/// Source with a function `answer` at a known line (2).
pub const ANSWER_C: &str = "#include <unistd.h>\nint answer(int x) { return x * 42 + (int)getpid(); }\nint main(void) { return answer(1); }\n";

/// A binary built with DWARF and a build id, stripped, with its debug
/// information moved to `dir/d.debug` and a `.gnu_debuglink` to it.
pub fn stripped_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = compile_c(dir, "d", ANSWER_C, &["-O1", "-g", "-Wl,--build-id"]);
    let debug = dir.join("d.debug");
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&bin)
        .arg(&debug));
    run(Command::new("objcopy")
        .arg("--strip-all")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(&bin));
    (bin, debug)
}

/// The official Go toolchains installed by `cargo xtask go-toolchains`
/// (in `$PROFILER_GO_TOOLCHAINS`, else `<workspace>/target/go-toolchains`),
/// as (version, `go` binary), oldest first. Empty if none are installed;
/// with `PROFILER_REQUIRE_GO_TOOLCHAINS=1` (set by `cargo xtask test`) that
/// fails the calling test instead.
pub fn go_toolchains() -> Vec<(String, PathBuf)> {
    let dir = std::env::var_os("PROFILER_GO_TOOLCHAINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go-toolchains"));
    let found = layout::discover(&dir);
    if found.is_empty() {
        let required = std::env::var_os("PROFILER_REQUIRE_GO_TOOLCHAINS").is_some_and(|v| v == "1");
        assert!(
            !required,
            "no Go toolchains in {}: run `cargo xtask go-toolchains`",
            dir.display()
        );
        eprintln!(
            "SKIPPED: no Go toolchains in {} (run `cargo xtask go-toolchains`)",
            dir.display()
        );
    }
    found
}

/// Builds the Go program `src` (a main package, stdlib only) with `go` and
/// extra `go build` flags into `dir/name`.
pub fn build_go(go: &Path, dir: &Path, name: &str, src: &str, flags: &[&str]) -> PathBuf {
    let pkg = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("main.go"), src).unwrap();
    std::fs::write(pkg.join("go.mod"), format!("module {name}\n\ngo 1.21\n")).unwrap();
    let bin = dir.join(name);
    run(Command::new(go)
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&pkg)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOPROXY", "off"));
    bin
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every installed toolchain is the version its directory names and
    /// builds a stdlib-only program: the Go tests rely on both.
    #[test]
    fn go_toolchains_build_programs() {
        let dir = tempfile::tempdir().unwrap();
        for (version, go) in go_toolchains() {
            let out = Command::new(&go)
                .arg("version")
                .env("GOTOOLCHAIN", "local")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(&format!("go{version} ")), "{version}: {text}");
            let bin = build_go(
                &go,
                dir.path(),
                &format!("hello-{version}"),
                "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n",
                &[],
            );
            let out = Command::new(&bin).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
        }
    }
}
