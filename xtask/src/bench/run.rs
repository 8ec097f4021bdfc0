//! One measured run: a workload, a profiler at one rate, and the figures of
//! its steady-state window; and the baseline windows without a profiler.
//!
//! Timeline of a run:
//! 1. wait until the machine is otherwise idle (see `host::wait_until_idle`);
//! 2. start the workload, let it settle for 2 s;
//! 3. start the profiler in its own cgroup; poll its fds every 5 ms until
//!    its first sample (a perf_event BPF program ran, or for perf, one
//!    perf_event fd per CPU is open): that is the start-up time;
//! 4. otel only: wait for its first export with samples;
//! 5. warm up; then the window: CPU of each cgroup, BPF run time and count
//!    of the tool's programs, the workload's units of work, delivered
//!    samples, /proc/stat and every process's CPU are read at both edges,
//!    RSS every second;
//! 6. otel only: wait for two more exports so samples taken in the window
//!    have arrived;
//! 7. stop the tool with SIGINT (re-sent when it sits idle, then SIGTERM,
//!    SIGKILL), timing the shutdown and tracking its peak RSS; then count
//!    what it delivered.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{
    bpf,
    cgroup::Cgroups,
    host::{self, IdleCheck},
    pprof, procs, sink, sys,
    tools::{self, Env, Tool},
    workload::{self, Binaries, Workload},
};

/// Settings shared by every run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub seconds: f64,
    pub warmup: f64,
    pub baseline_seconds: f64,
    pub idle_threshold_pct: f64,
    pub idle_wait_s: f64,
    /// Foreign CPU (% of one CPU) in a window above which it is marked contended.
    pub contended_pct: f64,
    pub cpus: u32,
    /// Attempts beyond the first for a contended window.
    pub retries: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Ok,
    Missing(String),
    Failed(String),
}

/// Everything measured in one run.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub tool: Tool,
    pub workload: Workload,
    pub rate: u32,
    pub status: Status,
    pub command: String,
    pub idle: Option<IdleCheck>,
    pub load_start: [f64; 3],
    pub load_end: [f64; 3],
    /// Exec to first sample, s.
    pub startup_s: Option<f64>,
    /// Exec to first output with samples (ours: first file; otel: first export), s.
    pub first_output_s: Option<f64>,
    pub window_s: f64,
    /// CPU of the tool's processes in the window, ns.
    pub user_cpu_ns: u64,
    /// CPU of the tool's processes over its whole life, ns.
    pub life_cpu_ns: u64,
    pub bpf: bpf::RunTotals,
    /// Seconds between the two bpftool snapshots.
    pub bpf_interval_s: f64,
    pub bpf_progs: Vec<String>,
    pub rss_mean_kib: f64,
    pub rss_peak_window_kib: u64,
    pub rss_peak_life_kib: u64,
    /// The highest RSS sample (window and shutdown, every second / 50 ms).
    pub rss_top_sample: procs::Memory,
    pub map_bytes: u64,
    pub maps: usize,
    /// Samples delivered, scaled to the window.
    pub delivered: Option<f64>,
    /// cpus × rate × window.
    pub expected: f64,
    /// Non-idle share of the machine's CPU time in the window (CPU time of
    /// every task, from the root cgroup, over CPUs × window).
    pub busy_fraction: f64,
    pub lost: Option<u64>,
    pub lost_detail: String,
    /// Units of work per second in the window.
    pub throughput: Option<f64>,
    pub sink_cpu_ns: Option<u64>,
    pub foreign_pct: f64,
    pub foreign_top: Vec<String>,
    /// Foreign CPU from the tool's start to its exit, % of one CPU.
    pub foreign_life_pct: f64,
    pub shutdown_s: Option<f64>,
    pub stop_note: String,
    pub notes: Vec<String>,
    /// Reasons the window's figures are not trustworthy.
    pub invalid: Vec<String>,
    /// Attempts it took to get an uncontended window.
    pub attempts: u32,
}

