//! The profiler daemon as a library, in data-flow order:
//!
//! ```text
//! bpf (load, attach, ring buffer) → ingest (decode records)
//!   → process (pid → mappings → objects) → aggregate (intern stacks per window)
//!   → symbolize (ELF, DWARF, kallsyms, vdso, perf maps) → profile (symbolized tables)
//!   → encode (pprof) → sink (files)
//! ```
//!
//! `unwind` compiles `.eh_frame` into the compact tables table-driven
//! unwinding runs on, and replays captured stacks with them on the host.
//!
//! `session` wires the stages together for `record` and `run`; `main.rs` only
//! parses the command line and maps errors to exit codes.

pub mod aggregate;
pub mod bpf;
pub mod cli;
pub mod config;
pub mod encode;
pub mod golang;
pub mod ingest;
pub mod metrics;
pub mod process;
pub mod profile;
pub mod session;
pub mod sink;
pub mod symbolize;
#[cfg(test)]
mod testutil;
pub mod unwind;
