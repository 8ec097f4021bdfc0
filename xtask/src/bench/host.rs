//! Facts about the machine: CPUs, load, what else is running, and the
//! versions of everything measured. The idle check lives here: before each
//! window the harness waits until processes outside the benchmark use less
//! than a threshold of one CPU, and says so when they never do.

use std::{collections::HashMap, path::Path, process::Command, thread, time::Duration};

use super::{cgroup::Cgroups, sys};

/// Online CPUs.
pub fn cpus() -> u32 {
    thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

/// Aggregate CPU time from /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTicks {
    pub busy: u64,
}

impl CpuTicks {
    pub fn read() -> Self {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
            return Self::default();
        };
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let get = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest is in user).
        Self {
            busy: get(0) + get(1) + get(2) + get(5) + get(6) + get(7),
        }
    }
}

/// CPU time (clock ticks) and name of every process, for naming what else ran.
pub fn process_ticks() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
        let ticks = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        out.insert(pid, (comm, ticks));
    }
    out
}

/// Processes outside `exclude` that used more than `min_pct` of one CPU
/// between the two snapshots, busiest first: "comm[pid] 12.3%".
pub fn busiest_between(
    before: &HashMap<u32, (String, u64)>,
    after: &HashMap<u32, (String, u64)>,
    exclude: &[u32],
    seconds: f64,
    min_pct: f64,
) -> Vec<String> {
    let tick = 100.0; // USER_HZ
    let mut v: Vec<(f64, String)> = after
        .iter()
        .filter(|(pid, _)| !exclude.contains(pid))
        .filter_map(|(pid, (comm, t1))| {
            let t0 = before.get(pid).map_or(0, |(_, t)| *t);
            let pct = t1.saturating_sub(t0) as f64 / tick / seconds * 100.0;
            (pct >= min_pct).then(|| (pct, format!("{comm}[{pid}] {pct:.1}%")))
        })
        .collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    v.into_iter().take(5).map(|(_, s)| s).collect()
}

/// The outcome of waiting for the machine to be quiet.
#[derive(Clone, Debug)]
pub struct IdleCheck {
    /// CPU used outside the benchmark during the last probe, % of one CPU.
    pub foreign_pct: f64,
    /// Seconds spent waiting.
    pub waited_s: f64,
    pub quiet: bool,
    pub busiest: Vec<String>,
}

/// Waits (up to `max_wait_s`) until processes outside the benchmark's
/// cgroups use less than `threshold_pct` of one CPU over a 2 s probe.
pub fn wait_until_idle(cg: &Cgroups, threshold_pct: f64, max_wait_s: f64) -> IdleCheck {
    let started = sys::mono_ns();
    loop {
        let p0 = process_ticks();
        let f0 = cg.foreign_ns();
        let t0 = sys::mono_ns();
        thread::sleep(Duration::from_secs(2));
        let secs = (sys::mono_ns() - t0) as f64 / 1e9;
        let foreign_pct = cg.foreign_ns().saturating_sub(f0) as f64 / 1e9 / secs * 100.0;
        let waited_s = (sys::mono_ns() - started) as f64 / 1e9;
        let quiet = foreign_pct < threshold_pct;
        if quiet || waited_s >= max_wait_s || sys::stop_requested() {
            let busiest = busiest_between(&p0, &process_ticks(), &[], secs, 1.0);
            return IdleCheck {
                foreign_pct,
                waited_s,
                quiet,
                busiest,
            };
        }
        if waited_s < 3.0 {
            eprintln!(
                "bench: waiting for the machine to be idle ({foreign_pct:.0}% of a CPU in use elsewhere)"
            );
        }
        thread::sleep(Duration::from_secs(3));
    }
}

/// First line of a command's output (stdout, else stderr), or why not.
pub fn version_of(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_owned()
        }
        Err(e) => format!("not available ({e})"),
    }
}

/// The installed version of a Debian package.
pub fn deb_version(package: &str) -> String {
    version_of("dpkg-query", &["-W", "-f", "${Version}", package])
}

/// The kernel release.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// PRETTY_NAME from /etc/os-release.
pub fn os() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .unwrap_or("")
        .trim_matches('"')
        .to_owned();
    let point = std::fs::read_to_string("/etc/debian_version").unwrap_or_default();
    if point.trim().is_empty() {
        name
    } else {
        format!("{name} ({})", point.trim())
    }
}

/// The CPU model name.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default()
}

/// Total memory in MiB.
pub fn mem_total_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Whether a hardware PMU is present (else only software events).
pub fn has_hw_pmu() -> bool {
    Path::new("/sys/bus/event_source/devices/cpu").exists()
}

/// A sysctl value as text.
pub fn sysctl(name: &str) -> String {
    std::fs::read_to_string(Path::new("/proc/sys").join(name.replace('.', "/")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// SHA-256 of a file (via sha256sum), to identify a binary given by path.
pub fn sha256(path: &Path) -> String {
    let out = version_of("sha256sum", &[&path.to_string_lossy()]);
    out.split_whitespace().next().unwrap_or("").to_owned()
}
