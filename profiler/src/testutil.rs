//! Test helpers: fixture binaries compiled by the tests themselves.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

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
