//! Types shared by the kernel side (`profiler-ebpf`) and the daemon (`profiler`).
//!
//! Everything that crosses the kernel/user boundary is defined here, once:
//! the ring-buffer record layouts, the load-time configuration, the counter
//! indices and the frame limits. The crate is `no_std` so the BPF program can
//! use it; with the `user` feature it also implements `aya::Pod` for the types
//! user space reads from or writes to BPF maps.
//!
//! # Ring-buffer records
//!
//! Every record starts with a `u32` [`RecordKind`]. A sample is variable-sized:
//!
//! ```text
//! SampleHeader | kernel frames (u64 × kernel_frames) | user frames (u64 × user_frames) | ext (ext_len bytes)
//! ```
//!
//! `ext` is where per-runtime state is appended (a
//! [`golang::GoSampleExt`] for Go processes); the header says how long it
//! is, so a reader that does not understand it can skip it. Go label sets
//! travel in their own [`RecordKind::GoLabels`] records, once per set.
//! [`Record::parse`] is the one decoder of these layouts.
#![no_std]

pub mod golang;

pub mod unwind;

/// Most kernel frames captured per sample (the kernel's default
/// `perf_event_max_stack`).
pub const MAX_KERNEL_FRAMES: usize = 127;
/// Most user frames captured per sample.
pub const MAX_USER_FRAMES: usize = 127;
/// Most bytes of per-runtime extension data appended to a sample.
pub const MAX_EXT_BYTES: usize = core::mem::size_of::<golang::GoSampleExt>();
/// Bytes in a task's `comm`.
pub const COMM_LEN: usize = 16;

/// The first `u32` of every ring-buffer record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A CPU sample: [`SampleHeader`] and its frames.
    Sample = 1,
    /// A process called `execve`: its old mappings are gone.
    Exec = 2,
    /// A thread-group leader exited.
    Exit = 3,
    /// A Go label set ([`golang::GoLabelsRecord`]).
    GoLabels = 4,
}

impl RecordKind {
    /// The kind with this wire value, if any.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Sample),
            2 => Some(Self::Exec),
            3 => Some(Self::Exit),
            4 => Some(Self::GoLabels),
            _ => None,
        }
    }
}

/// Bits of [`SampleHeader::flags`].
pub mod sample_flags {
    /// `bpf_get_stack` failed for the kernel stack.
    pub const KERNEL_STACK_ERROR: u32 = 1 << 0;
    /// `bpf_get_stack` failed for the user stack.
    pub const USER_STACK_ERROR: u32 = 1 << 1;
    /// The kernel stack filled every slot: it may be deeper.
    pub const KERNEL_TRUNCATED: u32 = 1 << 2;
    /// The user stack filled every slot: it may be deeper.
    pub const USER_TRUNCATED: u32 = 1 << 3;
    /// The sample interrupted user mode (no kernel frames expected).
    pub const USER_MODE: u32 = 1 << 4;
}

/// How the user stack of a sample was walked.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserUnwinder {
    /// The kernel's frame-pointer walk (`bpf_get_stack` with `BPF_F_USER_STACK`).
    FramePointer = 0,
    /// Table-driven unwinding (`.eh_frame` rows), frame pointers where a
    /// mapping has no table.
    Table = 1,
}

/// Fixed part of a sample record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleHeader {
    /// [`RecordKind::Sample`].
    pub kind: u32,
    /// [`sample_flags`] bits.
    pub flags: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ktime_ns: u64,
    /// Thread-group id (what user space calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CPU the sample was taken on.
    pub cpu: u32,
    /// Number of kernel frames that follow the header.
    pub kernel_frames: u16,
    /// Number of user frames that follow the kernel frames.
    pub user_frames: u16,
    /// [`UserUnwinder`] that produced the user frames.
    pub user_unwinder: u8,
    /// The user unwinder's last outcome (`unwind::Outcome`; 0 for the
    /// frame-pointer walk).
    pub unwind_outcome: u8,
    /// Bytes of extension data after the frames.
    pub ext_len: u16,
    /// Zero.
    pub reserved: u32,
    /// The thread's `comm`, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

/// Bytes of the largest sample record.
pub const MAX_SAMPLE_BYTES: usize = core::mem::size_of::<SampleHeader>()
    + 8 * (MAX_KERNEL_FRAMES + MAX_USER_FRAMES)
    + MAX_EXT_BYTES;

