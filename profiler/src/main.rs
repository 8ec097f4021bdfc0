//! `profiler`: parses the command line, runs the session, maps the outcome
//! to an exit code (0 success, 1 runtime error, 2 usage error).

use std::process::ExitCode;

use clap::Parser;
use profiler::{cli::Cli, config, session};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    let cfg = match config::Settings::from_cli(cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("profiler: {e:#}");
            return ExitCode::from(2);
        }
    };
    match session::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("profiler: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("PROFILER_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("profiler={default},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
