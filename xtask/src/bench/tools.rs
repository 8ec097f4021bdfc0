//! The profilers compared: how each is found, started, stopped and how its
//! delivered samples are counted.
//!
//! | tool | command | samples counted from |
//! | --- | --- | --- |
//! | ours | `profiler run -F N --interval 10 --output-dir DIR -v` | its pprof files |
//! | otel | `--peer-otel PATH -collection-agent=127.0.0.1:P -disable-tls -samples-per-second=N` | the OTLP receiver (`tests/otlp/receiver.py --count-only`) |
//! | perf | `perf record -a -g -e cpu-clock -F N -k CLOCK_MONOTONIC -o perf.data` | `perf script -F pid,time` |
//! | bpftrace | `bpftrace -e 'profile:hz:N { @[kstack, ustack, pid] = count(); }'` | its `@` map, dumped with bpftool |
//! | bcc | `profile-bpfcc -F N --stack-storage-size 65536 -f` | its `counts` map, dumped with bpftool |

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// bpftrace's map size for the benchmark (its default of 4096 keys fills at
/// 999 Hz and then drops samples silently).
pub const BPFTRACE_MAP_KEYS_MAX: u32 = 65536;
/// bcc profile's stack map size.
pub const BCC_STACK_STORAGE: u32 = 65536;
/// `profiler run --interval`, seconds.
pub const OURS_INTERVAL_S: u32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Ours,
    /// Ours with `--unwind-table-memory 0`: every user stack by frame
    /// pointers (the cost of table unwinding, by difference).
    OursFp,
    /// Ours with `--no-go-state` (the cost of reading goroutines, by
    /// difference).
    OursNoGo,
    Otel,
    Perf,
    Bpftrace,
    Bcc,
}

impl Tool {
    /// The profilers compared by default.
    pub const ALL: [Tool; 5] = [
        Tool::Ours,
        Tool::Otel,
        Tool::Perf,
        Tool::Bpftrace,
        Tool::Bcc,
    ];

    /// Our variants, run when `--only` names them.
    pub const VARIANTS: [Tool; 2] = [Tool::OursFp, Tool::OursNoGo];

    /// Ours or a variant of ours.
    pub fn is_ours(self) -> bool {
        matches!(self, Tool::Ours | Tool::OursFp | Tool::OursNoGo)
    }

    /// The extra arguments of a variant of ours.
    fn ours_args(self) -> &'static [&'static str] {
        match self {
            Tool::OursFp => &["--unwind-table-memory", "0"],
            Tool::OursNoGo => &["--no-go-state"],
            _ => &[],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tool::Ours => "ours",
            Tool::OursFp => "ours-fp",
            Tool::OursNoGo => "ours-nogo",
            Tool::Otel => "otel",
            Tool::Perf => "perf",
            Tool::Bpftrace => "bpftrace",
            Tool::Bcc => "bcc",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain(Self::VARIANTS)
            .find(|t| t.name() == s)
    }

    /// The name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Tool::Ours => "ours",
            Tool::OursFp => "ours, frame pointers only",
            Tool::OursNoGo => "ours, no goroutine state",
            Tool::Otel => "otel-ebpf-profiler",
            Tool::Perf => "perf record",
            Tool::Bpftrace => "bpftrace",
            Tool::Bcc => "bcc profile",
        }
    }

    /// Whether the tool drops samples of the idle task (pid 0), so its
    /// expected count is the non-idle share of the window.
    pub fn drops_idle(self) -> bool {
        self.is_ours() || matches!(self, Tool::Otel | Tool::Bcc)
    }

    /// Whether the tool samples with BPF (else: perf_event ring buffers).
    pub fn uses_bpf(self) -> bool {
        !matches!(self, Tool::Perf)
    }

    /// Seconds a clean stop may take (bpftrace and bcc symbolize every
    /// stack at exit) before SIGTERM, then SIGKILL.
    pub fn stop_timeout_s(self) -> f64 {
        match self {
            Tool::Ours | Tool::OursFp | Tool::OursNoGo | Tool::Otel => 60.0,
            Tool::Perf => 120.0,
            Tool::Bpftrace | Tool::Bcc => 300.0,
        }
    }

    /// The map a BPF-only tool counts samples in.
    pub fn count_map(self) -> Option<&'static str> {
        match self {
            Tool::Bpftrace => Some("AT_"),
            Tool::Bcc => Some("counts"),
            _ => None,
        }
    }
}

