//! OTLP export against real peers: the independent Python receiver (the
//! official v1.10 classes, which also check the spec's structural rules) and
//! the real OpenTelemetry Collector, including faults and outages.

use std::{
    collections::HashSet,
    path::Path,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use profiler_tests::{
    Fixtures, Pprof, Running, can_run, finish,
    otlp::{Collector, Receiver, collector_bin, free_port, profile_ids, sample_total},
    profiler_bin,
};
use serde_json::Value;

/// A busy fixture process for `secs` seconds.
fn busy(fx: &Fixtures, secs: u32) -> Running {
    let bin = fx.c("cpu_hot");
    Running::spawn(
        Command::new(bin)
            .arg(secs.to_string())
            .stdout(Stdio::null()),
    )
}

/// Starts `profiler run` on `pid` with 1 s windows and `extra` arguments.
fn daemon(pid: u32, out_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Running {
    Running::spawn(
        Command::new(profiler_bin())
            .args([
                "run",
                "--pid",
                &pid.to_string(),
                "--frequency",
                "199",
                "--interval",
                "1",
            ])
            .arg("--output-dir")
            .arg(out_dir)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
}

/// Stops a daemon with SIGTERM and returns its stderr (it must exit 0).
fn stop(d: Running) -> String {
    d.signal(libc::SIGTERM);
    let out = finish(d, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "daemon failed: {err}");
    err
}

/// Waits until the daemon has written `n` window files into `dir`.
fn wait_windows(dir: &Path, n: usize) {
    let start = Instant::now();
    loop {
        let files = std::fs::read_dir(dir)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "gz")
                })
                .count()
            })
            .unwrap_or(0);
        if files >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {files} of {n} windows written"
        );
        sleep(Duration::from_millis(100));
    }
}

/// Total samples in the pprof files of `dir`, and how many files have
/// samples (windows without samples are not exported over OTLP).
fn pprof_totals(dir: &Path) -> (i64, usize) {
    let totals: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .map(|f| Pprof::read(&f).total())
        .collect();
    (
        totals.iter().sum(),
        totals.iter().filter(|&&t| t > 0).count(),
    )
}

fn assert_no_violations(requests: &[Value]) {
    for r in requests {
        let v = r["violations"].as_array().unwrap();
        assert!(v.is_empty(), "spec violations: {v:?}");
    }
}

