//! Fixture programs for the unwinding tests, compiled by the tests: C and C++
//! without frame pointers (hot functions under distinct callers, qsort with a
//! callback, a signal handler, a worker thread, exceptions, a 200 KB frame, a
//! realigned frame) and a Rust release binary without frame pointers.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::testutil::{compile_c, run};

/// C: distinct callers of hot functions, qsort with a comparison callback,
/// a SIGALRM handler that burns CPU (most of the time with argument `s`), a
/// stack-realigning function (GCC's DRAP CFA expression), a 200 KB frame and,
/// with argument `t`, a worker thread.
pub const C_SRC: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

volatile unsigned long sink;

__attribute__((noinline)) unsigned long mix(unsigned long x, int n) {
    for (int i = 0; i < n; i++)
        x = (x * 6364136223846793005UL + 1442695040888963407UL) ^ (x >> 13);
    return x;
}
__attribute__((noinline)) unsigned long hot_a(int n) { unsigned long v = mix(n, 20000); sink += v; return v + 1; }
__attribute__((noinline)) unsigned long hot_b(int n) { unsigned long v = mix(n * 3, 30000); sink ^= v; return v * 3; }
__attribute__((noinline)) unsigned long caller_a(int n) { unsigned long s = 0; for (int i = 0; i < n; i++) s += hot_a(i); return s; }
__attribute__((noinline)) unsigned long caller_b(int n) { unsigned long s = 0; for (int i = 0; i < n; i++) s += hot_b(i) + hot_a(i); return s; }
__attribute__((noinline)) unsigned long use(volatile char *p, int n) {
    unsigned long s = 0;
    for (int i = 0; i < n; i++) s += mix(p[i], 50);
    return s;
}
__attribute__((noinline)) unsigned long realigned(int n) {
    volatile char vla[n];
    _Alignas(64) volatile char a[64];
    memset((char *)a, n, 64);
    vla[0] = 1;
    return use(a, 64) + use(vla, n);
}
__attribute__((noinline)) unsigned long big_frame(int n) {
    volatile char buf[200000];
    buf[n] = 1;
    return use(buf, n);
}
static int cmp(const void *a, const void *b) {
    unsigned long x = mix(*(const unsigned long *)a, 30), y = mix(*(const unsigned long *)b, 30);
    return x < y ? -1 : x > y;
}
static int handler_work = 300000;
static void on_alarm(int sig) { sink += mix(sig, handler_work); }
static void *worker(void *arg) {
    (void)arg;
    for (;;) sink += caller_b(20);
    return 0;
}
static unsigned long arr[20000];
int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == 't') {
        pthread_t t;
        pthread_create(&t, 0, worker, 0);
    }
    if (argc > 1 && argv[1][0] == 's') handler_work = 20000000;
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 20000}, {0, 20000}};
    setitimer(ITIMER_REAL, &it, 0);
    for (;;) {
        sink += caller_a(20);
        sink += caller_b(20);
        for (int i = 0; i < 20000; i++) arr[i] = mix(i, 3);
        qsort(arr, 20000, sizeof arr[0], cmp);
        sink += realigned(100 + (int)(sink & 63));
        sink += big_frame(100);
    }
}
"#;

/// C++: exceptions thrown and caught in a loop (the unwinder in libgcc_s,
/// the personality routine in libstdc++), std::sort with a lambda and a
/// std::map (libstdc++ tree rebalancing).
pub const CXX_SRC: &str = r#"
#include <algorithm>
#include <map>
#include <stdexcept>
#include <vector>

volatile unsigned long sink;

__attribute__((noinline)) unsigned long mix(unsigned long x, int n) {
    for (int i = 0; i < n; i++)
        x = (x * 6364136223846793005UL + 1442695040888963407UL) ^ (x >> 13);
    return x;
}
__attribute__((noinline)) void thrower(int n) {
    if (mix(n, 200) & 1) throw std::runtime_error("odd");
    sink += n;
}
__attribute__((noinline)) void middle(int n) { thrower(n); sink += 1; }
__attribute__((noinline)) int catcher(int n) {
    int c = 0;
    for (int i = 0; i < n; i++) {
        try { middle(i); } catch (const std::exception &e) { c += e.what()[0]; }
    }
    return c;
}
__attribute__((noinline)) unsigned long sorter(int n) {
    std::vector<unsigned long> v(n);
    for (int i = 0; i < n; i++) v[i] = mix(i, 5);
    std::sort(v.begin(), v.end(), [](unsigned long a, unsigned long b) { return mix(a, 20) < mix(b, 20); });
    return v[0];
}
__attribute__((noinline)) unsigned long mapper(int n) {
    std::map<unsigned long, int> m;
    for (int i = 0; i < n; i++) m[mix(i, 40)] = i;
    return m.begin()->first;
}
int main() {
    for (;;) {
        sink += catcher(2000);
        sink += sorter(20000);
        sink += mapper(20000);
        sink += mix(sink, 2000000);
    }
}
"#;

