//! Knowledge of Go binaries and of the Go runtime that the profiler needs to
//! attribute samples of Go processes to goroutines: runtime offsets and the
//! TLS slot of `g` (`runtime`), per-binary facts (`process`), and the Go
//! part of samples in user space (`samples`).

pub mod process;
pub mod runtime;
pub mod samples;
