//! What the daemon knows about one Go binary: its version and build id,
//! the runtime offsets the BPF program uses (from the binary's DWARF when
//! present, else the checked-in table for its version), where `g` lives in
//! TLS, and the names of goroutine states and wait reasons.

use std::sync::Arc;

use super::runtime::{self, GStatus, StatusValues};

/// A Go binary's runtime facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBinary {
    /// e.g. `go1.22.10`.
    pub version: String,
    /// The Go build id (`.note.go.buildid`).
    pub build_id: Option<String>,
    /// Offsets as BPF takes them.
    pub offsets: profiler_common::golang::GoOffsets,
    pub status: StatusValues,
    /// Offset of the `g` pointer from the thread pointer.
    pub tls: i64,
    /// Wait reason strings by index.
    pub wait_reasons: Vec<Arc<str>>,
}

impl GoBinary {
    /// The name of a goroutine status, as the profile shows it.
    pub fn status_name(&self, status: u32) -> &'static str {
        match self.status.classify(status) {
            GStatus::Idle => "idle",
            GStatus::Runnable => "runnable",
            GStatus::Running => "running",
            GStatus::Syscall => "syscall",
            GStatus::Waiting => "waiting",
            GStatus::Dead | GStatus::DeadExtra => "dead",
            GStatus::Copystack => "copystack",
            GStatus::Preempted => "preempted",
            GStatus::Leaked => "leaked",
            GStatus::Other(_) => "unknown",
        }
    }

    /// The wait reason of a waiting goroutine.
    pub fn wait_reason(&self, status: u32, reason: u8) -> Option<&Arc<str>> {
        if self.status.classify(status) != GStatus::Waiting {
            return None;
        }
        self.wait_reasons
            .get(usize::from(reason))
            .filter(|r| !r.is_empty())
    }

    /// Wait reasons of a version, from the checked-in table.
    pub fn table_wait_reasons(major: u32, minor: u32) -> Vec<Arc<str>> {
        runtime::wait_reasons(major, minor)
            .unwrap_or_default()
            .iter()
            .map(|s| Arc::from(*s))
            .collect()
    }
}