/// Where the tools are.
#[derive(Clone, Debug)]
pub struct Env {
    pub ours: PathBuf,
    pub otel: Option<PathBuf>,
    /// Python of the receiver's venv, or why there is none.
    pub python: Result<PathBuf, String>,
    pub receiver: PathBuf,
}

fn runs(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
        )),
        Err(e) => Err(format!("`{program}` not found ({e})")),
    }
}

fn tracefs_mounted() -> bool {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|p| Path::new(p).is_dir())
}

/// Why `tool` cannot run here, if it cannot.
pub fn missing(tool: Tool, env: &Env) -> Option<String> {
    let r = match tool {
        Tool::Ours | Tool::OursFp | Tool::OursNoGo => {
            if env.ours.is_file() {
                Ok(())
            } else {
                Err(format!("{} not built", env.ours.display()))
            }
        }
        Tool::Otel => match &env.otel {
            None => Err("no binary given (--peer-otel PATH)".into()),
            Some(p) if !p.is_file() => Err(format!("{} does not exist", p.display())),
            Some(_) if !tracefs_mounted() => {
                Err("tracefs is not mounted (it needs /sys/kernel/tracing)".into())
            }
            Some(_) => env.python.as_ref().map(|_| ()).map_err(Clone::clone),
        },
        Tool::Perf => runs("perf", &["--version"]),
        Tool::Bpftrace => runs("bpftrace", &["--version"]),
        Tool::Bcc => runs("profile-bpfcc", &["--help"]).and_then(|()| {
            let build = Path::new("/lib/modules")
                .join(super::host::kernel())
                .join("build");
            if build.exists() {
                Ok(())
            } else {
                Err(format!(
                    "no kernel headers at {} (bcc compiles its program at start)",
                    build.display()
                ))
            }
        }),
    };
    r.err()
}

/// How one run of a tool is started and read.
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Where its samples are counted.
    pub output: PathBuf,
}

impl Launch {
    /// The command line, for the report.
    pub fn shown(&self) -> String {
        let env: String = self.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect();
        format!("{env}{} {}", self.program.display(), args.join(" "))
    }
}

