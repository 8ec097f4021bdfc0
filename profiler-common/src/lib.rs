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
//! `ext` is where per-runtime state (Go goroutine state) is appended; the
//! header says how long it is, so a reader that does not understand it can
//! skip it. [`SampleRecord::parse`] is the one decoder of this layout.
#![no_std]

pub mod golang;

pub mod unwind;

/// Most kernel frames captured per sample (the kernel's default
/// `perf_event_max_stack`).
pub const MAX_KERNEL_FRAMES: usize = 127;
/// Most user frames captured per sample.
pub const MAX_USER_FRAMES: usize = 127;
/// Most bytes of per-runtime extension data appended to a sample.
pub const MAX_EXT_BYTES: usize = 0;
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
}

impl RecordKind {
    /// The kind with this wire value, if any.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Sample),
            2 => Some(Self::Exec),
            3 => Some(Self::Exit),
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
    /// Reserved for the unwinder's per-sample outcome; zero today.
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
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 8] = [
        Counter::Samples,
        Counter::Idle,
        Counter::Filtered,
        Counter::RingBufFull,
        Counter::KernelStackError,
        Counter::UserStackError,
        Counter::EventsLost,
        Counter::Submitted,
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
    /// The `sched_process_exec` BTF tracepoint program.
    pub const PROG_EXEC: &str = "on_exec";
    /// The `sched_process_exit` BTF tracepoint program.
    pub const PROG_EXIT: &str = "on_exit";
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
    fn parses_process_events() {
        let ev = ProcessEvent {
            kind: RecordKind::Exit as u32,
            pid: 99,
            ktime_ns: 5,
        };
        match Record::parse(&bytes_of(&ev)).unwrap() {
            Record::Process(p) => assert_eq!(p, ev),
            Record::Sample(_) => panic!("not an event"),
        }
    }
}
