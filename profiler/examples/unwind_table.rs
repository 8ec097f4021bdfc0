//! Compiles the unwind table of each file given and prints what it costs:
//! compile time, rows, page index, bytes in the BPF arrays, and the code
//! no rule could express.
//!
//! `cargo run --release -p profiler --example unwind_table -- FILE...`

use std::time::Instant;

use profiler::unwind::CompiledTable;

fn main() {
    let paths: Vec<String> = std::env::args().skip(1).collect();
    if paths.is_empty() {
        eprintln!("usage: unwind_table FILE...");
        std::process::exit(2);
    }
    for path in paths {
        let read = Instant::now();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        let read = read.elapsed();
        let started = Instant::now();
        let table = match CompiledTable::from_bytes(&bytes) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        let compiled = started.elapsed();
        let indexed = Instant::now();
        let shift = table.choose_page_shift();
        let pages = table.page_index(shift);
        let indexed = indexed.elapsed();
        let unsupported: u64 = table
            .report
            .unsupported_counts()
            .values()
            .map(|(_, bytes)| bytes)
            .sum();
        println!(
            "{path}: {} MiB file; {} rows + {} pages of {} B = {} KiB; compiled in {compiled:.1?} \
             (+ {indexed:.1?} page index, {read:.1?} read); {} FDEs; {unsupported} bytes of code \
             unsupported {:?}",
            bytes.len() >> 20,
            table.rows.len(),
            pages.len(),
            1u32 << shift,
            (table.row_bytes() + 8 * pages.len()) / 1024,
            table.report.fdes.values().sum::<usize>(),
            table.report.unsupported_counts()
        );
    }
}
