//! Command-line definitions (clap). Values are checked and turned into
//! [`Settings`](crate::config::Settings) by `config.rs`; nothing here acts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const ROOT_EXAMPLES: &str = "\
Examples:
  # Profile the whole machine for 10 seconds into one pprof file
  sudo profiler record --duration 10 -o cpu.pb.gz
  go tool pprof -top cpu.pb.gz

  # Run as a daemon: one profile every 10 s under /var/lib/profiler
  sudo profiler run --output-dir /var/lib/profiler";

const RECORD_EXAMPLES: &str = "\
Examples:
  # Whole system, 99 Hz, until Ctrl-C
  sudo profiler record -o cpu.pb.gz

  # Two processes at 499 Hz for 30 s
  sudo profiler record --pid 1234 --pid 5678 --frequency 499 --duration 30 -o app.pb.gz

  # Read the result
  go tool pprof -top cpu.pb.gz
  go tool pprof -tagfocus=thread.name=worker -http=:8080 cpu.pb.gz";

const RUN_EXAMPLES: &str = "\
Examples:
  # The whole node at 19 Hz, a profile every 10 s (the defaults)
  sudo profiler run --output-dir /var/lib/profiler

  # One service at 99 Hz, a profile per minute
  sudo profiler run --pid 1234 --frequency 99 --interval 60 --output-dir ./profiles

  # Send OTLP profiles to a collector; keep what cannot be sent on disk
  sudo OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 profiler run --spool-dir /var/lib/profiler/spool

  # OTLP over HTTP with a token, and pprof files as well
  sudo profiler run --otlp-endpoint https://otlp.example.com --otlp-protocol http/protobuf \\
      --otlp-header 'authorization=Bearer TOKEN' --output-dir ./profiles

The OTEL_EXPORTER_OTLP_* and OTEL_EXPORTER_OTLP_PROFILES_* variables, OTEL_SERVICE_NAME and
OTEL_RESOURCE_ATTRIBUTES are read; flags win over them. Without an OTLP endpoint, profiles go
to --output-dir (default ./profiles). SIGINT or SIGTERM writes the partial interval and exits 0.";

/// eBPF CPU profiler: samples kernel and user stacks of every process and
/// writes symbolized pprof profiles.
#[derive(Debug, Parser)]
#[command(name = "profiler", version, about, after_help = ROOT_EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More log output (-v info, -vv debug, -vvv trace). PROFILER_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr (no progress, no summary).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Profile once and write a single .pb.gz file.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
    /// Run as a daemon, writing one .pb.gz file per interval.
    #[command(after_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
}

/// Options shared by `record` and `run`.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Only profile this process (repeatable). Default: every process.
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Kernel BTF to use instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,

    /// Ring buffer size in bytes (a power of two ≥ 4096). Default: sized for
    /// one second of samples at the chosen frequency on every CPU.
    #[arg(long, value_name = "BYTES")]
    pub ring_buffer_size: Option<u32>,

    /// Kernel memory for unwind tables (compiled .eh_frame of the profiled
    /// processes' files, for stacks without frame pointers); suffixes K, M,
    /// G. 0 walks every stack by frame pointers only.
    #[arg(long, value_name = "BYTES", default_value = "64M")]
    pub unwind_table_memory: String,

    /// Do not read goroutine state and pprof labels of Go processes (their
    /// stacks are still sampled and symbolized).
    #[arg(long)]
    pub no_go_state: bool,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Samples per second on each CPU.
    #[arg(short = 'F', long, value_name = "HZ", default_value_t = 99)]
    pub frequency: u64,

    /// Seconds to record. Default: until Ctrl-C, or until every --pid exited.
    #[arg(short, long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Where to write the gzipped pprof profile.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Samples per second on each CPU.
    #[arg(short = 'F', long, value_name = "HZ", default_value_t = 19)]
    pub frequency: u64,

    /// Seconds per profile.
    #[arg(short, long, value_name = "SECS", default_value_t = 10.0)]
    pub interval: f64,

    /// Directory for pprof files (created if missing). Default: ./profiles,
    /// unless OTLP export is configured (then no files unless given).
    #[arg(short, long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    #[command(flatten)]
    pub otlp: OtlpArgs,
}

/// OTLP export options (over the OTEL_EXPORTER_OTLP_* environment).
#[derive(Debug, Args)]
#[command(next_help_heading = "OTLP export")]
pub struct OtlpArgs {
    /// Collector endpoint, e.g. http://localhost:4317 (gRPC) or
    /// http://localhost:4318 (HTTP). [env: OTEL_EXPORTER_OTLP_(PROFILES_)ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// grpc or http/protobuf. [env: OTEL_EXPORTER_OTLP_(PROFILES_)PROTOCOL; default grpc]
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,

    /// Extra request header, KEY=VALUE (repeatable). [env: OTEL_EXPORTER_OTLP_(PROFILES_)HEADERS]
    #[arg(long = "otlp-header", value_name = "KEY=VALUE")]
    pub otlp_headers: Vec<String>,

    /// gzip or none. [env: OTEL_EXPORTER_OTLP_(PROFILES_)COMPRESSION; default gzip]
    #[arg(long, value_name = "ALGO")]
    pub otlp_compression: Option<String>,

    /// Seconds per export attempt. [env: OTEL_EXPORTER_OTLP_(PROFILES_)TIMEOUT, in ms; default 10 s]
    #[arg(long, value_name = "SECS")]
    pub otlp_timeout: Option<f64>,

    /// CA certificate (PEM) to verify the collector. [env: OTEL_EXPORTER_OTLP_CERTIFICATE]
    #[arg(long, value_name = "FILE")]
    pub otlp_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS. [env: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE]
    #[arg(long, value_name = "FILE")]
    pub otlp_client_cert: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS. [env: OTEL_EXPORTER_OTLP_CLIENT_KEY]
    #[arg(long, value_name = "FILE")]
    pub otlp_client_key: Option<PathBuf>,

    /// Plain text for an endpoint without a scheme. [env: OTEL_EXPORTER_OTLP_INSECURE]
    #[arg(long)]
    pub otlp_insecure: bool,

    /// Windows kept in memory while the collector is unreachable (oldest
    /// dropped and counted beyond it; unused with --spool-dir).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub otlp_queue: usize,

    /// Keep undeliverable batches on disk and send them, in order, when the
    /// collector is back (also after a restart).
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Most bytes the spool holds; the oldest batches beyond it are dropped and counted.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub spool_max_bytes: u64,
}
