//! Bad input gets a one-line error and a non-zero exit, never a panic.

use std::process::Command;

use profiler_tests::{can_run, profiler, profiler_bin};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `profiler record --duration 1` with `args`.
fn record(args: &[&str]) -> std::process::Output {
    let mut all = vec!["record", "--duration", "1"];
    all.extend_from_slice(args);
    profiler(&all)
}

fn assert_clean_failure(out: &std::process::Output, code: i32, needle: &str) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "panic: {err}");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = profiler(&["record", "--bogus", "-o", "x.pb.gz"]);
    assert_clean_failure(&out, 2, "unexpected argument '--bogus'");
}

#[test]
fn record_needs_an_output() {
    let out = profiler(&["record"]);
    assert_clean_failure(&out, 2, "--output");
}

#[test]
fn invalid_values_are_usage_errors() {
    let out = profiler(&["record", "-o", "x", "--frequency", "0"]);
    assert_clean_failure(&out, 2, "--frequency must be at least 1 Hz");
    let out = profiler(&["run", "--interval", "nan"]);
    assert_clean_failure(&out, 2, "--interval must be a positive number");
}

#[test]
fn help_has_examples() {
    for cmd in [&["--help"][..], &["record", "--help"], &["run", "--help"]] {
        let out = profiler(cmd);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples:"), "{cmd:?}: {text}");
    }
}

#[test]
fn not_root_is_refused() {
    if !can_run("not_root_is_refused", &["setpriv"]) {
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(profiler_bin())
        .args(["record", "--duration", "1", "-o", "/tmp/never.pb.gz"])
        .output()
        .unwrap();
    assert_clean_failure(&out, 1, "needs root");
}

#[test]
fn missing_or_malformed_btf_is_refused() {
    if !can_run("missing_or_malformed_btf_is_refused", &[]) {
        return;
    }
    let out = record(&["-o", "/tmp/x.pb.gz", "--btf", "/nonexistent/vmlinux"]);
    assert_clean_failure(&out, 1, "no kernel BTF at /nonexistent/vmlinux");
    let out = record(&["-o", "/tmp/x.pb.gz", "--btf", "/etc/hostname"]);
    assert_clean_failure(&out, 1, "is not a BTF file");
}

#[test]
fn unknown_pid_and_bad_output_dir_are_refused() {
    if !can_run("unknown_pid_and_bad_output_dir_are_refused", &[]) {
        return;
    }
    let out = record(&["-o", "/tmp/x.pb.gz", "--pid", "4194300"]);
    assert_clean_failure(&out, 1, "no process with pid 4194300");
    let out = record(&["-o", "/nonexistent/dir/x.pb.gz"]);
    assert_clean_failure(&out, 1, "directory /nonexistent/dir does not exist");
}
