//! Symbolizer benches on a large real binary (see `common::big_binary`):
//!
//! - `symbolize/cold_load`: `ObjectSymbols::load`, what the daemon does the
//!   first time a sample lands in an object (symbol tables, PLT stubs, DWARF
//!   context).
//! - `symbolize/cold_first_lookups`: a fresh `Symbolizer` resolving 1,000
//!   distinct addresses: the load plus the DWARF line and inline work of
//!   first sights.
//! - `symbolize/cached_lookup`: `Symbolizer::object_frames` on 4,096 addresses
//!   already resolved (the steady state: every later sample of a known
//!   location), reported as lookups per second.
//! - `symbolize/kallsyms_load`: `KernelSymbols::load`, reading and packing
//!   this machine's `/proc/kallsyms` (done at the first window and every ten
//!   minutes); skipped when the addresses are hidden (not root).
//! - `symbolize/kernel_names`: `KernelSymbols::name` for 1,000 symbols spread
//!   over the kernel (what a window pays for each kernel function it sees
//!   for the first time), reported as names per second.

mod common;

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use profiler::symbolize::{
    ObjectSymbols, Symbolizer,
    kernel::{KernelSymbols, NameReader},
};

fn symbolize(c: &mut Criterion) {
    let path = common::big_binary();
    let obj = common::object(1, &path);
    eprintln!(
        "symbolize: {} ({} MB)",
        path.display(),
        obj.bytes.len() / (1 << 20)
    );

    let mut g = c.benchmark_group("symbolize");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("cold_load", |b| {
        b.iter(|| black_box(ObjectSymbols::load(&obj)));
    });

    let first = common::text_addresses(&obj, 1000);
    g.throughput(Throughput::Elements(first.len() as u64));
    g.bench_function("cold_first_lookups", |b| {
        b.iter(|| {
            let mut sym = Symbolizer::new();
            for &a in &first {
                black_box(sym.object_frames(&obj, a));
            }
        });
    });
    g.finish();

    let addrs = common::text_addresses(&obj, 4096);
    let mut sym = Symbolizer::new();
    let named = addrs
        .iter()
        .filter(|&&a| !sym.object_frames(&obj, a).is_empty())
        .count();
    assert!(
        named * 10 >= addrs.len() * 9,
        "only {named} addresses named"
    );
    let mut g = c.benchmark_group("symbolize");
    g.throughput(Throughput::Elements(addrs.len() as u64));
    g.bench_function("cached_lookup", |b| {
        b.iter(|| {
            for &a in &addrs {
                black_box(sym.object_frames(&obj, a));
            }
        });
    });
    g.finish();

    match KernelSymbols::load() {
        Ok(k) => {
            eprintln!("symbolize: /proc/kallsyms, {} text symbols", k.len());
            let mut g = c.benchmark_group("symbolize");
            g.sample_size(10);
            g.bench_function("kallsyms_load", |b| {
                b.iter(|| black_box(KernelSymbols::load().map(|k| k.len())));
            });
            g.finish();
            let step = (k.len() / 1000).max(1);
            let indices: Vec<u32> = (0..k.len()).step_by(step).map(|i| i as u32).collect();
            let mut g = c.benchmark_group("symbolize");
            g.throughput(Throughput::Elements(indices.len() as u64));
            let mut reader = NameReader::default();
            g.bench_function("kernel_names", |b| {
                b.iter(|| {
                    for &i in &indices {
                        black_box(k.name(i, &mut reader));
                    }
                });
            });
            g.finish();
        }
        Err(e) => eprintln!("symbolize/kallsyms_load skipped: {e}"),
    }
}

criterion_group!(benches, symbolize);
criterion_main!(benches);
