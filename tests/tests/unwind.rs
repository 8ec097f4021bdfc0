//! Table-driven unwinding end to end, as root: fixtures built without frame
//! pointers (C with phases inside libc, C++ with exceptions, a Rust release
//! binary) are profiled by the release binary and, in the same run, by
//! `perf record --call-graph dwarf`. Checked: at least 99% of the samples
//! in each hot leaf carry the leaf's caller and the chain to `main` and
//! `_start`; the caller→callee edges agree with perf's; stacks that stop
//! short are marked; the summary counts the walks.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use profiler_tests::{
    Fixtures, Pprof, Running, call_edges, can_run, finish, normalize_symbol, perf_user_stacks,
    profiler_spawn,
};

const HZ: &str = "499";
/// perf copies 8 KiB of stack per sample: a lower rate keeps it light.
const PERF_HZ: &str = "199";
const SECONDS: &str = "8";

struct Run {
    ours: Pprof,
    perf: Vec<Vec<String>>,
    stderr: String,
}

/// Profiles `bin` with the profiler and `perf --call-graph dwarf` at once.
fn profile_with_perf_dwarf(fx: &Fixtures, bin: &Path) -> Run {
    let target = Running::spawn(Command::new(bin).arg("30").stdout(Stdio::null()));
    let pid = target.pid().to_string();
    // Past start-up, and the first sample's tables compiled.
    sleep(Duration::from_millis(300));
    let out = fx.path().join(format!("{pid}.pb.gz"));
    let perf_data = fx.path().join(format!("{pid}.perf.data"));
    let ours = profiler_spawn(&[
        "record",
        "--pid",
        &pid,
        "--frequency",
        HZ,
        "--duration",
        SECONDS,
        "-o",
        out.to_str().unwrap(),
    ]);
    let mut perf = Running::spawn(
        Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", PERF_HZ])
            .args(["--call-graph", "dwarf", "-q", "-p", &pid, "-o"])
            .arg(&perf_data)
            .args(["--", "sleep", SECONDS])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let result = finish(ours, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(result.status.success(), "profiler failed: {stderr}");
    assert!(
        perf.wait_for(Duration::from_secs(60)).is_some(),
        "perf did not stop"
    );
    drop(target);
    Run {
        ours: Pprof::read(&out),
        perf: perf_user_stacks(&perf_data),
        stderr,
    }
}

/// Of the samples whose leaf is `leaf`, the fraction whose user stack is
/// `leaf`, one of `callers`, ..., `main`, ..., `_start` with no mark.
fn complete_fraction(p: &Pprof, leaf: &str, callers: &[&str]) -> (f64, i64, Vec<String>) {
    let (mut n, mut complete) = (0i64, 0i64);
    let mut bad: HashMap<Vec<String>, i64> = HashMap::new();
    for s in &p.p.sample {
        let stack: Vec<String> = p
            .user_symbols(s)
            .iter()
            .map(|f| normalize_symbol(f))
            .collect();
        if !stack.first().is_some_and(|f| f.ends_with(leaf)) {
            continue;
        }
        n += Pprof::count(s);
        let ok = stack
            .get(1)
            .is_some_and(|c| callers.iter().any(|w| c.ends_with(w)))
            && stack.iter().any(|f| f == "main")
            && stack.last().is_some_and(|f| f == "_start")
            && !stack.iter().any(|f| f.starts_with('['));
        if ok {
            complete += Pprof::count(s);
        } else {
            *bad.entry(stack).or_default() += Pprof::count(s);
        }
    }
    let mut bad: Vec<(Vec<String>, i64)> = bad.into_iter().collect();
    bad.sort_by_key(|(_, n)| -n);
    let bad = bad
        .into_iter()
        .take(5)
        .map(|(s, n)| format!("{n} × {}", s.join(" ← ")))
        .collect();
    (complete as f64 / n.max(1) as f64, n, bad)
}

/// Asserts each hot leaf's samples reach `main` through one of its callers.
fn assert_hot_leaves(name: &str, p: &Pprof, leaves: &[(&str, &[&str])]) {
    for (leaf, callers) in leaves {
        let (frac, n, bad) = complete_fraction(p, leaf, callers);
        eprintln!(
            "{name}: {leaf}: {:.2}% of {n} samples carry the full chain to main",
            frac * 100.0
        );
        for b in &bad {
            eprintln!("  not: {b}");
        }
        assert!(n > 100, "{name}: only {n} samples in {leaf}");
        assert!(
            frac >= 0.99,
            "{name}: only {:.2}% of {n} samples in {leaf} reach main through {callers:?}; \
             most common others:\n  {}",
            frac * 100.0,
            bad.join("\n  ")
        );
    }
}

/// Asserts every user stack either reaches the start of its thread or
/// ends in a mark saying why not (`[truncated]`, `[unwind: ...]`).
fn assert_incomplete_marked(name: &str, p: &Pprof) {
    let mut unmarked: HashMap<Vec<String>, i64> = HashMap::new();
    let mut marked = 0i64;
    for s in &p.p.sample {
        let user = p.user_symbols(s);
        match user.last().map(String::as_str) {
            None | Some("_start" | "clone3" | "clone") => {}
            Some(last) if last.starts_with("[truncated]") || last.starts_with("[unwind:") => {
                marked += Pprof::count(s);
            }
            Some(_) => *unmarked.entry(p.user_frames_described(s)).or_default() += Pprof::count(s),
        }
    }
    eprintln!(
        "{name}: {marked} of {} samples marked incomplete, {} unmarked",
        p.total(),
        unmarked.values().sum::<i64>()
    );
    assert!(
        unmarked.is_empty(),
        "{name}: stacks neither complete nor marked: {unmarked:?}"
    );
}

/// Edges carrying at least this share of a side's samples must be in the
/// other side's profile.
const EDGE_SHARE: f64 = 0.01;

/// Compares caller→callee edges with perf's over the functions both name
/// alike; returns (edges compared, edges in common).
fn assert_edges_agree(name: &str, run: &Run) -> (usize, usize) {
    let p = &run.ours;
    let ours_stacks: Vec<(Vec<String>, u64)> =
        p.p.sample
            .iter()
            .map(|s| (p.user_symbols(s), Pprof::count(s) as u64))
            .collect();
    let ours = call_edges(ours_stacks.iter().map(|(s, n)| (s.as_slice(), *n)));
    let perf = call_edges(run.perf.iter().map(|s| (s.as_slice(), 1)));
    let names = |e: &HashMap<(String, String), u64>| -> HashSet<String> {
        e.keys().flat_map(|(a, b)| [a.clone(), b.clone()]).collect()
    };
    let both: HashSet<String> = names(&ours).intersection(&names(&perf)).cloned().collect();
    let total = |stacks: usize| (stacks.max(1) as f64 * EDGE_SHARE).ceil() as u64;
    let (ours_min, perf_min) = (total(p.total() as usize), total(run.perf.len()));
    let in_both = |(a, b): &(String, String)| both.contains(a) && both.contains(b);
    let mut missing = Vec::new();
    let mut compared = HashSet::new();
    for (edge, &n) in &perf {
        if n >= perf_min && in_both(edge) {
            compared.insert(edge.clone());
            if !ours.contains_key(edge) {
                missing.push(format!("perf has {} → {} ({n}), we do not", edge.0, edge.1));
            }
        }
    }
    for (edge, &n) in &ours {
        if n >= ours_min && in_both(edge) {
            compared.insert(edge.clone());
            if !perf.contains_key(edge) {
                missing.push(format!(
                    "we have {} → {} ({n}), perf does not",
                    edge.0, edge.1
                ));
            }
        }
    }
    let common = compared.len() - missing.len();
    eprintln!(
        "{name}: {common} of {} significant caller→callee edges agree with perf --call-graph dwarf \
         ({} samples ours, {} perf)",
        compared.len(),
        p.total(),
        run.perf.len()
    );
    assert!(
        compared.len() >= 5,
        "{name}: only {} edges to compare: {compared:?}",
        compared.len()
    );
    assert!(missing.is_empty(), "{name}:\n  {}", missing.join("\n  "));
    (compared.len(), common)
}

/// The summary's count of table walks, which must be most of the samples.
fn assert_tables_used(name: &str, run: &Run) {
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("user stacks:"))
        .unwrap_or_else(|| panic!("{name}: no user-stack summary in:\n{}", run.stderr));
    let walked: i64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name}: cannot read {line:?}"));
    assert!(
        walked as f64 >= 0.95 * run.ours.total() as f64,
        "{name}: {walked} of {} samples walked with tables: {line}",
        run.ours.total()
    );
    // The fixtures spend their time in a few hot stacks: after the first
    // samples, the walk takes nearly every rule from its per-CPU cache.
    let count = |what: &str| -> u64 {
        let (before, _) = line
            .split_once(&format!(" {what}"))
            .unwrap_or_else(|| panic!("{name}: no rule-cache {what} in {line:?}"));
        before
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: cannot read rule-cache {what} in {line:?}"))
    };
    let (hits, misses) = (count("hits"), count("misses"));
    assert!(
        hits > 4 * misses && misses > 0,
        "{name}: the rule cache should serve most frames: {line}"
    );
    eprintln!("{name}: {line}");
}

