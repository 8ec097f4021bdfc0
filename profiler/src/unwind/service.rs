//! The unwind thread: runs the [`TableManager`] off the ring-buffer drain
//! path (compiling a table takes 10–100 ms). The process tracker's hooks
//! send it each process's mappings and ends through an [`UnwindHandle`];
//! it owns the unwind maps, so nothing else writes them.

use std::sync::{Arc, mpsc};

use super::manager::{MappingSpec, TableManager, TableStore};
use crate::metrics::{Metrics, Snapshot};

enum Request {
    Set { pid: u32, specs: Vec<MappingSpec> },
    Remove { pid: u32 },
}

/// Sends work to the unwind thread; cheap to clone.
#[derive(Clone)]
pub struct UnwindHandle {
    tx: mpsc::Sender<Request>,
}

impl UnwindHandle {
    /// `pid`'s executable mappings (new, or re-read).
    pub fn set_process(&self, pid: u32, specs: Vec<MappingSpec>) {
        let _ = self.tx.send(Request::Set { pid, specs });
    }

    /// `pid`'s process instance ended.
    pub fn remove_process(&self, pid: u32) {
        let _ = self.tx.send(Request::Remove { pid });
    }
}

/// Starts the unwind thread with `store`; it runs until every handle is
/// dropped, then logs what it loaded.
pub fn start<S: TableStore + 'static>(
    store: S,
    metrics: Arc<Metrics>,
) -> std::io::Result<UnwindHandle> {
    let (tx, rx) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("unwind-tables".into())
        .spawn(move || {
            let mut manager = TableManager::new(store, metrics);
            for req in rx {
                match req {
                    Request::Set { pid, specs } => manager.set_process(pid, &specs),
                    Request::Remove { pid } => manager.remove_process(pid),
                }
            }
            manager.log_summary();
        })?;
    Ok(UnwindHandle { tx })
}

/// What the kernel side counted of its table walks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelWalks {
    /// Walks ended, by any outcome.
    pub walks: u64,
    /// Frames whose rule came from the per-CPU rule cache.
    pub rule_cache_hits: u64,
    /// Rules searched for in the tables, then cached.
    pub rule_cache_misses: u64,
}

/// The end-of-run summary line about user stacks and unwind tables, from
/// the daemon's metrics and the kernel's counts (`None` when table
/// unwinding is off).
pub fn summary(m: &Snapshot, kernel: Option<KernelWalks>) -> String {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let by_table = m.stacks_complete
        + m.stacks_truncated
        + m.stacks_no_table
        + m.stacks_bad_read
        + m.stacks_unwind_other;
    let mut line = format!(
        "user stacks: {by_table} walked with unwind tables ({} complete, {} truncated, {} no table, \
         {} bad read, {} other), {} by frame pointers",
        m.stacks_complete,
        m.stacks_truncated,
        m.stacks_no_table,
        m.stacks_bad_read,
        m.stacks_unwind_other,
        m.stacks_frame_pointer
    );
    match kernel {
        Some(k) => {
            line += &format!(
                "; unwind tables: {} loaded, {:.1} MiB of {:.0} MiB, {} compiled in {} ms, \
                 {} files without tables, {} did not fit; {} walks in the kernel, rule cache: \
                 {} hits, {} misses",
                m.unwind_tables_loaded,
                mib(m.unwind_table_bytes),
                mib(m.unwind_table_capacity_bytes),
                m.unwind_tables_compiled,
                m.unwind_compile_us / 1000,
                m.unwind_tables_none,
                m.unwind_tables_no_room,
                k.walks,
                k.rule_cache_hits,
                k.rule_cache_misses
            );
        }
        None => line += "; table unwinding off",
    }
    line
}
