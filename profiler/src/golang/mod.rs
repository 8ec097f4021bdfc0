//! Knowledge of Go binaries and of the Go runtime that the profiler needs to
//! attribute samples of Go processes to goroutines.

pub mod runtime;
