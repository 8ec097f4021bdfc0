//! Everything that talks to the kernel's BPF and perf-event interfaces:
//! checks before loading, loading and attaching, and typed map access.

pub mod btf;
pub mod load;
pub mod maps;
pub mod preflight;
pub mod unwind_maps;

pub use load::Loaded;
