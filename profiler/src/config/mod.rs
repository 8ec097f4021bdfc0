//! Validated settings built from the command line and the environment.
//! Every check that can be made before touching BPF happens here, with a
//! one-line error.

pub mod otlp;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail, ensure};

use crate::cli::{Cli, Command, SamplingArgs};

/// What the session produces.
#[derive(Clone, Debug)]
pub enum Mode {
    /// One profile, written to `output` when recording stops.
    Record {
        output: PathBuf,
        duration: Option<Duration>,
    },
    /// One profile per `interval` to `output_dir` and/or OTLP, until a signal.
    Run {
        interval: Duration,
        output_dir: Option<PathBuf>,
        otlp: Option<Box<otlp::OtlpSettings>>,
    },
}

/// How and what to sample.
#[derive(Clone, Debug)]
pub struct Sampling {
    /// Processes to profile; empty means all.
    pub pids: Vec<u32>,
    /// Samples per second per CPU.
    pub frequency: u64,
    /// Kernel BTF file.
    pub btf: PathBuf,
    /// Ring buffer bytes (power of two).
    pub ring_buffer_size: u32,
    /// Bytes of BPF arrays for unwind tables; 0: frame pointers only.
    pub unwind_table_memory: u64,
    /// Read goroutine state and labels of Go processes.
    pub go_state: bool,
}

impl Sampling {
    /// Nanoseconds of CPU time one sample stands for.
    pub fn period_ns(&self) -> u64 {
        1_000_000_000 / self.frequency
    }
}

/// Everything a session needs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub sampling: Sampling,
    /// Show progress and the summary on stderr.
    pub progress: bool,
}

/// Where the kernel publishes its BTF.
pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";
const MAX_SAMPLE_RATE: &str = "/proc/sys/kernel/perf_event_max_sample_rate";

impl Settings {
    /// Checks the command line and fills in defaults.
    pub fn from_cli(cli: Cli) -> Result<Self> {
        let progress = !cli.quiet;
        let (mode, sampling) = match cli.command {
            Command::Record(a) => {
                let duration = match a.duration {
                    Some(d) => Some(seconds("--duration", d)?),
                    None => None,
                };
                let sampling = sampling(a.sampling, a.frequency)?;
                (
                    Mode::Record {
                        output: a.output,
                        duration,
                    },
                    sampling,
                )
            }
            Command::Run(a) => {
                let interval = seconds("--interval", a.interval)?;
                ensure!(
                    interval >= Duration::from_secs(1),
                    "--interval must be at least 1 second (got {})",
                    a.interval
                );
                let sampling = sampling(a.sampling, a.frequency)?;
                let host = hostname::get()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let env = |k: &str| std::env::var(k).ok();
                let otlp = otlp::OtlpSettings::resolve(&a.otlp, &env, host)?.map(Box::new);
                let output_dir = match (a.output_dir, &otlp) {
                    (Some(dir), _) => Some(dir),
                    (None, None) => Some(PathBuf::from("profiles")),
                    (None, Some(_)) => None,
                };
                (
                    Mode::Run {
                        interval,
                        output_dir,
                        otlp,
                    },
                    sampling,
                )
            }
        };
        Ok(Self {
            mode,
            sampling,
            progress,
        })
    }
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    ensure!(
        value.is_finite() && value > 0.0 && value < 1e9,
        "{flag} must be a positive number of seconds (got {value})"
    );
    Ok(Duration::from_secs_f64(value))
}

fn sampling(args: SamplingArgs, frequency: u64) -> Result<Sampling> {
    ensure!(
        frequency >= 1,
        "--frequency must be at least 1 Hz (got {frequency})"
    );
    if let Some(max) = read_max_sample_rate() {
        ensure!(
            frequency <= max,
            "--frequency {frequency} Hz exceeds kernel.perf_event_max_sample_rate ({max} Hz)"
        );
    }
    let mut pids = args.pids;
    pids.sort_unstable();
    pids.dedup();
    if pids.contains(&0) {
        bail!("--pid 0 is the idle task; give the pid of a process");
    }
    let ring_buffer_size = match args.ring_buffer_size {
        Some(size) => {
            ensure!(
                size.is_power_of_two() && size >= 4096,
                "--ring-buffer-size must be a power of two of at least 4096 bytes (got {size})"
            );
            size
        }
        None => default_ring_buffer_size(frequency, online_cpus()),
    };
    let unwind_table_memory = parse_bytes(&args.unwind_table_memory).with_context(|| {
        format!(
            "--unwind-table-memory: not a byte count: {:?}",
            args.unwind_table_memory
        )
    })?;
    ensure!(
        unwind_table_memory == 0
            || (1 << 20..=MAX_UNWIND_TABLE_MEMORY).contains(&unwind_table_memory),
        "--unwind-table-memory must be 0 (off) or between 1M and 16G (got {unwind_table_memory})"
    );
    Ok(Sampling {
        pids,
        frequency,
        btf: args.btf.unwrap_or_else(|| PathBuf::from(DEFAULT_BTF)),
        ring_buffer_size,
        unwind_table_memory,
        go_state: !args.no_go_state,
    })
}