/// A process lifecycle record ([`RecordKind::Exec`] or [`RecordKind::Exit`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    /// [`RecordKind::Exec`] or [`RecordKind::Exit`].
    pub kind: u32,
    /// Thread-group id.
    pub pid: u32,
    /// `bpf_ktime_get_ns()` when it happened.
    pub ktime_ns: u64,
}

/// Load-time configuration of the BPF programs (a read-only global).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Non-zero: keep only samples whose pid is a key of the `PID_FILTER` map.
    pub filter_pids: u32,
    /// Wake the reader once this many bytes are waiting in the ring buffer;
    /// below it records are submitted without a wakeup.
    pub wakeup_bytes: u32,
    /// Offset of `thread.fsbase` in the kernel's `task_struct` (from its
    /// BTF); 0 if unknown, which disables reading Go state.
    pub task_fsbase: u32,
    /// Zero.
    pub reserved: u32,
}

/// What the BPF program knows about a process, set by the daemon (the
/// `PROCS` map, keyed by pid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcInfo {
    /// [`proc_flags`] bits.
    pub flags: u32,
    /// Go: index into the `GO_OFFSETS` array.
    pub go_offsets: u32,
    /// Go: offset of the `g` pointer from the thread pointer (fs base).
    pub go_tls: i32,
    /// Zero.
    pub reserved: u32,
}

/// Bits of [`ProcInfo::flags`].
pub mod proc_flags {
    /// A Go process: read goroutine state on every sample.
    pub const GO: u32 = 1 << 0;
}

/// Slots of the `PROGS` tail-call array.
pub mod prog_slot {
    /// Reads Go goroutine state, then submits the sample.
    pub const GO: u32 = 0;
    /// Walks the user stack with unwind tables, a few frames per call,
    /// calling itself until done; then the Go stage or submit.
    pub const UNWIND: u32 = 1;
}

/// User frames the unwind stage walks per invocation before it tail-calls
/// itself (16 invocations reach [`MAX_USER_FRAMES`], well inside the
/// kernel's 33 tail calls per sample).
pub const UNWIND_FRAMES_PER_STAGE: u32 = 8;

const _: () = assert!(MAX_USER_FRAMES.div_ceil(UNWIND_FRAMES_PER_STAGE as usize) + 2 <= 33);

/// Key of the `GO_LABELS_SEEN` map: a label set already sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelsKey {
    pub pid: u32,
    pub reserved: u32,
    pub labels: u64,
}

/// Indices of the per-CPU `COUNTERS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Perf-event samples the program ran for.
    Samples = 0,
    /// Samples of the idle task (pid 0), not recorded.
    Idle = 1,
    /// Samples of processes outside the pid filter, not recorded.
    Filtered = 2,
    /// Samples lost because the ring buffer was full.
    RingBufFull = 3,
    /// Kernel stack reads that failed.
    KernelStackError = 4,
    /// User stack reads that failed.
    UserStackError = 5,
    /// Exec/exit events lost because the ring buffer was full.
    EventsLost = 6,
    /// Samples written to the ring buffer.
    Submitted = 7,
    /// Samples of Go processes whose goroutine state was read.
    GoState = 8,
    /// Reads of Go runtime memory that failed.
    GoReadError = 9,
    /// Go label sets sent.
    GoLabelsSent = 10,
    /// Go label sets lost because the ring buffer was full (the sample
    /// keeps the set's address; the set is sent again next time).
    GoLabelsLost = 11,
    /// Tail calls that failed (the sample was submitted without that stage).
    TailCallFailed = 12,
    /// User frames whose table rule came from the unwinder's per-CPU rule
    /// cache.
    RuleCacheHits = 13,
    /// Table rules the unwinder searched for and then cached.
    RuleCacheMisses = 14,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 15] = [
        Counter::Samples,
        Counter::Idle,
        Counter::Filtered,
        Counter::RingBufFull,
        Counter::KernelStackError,
        Counter::UserStackError,
        Counter::EventsLost,
        Counter::Submitted,
        Counter::GoState,
        Counter::GoReadError,
        Counter::GoLabelsSent,
        Counter::GoLabelsLost,
        Counter::TailCallFailed,
        Counter::RuleCacheHits,
        Counter::RuleCacheMisses,
    ];
    /// Number of counters (the `COUNTERS` map's size).
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// A short snake_case name for logs and summaries.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Samples => "samples",
            Counter::Idle => "idle",
            Counter::Filtered => "filtered",
            Counter::RingBufFull => "ring_buffer_full",
            Counter::KernelStackError => "kernel_stack_errors",
            Counter::UserStackError => "user_stack_errors",
            Counter::EventsLost => "events_lost",
            Counter::Submitted => "submitted",
            Counter::GoState => "go_state",
            Counter::GoReadError => "go_read_errors",
            Counter::GoLabelsSent => "go_labels_sent",
            Counter::GoLabelsLost => "go_labels_lost",
            Counter::TailCallFailed => "tail_call_failed",
            Counter::RuleCacheHits => "rule_cache_hits",
            Counter::RuleCacheMisses => "rule_cache_misses",
        }
    }
}