impl Outcome {
    fn new(tool: Tool, workload: Workload, rate: u32, s: &Settings) -> Self {
        Self {
            tool,
            workload,
            rate,
            status: Status::Ok,
            command: String::new(),
            idle: None,
            load_start: host::loadavg(),
            load_end: [f64::NAN; 3],
            startup_s: None,
            first_output_s: None,
            window_s: s.seconds,
            user_cpu_ns: 0,
            life_cpu_ns: 0,
            bpf: bpf::RunTotals::default(),
            bpf_interval_s: s.seconds,
            bpf_progs: Vec::new(),
            rss_mean_kib: 0.0,
            rss_peak_window_kib: 0,
            rss_peak_life_kib: 0,
            rss_top_sample: procs::Memory::default(),
            map_bytes: 0,
            maps: 0,
            delivered: None,
            expected: f64::from(s.cpus) * f64::from(rate) * s.seconds,
            busy_fraction: f64::NAN,
            lost: None,
            lost_detail: String::new(),
            throughput: None,
            sink_cpu_ns: None,
            foreign_pct: f64::NAN,
            foreign_top: Vec::new(),
            foreign_life_pct: f64::NAN,
            shutdown_s: None,
            stop_note: String::new(),
            notes: Vec::new(),
            invalid: Vec::new(),
            attempts: 1,
        }
    }

    /// Samples the tool should have delivered: for tools that drop the idle
    /// task's samples, rate × the CPU time every task used in the window.
    pub fn expected_for_tool(&self) -> f64 {
        if self.tool.drops_idle() {
            self.expected * self.busy_fraction
        } else {
            self.expected
        }
    }
}

/// A baseline window: the workload alone.
#[derive(Clone, Debug)]
pub struct Baseline {
    pub workload: Workload,
    pub throughput: f64,
    pub foreign_pct: f64,
    pub idle: IdleCheck,
    /// Attempts it took to get an uncontended window.
    pub attempts: u32,
    pub load: [f64; 3],
}

/// The profiler process; killed with its group if dropped while running.
struct ToolProcess {
    child: Child,
}

impl Drop for ToolProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            sys::signal_group(self.child.id(), sys::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn secs_since(t_ns: u64) -> f64 {
    sys::mono_ns().saturating_sub(t_ns) as f64 / 1e9
}

fn interrupted() -> Result<()> {
    if sys::stop_requested() {
        bail!("interrupted");
    }
    Ok(())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(lines)..].join(" | ")
}

/// Measures the workload alone for `seconds`.
pub fn baseline(
    w: Workload,
    bins: &Binaries,
    cg: &Cgroups,
    s: &Settings,
    dir: &Path,
) -> Result<Baseline> {
    let idle = host::wait_until_idle(cg, s.idle_threshold_pct, s.idle_wait_s);
    interrupted()?;
    let load = host::loadavg();
    let mut running = workload::start(w, bins, &cg.workload, dir)?;
    thread::sleep(Duration::from_secs(2));
    let (t0, u0, f0) = (sys::mono_ns(), running.units(), cg.foreign_ns());
    while secs_since(t0) < s.baseline_seconds {
        interrupted()?;
        thread::sleep(Duration::from_millis(100));
    }
    let (t1, u1, f1) = (sys::mono_ns(), running.units(), cg.foreign_ns());
    let alive = running.alive();
    running.stop();
    if !alive {
        bail!("the {} workload died during its baseline", w.name());
    }
    let secs = (t1 - t0) as f64 / 1e9;
    let units = u1.unwrap_or(0).saturating_sub(u0.unwrap_or(0));
    Ok(Baseline {
        workload: w,
        throughput: units as f64 / secs,
        foreign_pct: f1.saturating_sub(f0) as f64 / 1e9 / secs * 100.0,
        idle,
        attempts: 1,
        load,
    })
}

