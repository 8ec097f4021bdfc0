//! Goroutine-aware profiling of real Go programs built by every supported
//! toolchain (stripped and not, cgo, PIE): goroutine ids, states and pprof
//! labels on the samples, names and lines without DWARF, inline frames, and
//! flat shares that agree with the program's own runtime/pprof profile.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use profiler_tests::{Fixtures, Pprof, Running, can_run, go_pprof, go_toolchains, profiler_spawn};

/// Toolchains the issue names, at least.
const REQUIRED: [&str; 6] = ["1.21", "1.23", "1.24", "1.25", "1.26", "1.27"];

/// (variant, cgo, go build flags)
const VARIANTS: [(&str, bool, &[&str]); 4] = [
    ("plain", false, &[]),
    ("stripped", false, &["-ldflags=-s -w"]),
    ("cgo", true, &[]),
    ("pie", false, &["-buildmode=pie"]),
];

/// The labels each worker sets (gamma has 17: more than are copied).
fn expected_labels(worker: &str) -> Vec<(String, String)> {
    let mut l = vec![("worker".to_owned(), worker.to_owned())];
    match worker {
        "alpha" => l.push(("tenant".into(), "a".into())),
        "beta" => {
            l.push(("trace_id".into(), "4bf92f3577b34da6a3ce929d0e0e4736".into()));
            l.push(("span_id".into(), "00f067aa0ba902b7".into()));
        }
        _ => {
            for i in 0..16 {
                l.push((format!("key{i:02}"), format!("value-{i:02}")));
            }
        }
    }
    l.sort();
    l
}

/// The string labels of a sample, without the profiler's own.
fn user_labels(p: &Pprof, s: &pprof::protos::Sample) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = s
        .label
        .iter()
        .filter(|l| l.str != 0)
        .map(|l| (p.str(l.key).to_owned(), p.str(l.str).to_owned()))
        .filter(|(k, _)| {
            !k.starts_with("go.") && !k.starts_with("thread.") && !k.starts_with("process.")
        })
        .collect();
    out.sort();
    out
}

struct Run {
    ours: Pprof,
    theirs: Pprof,
    goids: HashMap<String, i64>,
    out: std::path::PathBuf,
}

/// Runs the fixture and profiles it; the fixture's own CPU profile covers
/// the same window (started by SIGUSR1 once our sampler runs, stopped by
/// SIGUSR2 just before we stop).
fn profile_fixture(fx: &Fixtures, bin: &std::path::Path, tag: &str) -> Run {
    let own = fx.path().join(format!("{tag}.own.pb.gz"));
    let mut child = Running::spawn(
        Command::new(bin)
            .arg("-cpuprofile")
            .arg(&own)
            .arg("60")
            .stdout(Stdio::piped()),
    );
    let pid = child.pid();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut goids = HashMap::new();
    for line in lines.by_ref().take(3) {
        // worker NAME goid N
        let line = line.unwrap();
        let f: Vec<_> = line.split_whitespace().collect();
        goids.insert(f[1].to_owned(), f[3].parse::<i64>().unwrap());
    }
    let out = fx.path().join(format!("{tag}.pb.gz"));
    let mut ours = profiler_spawn(&[
        "record",
        "-v",
        "--pid",
        &pid.to_string(),
        "--frequency",
        "199",
        "-o",
        out.to_str().unwrap(),
    ]);
    let stderr = ours.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let start = Instant::now();
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("sampling ")) {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => log.push(l),
            Err(_) => panic!("{tag}: profiler did not start: {log:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(30));
    }
    child.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_secs(5));
    child.signal(libc::SIGUSR2);
    let written = lines.next().map(Result::unwrap).unwrap_or_default();
    assert_eq!(written, "profile written", "{tag}");
    ours.signal(libc::SIGINT);
    assert!(
        ours.wait_for(Duration::from_secs(60))
            .is_some_and(|s| s.success()),
        "{tag}: {log:?}"
    );
    drop(child);
    Run {
        ours: Pprof::read(&out),
        theirs: Pprof::read(&own),
        goids,
        out,
    }
}