#[test]
fn c_without_frame_pointers_reaches_main_through_libc() {
    if !can_run("unwind_c", &["perf", "gcc"]) {
        return;
    }
    let fx = Fixtures::new();
    let bin = fx.c_no_frame_pointers("nofp");
    let run = profile_with_perf_dwarf(&fx, &bin);
    assert_tables_used("C", &run);
    let p = &run.ours;
    assert_hot_leaves(
        "C",
        p,
        &[
            ("leaf_alpha", &["caller_one", "caller_two"]),
            ("leaf_beta", &["caller_two"]),
            // The qsort callback, under libc's merge sort.
            ("compare", &["msort_with_tmp"]),
        ],
    );
    // Both callers of leaf_alpha are seen.
    let edges = call_edges(
        p.p.sample
            .iter()
            .map(|s| (p.user_symbols(s), Pprof::count(s) as u64))
            .collect::<Vec<_>>()
            .iter()
            .map(|(s, n)| (s.as_slice(), *n)),
    );
    for caller in ["caller_one", "caller_two"] {
        assert!(
            edges.contains_key(&(caller.to_owned(), "leaf_alpha".to_owned())),
            "no {caller} → leaf_alpha"
        );
    }
    // The read(2) phase: kernel samples whose user stack, walked from the
    // registers saved at the syscall, starts in libc's read and goes
    // through read_phase to main.
    let (mut in_read, mut reached) = (0i64, 0i64);
    let mut others: HashMap<Vec<String>, i64> = HashMap::new();
    for s in &p.p.sample {
        let user: Vec<String> = p
            .user_symbols(s)
            .iter()
            .map(|f| normalize_symbol(f))
            .collect();
        if p.leaf_symbol(s) != "[kernel]" || !user.first().is_some_and(|f| f.contains("read")) {
            continue;
        }
        in_read += Pprof::count(s);
        if user.get(1).is_some_and(|f| f == "read_phase")
            && user.iter().any(|f| f == "main")
            && user.last().is_some_and(|f| f == "_start")
        {
            reached += Pprof::count(s);
        } else {
            *others.entry(user).or_default() += Pprof::count(s);
        }
    }
    eprintln!("C: {reached} of {in_read} samples in read(2) reach main through read_phase");
    assert!(in_read > 100, "only {in_read} samples in read(2)");
    assert!(
        reached as f64 >= 0.99 * in_read as f64,
        "{reached} of {in_read} samples in read(2) reach main through read_phase; others: {others:?}"
    );
    assert_incomplete_marked("C", &run.ours);
    assert_edges_agree("C", &run);
    p.assert_mapping_flags_truthful();
}

