//! Aggregation benches: what the daemon does for every sample it reads.
//!
//! - `aggregate/window_add`: `aggregate::Window::add` of a 10 s window at
//!   999 Hz on two CPUs (19,980 samples, 500 distinct 36-frame stacks, 20
//!   processes), into a fresh window: stack and thread-name interning plus
//!   the per-key counts and timestamps.
//! - `aggregate/intern_hit`: `StackTable::intern` of a 36-frame stack already
//!   interned (the common case once a window is warm).
//! - `aggregate/ingest_record`: `ingest::Ingest::record` on ring-buffer
//!   records built byte for byte as the BPF side writes them, for this very
//!   process: decoding, return-address adjustment, address → object
//!   translation through the process tracker (its /proc state cached after
//!   the first record) and `Window::add`. This is the daemon's per-sample
//!   user-space path short of the ring-buffer read itself.

mod common;

use std::{hint::black_box, sync::Arc};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use profiler::{
    aggregate::{StackTable, Window},
    ingest::Ingest,
    metrics::Metrics,
    process::ObjectId,
};

fn aggregate(c: &mut Criterion) {
    let shape = common::WINDOW_999HZ;
    let obj = common::object(1, &std::env::current_exe().unwrap());
    let addrs = common::text_addresses(&obj, 2000);
    let s = common::samples(shape, ObjectId(1), &addrs);

    let mut g = c.benchmark_group("aggregate");
    g.throughput(Throughput::Elements(shape.samples as u64));
    g.bench_function("window_add", |b| {
        b.iter_batched_ref(
            || Window::new(common::start()),
            |w| common::fill(w, &s),
            BatchSize::LargeInput,
        );
    });

    let mut table = StackTable::default();
    for st in &s.stacks {
        table.intern(st);
    }
    let probe = &s.stacks[s.stacks.len() / 2];
    g.throughput(Throughput::Elements(1));
    g.bench_function("intern_hit", |b| b.iter(|| black_box(table.intern(probe))));

    // 256 distinct records of this process, 30 user + 6 kernel frames each.
    let records = common::own_records(256, 3);
    let mut ingest = Ingest::new(Arc::new(Metrics::default()), common::start(), None);
    for r in &records {
        ingest.record(r);
    }
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("ingest_record", |b| {
        b.iter(|| {
            for r in &records {
                ingest.record(r);
            }
        });
    });
    g.finish();
    // Keep the window from growing without bound across criterion's runs.
    black_box(ingest.flush(common::start()).window.total());
}

criterion_group!(benches, aggregate);
criterion_main!(benches);
