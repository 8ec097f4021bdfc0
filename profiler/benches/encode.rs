//! Profile building and encoding benches on a realistic window: 19,980
//! samples (10 s of two CPUs at 999 Hz) over 500 distinct stacks of 30 user
//! frames from a large real binary (so function names, files and inline
//! chains are real DWARF results) under 6 kernel frames, from 20 processes.
//!
//! - `encode/profile_build`: `profile::build` with warm symbolizer caches
//!   (what every window costs once the daemon has seen its code).
//! - `encode/pprof`: `encode::pprof::encode` (protobuf + gzip), samples/s.
//! - `encode/otlp`: `encode::otlp::encode` (the v1.10 request, dictionary
//!   dedup and per-sample timestamps; uncompressed), samples/s.

mod common;

use std::{hint::black_box, sync::Arc};

use hashbrown::HashMap;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use profiler::{
    aggregate::{Instant2, Window},
    encode::{self, otlp::ResourceSettings},
    profile::{self, BuildInput},
    symbolize::Symbolizer,
};

fn encoding(c: &mut Criterion) {
    let shape = common::WINDOW_999HZ;
    let obj = common::object(1, &common::big_binary());
    let addrs = common::text_addresses(&obj, 2000);
    let s = common::samples(shape, obj.id, &addrs);
    let mut window = Window::new(common::start());
    common::fill(&mut window, &s);
    let objects = HashMap::from([(obj.id, Arc::clone(&obj))]);
    let input = BuildInput {
        window: &window,
        end: Instant2 {
            wall_ns: common::start().wall_ns + 10_000_000_000,
            mono_ns: 10_000_000_000,
        },
        period_ns: 1_001_001,
        objects: &objects,
    };
    let mut sym = Symbolizer::new();
    let p = profile::build(&input, &mut sym);
    eprintln!(
        "encode: {} samples, {} sample rows, {} stacks, {} locations, {} functions",
        p.sample_count(),
        p.samples.len(),
        p.stacks.len(),
        p.locations.len(),
        p.functions.len()
    );

    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(p.sample_count()));
    g.bench_function("profile_build", |b| {
        b.iter(|| black_box(profile::build(&input, &mut sym)));
    });
    let comments = vec!["profiler bench".to_owned()];
    g.bench_function("pprof", |b| {
        b.iter(|| black_box(encode::pprof::encode(&p, &comments)));
    });
    let res = ResourceSettings {
        host_name: "bench-host".into(),
        service_name: None,
        attributes: Vec::new(),
    };
    g.bench_function("otlp", |b| {
        b.iter(|| black_box(encode::otlp::encode(&p, &res)));
    });
    g.finish();
}

criterion_group!(benches, encoding);
criterion_main!(benches);