#[test]
fn cxx_with_exceptions_reaches_main() {
    if !can_run("unwind_cxx", &["perf", "g++"]) {
        return;
    }
    let fx = Fixtures::new();
    let bin = fx.c_no_frame_pointers("nofp_cxx");
    let run = profile_with_perf_dwarf(&fx, &bin);
    assert_tables_used("C++", &run);
    assert_hot_leaves(
        "C++",
        &run.ours,
        &[
            ("leaf_alpha", &["caller_one", "Worker::run"]),
            ("leaf_beta", &["Worker::run"]),
        ],
    );
    // Samples in the exception phase reach main through it, unless they
    // stopped inside the unwinder (marked, never shown as complete).
    let p = &run.ours;
    let (mut n, mut complete, mut marked) = (0i64, 0i64, 0i64);
    for s in &p.p.sample {
        let user = p.user_symbols(s);
        if !user.iter().any(|f| f == "exception_phase")
            && !user.iter().any(|f| f.contains("Unwind_"))
        {
            continue;
        }
        n += Pprof::count(s);
        if user
            .iter()
            .any(|f| f.starts_with("[truncated]") || f.starts_with("[unwind:"))
        {
            marked += Pprof::count(s);
        } else if user.last().is_some_and(|f| f == "_start") {
            complete += Pprof::count(s);
        }
    }
    eprintln!("C++: exceptions: {n} samples, {complete} complete, {marked} marked");
    assert!(n > 50, "only {n} samples in the exception phase");
    assert!(
        (complete + marked) as f64 >= 0.98 * n as f64,
        "{} of {n} exception samples neither complete nor marked",
        n - complete - marked
    );
    assert_incomplete_marked("C++", &run.ours);
    assert_edges_agree("C++", &run);
}

#[test]
fn rust_release_binary_reaches_main() {
    if !can_run("unwind_rust", &["perf", "rustc"]) {
        return;
    }
    let fx = Fixtures::new();
    let bin = fx.rust_release("nofp_rs");
    let run = profile_with_perf_dwarf(&fx, &bin);
    assert_tables_used("Rust", &run);
    assert_hot_leaves(
        "Rust",
        &run.ours,
        &[
            ("leaf_alpha", &["caller_one", "caller_two"]),
            ("leaf_beta", &["caller_two", "recurse"]),
        ],
    );
    assert_incomplete_marked("Rust", &run.ours);
    assert_edges_agree("Rust", &run);
}