/// Everything read at one edge of the window.
struct Edge {
    mono: u64,
    wall: u64,
    tool_cpu: u64,
    sink_cpu: u64,
    units: Option<u64>,
    foreign: u64,
    machine: u64,
    procs: std::collections::HashMap<u32, (String, u64)>,
    /// (run totals, time of the bpftool snapshot).
    bpf: Option<(bpf::RunTotals, u64)>,
    /// (sum of the counting map, time of the dump).
    count_map: Option<(u64, u64)>,
    /// Every loaded program.
    progs: std::collections::BTreeMap<u32, bpf::Prog>,
}

/// Reads one edge of the window.
fn edge(
    tool: Tool,
    cg: &Cgroups,
    running: &workload::Running,
    prog_ids: &BTreeSet<u32>,
    count_map: Option<u32>,
) -> Result<Edge> {
    let mut e = Edge {
        mono: sys::mono_ns(),
        wall: sys::wall_ns(),
        tool_cpu: cg.tool.usage_ns(),
        sink_cpu: cg.sink.usage_ns(),
        units: running.units(),
        foreign: cg.foreign_ns(),
        machine: cg.machine_ns(),
        procs: host::process_ticks(),
        bpf: None,
        count_map: None,
        progs: Default::default(),
    };
    let t = sys::mono_ns();
    e.progs = bpf::progs()?;
    if tool.uses_bpf() {
        e.bpf = Some((bpf::totals(&e.progs, prog_ids), (t + sys::mono_ns()) / 2));
    }
    if let Some(id) = count_map {
        let t = sys::mono_ns();
        let (sum, _) = bpf::map_value_sum(id)?;
        e.count_map = Some((sum, (t + sys::mono_ns()) / 2));
    }
    Ok(e)
}

