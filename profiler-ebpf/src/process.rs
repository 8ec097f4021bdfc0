//! Process lifecycle events (exec, leader exit) sent in order with samples,
//! so user space never attributes a sample to the mappings of another image.
//! The process's unwind mapping list goes at once: the new image (or a new
//! process reusing the pid) must not be walked with the old one's mappings
//! while user space catches up.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use profiler_common::{Counter, ProcessEvent, RecordKind};

use crate::{
    filter,
    maps::{EVENTS, UNWIND_PROCS, count, wakeup_flags},
};

/// Emits `kind` for the current task if it is a thread-group leader we track.
#[inline(always)]
pub fn emit(kind: RecordKind) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if pid != tid || !filter::wanted(pid) {
        return;
    }
    let event = ProcessEvent {
        kind: kind as u32,
        pid,
        // SAFETY: no arguments, no memory access.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
    };
    let flags = wakeup_flags(core::mem::size_of::<ProcessEvent>() as u64);
    if EVENTS.output::<ProcessEvent>(&event, flags).is_err() {
        count(Counter::EventsLost);
    }
    let _ = UNWIND_PROCS.remove(&pid);
}
