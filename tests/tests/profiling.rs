//! End-to-end tests as root: compile fixture programs, profile them with the
//! real binary (and with `perf record -g` in the same run), and check what
//! the pprof files say.

use std::{
    collections::HashSet,
    path::Path,
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use profiler_tests::{
    Fixtures, Pprof, Running, can_run, finish, go_pprof, perf_flat_shares, profiler,
    profiler_spawn, record_pid, share_of,
};

/// Sampling rate for the comparisons: enough samples that two independent
/// samplers agree within a few points.
const HZ: &str = "499";
const SECONDS: &str = "8";

struct Compared {
    ours: Pprof,
    perf: std::collections::HashMap<String, f64>,
    pid: u32,
    out: std::path::PathBuf,
}

/// Profiles `bin` (running for longer than the window) with the profiler
/// and with perf at the same time.
fn profile_with_perf(fx: &Fixtures, bin: &Path) -> Compared {
    let target = Running::spawn(Command::new(bin).arg("30").stdout(Stdio::null()));
    let pid = target.pid();
    sleep(Duration::from_millis(300));
    let out = fx.path().join(format!("{pid}.pb.gz"));
    let perf_data = fx.path().join(format!("{pid}.perf.data"));
    let pid_s = pid.to_string();
    let ours = profiler_spawn(&[
        "record",
        "--pid",
        &pid_s,
        "--frequency",
        HZ,
        "--duration",
        SECONDS,
        "-o",
        out.to_str().unwrap(),
    ]);
    let perf = Running::spawn(
        Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                HZ,
                "-g",
                "-q",
                "-p",
                &pid_s,
                "-o",
            ])
            .arg(&perf_data)
            .args(["--", "sleep", SECONDS])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let result = finish(ours, Duration::from_secs(60));
    assert!(
        result.status.success(),
        "profiler failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let mut perf = perf;
    assert!(
        perf.wait_for(Duration::from_secs(60)).is_some(),
        "perf did not stop"
    );
    drop(target);
    Compared {
        ours: Pprof::read(&out),
        perf: perf_flat_shares(&perf_data),
        pid,
        out,
    }
}

/// Asserts flat shares agree with perf within 5 points for each symbol.
fn assert_shares_agree(c: &Compared, symbols: &[&str]) {
    let ours = c.ours.flat_shares();
    for sym in symbols {
        let (a, b) = (share_of(&ours, sym), share_of(&c.perf, sym));
        assert!(
            (a - b).abs() <= 0.05,
            "{sym}: ours {:.1}% vs perf {:.1}%\nours: {ours:?}\nperf: {:?}",
            a * 100.0,
            b * 100.0,
            c.perf
        );
        assert!(a > 0.05, "{sym} is not hot ({:.1}%)", a * 100.0);
    }
}

/// Of the samples whose leaf is one of `hot`, the fraction with `main` on the stack.
fn main_path_fraction(p: &Pprof, hot: &[&str], main: &str) -> f64 {
    let (mut hot_n, mut with_main) = (0i64, 0i64);
    for s in &p.p.sample {
        let leaf = p.leaf_symbol(s);
        if hot.iter().any(|h| leaf.contains(h)) {
            hot_n += Pprof::count(s);
            if p.stack_functions(s).iter().any(|f| f == main) {
                with_main += Pprof::count(s);
            }
        }
    }
    assert!(hot_n > 100, "only {hot_n} hot samples");
    with_main as f64 / hot_n as f64
}

#[test]
fn c_fixture_matches_perf_with_inline_frames_lines_and_kernel_stacks() {
    if !can_run("c_fixture", &["perf", "gcc", "go"]) {
        return;
    }
    let fx = Fixtures::new();
    let bin = fx.c("cpu_hot");
    let c = profile_with_perf(&fx, &bin);
    let p = &c.ours;

    assert_shares_agree(&c, &["hot_alpha", "hot_beta", "[kernel]"]);
    let frac = main_path_fraction(p, &["hot_alpha", "hot_beta"], "main");
    assert!(
        frac >= 0.95,
        "only {:.1}% of hot samples reach main",
        frac * 100.0
    );

    // The inlined helper is its own frame, innermost, with file:line.
    let inline = p.p.location.iter().find_map(|l| {
        let lines = p.lines(l.id);
        (lines.len() >= 2 && lines[0].0 == "mix" && lines[1].0 == "hot_alpha").then_some(lines)
    });
    let lines = inline.expect("a location with mix inlined into hot_alpha");
    assert!(
        lines[0].1.ends_with("cpu_hot.c") && lines[0].2 > 0,
        "{lines:?}"
    );
    assert!(
        lines[1].1.ends_with("cpu_hot.c") && lines[1].2 > 0,
        "{lines:?}"
    );

    // The syscall phase: its samples are in the kernel, under write(2),
    // and the user part of the stack still reaches main. (libc's write has
    // no frame of its own, so a frame-pointer walk goes from it straight to
    // main, past syscall_phase: perf shows the same.)
    let (mut kernel_leaf, mut under_write) = (0i64, 0i64);
    let mut kernel_names = HashSet::new();
    for s in &p.p.sample {
        if p.leaf_symbol(s) != "[kernel]" {
            continue;
        }
        kernel_leaf += Pprof::count(s);
        let (mut kernel, mut user) = (Vec::new(), Vec::new());
        for &l in &s.location_id {
            let names = p.lines(l).into_iter().map(|x| x.0);
            if p.mapping_name(l) == "[kernel.kallsyms]" {
                kernel.extend(names);
            } else {
                user.extend(names);
            }
        }
        if !kernel.is_empty()
            && user.iter().any(|f| f.contains("write"))
            && user.iter().any(|f| f == "main")
        {
            under_write += Pprof::count(s);
        }
        kernel_names.extend(kernel);
    }
    assert!(kernel_leaf > 50, "only {kernel_leaf} kernel samples");
    assert!(
        under_write as f64 / kernel_leaf as f64 >= 0.8,
        "{under_write}/{kernel_leaf} kernel samples are under write(2) from main; kernel functions: {kernel_names:?}"
    );

    // Labels.
    let s = &p.p.sample[0];
    assert_eq!(p.label_num(s, "process.pid"), Some(i64::from(c.pid)));
    assert_eq!(
        p.label_str(s, "process.executable.name").as_deref(),
        Some("cpu_hot")
    );
    assert_eq!(p.label_str(s, "thread.name").as_deref(), Some("cpu_hot"));
    assert_eq!(p.label_num(s, "thread.id"), Some(i64::from(c.pid)));

    // The profile header and mapping flags.
    let st = |i| p.str(i);
    assert_eq!(st(p.p.sample_type[0].ty), "samples");
    assert_eq!(st(p.p.sample_type[1].ty), "cpu");
    assert_eq!(p.p.period, 1_000_000_000 / 499);
    let exe = &p.p.mapping[0];
    assert!(
        st(exe.filename).ends_with("cpu_hot"),
        "first mapping {}",
        st(exe.filename)
    );
    assert!(exe.has_functions, "every cpu_hot address has a function");
    assert!(!st(exe.build_id).is_empty());
    p.assert_mapping_flags_truthful();

    // go tool pprof reads it.
    let top = go_pprof(&["-top"], &c.out);
    assert!(
        top.contains("hot_alpha") && top.contains("hot_beta"),
        "{top}"
    );
    let lines = go_pprof(&["-top", "-lines"], &c.out);
    assert!(lines.contains("cpu_hot.c:"), "{lines}");
}

#[test]
fn rust_fixture_is_demangled_with_lines_and_matches_perf() {
    if !can_run("rust_fixture", &["perf", "rustc", "go"]) {
        return;
    }
    let fx = Fixtures::new();
    let bin = fx.rust("rust_hot");
    let c = profile_with_perf(&fx, &bin);
    let p = &c.ours;

    assert_shares_agree(&c, &["spin_alpha", "spin_beta"]);
    let frac = main_path_fraction(p, &["spin_alpha", "spin_beta"], "rust_hot::main");
    assert!(
        frac >= 0.95,
        "only {:.1}% of hot samples reach main",
        frac * 100.0
    );

    let f =
        p.p.function
            .iter()
            .find(|f| p.str(f.name) == "rust_hot::spin_alpha")
            .expect("demangled rust_hot::spin_alpha");
    let mangled = p.str(f.system_name);
    assert!(
        mangled.starts_with("_ZN") || mangled.starts_with("_R"),
        "{mangled}"
    );
    assert!(p.str(f.filename).ends_with("rust_hot.rs"));
    assert!(f.start_line > 0);
    // The callers are there too.
    let callers: HashSet<_> =
        p.p.sample
            .iter()
            .flat_map(|s| p.stack_functions(s))
            .collect();
    assert!(callers.contains("rust_hot::caller_alpha"), "{callers:?}");
    assert!(callers.contains("rust_hot::caller_beta"), "{callers:?}");
    p.assert_mapping_flags_truthful();
    go_pprof(&["-top"], &c.out);
}

#[test]
fn jit_perf_map_and_vdso_frames_are_named() {
    if !can_run("jit_vdso", &["gcc"]) {
        return;
    }
    let fx = Fixtures::new();
    let bin = fx.c("jit_vdso");
    let target = Running::spawn(Command::new(&bin).arg("20").stdout(Stdio::null()));
    sleep(Duration::from_millis(300));
    let out = fx.path().join("jit.pb.gz");
    record_pid(target.pid(), 199, 4, &out);
    drop(target);
    let p = Pprof::read(&out);
    let (mut jit, mut vdso, total) = (0i64, 0i64, p.total());
    for s in &p.p.sample {
        let leaf = s.location_id[0];
        match (p.mapping_name(leaf), p.leaf_symbol(s)) {
            ("[jit]", sym) if sym == "jit_spin_loop" => jit += Pprof::count(s),
            ("[vdso]", sym) if sym.contains("clock_gettime") => vdso += Pprof::count(s),
            _ => {}
        }
    }
    assert!(
        jit as f64 / total as f64 > 0.2,
        "{jit}/{total} samples in jit_spin_loop"
    );
    assert!(
        vdso as f64 / total as f64 > 0.1,
        "{vdso}/{total} samples in the vDSO's clock_gettime"
    );
}

#[test]
fn exec_does_not_mix_up_mappings() {
    if !can_run("exec", &["gcc"]) {
        return;
    }
    let fx = Fixtures::new();
    let first = fx.c("exec_first");
    let second = fx.c("cpu_hot");
    // 2 s in exec_first, then the same pid becomes cpu_hot for 3 s.
    let target = Running::spawn(
        Command::new(&first)
            .arg("2")
            .arg(&second)
            .arg("3")
            .stdout(Stdio::null()),
    );
    let out = fx.path().join("exec.pb.gz");
    let run = record_pid(target.pid(), 199, 8, &out);
    drop(target);
    let p = Pprof::read(&out);
    let mut by_exe: std::collections::HashMap<String, HashSet<String>> = Default::default();
    for s in &p.p.sample {
        let exe = p.label_str(s, "process.executable.name").unwrap();
        by_exe.entry(exe).or_default().insert(p.leaf_symbol(s));
    }
    let before = &by_exe["exec_first"];
    let after = &by_exe["cpu_hot"];
    assert!(before.contains("before_exec"), "{before:?}");
    assert!(after.contains("hot_alpha"), "{after:?}");
    for sym in ["hot_alpha", "hot_beta", "syscall_phase", "mix"] {
        assert!(
            !before.contains(sym),
            "exec_first sample named {sym}: {before:?}"
        );
    }
    assert!(
        !after.contains("before_exec"),
        "cpu_hot sample named before_exec"
    );
    // Stopped early: every target exited.
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("every target process exited"), "{err}");
}