/// Names of the maps and globals user space looks up.
pub mod names {
    /// The ring buffer of samples and process events.
    pub const RING_BUFFER: &str = "EVENTS";
    /// The per-CPU counter array.
    pub const COUNTERS: &str = "COUNTERS";
    /// Hash of pids to keep when [`Config::filter_pids`](crate::Config) is set.
    pub const PID_FILTER: &str = "PID_FILTER";
    /// The read-only [`Config`](crate::Config) global.
    pub const CONFIG: &str = "CONFIG";
    /// The perf-event sampling program.
    pub const PROG_SAMPLE: &str = "sample_cpu";
    /// The `sched_process_exec` raw tracepoint program.
    pub const PROG_EXEC: &str = "on_exec";
    /// The `sched_process_exit` raw tracepoint program.
    pub const PROG_EXIT: &str = "on_exit";
    /// The Go goroutine-state stage (tail-called).
    pub const PROG_GO: &str = "sample_go";
    /// Per-process info ([`ProcInfo`](crate::ProcInfo)), keyed by pid.
    pub const PROCS: &str = "PROCS";
    /// The tail-call program array.
    pub const PROGS: &str = "PROGS";
    /// Go runtime offsets ([`GoOffsets`](crate::golang::GoOffsets)), by index.
    pub const GO_OFFSETS: &str = "GO_OFFSETS";
    /// Go label sets already sent ([`LabelsKey`](crate::LabelsKey) → fingerprint).
    pub const GO_LABELS_SEEN: &str = "GO_LABELS_SEEN";
    /// The table-driven unwinding stage (tail-called).
    pub const PROG_UNWIND: &str = "sample_unwind";
    /// Every loaded table's rows ([`Row`](crate::unwind::Row)), one
    /// memory-mappable array sized at load time.
    pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
    /// Every loaded table's page index ([`PageEntry`](crate::unwind::PageEntry)).
    pub const UNWIND_PAGES: &str = "UNWIND_PAGES";
    /// [`TableInfo`](crate::unwind::TableInfo) by table id.
    pub const UNWIND_TABLES: &str = "UNWIND_TABLES";
    /// [`ProcMappings`](crate::unwind::ProcMappings) by pid: the processes
    /// whose user stacks are walked with tables.
    pub const UNWIND_PROCS: &str = "UNWIND_PROCS";
    /// Per-CPU count of final unwind outcomes, indexed by
    /// [`Outcome`](crate::unwind::Outcome) value.
    pub const UNWIND_OUTCOMES: &str = "UNWIND_OUTCOMES";
}

/// Why a record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than its fixed part or than the lengths it declares.
    Truncated,
    /// The first `u32` is not a known [`RecordKind`].
    UnknownKind(u32),
    /// A frame count exceeds its limit.
    TooManyFrames,
}

/// A decoded ring-buffer record, borrowing the frames from the record bytes.
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    /// A CPU sample.
    Sample(SampleRecord<'a>),
    /// An exec or exit.
    Process(ProcessEvent),
    /// A Go label set.
    GoLabels(GoLabels<'a>),
}

/// A Go label set record and a view of its labels.
#[derive(Clone, Copy, Debug)]
pub struct GoLabels<'a> {
    pub pid: u32,
    pub labels: u64,
    pub fingerprint: u64,
    /// Labels in the set (more than are copied when truncated).
    pub total: u32,
    list: &'a [u8],
}

