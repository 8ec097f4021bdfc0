//! Exists only so that `profiler` can declare a build-dependency on this
//! crate (cargo then rebuilds the embedded BPF object when it changes); the
//! programs live in the `profiler` binary target (`main.rs`).
#![no_std]
