//! Every map and global of the kernel side, and the counter helper.
//!
//! The names are the ones in `profiler_common::names`; user space resizes the
//! ring buffer and fills `CONFIG`, `PID_FILTER`, `PROCS`, `GO_OFFSETS` and
//! `PROGS` at load time and as processes come and go. The unwind tables
//! (`UNWIND_ROWS`, `UNWIND_PAGES`, `UNWIND_TABLES`) are sized at load time
//! and written by user space's table manager, which also keeps one
//! `UNWIND_PROCS` mapping list per process whose stacks use them.

use aya_ebpf::{
    Global,
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use profiler_common::{
    Config, Counter, LabelsKey, MAX_EXT_BYTES, MAX_KERNEL_FRAMES, MAX_USER_FRAMES, ProcInfo,
    SampleHeader,
    golang::{GoLabelsRecord, GoOffsets, LabelsCursor, MAX_BUCKET_BYTES},
    unwind::{
        Frame, Outcome, PageEntry, ProcMappings, RULE_CACHE_SLOTS, Row, RuleCacheSlot, TableInfo,
    },
};

/// Samples and process events, read by the daemon. Resized at load time.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU event counters, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Pids to keep when `CONFIG.filter_pids` is set.
#[map]
pub static PID_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// What the daemon knows about a process (Go offsets, ...), by pid.
#[map]
pub static PROCS: HashMap<u32, ProcInfo> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// Go runtime offsets, one entry per distinct layout.
#[map]
pub static GO_OFFSETS: Array<GoOffsets> = Array::with_max_entries(64, 0);

/// Go label sets already sent to user space, with their fingerprint.
#[map]
pub static GO_LABELS_SEEN: LruHashMap<LabelsKey, u64> = LruHashMap::with_max_entries(16384, 0);

/// Tail-call targets (`profiler_common::prog_slot`).
#[map]
pub static PROGS: ProgramArray = ProgramArray::with_max_entries(4, 0);

/// Words of sample data: the frames, then the extension bytes.
pub const DATA_WORDS: usize = MAX_KERNEL_FRAMES + MAX_USER_FRAMES + MAX_EXT_BYTES / 8;

/// A sample record as it is assembled before it is copied to [`EVENTS`].
#[repr(C)]
pub struct SampleBuf {
    pub header: SampleHeader,
    /// Kernel frames, user frames, then the extension, packed.
    pub data: [u64; DATA_WORDS],
}

/// One [`SampleBuf`] per CPU: too large for the 512-byte BPF stack. The
/// tail-called stages of one sample find it here.
#[map]
pub static SCRATCH: PerCpuArray<SampleBuf> = PerCpuArray::with_max_entries(1, 0);

/// Scratch for reading a Go label set: the record being filled, one map
/// bucket, and the reading state the `bpf_loop` steps share.
#[repr(C)]
pub struct LabelsBuf {
    pub record: GoLabelsRecord,
    pub bucket: [u8; MAX_BUCKET_BYTES],
    pub cursor: LabelsCursor,
    pub offsets: GoOffsets,
    /// Non-zero once a step failed.
    pub failed: u32,
}

/// One [`LabelsBuf`] per CPU.
#[map]
pub static LABELS_SCRATCH: PerCpuArray<LabelsBuf> = PerCpuArray::with_max_entries(1, 0);

/// Every loaded unwind table's rows; user space writes them through a
/// shared mapping of the array. Resized at load time.
#[map]
pub static UNWIND_ROWS: Array<Row> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Every loaded unwind table's page index. Resized at load time.
#[map]
pub static UNWIND_PAGES: Array<PageEntry> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Where each table lives in the row and page arrays, by table id.
#[map]
pub static UNWIND_TABLES: Array<TableInfo> = Array::with_max_entries(4096, 0);

/// Executable mappings of the processes walked with tables, by pid. A pid
/// absent here is walked by the kernel's frame-pointer walk.
#[map]
pub static UNWIND_PROCS: HashMap<u32, ProcMappings> =
    HashMap::with_max_entries(8192, BPF_F_NO_PREALLOC);

/// Per-CPU count of the final outcome of each table-driven walk, indexed by
/// `Outcome` value (`Continue`: stopped at the frame limit).
#[map]
pub static UNWIND_OUTCOMES: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(Outcome::ALL.len() as u32, 0);

/// Per-CPU cache of table rules by (pid, list generation, pc): see
/// `RuleCacheSlot`.
#[map]
pub static RULE_CACHE: PerCpuArray<RuleCacheSlot> =
    PerCpuArray::with_max_entries(RULE_CACHE_SLOTS, 0);

/// Bytes of the user stack copied, from the interrupted stack pointer up,
/// when a walk starts (a power of two).
pub const STACK_WINDOW: usize = 4096;

/// What one sample's walk carries from one unwind-stage call to the next.
#[repr(C)]
pub struct UnwindState {
    /// The frame to record and unwind next.
    pub frame: Frame,
    /// User frames recorded so far.
    pub frames: u32,
    /// Non-zero once `frame` holds the interrupted registers.
    pub started: u32,
    /// Frames of this walk whose rule came from `RULE_CACHE` (counted in
    /// `COUNTERS` once, when the walk ends).
    pub cache_hits: u64,
    /// User address of `stack[0]`.
    pub stack_base: u64,
    /// Bytes of `stack` copied from `stack_base` (0 when the copy failed).
    pub stack_len: u64,
    /// The top of the user stack at the sample.
    pub stack: [u8; STACK_WINDOW],
}

/// One [`UnwindState`] per CPU.
#[map]
pub static UNWIND_STATE: PerCpuArray<UnwindState> = PerCpuArray::with_max_entries(1, 0);

/// Load-time settings (read-only; see `profiler_common::Config`).
#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config {
    filter_pids: 0,
    wakeup_bytes: 1 << 18,
    task_fsbase: 0,
    reserved: 0,
});

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn count(counter: Counter) {
    count_n(counter, 1);
}

/// Adds `n` to a per-CPU counter.
#[inline(always)]
pub fn count_n(counter: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot; this program cannot be preempted on it.
        unsafe { *slot += n };
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