impl<'a> GoLabels<'a> {
    /// The copied labels, in the runtime's order.
    pub fn labels(&self) -> impl Iterator<Item = golang::GoLabel> + 'a {
        self.list
            .chunks_exact(core::mem::size_of::<golang::GoLabel>())
            .filter_map(read_pod::<golang::GoLabel>)
    }

    /// Number of copied labels.
    pub fn count(&self) -> usize {
        self.list.len() / core::mem::size_of::<golang::GoLabel>()
    }
}

/// A sample and views of its variable parts.
#[derive(Clone, Copy, Debug)]
pub struct SampleRecord<'a> {
    /// The fixed part.
    pub header: SampleHeader,
    kernel: &'a [u8],
    user: &'a [u8],
    /// Extension bytes (empty today).
    pub ext: &'a [u8],
}

impl<'a> SampleRecord<'a> {
    /// Kernel frames, innermost first.
    pub fn kernel_frames(&self) -> impl ExactSizeIterator<Item = u64> + 'a {
        frames(self.kernel)
    }

    /// User frames, innermost first.
    pub fn user_frames(&self) -> impl ExactSizeIterator<Item = u64> + 'a {
        frames(self.user)
    }

    /// The thread name, without NUL padding.
    pub fn comm(&self) -> &[u8] {
        let end = self
            .header
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(COMM_LEN);
        &self.header.comm[..end]
    }
}

fn frames(bytes: &[u8]) -> impl ExactSizeIterator<Item = u64> + '_ {
    bytes.chunks_exact(8).map(|c| {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        u64::from_ne_bytes(b)
    })
}

/// Copies a `#[repr(C)]` plain-old-data value out of the front of `bytes`.
fn read_pod<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above, `read_unaligned` has no alignment
    // requirement, and every `T` used here is `repr(C)` of integers and byte
    // arrays, for which any bit pattern is valid.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

impl<'a> Record<'a> {
    /// Decodes one ring-buffer record.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RecordError> {
        let kind = read_pod::<u32>(bytes).ok_or(RecordError::Truncated)?;
        match RecordKind::from_u32(kind) {
            Some(RecordKind::Sample) => SampleRecord::parse(bytes).map(Record::Sample),
            Some(RecordKind::Exec | RecordKind::Exit) => read_pod::<ProcessEvent>(bytes)
                .map(Record::Process)
                .ok_or(RecordError::Truncated),
            Some(RecordKind::GoLabels) => {
                // The fixed part: kind, pid, labels, fingerprint, total, count.
                const FIXED: usize = golang::labels_record_len(0);
                let word = |at: usize| read_pod::<u64>(bytes.get(at..)?);
                let half = |at: usize| read_pod::<u32>(bytes.get(at..)?);
                let (Some(pid), Some(labels), Some(fingerprint), Some(total), Some(count)) =
                    (half(4), word(8), word(16), half(24), half(28))
                else {
                    return Err(RecordError::Truncated);
                };
                let count = count as usize;
                if count > golang::MAX_GO_LABELS {
                    return Err(RecordError::TooManyFrames);
                }
                let end = golang::labels_record_len(count);
                let list = bytes.get(FIXED..end).ok_or(RecordError::Truncated)?;
                Ok(Record::GoLabels(GoLabels {
                    pid,
                    labels,
                    fingerprint,
                    total,
                    list,
                }))
            }
            None => Err(RecordError::UnknownKind(kind)),
        }
    }
}