/// The command of `tool` at `rate` Hz writing under `dir`.
pub fn launch(
    tool: Tool,
    env: &Env,
    rate: u32,
    dir: &Path,
    otlp_port: Option<u16>,
) -> Result<Launch> {
    let n = rate.to_string();
    Ok(match tool {
        Tool::Ours | Tool::OursFp | Tool::OursNoGo => {
            let out = dir.join("profiles");
            Launch {
                program: env.ours.clone(),
                args: vec![
                    "run".into(),
                    "-F".into(),
                    n,
                    "--interval".into(),
                    OURS_INTERVAL_S.to_string(),
                    "--output-dir".into(),
                    out.to_string_lossy().into_owned(),
                    "-v".into(),
                ]
                .into_iter()
                .chain(tool.ours_args().iter().map(|a| a.to_string()))
                .collect(),
                env: vec![],
                output: out,
            }
        }
        Tool::Otel => {
            let Some(port) = otlp_port else {
                bail!("no OTLP receiver port");
            };
            Launch {
                program: env.otel.clone().context("no --peer-otel")?,
                args: vec![
                    format!("-collection-agent=127.0.0.1:{port}"),
                    "-disable-tls".into(),
                    format!("-samples-per-second={rate}"),
                ],
                env: vec![],
                output: dir.join("receiver.jsonl"),
            }
        }
        Tool::Perf => {
            let data = dir.join("perf.data");
            Launch {
                program: "perf".into(),
                args: [
                    "record",
                    "-a",
                    "-g",
                    "-e",
                    "cpu-clock",
                    "-F",
                    &n,
                    "-k",
                    "CLOCK_MONOTONIC",
                    "-o",
                ]
                .iter()
                .map(|s| s.to_string())
                .chain([data.to_string_lossy().into_owned()])
                .collect(),
                env: vec![],
                output: data,
            }
        }
        Tool::Bpftrace => Launch {
            program: "bpftrace".into(),
            args: vec![
                "-e".into(),
                format!("profile:hz:{rate} {{ @[kstack, ustack, pid] = count(); }}"),
            ],
            env: vec![(
                "BPFTRACE_MAP_KEYS_MAX".into(),
                BPFTRACE_MAP_KEYS_MAX.to_string(),
            )],
            output: dir.join("tool.stdout"),
        },
        Tool::Bcc => Launch {
            program: "profile-bpfcc".into(),
            args: vec![
                "-F".into(),
                n,
                "--stack-storage-size".into(),
                BCC_STACK_STORAGE.to_string(),
                "-f".into(),
            ],
            env: vec![],
            output: dir.join("tool.stdout"),
        },
    })
}

/// What perf recorded: samples in the window (all and of pid 0), and the
/// LOST records `perf report --stats` counts.
pub struct PerfCounts {
    pub in_window: u64,
    pub idle_in_window: u64,
    pub total: u64,
    pub lost: u64,
}

/// Counts perf.data samples with CLOCK_MONOTONIC times in `[from, to)` ns.
pub fn perf_counts(data: &Path, from_ns: u64, to_ns: u64) -> Result<PerfCounts> {
    let out = Command::new("perf")
        .args(["script", "-F", "pid,time", "-i"])
        .arg(data)
        .output()
        .context("perf script")?;
    if !out.status.success() {
        bail!(
            "perf script failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let (mut in_window, mut idle, mut total) = (0, 0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        let (Some(pid), Some(t)) = (f.next(), f.next()) else {
            continue;
        };
        let Ok(secs) = t.trim_end_matches(':').parse::<f64>() else {
            continue;
        };
        total += 1;
        let ns = (secs * 1e9) as u64;
        if (from_ns..to_ns).contains(&ns) {
            in_window += 1;
            if pid == "0" {
                idle += 1;
            }
        }
    }
    let stats = Command::new("perf")
        .args(["report", "--stats", "-i"])
        .arg(data)
        .output()
        .context("perf report --stats")?;
    let lost = String::from_utf8_lossy(&stats.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("LOST"))
        .filter_map(|l| {
            l.split(':')
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    Ok(PerfCounts {
        in_window,
        idle_in_window: idle,
        total,
        lost,
    })
}

/// Our summary line: "lost samples: N (ring buffer full: …)".
pub fn ours_lost(stderr: &str) -> Option<(u64, String)> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("lost samples: "))?;
    let n = line
        .strip_prefix("lost samples: ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((n, line.to_owned()))
}

/// bpftrace's "failed to look up stack id" errors, bcc's "N stack traces
/// could not be displayed": stacks counted but lost to stack-map collisions.
pub fn stack_errors(tool: Tool, output: &str) -> Option<u64> {
    match tool {
        Tool::Bpftrace => Some(
            output
                .lines()
                .filter(|l| l.contains("failed to look up stack id"))
                .count() as u64,
        ),
        Tool::Bcc => Some(
            output
                .lines()
                .find(|l| l.contains("stack traces could not be displayed"))
                .and_then(|l| l.split_whitespace().find_map(|w| w.parse::<u64>().ok()))
                .unwrap_or(0),
        ),
        _ => None,
    }
}