#[test]
fn whole_system_record_survives_process_churn() {
    if !can_run("churn", &["gcc"]) {
        return;
    }
    let fx = Fixtures::new();
    let hot = fx.c("cpu_hot");
    let _busy = Running::spawn(Command::new(&hot).arg("10").stdout(Stdio::null()));
    // ~100 short-lived processes per second.
    let _churn = Running::spawn(
        Command::new("sh")
            .arg("-c")
            .arg("while :; do /bin/true; /bin/true; sleep 0.02; done")
            .stdout(Stdio::null()),
    );
    let out = fx.path().join("system.pb.gz");
    let run = profiler(&["record", "--duration", "4", "-o", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(err.contains("lost samples: 0"), "{err}");
    let p = Pprof::read(&out);
    let exes: HashSet<_> =
        p.p.sample
            .iter()
            .filter_map(|s| p.label_str(s, "process.executable.name"))
            .collect();
    assert!(exes.contains("cpu_hot"), "{exes:?}");
    assert!(exes.len() >= 3, "only {exes:?}");
    assert!(
        p.p.mapping
            .iter()
            .any(|m| p.str(m.filename) == "[kernel.kallsyms]"),
        "no kernel mapping"
    );
}

#[test]
fn daemon_writes_one_profile_per_interval_and_flushes_on_sigterm() {
    if !can_run("daemon", &["gcc"]) {
        return;
    }
    let fx = Fixtures::new();
    let hot = fx.c("cpu_hot");
    let target = Running::spawn(Command::new(&hot).arg("20").stdout(Stdio::null()));
    let dir = fx.path().join("profiles");
    let pid = target.pid().to_string();
    let daemon = profiler_spawn(&[
        "run",
        "--pid",
        &pid,
        "--frequency",
        "99",
        "--interval",
        "1",
        "--output-dir",
        dir.to_str().unwrap(),
    ]);
    sleep(Duration::from_millis(3600));
    daemon.signal(libc::SIGTERM);
    let out = finish(daemon, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // Three full intervals and the partial one flushed by SIGTERM.
    assert!(files.len() >= 4, "{files:?}");
    let mut starts = Vec::new();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("cpu-") && name.ends_with("Z.pb.gz"),
            "{name}"
        );
        let p = Pprof::read(f);
        assert!(p.total() > 0, "{name} is empty");
        starts.push(p.p.time_nanos);
    }
    assert!(
        starts.windows(2).all(|w| w[0] < w[1]),
        "not in time order: {starts:?}"
    );
}