impl<'a> SampleRecord<'a> {
    /// Decodes a sample record (its kind is not checked).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RecordError> {
        let header = read_pod::<SampleHeader>(bytes).ok_or(RecordError::Truncated)?;
        let (k, u) = (
            usize::from(header.kernel_frames),
            usize::from(header.user_frames),
        );
        if k > MAX_KERNEL_FRAMES || u > MAX_USER_FRAMES {
            return Err(RecordError::TooManyFrames);
        }
        let start = core::mem::size_of::<SampleHeader>();
        let kernel_end = start + 8 * k;
        let user_end = kernel_end + 8 * u;
        let ext_end = user_end + usize::from(header.ext_len);
        if bytes.len() < ext_end {
            return Err(RecordError::Truncated);
        }
        Ok(Self {
            header,
            kernel: &bytes[start..kernel_end],
            user: &bytes[kernel_end..user_end],
            ext: &bytes[user_end..ext_end],
        })
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` structs of integers with no padding holes that matter
    // to the kernel (it copies them as bytes).
    unsafe impl aya::Pod for crate::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::ProcInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::LabelsKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::golang::GoOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::unwind::Row {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::unwind::PageEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::unwind::TableInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::unwind::ProcMappings {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        let p = (v as *const T).cast::<u8>();
        // SAFETY: reading the bytes of a live, initialised `repr(C)` value.
        unsafe { core::slice::from_raw_parts(p, core::mem::size_of::<T>()) }.to_vec()
    }

    fn header(k: u16, u: u16) -> SampleHeader {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"work");
        SampleHeader {
            kind: RecordKind::Sample as u32,
            flags: sample_flags::USER_MODE,
            ktime_ns: 42,
            pid: 7,
            tid: 8,
            cpu: 1,
            kernel_frames: k,
            user_frames: u,
            user_unwinder: UserUnwinder::FramePointer as u8,
            unwind_outcome: 0,
            ext_len: 0,
            reserved: 0,
            comm,
        }
    }

    #[test]
    fn header_layout_is_stable() {
        assert_eq!(core::mem::size_of::<SampleHeader>(), 56);
        assert_eq!(core::mem::size_of::<ProcessEvent>(), 16);
        assert_eq!(core::mem::size_of::<SampleHeader>() % 8, 0);
    }

    #[test]
    fn parses_sample_frames_in_order() {
        let mut buf = bytes_of(&header(2, 3));
        for f in [0xffff_ffff_8100_0000u64, 0xffff_ffff_8100_0010, 1, 2, 3] {
            buf.extend_from_slice(&f.to_ne_bytes());
        }
        let Record::Sample(s) = Record::parse(&buf).unwrap() else {
            panic!("not a sample")
        };
        assert_eq!(
            s.kernel_frames().collect::<Vec<_>>(),
            [0xffff_ffff_8100_0000, 0xffff_ffff_8100_0010]
        );
        assert_eq!(s.user_frames().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(s.comm(), b"work");
        assert_eq!(s.header.pid, 7);
    }

    #[test]
    fn rejects_truncated_and_unknown_records() {
        let mut buf = bytes_of(&header(2, 0));
        buf.extend_from_slice(&1u64.to_ne_bytes());
        assert_eq!(Record::parse(&buf).unwrap_err(), RecordError::Truncated);
        assert_eq!(Record::parse(&[1, 0]).unwrap_err(), RecordError::Truncated);
        assert_eq!(
            Record::parse(&9u32.to_ne_bytes()).unwrap_err(),
            RecordError::UnknownKind(9)
        );
        let too_many = bytes_of(&header(200, 0));
        assert_eq!(
            Record::parse(&too_many).unwrap_err(),
            RecordError::TooManyFrames
        );
    }

    #[test]
    fn parses_go_label_records() {
        let mut label = golang::GoLabel::EMPTY;
        label.key[..3].copy_from_slice(b"env");
        label.key_len = 3;
        label.value[..4].copy_from_slice(b"prod");
        label.value_len = 4;
        let rec = golang::GoLabelsRecord {
            kind: RecordKind::GoLabels as u32,
            pid: 7,
            labels: 0xc000,
            fingerprint: 99,
            total: 20,
            count: 2,
            list: [label; golang::MAX_GO_LABELS],
        };
        let bytes = bytes_of(&rec);
        let Record::GoLabels(g) = Record::parse(&bytes[..golang::labels_record_len(2)]).unwrap()
        else {
            panic!("not labels")
        };
        assert_eq!(
            (g.pid, g.labels, g.fingerprint, g.total, g.count()),
            (7, 0xc000, 99, 20, 2)
        );
        let first = g.labels().next().unwrap();
        assert_eq!((first.key(), first.value()), (&b"env"[..], &b"prod"[..]));
        assert_eq!(
            Record::parse(&bytes[..golang::labels_record_len(2) - 1]).unwrap_err(),
            RecordError::Truncated
        );
    }

    #[test]
    fn parses_process_events() {
        let ev = ProcessEvent {
            kind: RecordKind::Exit as u32,
            pid: 99,
            ktime_ns: 5,
        };
        match Record::parse(&bytes_of(&ev)).unwrap() {
            Record::Process(p) => assert_eq!(p, ev),
            other => panic!("not an event: {other:?}"),
        }
    }
}
