//! Decides whether a task's samples and events are recorded.

use crate::maps::{CONFIG, PID_FILTER};

/// True when `pid` passes the pid filter (or no filter is set).
#[inline(always)]
pub fn wanted(pid: u32) -> bool {
    CONFIG.load().filter_pids == 0 || PID_FILTER.get_ptr(pid).is_some()
}