/// Runs `tool` at `rate` on workload `w`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    tool: Tool,
    w: Workload,
    rate: u32,
    env: &Env,
    bins: &Binaries,
    cg: &mut Cgroups,
    s: &Settings,
    dir: &Path,
) -> Result<Outcome> {
    let mut out = Outcome::new(tool, w, rate, s);
    if let Some(why) = tools::missing(tool, env) {
        out.status = Status::Missing(why);
        return Ok(out);
    }
    std::fs::create_dir_all(dir)?;
    out.idle = Some(host::wait_until_idle(
        cg,
        s.idle_threshold_pct,
        s.idle_wait_s,
    ));
    interrupted()?;
    out.load_start = host::loadavg();
    let max_rate_start = host::sysctl("kernel.perf_event_max_sample_rate");
    cg.reset_tool()?;

    let mut running = workload::start(w, bins, &cg.workload, dir)?;
    thread::sleep(Duration::from_secs(2));
    let progs_before: BTreeSet<u32> = bpf::progs()?.into_keys().collect();

    let mut receiver = match tool {
        Tool::Otel => {
            let python = env.python.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
            Some(sink::start(
                python,
                &env.receiver,
                &cg.sink,
                dir,
                dir.join("receiver.jsonl"),
            )?)
        }
        _ => None,
    };
    let launch = tools::launch(tool, env, rate, dir, receiver.as_ref().map(|r| r.port))?;
    out.command = launch.shown();
    if tool.is_ours() {
        std::fs::create_dir_all(&launch.output)?;
    }
    let stdout_path = dir.join("tool.stdout");
    let stderr_path = dir.join("tool.stderr");
    let mut cmd = cg.tool.wrap(&launch.program, &launch.args);
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path)?)
        .stderr(std::fs::File::create(&stderr_path)?)
        .envs(launch.env.iter().map(|(k, v)| (k, v)));
    let spawned = sys::mono_ns();
    let foreign_at_spawn = cg.foreign_ns();
    let mut proc = ToolProcess {
        child: cmd
            .spawn()
            .with_context(|| format!("cannot start {}", launch.program.display()))?,
    };
    let pid = proc.child.id();

    let failed = |out: &mut Outcome, what: &str, proc: &mut ToolProcess| -> Result<()> {
        let st = proc.child.try_wait()?;
        out.status = Status::Failed(format!(
            "{what} ({}): {}",
            st.map_or("still running".into(), |s| s.to_string()),
            tail(&stderr_path, 3)
        ));
        Ok(())
    };

    // Start-up: first sample.
    let mut fallback_checked = 0u64;
    loop {
        interrupted()?;
        if proc.child.try_wait()?.is_some() {
            failed(&mut out, "exited during start-up", &mut proc)?;
            return Ok(out);
        }
        let fds = procs::scan_fds(&cg.tool.pids());
        let first = if tool.uses_bpf() {
            fds.sampler_runs() > 0
        } else {
            fds.perf_events >= s.cpus as usize
        };
        if first {
            out.startup_s = Some(secs_since(spawned));
            break;
        }
        // A sampler held by no fd of the tool: look for new programs.
        if tool.uses_bpf() && fds.progs.is_empty() && secs_since(spawned) > 1.0 {
            let now = sys::mono_ns();
            if now - fallback_checked > 200_000_000 {
                fallback_checked = now;
                let runs: u64 = bpf::progs()?
                    .values()
                    .filter(|p| !progs_before.contains(&p.id) && p.prog_type == "perf_event")
                    .map(|p| p.run_cnt)
                    .sum();
                if runs > 0 {
                    out.startup_s = Some(secs_since(spawned));
                    out.notes
                        .push("first sample seen through bpftool, not an fd".into());
                    break;
                }
            }
        }
        if secs_since(spawned) > 120.0 {
            failed(&mut out, "no sample within 120 s", &mut proc)?;
            return Ok(out);
        }
        thread::sleep(Duration::from_millis(5));
    }

    // otel: its first export with samples.
    if let Some(r) = &receiver {
        loop {
            interrupted()?;
            if r.requests().iter().any(|q| q.samples > 0) {
                out.first_output_s = Some(secs_since(spawned));
                break;
            }
            if proc.child.try_wait()?.is_some() {
                failed(&mut out, "exited before its first export", &mut proc)?;
                return Ok(out);
            }
            if secs_since(spawned) > 120.0 {
                failed(&mut out, "no export with samples within 120 s", &mut proc)?;
                return Ok(out);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    let first_file = |out: &mut Outcome| {
        if tool.is_ours()
            && out.first_output_s.is_none()
            && std::fs::read_dir(&launch.output)
                .map(|d| {
                    d.flatten()
                        .any(|e| e.path().to_string_lossy().ends_with(".pb.gz"))
                })
                .unwrap_or(false)
        {
            out.first_output_s = Some(secs_since(spawned));
        }
    };

    // Warm-up.
    let warm_from = sys::mono_ns();
    while secs_since(warm_from) < s.warmup {
        interrupted()?;
        if proc.child.try_wait()?.is_some() {
            failed(&mut out, "exited during the warm-up", &mut proc)?;
            return Ok(out);
        }
        first_file(&mut out);
        thread::sleep(Duration::from_millis(100));
    }

    // The tool's programs and counting map.
    let fds0 = procs::scan_fds(&cg.tool.pids());
    let all0 = bpf::progs()?;
    let mut prog_ids = fds0.prog_ids();
    let new_progs: BTreeSet<u32> = all0
        .keys()
        .copied()
        .filter(|id| !progs_before.contains(id))
        .collect();
    if tool.uses_bpf() && prog_ids.is_empty() {
        prog_ids = new_progs.clone();
        out.notes
            .push("programs attributed by load time (the tool holds no program fd)".into());
    } else {
        let stray: Vec<String> = new_progs
            .difference(&prog_ids)
            .filter_map(|id| all0.get(id))
            .map(|p| format!("{} {}", p.id, p.name))
            .collect();
        if !stray.is_empty() {
            out.notes.push(format!(
                "BPF programs loaded during the run by someone else (not counted): {}",
                stray.join(", ")
            ));
        }
    }
    out.bpf_progs = prog_ids
        .iter()
        .filter_map(|id| all0.get(id))
        .map(|p| format!("{}:{}", p.prog_type, p.name))
        .collect();
    let count_map = match tool.count_map() {
        Some(name) => {
            let maps = bpf::maps()?;
            let ids = tool_map_ids(&fds0, &prog_ids, &all0);
            let found = ids
                .iter()
                .copied()
                .find(|id| maps.get(id).is_some_and(|m| m.name == name));
            if found.is_none() {
                out.notes
                    .push(format!("its counting map `{name}` was not found"));
            }
            found
        }
        None => None,
    };

    // The window.
    let e0 = edge(tool, cg, &running, &prog_ids, count_map)?;
    let mut rss = Vec::new();
    let mut next = e0.mono;
    while secs_since(e0.mono) < s.seconds {
        interrupted()?;
        if proc.child.try_wait()?.is_some() {
            failed(&mut out, "exited during the window", &mut proc)?;
            return Ok(out);
        }
        if !running.alive() {
            bail!("the {} workload died during the window", w.name());
        }
        if sys::mono_ns() >= next {
            next += 1_000_000_000;
            let m = procs::memory_sum(&cg.tool.pids());
            if m.rss > out.rss_top_sample.rss {
                out.rss_top_sample = m;
            }
            rss.push(m.rss);
            first_file(&mut out);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let e1 = edge(tool, cg, &running, &prog_ids, count_map)?;
    let tool_pids = cg.tool.pids();
    let hwm = procs::memory_sum(&tool_pids).hwm;
    let fds1 = procs::scan_fds(&tool_pids);
    let all1 = bpf::progs()?;
    out.load_end = host::loadavg();

    let window_s = (e1.mono - e0.mono) as f64 / 1e9;
    out.window_s = window_s;
    out.expected = f64::from(s.cpus) * f64::from(rate) * window_s;
    out.user_cpu_ns = e1.tool_cpu - e0.tool_cpu;
    out.busy_fraction = (e1.machine - e0.machine) as f64 / 1e9 / (window_s * f64::from(s.cpus));
    out.foreign_pct = e1.foreign.saturating_sub(e0.foreign) as f64 / 1e9 / window_s * 100.0;
    out.foreign_top = host::busiest_between(&e0.procs, &e1.procs, &cg.all_pids(), window_s, 2.0);
    out.throughput = match (e0.units, e1.units) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / window_s),
        _ => None,
    };
    if let (Some((b0, t0)), Some((b1, t1))) = (e0.bpf, e1.bpf) {
        out.bpf = bpf::RunTotals {
            run_time_ns: b1.run_time_ns - b0.run_time_ns,
            run_cnt: b1.run_cnt - b0.run_cnt,
            sampler_run_cnt: b1.sampler_run_cnt - b0.sampler_run_cnt,
            sampler_run_time_ns: b1.sampler_run_time_ns - b0.sampler_run_time_ns,
        };
        out.bpf_interval_s = (t1 - t0) as f64 / 1e9;
    }
    if let (Some((m0, t0)), Some((m1, t1))) = (e0.count_map, e1.count_map) {
        let secs = (t1 - t0) as f64 / 1e9;
        out.delivered = Some((m1 - m0) as f64 * window_s / secs);
    }
    out.rss_mean_kib = if rss.is_empty() {
        0.0
    } else {
        rss.iter().sum::<u64>() as f64 / rss.len() as f64
    };
    out.rss_peak_window_kib = hwm;
    let maps = bpf::maps()?;
    let map_ids = tool_map_ids(&fds1, &prog_ids, &all1);
    out.maps = map_ids.len();
    out.map_bytes = map_ids
        .iter()
        .filter_map(|id| maps.get(id))
        .map(|m| m.bytes_memlock)
        .sum();

    // otel: wait for the exports that carry the window's last samples.
    if let Some(r) = &receiver {
        let after = e1.wall as f64 / 1e9;
        let waited = sys::mono_ns();
        while r
            .requests()
            .iter()
            .filter(|q| q.received_at > after)
            .count()
            < 2
        {
            interrupted()?;
            if secs_since(waited) > 30.0 {
                out.notes
                    .push("fewer than two exports arrived in the 30 s after the window".into());
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    // Stop.
    let stop_from = sys::mono_ns();
    sys::signal_pid(pid, sys::SIGINT);
    let mut peak = hwm;
    let mut last_cpu = cg.tool.usage_ns();
    let mut last_progress = sys::mono_ns();
    let mut resent = 0;
    let mut forced = None;
    let status = loop {
        if let Some(st) = proc.child.try_wait()? {
            break st;
        }
        let m = procs::memory_sum(&cg.tool.pids());
        peak = peak.max(m.hwm);
        if m.rss > out.rss_top_sample.rss {
            out.rss_top_sample = m;
        }
        let cpu = cg.tool.usage_ns();
        if cpu > last_cpu + 10_000_000 {
            last_cpu = cpu;
            last_progress = sys::mono_ns();
        }
        let elapsed = secs_since(stop_from);
        if forced.is_none() && secs_since(last_progress) > 10.0 && resent < 3 {
            // bpftrace has been seen ignoring a SIGINT while idle.
            resent += 1;
            last_progress = sys::mono_ns();
            sys::signal_pid(pid, sys::SIGINT);
        }
        if forced.is_none() && elapsed > tool.stop_timeout_s() {
            forced = Some("SIGTERM");
            sys::signal_pid(pid, sys::SIGTERM);
        } else if forced == Some("SIGTERM") && elapsed > tool.stop_timeout_s() + 10.0 {
            forced = Some("SIGKILL");
            sys::signal_group(pid, sys::SIGKILL);
        }
        if sys::stop_requested() && forced.is_none() {
            forced = Some("SIGKILL");
            sys::signal_group(pid, sys::SIGKILL);
        }
        thread::sleep(Duration::from_millis(50));
    };
    out.shutdown_s = Some(secs_since(stop_from));
    out.foreign_life_pct =
        cg.foreign_ns().saturating_sub(foreign_at_spawn) as f64 / 1e9 / secs_since(spawned) * 100.0;
    out.rss_peak_life_kib = peak;
    out.life_cpu_ns = cg.tool.usage_ns();
    out.stop_note = match (forced, resent) {
        (Some(sig), _) => format!("not stopped by SIGINT: {sig} ({status})"),
        (None, 0) => format!("clean ({status})"),
        (None, n) => format!("after {} SIGINTs ({status})", n + 1),
    };
    use std::os::unix::process::ExitStatusExt;
    if !status.success() && forced.is_none() && status.signal() != Some(sys::SIGINT) {
        out.notes.push(format!("exit status {status}"));
    }
    out.sink_cpu_ns = receiver.as_ref().map(|_| e1.sink_cpu - e0.sink_cpu);

    // What it delivered.
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    match tool {
        Tool::Ours | Tool::OursFp | Tool::OursNoGo => {
            let (n, files, all) = pprof::samples_in(&launch.output, e0.wall, e1.wall)?;
            out.delivered = Some(n);
            out.notes
                .push(format!("{files} profile files, {all} samples in all"));
            match tools::ours_lost(&stderr) {
                Some((n, line)) => {
                    out.lost = Some(n);
                    out.lost_detail = line;
                }
                None => out.lost_detail = "no summary line on stderr".into(),
            }
        }
        Tool::Otel => {
            if let Some(r) = &receiver {
                out.delivered = Some(r.samples_in(e0.wall, e1.wall) as f64);
                let reqs = r.requests();
                out.notes.push(format!(
                    "{} exports, {} samples in all",
                    reqs.len(),
                    reqs.iter().map(|q| q.samples).sum::<u64>()
                ));
            }
            out.lost_detail = "no loss counter exported".into();
        }
        Tool::Perf => {
            let c = tools::perf_counts(&launch.output, e0.mono, e1.mono)?;
            out.delivered = Some(c.in_window as f64);
            out.lost = Some(c.lost);
            out.lost_detail = format!(
                "LOST records in perf report --stats; {} of the window's samples are of the idle task; {} samples in all",
                c.idle_in_window, c.total
            );
            let _ = std::fs::remove_file(&launch.output);
        }
        Tool::Bpftrace | Tool::Bcc => {
            let text = format!("{stdout}\n{stderr}");
            let errs = tools::stack_errors(tool, &text).unwrap_or(0);
            out.lost_detail = format!(
                "no loss counter; {errs} stacks unresolvable at exit (stack-map collisions); samples the full map refused are invisible"
            );
        }
    }
    if let Some(r) = receiver.as_mut() {
        r.stop();
    }
    running.stop();

    // Trust.
    let samplers: Vec<String> = e1
        .progs
        .values()
        .filter(|p| p.prog_type == "perf_event" && !prog_ids.contains(&p.id))
        .filter_map(|p| {
            let runs = p.run_cnt - e0.progs.get(&p.id).map_or(0, |q| q.run_cnt);
            (runs > 0).then(|| format!("{} {} ({runs} runs)", p.id, p.name))
        })
        .collect();
    if !samplers.is_empty() {
        out.invalid.push(format!(
            "another BPF sampler ran during the window: {}",
            samplers.join(", ")
        ));
    }
    if out.foreign_pct > s.contended_pct {
        out.invalid.push(format!(
            "other processes used {:.0}% of a CPU during the window{}",
            out.foreign_pct,
            if out.foreign_top.is_empty() {
                String::new()
            } else {
                format!(" ({})", out.foreign_top.join(", "))
            }
        ));
    }
    if out.foreign_pct <= s.contended_pct && out.foreign_life_pct > s.contended_pct {
        out.invalid.push(format!(
            "other processes used {:.0}% of a CPU between the tool's start and exit: its peak RSS \
             and whole-life CPU include profiling them",
            out.foreign_life_pct
        ));
    }
    if let Some(idle) = &out.idle
        && !idle.quiet
    {
        out.invalid.push(format!(
            "the machine never went idle before the run ({:.0}% of a CPU busy elsewhere after {:.0} s: {})",
            idle.foreign_pct,
            idle.waited_s,
            idle.busiest.join(", ")
        ));
    }
    let max_rate_end = host::sysctl("kernel.perf_event_max_sample_rate");
    if max_rate_end != max_rate_start {
        out.invalid.push(format!(
            "the kernel lowered perf_event_max_sample_rate from {max_rate_start} to {max_rate_end} during the run"
        ));
    }
    Ok(out)
}

/// Where a run's logs go.
pub fn run_dir(base: &Path, rate: u32, w: Workload, tool: Tool) -> PathBuf {
    base.join(format!("{rate}hz-{}-{}", w.name(), tool.name()))
}

/// The BPF maps a tool holds open or its programs use.
fn tool_map_ids(
    fds: &procs::Fds,
    prog_ids: &BTreeSet<u32>,
    progs: &std::collections::BTreeMap<u32, bpf::Prog>,
) -> BTreeSet<u32> {
    fds.maps
        .iter()
        .copied()
        .chain(
            prog_ids
                .iter()
                .filter_map(|id| progs.get(id))
                .flat_map(|p| p.map_ids.iter().copied()),
        )
        .collect()
}
