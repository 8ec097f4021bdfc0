//! The per-sample path allocates nothing once its stacks are known: a
//! counting global allocator watches `Ingest::record` (decoding, address
//! translation through the process tracker, stack interning, aggregation)
//! on ring-buffer records built byte for byte as the BPF side writes them,
//! for this very process.

#[path = "../benches/common/mod.rs"]
mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use profiler::{ingest::Ingest, metrics::Metrics};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The count is process-wide: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// 64 records of distinct stacks (30 user + 6 kernel frames) on 4 threads
/// and 2 CPUs, and an ingest that has seen each once: /proc read, objects
/// mapped, stacks and names interned.
fn seen_once(seed: u64) -> (Vec<Vec<u8>>, Ingest) {
    let records = common::own_records(64, seed);
    let mut ingest = Ingest::new(Arc::new(Metrics::default()), common::start(), None);
    for r in &records {
        ingest.record(r);
    }
    (records, ingest)
}

#[test]
fn known_stacks_cost_no_allocation_per_sample() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (records, mut ingest) = seen_once(11);
    let rounds = 1000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..rounds {
        for r in &records {
            ingest.record(r);
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let samples = (rounds * records.len()) as u64;
    assert_eq!(ingest.window_samples(), samples + records.len() as u64);
    // What remains is the window's list of samples doubling as it grows:
    // about log2(samples) ≈ 16 growths, whatever the number of keys.
    assert!(
        allocations <= 32,
        "{allocations} allocations for {samples} samples of known stacks"
    );
    eprintln!(
        "{allocations} allocations for {samples} samples ({:.4} per sample)",
        allocations as f64 / samples as f64
    );
}

#[test]
fn samples_of_keys_seen_once_cost_no_allocation_each() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Short-lived threads and goroutines make keys seen once: here every
    // sample has a thread id of its own, on known stacks.
    let (mut records, mut ingest) = seen_once(13);
    const TID_OFFSET: usize = std::mem::offset_of!(profiler_common::SampleHeader, tid);
    let per_round = records.len() as u32;
    let rounds = 1000u32;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for round in 0..rounds {
        for (i, r) in records.iter_mut().enumerate() {
            let tid = 1_000_000 + round * per_round + i as u32;
            r[TID_OFFSET..TID_OFFSET + 4].copy_from_slice(&tid.to_ne_bytes());
            ingest.record(r);
        }
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let samples = u64::from(rounds) * records.len() as u64;
    assert_eq!(ingest.window_samples(), samples + records.len() as u64);
    // What remains is the window's sample list and thread-key table
    // doubling: about 3 × log2(samples).
    assert!(
        allocations <= 64,
        "{allocations} allocations for {samples} samples, each of a new key"
    );
    eprintln!("{allocations} allocations for {samples} samples, each of a new key");
}