/// The Collector re-encodes attribute_table[0] with an empty value present
/// (a zero value in meaning, not in bytes); everything else the checker
/// looks at (indices, duplicates, orphans, merging, timestamps) must hold
/// after it too.
fn assert_no_violations_after_collector(requests: &[Value]) {
    for r in requests {
        let v: Vec<_> = r["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .filter(|v| *v != "attribute_table[0] is not the zero value")
            .collect();
        assert!(v.is_empty(), "violations after the Collector: {v:?}");
    }
}

/// The summary's `otlp: N batches sent, R retries, D dropped, ...` numbers.
fn otlp_summary(stderr: &str) -> (u64, u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("otlp: "))
        .unwrap_or_else(|| panic!("no otlp summary in: {stderr}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3], n[4])
}

/// Every frame of every sample of every request.
fn frames(requests: &[Value]) -> Vec<Value> {
    requests
        .iter()
        .flat_map(|r| r["resources"].as_array().cloned().unwrap_or_default())
        .flat_map(|res| res["samples"].as_array().cloned().unwrap_or_default())
        .flat_map(|s| s["frames"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// What the fixture's profile must say, however it travelled.
fn assert_fixture_content(requests: &[Value], pid: u32) {
    let res = &requests[0]["resources"][0];
    let a = &res["attributes"];
    assert_eq!(a["process.pid"], Value::from(pid));
    assert_eq!(a["process.executable.name"], "cpu_hot");
    assert!(
        a["process.executable.path"]
            .as_str()
            .unwrap()
            .ends_with("/cpu_hot")
    );
    assert_eq!(a["service.name"], "unknown_service:cpu_hot");
    let host = hostname();
    assert_eq!(a["host.name"], Value::from(host));
    assert!(a.get("container.id").is_none());
    assert_eq!(res["scope"]["name"], "profiler");
    assert_eq!(res["sample_type"], serde_json::json!(["samples", "count"]));
    assert_eq!(
        res["period_type"],
        serde_json::json!(["cpu", "nanoseconds"])
    );
    assert_eq!(res["period"], Value::from(1_000_000_000u64 / 199));
    let sample = &res["samples"][0];
    for key in ["thread.id", "thread.name", "cpu.logical_number"] {
        assert!(
            sample["attributes"].get(key).is_some(),
            "{key} missing: {sample}"
        );
    }
    assert_eq!(sample["attributes"]["thread.id"], Value::from(pid));

    let all = frames(requests);
    let hot = all
        .iter()
        .find(|f| f["function"] == "hot_alpha" && !f["inline"].as_bool().unwrap())
        .expect("hot_alpha frame");
    assert!(
        hot["file"].as_str().unwrap().ends_with("cpu_hot.c"),
        "{hot}"
    );
    assert!(hot["line"].as_i64().unwrap() > 0 && hot["start_line"].as_i64().unwrap() > 0);
    assert!(hot["mapping"].as_str().unwrap().ends_with("/cpu_hot"));
    assert!(!hot["build_id"].as_str().unwrap_or_default().is_empty());
    assert_eq!(hot["frame_type"], "native");
    assert!(
        all.iter()
            .any(|f| f["function"] == "mix" && f["inline"] == true),
        "no inlined mix frame"
    );
    assert!(
        all.iter().any(|f| f["frame_type"] == "kernel"),
        "no kernel frame"
    );
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[test]
fn grpc_export_is_valid_and_matches_the_pprof_of_the_same_run() {
    if !can_run("otlp_grpc", &["gcc", "otlp-python"]) {
        return;
    }
    let fx = Fixtures::new();
    let target = busy(&fx, 30);
    let rx = Receiver::start(fx.path(), "grpc", 0, 0, &[]);
    let dir = fx.path().join("pprof");
    let endpoint = format!("http://127.0.0.1:{}", rx.grpc);
    let d = daemon(
        target.pid(),
        &dir,
        &["--otlp-endpoint", &endpoint],
        &[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=ci,team=core%20infra",
        )],
    );
    wait_windows(&dir, 3);
    let err = stop(d);
    let requests = rx.requests();
    let (pprof_samples, files) = pprof_totals(&dir);
    assert!(requests.len() >= 3, "{} requests", requests.len());
    assert_eq!(requests.len(), files, "one request per window");
    assert_eq!(
        sample_total(&requests) as i64,
        pprof_samples,
        "same samples as the pprof files"
    );
    assert_no_violations(&requests);
    assert_fixture_content(&requests, target.pid());
    let a = &requests[0]["resources"][0]["attributes"];
    assert_eq!(a["deployment.environment"], "ci");
    assert_eq!(a["team"], "core infra");
    let (sent, retries, dropped, _, rejected) = otlp_summary(&err);
    assert_eq!(
        (sent, retries, dropped, rejected),
        (files as u64, 0, 0, 0),
        "{err}"
    );
}

#[test]
fn http_export_with_headers_gzip_and_partial_success() {
    if !can_run("otlp_http", &["gcc", "otlp-python"]) {
        return;
    }
    let fx = Fixtures::new();
    let target = busy(&fx, 30);
    let rx = Receiver::start(fx.path(), "http", 0, 0, &["--partial", "1:2"]);
    let dir = fx.path().join("pprof");
    let d = daemon(
        target.pid(),
        &dir,
        &["--otlp-header", "x-scope-orgid=tenant-1"],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                &format!("http://127.0.0.1:{}", rx.http),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20secret",
            ),
            ("OTEL_SERVICE_NAME", "fixture"),
        ],
    );
    wait_windows(&dir, 2);
    let err = stop(d);
    let requests = rx.requests();
    assert!(requests.len() >= 2);
    assert_no_violations(&requests);
    let h = &requests[0]["headers"];
    assert_eq!(h["authorization"], "Bearer secret");
    assert_eq!(h["x-scope-orgid"], "tenant-1");
    assert_eq!(h["content-encoding"], "gzip");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(
        requests[0]["resources"][0]["attributes"]["service.name"],
        "fixture"
    );
    assert_eq!(sample_total(&requests) as i64, pprof_totals(&dir).0);
    let (_, _, dropped, _, rejected) = otlp_summary(&err);
    assert_eq!((dropped, rejected), (0, 2), "{err}");
    assert!(
        err.contains("OTLP partial success: 2 profiles rejected"),
        "{err}"
    );
}

#[test]
fn real_collector_accepts_and_forwards_what_we_send() {
    if !can_run("otlp_collector", &["gcc", "otlp-python"]) {
        return;
    }
    let Some(bin) = collector_bin() else {
        eprintln!(
            "SKIPPED the Collector part: it is not built (`cargo xtask otlp-tools` needs the Go module proxy)"
        );
        return;
    };
    let fx = Fixtures::new();
    let target = busy(&fx, 30);
    let rx = Receiver::start(fx.path(), "behind-collector", 0, 0, &[]);
    let col = Collector::start(fx.path(), &bin, rx.grpc);
    let dir = fx.path().join("pprof");
    let d = daemon(
        target.pid(),
        &dir,
        &["--otlp-endpoint", &format!("http://127.0.0.1:{}", col.grpc)],
        &[],
    );
    wait_windows(&dir, 3);
    let err = stop(d);
    let (pprof_samples, files) = pprof_totals(&dir);
    assert!(
        rx.wait_until(Duration::from_secs(30), |r| sample_total(r) as i64
            >= pprof_samples),
        "the collector forwarded {} of {pprof_samples} samples",
        sample_total(&rx.requests())
    );
    let requests = rx.requests();
    assert_eq!(sample_total(&requests) as i64, pprof_samples, "{err}");
    assert_eq!(profile_ids(&requests).len(), files);
    assert_no_violations_after_collector(&requests);
    assert_fixture_content(&requests, target.pid());
    let (_, _, dropped, _, rejected) = otlp_summary(&err);
    assert_eq!((dropped, rejected), (0, 0));
    drop(col);
}

#[test]
fn collector_down_at_start_is_retried_without_loss() {
    if !can_run("otlp_down_at_start", &["gcc", "otlp-python"]) {
        return;
    }
    let fx = Fixtures::new();
    let target = busy(&fx, 30);
    let port = free_port();
    let dir = fx.path().join("pprof");
    let d = daemon(
        target.pid(),
        &dir,
        &["--otlp-endpoint", &format!("http://127.0.0.1:{port}")],
        &[],
    );
    sleep(Duration::from_secs(3));
    let rx = Receiver::start(fx.path(), "late", port, 0, &[]);
    sleep(Duration::from_secs(4));
    // Everything queued while it was down arrives once it is up.
    let (_, files_before_stop) = pprof_totals(&dir);
    assert!(
        rx.wait_until(Duration::from_secs(30), |r| r.len() + 2
            >= files_before_stop),
        "only {} of {files_before_stop} windows arrived",
        rx.requests().len()
    );
    let err = stop(d);
    let (pprof_samples, files) = pprof_totals(&dir);
    let requests = rx.requests();
    assert_eq!(requests.len(), files, "{err}");
    assert_eq!(sample_total(&requests) as i64, pprof_samples);
    assert_no_violations(&requests);
    let (_, retries, dropped, _, _) = otlp_summary(&err);
    assert!(retries >= 1, "{err}");
    assert_eq!(dropped, 0, "{err}");
}

#[test]
fn unavailable_and_resource_exhausted_are_retried_honouring_retry_info() {
    if !can_run("otlp_grpc_faults", &["gcc", "otlp-python"]) {
        return;
    }
    let fx = Fixtures::new();
    let target = busy(&fx, 30);
    for (fault, min_gap) in [("3:UNAVAILABLE", 0.0), ("1:RESOURCE_EXHAUSTED:2000", 2.0)] {
        let rx = Receiver::start(fx.path(), fault, 0, 0, &["--grpc-fail", fault]);
        let dir = fx.path().join(format!("pprof-{}", fault.replace(':', "-")));
        let d = daemon(
            target.pid(),
            &dir,
            &["--otlp-endpoint", &format!("http://127.0.0.1:{}", rx.grpc)],
            &[],
        );
        wait_windows(&dir, 3);
        let (_, files) = pprof_totals(&dir);
        assert!(rx.wait_until(Duration::from_secs(30), |r| r.len() >= files));
        let err = stop(d);
        let lines = rx.lines();
        let faults: Vec<_> = lines.iter().filter(|l| l.get("fault").is_some()).collect();
        let expected: usize = fault.split(':').next().unwrap().parse().unwrap();
        assert_eq!(faults.len(), expected, "{fault}");
        let first_ok = lines.iter().find(|l| l.get("fault").is_none()).unwrap();
        let gap = first_ok["received_at"].as_f64().unwrap()
            - faults.last().unwrap()["at"].as_f64().unwrap();
        assert!(gap >= min_gap, "{fault}: retried after {gap:.2} s");
        let (pprof_samples, files) = pprof_totals(&dir);
        let requests = rx.requests();
        assert_eq!(requests.len(), files, "{fault}: {err}");
        assert_eq!(sample_total(&requests) as i64, pprof_samples);
        let (_, retries, dropped, _, _) = otlp_summary(&err);
        assert_eq!((retries, dropped), (expected as u64, 0), "{fault}: {err}");
    }
}

#[test]
fn http_503_with_retry_after_and_a_slow_collector_are_survived() {
    if !can_run("otlp_http_faults", &["gcc", "otlp-python"]) {
        return;
    }
    let fx = Fixtures::new();
    let target = busy(&fx, 30);

    // 503 with Retry-After: 2 twice.
    let rx = Receiver::start(fx.path(), "503", 0, 0, &["--http-fail", "2:503:2"]);
    let dir = fx.path().join("pprof-503");
    let d = daemon(
        target.pid(),
        &dir,
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", rx.http),
            "--otlp-protocol",
            "http/protobuf",
        ],
        &[],
    );
    wait_windows(&dir, 2);
    assert!(rx.wait_until(Duration::from_secs(30), |r| r.len() >= 2));
    let err = stop(d);
    let lines = rx.lines();
    let at: Vec<f64> = lines
        .iter()
        .map(|l| {
            l.get("at")
                .or(l.get("received_at"))
                .unwrap()
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(
        at[1] - at[0] >= 2.0 && at[2] - at[1] >= 2.0,
        "Retry-After not honoured: {at:?}"
    );
    let (pprof_samples, files) = pprof_totals(&dir);
    assert_eq!(rx.requests().len(), files, "{err}");
    assert_eq!(sample_total(&rx.requests()) as i64, pprof_samples);

    // A collector slower than the timeout: the attempt times out and is
    // retried; at-least-once delivery, so count distinct windows.
    let rx = Receiver::start(fx.path(), "slow", 0, 0, &["--delay", "1:3000"]);
    let dir = fx.path().join("pprof-slow");
    let d = daemon(
        target.pid(),
        &dir,
        &[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", rx.grpc),
            "--otlp-timeout",
            "1",
        ],
        &[],
    );
    wait_windows(&dir, 2);
    let (_, files) = pprof_totals(&dir);
    assert!(rx.wait_until(Duration::from_secs(30), |r| profile_ids(r).len() >= files));
    let err = stop(d);
    let (_, files) = pprof_totals(&dir);
    assert_eq!(profile_ids(&rx.requests()).len(), files, "{err}");
    let (_, retries, dropped, _, _) = otlp_summary(&err);
    assert!(retries >= 1 && dropped == 0, "{err}");
}

#[test]
fn spool_loses_nothing_across_a_60_s_outage_and_a_daemon_restart() {
    if !can_run("otlp_spool", &["gcc", "otlp-python"]) {
        return;
    }
    let fx = Fixtures::new();
    let target = busy(&fx, 150);
    let port = free_port();
    let spool = fx.path().join("spool");
    let dir = fx.path().join("pprof");
    let args = |spool: &Path| {
        vec![
            "--otlp-endpoint".to_owned(),
            format!("http://127.0.0.1:{port}"),
            "--spool-dir".to_owned(),
            spool.display().to_string(),
        ]
    };
    let start_daemon = || {
        let a = args(&spool);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        daemon(target.pid(), &dir, &a, &[])
    };
    let rx = Receiver::start(fx.path(), "before", port, 0, &[]);
    let d = start_daemon();
    sleep(Duration::from_secs(3));
    // The collector dies: a 60 s outage begins.
    drop(rx);
    let outage = Instant::now();
    sleep(Duration::from_secs(25));
    // The daemon restarts in the middle of it.
    let err1 = stop(d);
    let (_, _, dropped, _, _) = otlp_summary(&err1);
    assert_eq!(dropped, 0, "{err1}");
    let spooled: usize = std::fs::read_dir(&spool)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "otlp")
        })
        .count();
    assert!(spooled >= 20, "only {spooled} batches spooled");
    let d = start_daemon();
    sleep(Duration::from_secs(60).saturating_sub(outage.elapsed()));
    // The collector is back on the same port.
    let rx2 = Receiver::start(fx.path(), "after", port, 0, &[]);
    sleep(Duration::from_secs(3));
    let expected_at_least = pprof_totals(&dir).1;
    assert!(
        rx2.wait_until(Duration::from_secs(90), |r| {
            profile_ids(r).len()
                + profile_ids(&profiler_tests::otlp::read_lines(
                    &fx.path().join("before.jsonl"),
                ))
                .len()
                >= expected_at_least
        }),
        "the spool did not drain"
    );
    let err2 = stop(d);
    let before = profiler_tests::otlp::read_lines(&fx.path().join("before.jsonl"));
    let after = rx2.requests();
    let mut ids: Vec<String> = profile_ids(&before);
    ids.extend(profile_ids(&after));
    let unique: HashSet<_> = ids.iter().collect();
    let (pprof_samples, files) = pprof_totals(&dir);
    assert_eq!(
        unique.len(),
        files,
        "windows written {files}, delivered {}: {err1}\n{err2}",
        unique.len()
    );
    let mut all = before.clone();
    all.extend(after.iter().cloned());
    // Deduplicate (at-least-once) by profile id before counting samples.
    let mut seen = HashSet::new();
    let distinct: Vec<Value> = all
        .into_iter()
        .filter(|r| seen.insert(r["resources"][0]["profile_id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(sample_total(&distinct) as i64, pprof_samples);
    assert_no_violations(&distinct);
    // Sent in order: window start times only grow in arrival order.
    let starts: Vec<u64> = after
        .iter()
        .map(|r| r["resources"][0]["time_unix_nano"].as_u64().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "out of order: {starts:?}"
    );
    let (_, _, dropped, _, _) = otlp_summary(&err2);
    assert_eq!(dropped, 0, "{err2}");
    assert!(
        std::fs::read_dir(&spool).unwrap().all(|e| e
            .unwrap()
            .path()
            .extension()
            .is_none_or(|x| x != "otlp"))
    );
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client
/// certificate, made with openssl.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let st = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        std::fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }
}

#[test]
fn mutual_tls_over_grpc_and_http() {
    if !can_run("otlp_tls", &["gcc", "otlp-python", "openssl"]) {
        return;
    }
    let fx = Fixtures::new();
    certificates(fx.path());
    let p = |n: &str| fx.path().join(n).display().to_string();
    let target = busy(&fx, 30);
    let tls_args = [
        "--tls-cert".to_owned(),
        p("server.pem"),
        "--tls-key".to_owned(),
        p("server.key"),
        "--tls-client-ca".to_owned(),
        p("ca.pem"),
    ];
    let tls_args: Vec<&str> = tls_args.iter().map(String::as_str).collect();
    let rx = Receiver::start(fx.path(), "tls", 0, 0, &tls_args);
    for (protocol, port) in [("grpc", rx.grpc), ("http/protobuf", rx.http)] {
        let dir = fx
            .path()
            .join(format!("pprof-{}", protocol.replace('/', "-")));
        let before = rx.requests().len();
        let d = daemon(
            target.pid(),
            &dir,
            &[
                "--otlp-endpoint",
                &format!("https://127.0.0.1:{port}"),
                "--otlp-protocol",
                protocol,
                "--otlp-ca-file",
                &p("ca.pem"),
                "--otlp-client-cert",
                &p("client.pem"),
                "--otlp-client-key",
                &p("client.key"),
            ],
            &[],
        );
        wait_windows(&dir, 2);
        let (_, files) = pprof_totals(&dir);
        assert!(
            rx.wait_until(Duration::from_secs(30), |r| r.len() - before >= files),
            "{protocol}"
        );
        let err = stop(d);
        let (pprof_samples, files) = pprof_totals(&dir);
        let requests = rx.requests()[before..].to_vec();
        assert_eq!(requests.len(), files, "{protocol}: {err}");
        assert_eq!(sample_total(&requests) as i64, pprof_samples);
        assert_no_violations(&requests);
        assert!(
            requests
                .iter()
                .all(|r| r["protocol"] == protocol.split('/').next().unwrap())
        );
    }
    // Without the client certificate the collector refuses the handshake:
    // retried, never delivered, and counted on exit.
    let dir = fx.path().join("pprof-no-client-cert");
    let before = rx.requests().len();
    let d = daemon(
        target.pid(),
        &dir,
        &[
            "--otlp-endpoint",
            &format!("https://127.0.0.1:{}", rx.grpc),
            "--otlp-ca-file",
            &p("ca.pem"),
            "--otlp-timeout",
            "1",
        ],
        &[],
    );
    wait_windows(&dir, 2);
    let err = stop(d);
    assert_eq!(rx.requests().len(), before, "{err}");
    let (sent, retries, dropped, _, _) = otlp_summary(&err);
    assert!(sent == 0 && retries >= 1 && dropped >= 1, "{err}");
}
