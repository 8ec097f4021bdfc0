//! Every map and global of the kernel side, and the counter helper.
//!
//! The names are the ones in `profiler_common::names`; user space resizes the
//! ring buffer and fills `CONFIG` and `PID_FILTER` at load time.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use profiler_common::{Config, Counter, MAX_KERNEL_FRAMES, MAX_USER_FRAMES, SampleHeader};

/// Samples and process events, read by the daemon. Resized at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU event counters, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Pids to keep when `CONFIG.filter_pids` is set.
#[map]
pub static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// A sample record as it is assembled before it is copied to [`EVENTS`].
#[repr(C)]
pub struct SampleBuf {
    pub header: SampleHeader,
    pub frames: [u64; MAX_KERNEL_FRAMES + MAX_USER_FRAMES],
}

/// One [`SampleBuf`] per CPU: too large for the 512-byte BPF stack.
#[map]
pub static SCRATCH: PerCpuArray<SampleBuf> = PerCpuArray::with_max_entries(1, 0);

/// Load-time settings (read-only; see `profiler_common::Config`).
#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config {
    filter_pids: 0,
    wakeup_bytes: 1 << 18,
});

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot; this program cannot be preempted on it.
        unsafe { *slot += 1 };
    }
}

/// Ring-buffer submit flags: wake the reader only when enough is waiting.
#[inline(always)]
pub fn wakeup_flags(record_len: u64) -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    let waiting = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if waiting + record_len >= u64::from(CONFIG.load().wakeup_bytes) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
