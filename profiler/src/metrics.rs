//! The daemon's own counters: every drop, miss and failure is counted here
//! (the kernel side counts its own in the `COUNTERS` map) and reported in
//! the summary and the logs; a few gauges (named so) hold current sizes.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! metrics {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// User-space counters, shared between the stages.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`Metrics`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Metrics {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Snapshot {
            /// `(name, value)` pairs, for logs.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

metrics! {
    /// Ring-buffer records decoded.
    records,
    /// Ring-buffer records that could not be decoded (dropped).
    records_malformed,
    /// Samples added to a window.
    samples,
    /// Exec events received.
    execs,
    /// Exit events received.
    exits,
    /// Distinct process instances seen.
    processes,
    /// Processes whose /proc entries could not be read (exited first).
    processes_unreadable,
    /// Re-reads of /proc/PID/maps after an unknown address.
    maps_refreshes,
    /// Mapped files that could not be opened.
    objects_unreadable,
    /// User frames outside any known executable mapping.
    frames_unmapped,
    /// Go samples whose label set never arrived (its record was lost).
    go_labels_unknown,
    /// Windows handed to the pipeline.
    windows,
    /// Windows dropped because the pipeline was behind.
    windows_dropped,
    /// Profiles delivered by a sink.
    profiles_written,
    /// Deliveries that failed.
    sink_errors,
    /// OTLP batches the collector accepted.
    otlp_sent,
    /// OTLP attempts that failed and will be retried.
    otlp_retries,
    /// OTLP batches lost: refused permanently, or past the queue or spool bound.
    otlp_dropped,
    /// Profiles the collector rejected in a partial success.
    otlp_rejected,
    /// OTLP batches written to the spool.
    otlp_spooled,
    /// Times the collector was declared unavailable.
    otlp_breaker_opened,
    /// Unwind tables compiled (each file once while it stays loaded or cached).
    unwind_tables_compiled,
    /// Microseconds spent compiling unwind tables.
    unwind_compile_us,
    /// Files without usable call-frame information (walked by frame pointers).
    unwind_tables_none,
    /// Tables that did not fit `--unwind-table-memory` (walked by frame pointers).
    unwind_tables_no_room,
    /// Gauge: unwind tables loaded now.
    unwind_tables_loaded,
    /// Gauge: bytes of the unwind arrays in use now.
    unwind_table_bytes,
    /// Gauge: bytes of the unwind arrays.
    unwind_table_capacity_bytes,
    /// Gauge: processes walked with tables now.
    unwind_processes,
    /// User stacks walked with tables that reached the end of the stack.
    stacks_complete,
    /// User stacks walked with tables that stopped at the frame limit.
    stacks_truncated,
    /// User stacks walked with tables that stopped at a pc with no
    /// unwind information (no table or row, and frame pointers failed).
    stacks_no_table,
    /// User stacks walked with tables that stopped at an unreadable address.
    stacks_bad_read,
    /// User stacks walked with tables that stopped otherwise (unsupported
    /// rule, no progress, inconsistent table).
    stacks_unwind_other,
    /// User stacks walked by the kernel's frame-pointer walk.
    stacks_frame_pointer,
}

/// Adds one.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n`.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Sets a gauge.
pub fn set(c: &AtomicU64, v: u64) {
    c.store(v, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_counters() {
        let m = Metrics::default();
        inc(&m.samples);
        add(&m.samples, 2);
        inc(&m.sink_errors);
        let s = m.snapshot();
        assert_eq!(s.samples, 3);
        assert_eq!(s.sink_errors, 1);
        assert!(s.pairs().contains(&("samples", 3)));
    }
}