/// The largest unwind-table budget: 2^31 rows of 8 bytes.
const MAX_UNWIND_TABLE_MEMORY: u64 = 16 << 30;

/// A byte count: digits with an optional K, M or G suffix (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 10),
        Some((i, 'm' | 'M')) => (&s[..i], 20),
        Some((i, 'g' | 'G')) => (&s[..i], 30),
        _ => (s, 0),
    };
    let n: u64 = digits.parse()?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| anyhow::anyhow!("too large"))
}

fn read_max_sample_rate() -> Option<u64> {
    std::fs::read_to_string(MAX_SAMPLE_RATE)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// CPUs that will be sampled.
pub fn online_cpus() -> usize {
    aya::util::online_cpus().map(|c| c.len()).unwrap_or(1)
}

/// Room for one second of samples on every CPU at `frequency`, assuming
/// 2 KiB per sample (a 120-frame stack plus header), between 256 KiB and
/// 64 MiB. The reader drains at least every 100 ms and is woken when a
/// quarter is used, so this leaves a wide margin.
pub fn default_ring_buffer_size(frequency: u64, cpus: usize) -> u32 {
    let want = frequency
        .saturating_mul(cpus as u64)
        .saturating_mul(2048)
        .clamp(256 << 10, 64 << 20);
    u32::try_from(want.next_power_of_two()).unwrap_or(64 << 20)
}

/// Fails with a one-line error when a requested pid does not exist.
pub fn check_pids_exist(pids: &[u32]) -> Result<()> {
    for &pid in pids {
        std::fs::metadata(format!("/proc/{pid}"))
            .with_context(|| format!("no process with pid {pid}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Settings> {
        let cli = Cli::try_parse_from(args)?;
        Settings::from_cli(cli)
    }

    #[test]
    fn record_defaults_to_99_hz() {
        let s = parse(&["profiler", "record", "-o", "x.pb.gz"]).unwrap();
        assert_eq!(s.sampling.frequency, 99);
        assert_eq!(s.sampling.period_ns(), 10_101_010);
        assert!(matches!(s.mode, Mode::Record { duration: None, .. }));
    }

    #[test]
    fn run_defaults_to_19_hz_and_10_s() {
        let s = parse(&["profiler", "run"]).unwrap();
        assert_eq!(s.sampling.frequency, 19);
        match s.mode {
            Mode::Run { interval, .. } => assert_eq!(interval, Duration::from_secs(10)),
            Mode::Record { .. } => panic!("expected run"),
        }
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["profiler", "record", "-o", "x", "--duration", "0"][..],
            &["profiler", "record", "-o", "x", "--duration", "-3"],
            &["profiler", "record", "-o", "x", "--frequency", "0"],
            &["profiler", "record", "-o", "x", "--pid", "0"],
            &[
                "profiler",
                "record",
                "-o",
                "x",
                "--ring-buffer-size",
                "5000",
            ],
            &["profiler", "run", "--interval", "0.5"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn pids_are_deduplicated() {
        let s = parse(&[
            "profiler", "record", "-o", "x", "-p", "5", "-p", "3", "-p", "5",
        ])
        .unwrap();
        assert_eq!(s.sampling.pids, [3, 5]);
    }

    #[test]
    fn unwind_table_memory_takes_suffixes_and_bounds() {
        let mem = |v: &str| {
            parse(&["profiler", "record", "-o", "x", "--unwind-table-memory", v])
                .map(|s| s.sampling.unwind_table_memory)
        };
        assert_eq!(
            parse(&["profiler", "record", "-o", "x"])
                .unwrap()
                .sampling
                .unwind_table_memory,
            64 << 20
        );
        assert_eq!(mem("0").unwrap(), 0);
        assert_eq!(mem("8M").unwrap(), 8 << 20);
        assert_eq!(mem("2g").unwrap(), 2 << 30);
        assert_eq!(mem("1048576").unwrap(), 1 << 20);
        for bad in ["", "M", "12Q", "-1", "100K", "17G", "99999999999999999999G"] {
            assert!(mem(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ring_buffer_scales_with_rate() {
        assert_eq!(default_ring_buffer_size(19, 2), 256 << 10);
        assert_eq!(default_ring_buffer_size(999, 2), 4 << 20);
        assert_eq!(default_ring_buffer_size(100_000, 512), 64 << 20);
    }
}