fn check(run: &Run, tag: &str, stripped: bool) {
    let p = &run.ours;
    for (worker, func) in [
        ("alpha", "main.alphaWork"),
        ("beta", "main.betaWork"),
        ("gamma", "main.gammaWork"),
    ] {
        let want = expected_labels(worker);
        let (mut n, mut goid_ok, mut labels_ok, mut running, mut rooted) = (0i64, 0, 0, 0, 0);
        for s in &p.p.sample {
            if p.leaf_symbol(s) != func {
                continue;
            }
            let c = Pprof::count(s);
            n += c;
            if p.label_num(s, "go.goroutine.id") == Some(run.goids[worker]) {
                goid_ok += c;
            }
            let got = user_labels(p, s);
            let ok = if worker == "gamma" {
                // 17 labels, 16 copied: what is there is right, and the cut is flagged.
                got.len() == 16
                    && got.iter().all(|l| want.contains(l))
                    && p.label_str(s, "go.labels.truncated").as_deref() == Some("true")
            } else {
                got == want
            };
            if ok {
                labels_ok += c;
            }
            if p.label_str(s, "go.goroutine.state").as_deref() == Some("running") {
                running += c;
            }
            // The stack ends cleanly where the goroutine started.
            let root = s
                .location_id
                .last()
                .and_then(|&l| p.lines(l).last().cloned());
            if root.is_some_and(|r| r.0 == "runtime.goexit") {
                rooted += c;
            }
        }
        assert!(n >= 40, "{tag}: only {n} samples in {func}");
        let frac = |x: i64| x as f64 / n as f64;
        assert!(
            frac(goid_ok) >= 0.95,
            "{tag} {func}: goroutine id on {:.1}%",
            100.0 * frac(goid_ok)
        );
        assert!(
            frac(labels_ok) >= 0.95,
            "{tag} {func}: labels on {:.1}%",
            100.0 * frac(labels_ok)
        );
        assert!(
            frac(rooted) >= 0.95,
            "{tag} {func}: stack ends at runtime.goexit on {:.1}%",
            100.0 * frac(rooted)
        );
        assert!(
            frac(running) >= 0.95,
            "{tag} {func}: running on {:.1}%",
            100.0 * frac(running)
        );
    }

    // Names and file:line, without DWARF when stripped.
    let beta =
        p.p.location
            .iter()
            .flat_map(|l| p.lines(l.id))
            .find(|(f, _, _)| f == "main.betaWork")
            .unwrap_or_else(|| panic!("{tag}: no main.betaWork"));
    assert!(
        beta.1.ends_with("golabels/main.go") && beta.2 > 0,
        "{tag}: {beta:?}"
    );
    let inlined = p.p.location.iter().any(|l| {
        let lines = p.lines(l.id);
        lines.len() >= 2 && lines[0].0 == "main.mix" && lines[1].0 == "main.alphaWork"
    });
    assert!(inlined, "{tag}: no main.mix inlined into main.alphaWork");
    if stripped {
        let exe = &p.p.mapping[0];
        assert!(exe.has_functions, "{tag}: stripped binary not symbolized");
    }

    // Flat shares agree with the program's own profile. Go's signal-based
    // profiler often catches a goroutine inside runtime.asyncPreempt, the
    // call its own preemption signal injects, with the interrupted function
    // as the caller; those samples belong to that caller.
    let (ours, theirs) = (
        p.flat_shares(),
        flat_shares_skipping(&run.theirs, "runtime.asyncPreempt"),
    );
    for func in ["main.alphaWork", "main.betaWork", "main.gammaWork"] {
        let (a, b) = (
            ours.get(func).copied().unwrap_or(0.0),
            theirs.get(func).copied().unwrap_or(0.0),
        );
        assert!(
            (a - b).abs() <= 0.05,
            "{tag} {func}: ours {:.1}% vs runtime/pprof {:.1}%",
            100.0 * a,
            100.0 * b
        );
    }
}

/// Flat shares by leaf function, attributing samples whose leaf is `skip`
/// to the frame below it.
fn flat_shares_skipping(p: &Pprof, skip: &str) -> HashMap<String, f64> {
    let total = p.total().max(1) as f64;
    let mut out: HashMap<String, f64> = HashMap::new();
    for s in &p.p.sample {
        let leaf = s
            .location_id
            .iter()
            .map(|&l| p.lines(l).last().map(|x| x.0.clone()).unwrap_or_default())
            .find(|f| f != skip)
            .unwrap_or_default();
        *out.entry(leaf).or_default() += Pprof::count(s) as f64 / total;
    }
    out
}

#[test]
fn goroutines_labels_and_symbols_for_every_toolchain_and_build_mode() {
    if !can_run("go_fixtures", &["gcc", "go"]) {
        return;
    }
    let toolchains = go_toolchains();
    let missing: Vec<_> = REQUIRED
        .iter()
        .filter(|v| {
            !toolchains
                .iter()
                .any(|(t, _)| t.starts_with(&format!("{v}.")))
        })
        .collect();
    if !missing.is_empty() {
        let required = std::env::var_os("PROFILER_REQUIRE_GO_TOOLCHAINS").is_some_and(|v| v == "1");
        assert!(
            !required,
            "Go toolchains missing: {missing:?} (cargo xtask go-toolchains)"
        );
        eprintln!("SKIPPED: Go toolchains missing: {missing:?} (cargo xtask go-toolchains)");
        return;
    }
    let fx = Fixtures::new();
    let started = Instant::now();
    for (version, go) in &toolchains {
        for (variant, cgo, flags) in VARIANTS {
            let tag = format!("go{version}-{variant}");
            let bin = fx.go(go, "golabels", &tag, cgo, flags);
            let run = profile_fixture(&fx, &bin, &tag);
            check(&run, &tag, variant == "stripped");
            eprintln!(
                "{tag}: ok ({:.0} s so far)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    // go tool pprof reads them, tags included.
    let last = Fixtures::new();
    let (_, go) = toolchains.last().unwrap();
    let bin = last.go(go, "golabels", "tags", false, &[]);
    let run = profile_fixture(&last, &bin, "tags");
    let tags = go_pprof(&["-tags"], &run.out);
    assert!(
        tags.contains("go.goroutine.id") && tags.contains("tenant"),
        "{tags}"
    );
}