/// Rust: recursion, a closure-driven sort, hashing and caught panics.
pub const RUST_SRC: &str = r#"
use std::collections::HashMap;
use std::hint::black_box;

#[inline(never)]
fn mix(mut x: u64, n: u32) -> u64 {
    for _ in 0..n {
        x = (x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407)) ^ (x >> 13);
    }
    black_box(x)
}
#[inline(never)]
fn hot_a(n: u64) -> u64 { mix(n, 20000) }
#[inline(never)]
fn caller_a(n: u64) -> u64 { (0..n).map(|i| black_box(hot_a(i))).fold(0, u64::wrapping_add) }
#[inline(never)]
fn recurse(depth: u32, n: u64) -> u64 {
    if depth == 0 { hot_a(n) } else { black_box(recurse(depth - 1, n + 1)).wrapping_add(1) }
}
#[inline(never)]
fn sort_phase(v: &mut Vec<u64>) { v.sort_by(|a, b| mix(*a, 20).cmp(&mix(*b, 20))); }
#[inline(never)]
fn hash_phase(n: u64) -> u64 {
    let mut m = HashMap::new();
    for i in 0..n { *m.entry(mix(i, 10) % 1000).or_insert(0u64) += i; }
    m.values().copied().fold(0, u64::wrapping_add)
}
#[inline(never)]
fn panic_phase(n: u64) -> u64 {
    let mut s = 0;
    for i in 0..n {
        s += std::panic::catch_unwind(|| if mix(i, 50) & 1 == 1 { panic!("odd") } else { i }).unwrap_or(1);
    }
    s
}
fn main() {
    std::panic::set_hook(Box::new(|_| {}));
    let mut sink = 0u64;
    loop {
        sink = sink.wrapping_add(caller_a(20));
        sink = sink.wrapping_add(recurse(20, sink));
        let mut v: Vec<u64> = (0..20000).map(|i| mix(i, 3)).collect();
        sort_phase(&mut v);
        sink = sink.wrapping_add(v[0]).wrapping_add(hash_phase(50000)).wrapping_add(panic_phase(2000));
        black_box(sink);
    }
}
"#;

/// C flags: optimized, no frame pointers, DWARF for gdb's names.
pub const C_FLAGS: &[&str] = &["-O2", "-fomit-frame-pointer", "-g", "-pthread"];

/// The C fixture in `dir`.
pub fn c_fixture(dir: &Path) -> PathBuf {
    compile_c(dir, "unwind_c", C_SRC, C_FLAGS)
}

/// The C fixture built with extra flags under another name.
pub fn c_fixture_with(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let flags: Vec<&str> = C_FLAGS.iter().chain(extra).copied().collect();
    compile_c(dir, name, C_SRC, &flags)
}

/// The C++ fixture in `dir`.
pub fn cxx_fixture(dir: &Path) -> PathBuf {
    let src = dir.join("unwind_cxx.cc");
    std::fs::write(&src, CXX_SRC).unwrap();
    let bin = dir.join("unwind_cxx");
    run(Command::new("g++")
        .args(["-O2", "-fomit-frame-pointer", "-g", "-o"])
        .arg(&bin)
        .arg(&src));
    bin
}

/// The Rust fixture in `dir`: opt-level 3, no frame pointers.
pub fn rust_fixture(dir: &Path) -> PathBuf {
    let src = dir.join("unwind_rs.rs");
    std::fs::write(&src, RUST_SRC).unwrap();
    let bin = dir.join("unwind_rs");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    run(Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=3",
            "-C",
            "force-frame-pointers=no",
            "-C",
            "debuginfo=1",
            "-o",
        ])
        .arg(&bin)
        .arg(&src));
    bin
}
