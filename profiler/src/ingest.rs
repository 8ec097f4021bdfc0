//! Decodes ring-buffer records and feeds them to the process tracker and the
//! current window. Runs for every record, so it allocates nothing for a
//! sample whose stack and process were seen before. A user stack whose walk
//! stopped short of its start (the unwinder's outcome, or the frame limit)
//! ends in a [`StackMark`] frame and is counted by outcome.

use hashbrown::HashMap;
use std::sync::Arc;

use profiler_common::{
    Record, RecordKind, SampleHeader, SampleRecord, UserUnwinder, sample_flags, unwind::Outcome,
};
use tracing::debug;

use crate::{
    aggregate::{Instant2, Observation, Window},
    golang::samples::{LabelCache, Labels},
    metrics::{self, Metrics},
    process::{FrameKey, ObjectFile, ObjectId, ProcessHooks, ProcessTracker, StackMark},
    profile::referenced_objects,
};

/// A finished window and what symbolizing it needs.
pub struct Flushed {
    pub window: Window,
    pub end: Instant2,
    pub objects: HashMap<ObjectId, Arc<ObjectFile>>,
}

/// Record decoding and aggregation state.
pub struct Ingest {
    tracker: ProcessTracker,
    labels: LabelCache,
    window: Window,
    metrics: Arc<Metrics>,
    addrs: Vec<u64>,
    frames: Vec<FrameKey>,
    /// Table unwinding is on: a kernel frame-pointer walk is then marked.
    tables: bool,
}

/// A return address points after the call; one byte back is inside the
/// call instruction, which is the line a caller frame should show.
fn caller_address(addr: u64) -> u64 {
    addr.saturating_sub(1)
}

impl Ingest {
    /// Starts the first window at `start`; `hooks` hears of process starts
    /// and ends.
    pub fn new(
        metrics: Arc<Metrics>,
        start: Instant2,
        hooks: Option<Box<dyn ProcessHooks>>,
    ) -> Self {
        let mut tracker = ProcessTracker::new(Arc::clone(&metrics));
        if let Some(h) = hooks {
            tracker.set_hooks(h);
        }
        Self {
            tracker,
            labels: LabelCache::default(),
            window: Window::new(start),
            metrics,
            addrs: Vec::with_capacity(profiler_common::MAX_USER_FRAMES),
            frames: Vec::with_capacity(
                profiler_common::MAX_KERNEL_FRAMES + profiler_common::MAX_USER_FRAMES,
            ),
            tables: false,
        }
    }

    /// Says that user stacks are walked with tables from now on, so one
    /// walked by the kernel's frame-pointer walk is marked as such.
    pub fn set_table_unwinding(&mut self, on: bool) {
        self.tables = on;
    }

    /// Handles one ring-buffer record.
    pub fn record(&mut self, bytes: &[u8]) {
        metrics::inc(&self.metrics.records);
        match Record::parse(bytes) {
            Ok(Record::Sample(s)) => self.sample(&s),
            Ok(Record::Process(ev)) => match RecordKind::from_u32(ev.kind) {
                Some(RecordKind::Exec) => {
                    self.tracker.on_exec(ev.pid);
                    self.labels.forget(ev.pid);
                }
                Some(RecordKind::Exit) => {
                    self.tracker.on_exit(ev.pid);
                    self.labels.forget(ev.pid);
                }
                _ => metrics::inc(&self.metrics.records_malformed),
            },
            Ok(Record::GoLabels(rec)) => self.labels.insert(&rec),
            Err(e) => {
                metrics::inc(&self.metrics.records_malformed);
                debug!("dropped a malformed record of {} bytes: {e:?}", bytes.len());
            }
        }
    }

    fn sample(&mut self, s: &SampleRecord<'_>) {
        let h = &s.header;
        self.frames.clear();
        self.frames.extend(
            s.kernel_frames()
                .enumerate()
                .map(|(i, a)| FrameKey::Kernel(if i == 0 { a } else { caller_address(a) })),
        );
        // In kernel mode the first user frame is where the syscall returns to.
        let in_kernel = h.kernel_frames > 0;
        self.addrs.clear();
        self.addrs.extend(s.user_frames().enumerate().map(|(i, a)| {
            if i == 0 && !in_kernel {
                a
            } else {
                caller_address(a)
            }
        }));
        let process = self
            .tracker
            .translate_user(h.pid, s.comm(), &self.addrs, &mut self.frames);
        if let Some(mark) = stack_end(h, self.tables, &self.metrics) {
            self.frames.push(FrameKey::Mark(mark));
        }
        let go = if s.ext.is_empty() {
            None
        } else {
            self.labels.sample(h.pid, s.ext)
        };
        if let Some(g) = &go
            && g.labels == Labels::Unknown
        {
            metrics::inc(&self.metrics.go_labels_unknown);
        }
        let obs = Observation {
            tid: h.tid,
            cpu: h.cpu,
            comm: &h.comm,
            time_ns: h.ktime_ns,
            go: go.as_ref(),
        };
        self.window.add(&process, &obs, &self.frames);
        metrics::inc(&self.metrics.samples);
    }

    /// Reads `pids` from /proc now, before their first sample, so that the
    /// BPF side knows them (Go state) from the first sample on.
    pub fn prime(&mut self, pids: &[u32]) {
        for &pid in pids {
            self.tracker.prime(pid);
        }
    }

    /// Samples in the current window.
    pub fn window_samples(&self) -> u64 {
        self.window.total()
    }

    /// Ends the current window at `end` and starts the next.
    pub fn flush(&mut self, end: Instant2) -> Flushed {
        let next = Window::like(end, &self.window);
        let window = std::mem::replace(&mut self.window, next);
        let objects = referenced_objects(&window)
            .into_iter()
            .filter_map(|id| self.tracker.object(id).map(|o| (id, o)))
            .collect();
        self.tracker.end_window();
        Flushed {
            window,
            end,
            objects,
        }
    }
}

/// How `h`'s user stack ended, if short of its start (or unverified: a
/// frame-pointer walk while `tables` are on); counts the outcome.
fn stack_end(h: &SampleHeader, tables: bool, m: &Metrics) -> Option<StackMark> {
    if h.user_unwinder != UserUnwinder::Table as u8 {
        if h.user_frames == 0 {
            return None;
        }
        metrics::inc(&m.stacks_frame_pointer);
        if tables {
            return Some(StackMark::FramePointers);
        }
        return (h.flags & sample_flags::USER_TRUNCATED != 0).then_some(StackMark::Truncated);
    }
    let (counter, mark) = match Outcome::from_u8(h.unwind_outcome) {
        Some(Outcome::EndOfStack) => (&m.stacks_complete, None),
        Some(Outcome::Continue) => (&m.stacks_truncated, Some(StackMark::Truncated)),
        Some(Outcome::NoRow) => (&m.stacks_no_table, Some(StackMark::NoTable)),
        Some(Outcome::BadRead) => (&m.stacks_bad_read, Some(StackMark::BadRead)),
        Some(Outcome::NoProgress) => (&m.stacks_unwind_other, Some(StackMark::NoProgress)),
        Some(Outcome::BadTable) => (&m.stacks_unwind_other, Some(StackMark::BadTable)),
        Some(Outcome::ZeroReturn) => (&m.stacks_unwind_other, Some(StackMark::ZeroReturn)),
        Some(Outcome::Unsupported) | None => (&m.stacks_unwind_other, Some(StackMark::Unsupported)),
    };
    metrics::inc(counter);
    mark
}

#[cfg(test)]
mod tests {
    use profiler_common::{COMM_LEN, ProcessEvent, SampleHeader, UserUnwinder};

    use super::*;

    fn sample_bytes(pid: u32, kernel: &[u64], user: &[u64]) -> Vec<u8> {
        sample_bytes_with(pid, kernel, user, UserUnwinder::FramePointer, 0, 0)
    }

    fn sample_bytes_with(
        pid: u32,
        kernel: &[u64],
        user: &[u64],
        unwinder: UserUnwinder,
        outcome: u8,
        flags: u32,
    ) -> Vec<u8> {
        let mut comm = [0u8; COMM_LEN];
        comm[..4].copy_from_slice(b"test");
        let h = SampleHeader {
            kind: RecordKind::Sample as u32,
            flags,
            ktime_ns: 1,
            pid,
            tid: pid,
            cpu: 0,
            kernel_frames: kernel.len() as u16,
            user_frames: user.len() as u16,
            user_unwinder: unwinder as u8,
            unwind_outcome: outcome,
            ext_len: 0,
            reserved: 0,
            comm,
        };
        // SAFETY: reading the bytes of a repr(C) value.
        let mut out = unsafe {
            std::slice::from_raw_parts(
                (&h as *const SampleHeader).cast::<u8>(),
                std::mem::size_of::<SampleHeader>(),
            )
        }
        .to_vec();
        for f in kernel.iter().chain(user) {
            out.extend_from_slice(&f.to_ne_bytes());
        }
        out
    }

    #[test]
    fn adjusts_return_addresses_and_counts_malformed() {
        let m = Arc::new(Metrics::default());
        let mut ingest = Ingest::new(Arc::clone(&m), Instant2::now(), None);
        let pid = std::process::id();
        ingest.record(&sample_bytes(
            pid,
            &[0xffff_0010, 0xffff_0020],
            &[0x10, 0x20],
        ));
        ingest.record(&[1, 2, 3]);
        let ev = ProcessEvent {
            kind: RecordKind::Exit as u32,
            pid: 12345678,
            ktime_ns: 2,
        };
        // SAFETY: reading the bytes of a repr(C) value.
        let ev =
            unsafe { std::slice::from_raw_parts((&ev as *const ProcessEvent).cast::<u8>(), 16) };
        ingest.record(ev);
        let s = m.snapshot();
        assert_eq!(
            (s.records, s.records_malformed, s.samples, s.exits),
            (3, 1, 1, 1)
        );
        let flushed = ingest.flush(Instant2::now());
        let stack = flushed.window.stacks.get(crate::aggregate::StackId(0));
        assert_eq!(
            stack,
            [
                FrameKey::Kernel(0xffff_0010),
                FrameKey::Kernel(0xffff_001f),
                // In kernel mode both user addresses are return addresses.
                FrameKey::Unmapped(0xf),
                FrameKey::Unmapped(0x1f),
            ]
        );
        assert_eq!(ingest.window_samples(), 0);
    }

    #[test]
    fn incomplete_user_stacks_end_in_a_mark_and_are_counted() {
        let m = Arc::new(Metrics::default());
        let mut ingest = Ingest::new(Arc::clone(&m), Instant2::now(), None);
        let pid = std::process::id();
        let table = |o: Outcome| {
            sample_bytes_with(pid, &[], &[0x10, 0x20], UserUnwinder::Table, o as u8, 0)
        };
        for o in Outcome::ALL {
            ingest.record(&table(o));
        }
        // An outcome this build does not know.
        ingest.record(&sample_bytes_with(
            pid,
            &[],
            &[0x10],
            UserUnwinder::Table,
            99,
            0,
        ));
        // Frame pointers: truncated is marked; tables on, every walk is.
        let fp = |flags| sample_bytes_with(pid, &[], &[0x10], UserUnwinder::FramePointer, 0, flags);
        ingest.record(&fp(sample_flags::USER_TRUNCATED));
        ingest.record(&fp(0));
        ingest.set_table_unwinding(true);
        ingest.record(&fp(0));
        let s = m.snapshot();
        assert_eq!(
            (
                s.stacks_complete,
                s.stacks_truncated,
                s.stacks_no_table,
                s.stacks_bad_read,
                s.stacks_unwind_other,
                s.stacks_frame_pointer
            ),
            (1, 1, 1, 1, 5, 3)
        );
        let flushed = ingest.flush(Instant2::now());
        let last = |i: u32| {
            *flushed
                .window
                .stacks
                .get(crate::aggregate::StackId(i))
                .last()
                .unwrap()
        };
        let marks: Vec<FrameKey> = (0..flushed.window.stacks.len() as u32).map(last).collect();
        assert_eq!(marks.len(), 12, "{marks:?}");
        use StackMark::*;
        // Continue (the frame limit), EndOfStack (complete: no mark), NoRow,
        // BadRead, Unsupported, NoProgress, BadTable, ZeroReturn, unknown,
        // then the frame-pointer walks.
        let want = [
            Some(Truncated),
            None,
            Some(NoTable),
            Some(BadRead),
            Some(Unsupported),
            Some(NoProgress),
            Some(BadTable),
            Some(ZeroReturn),
            Some(Unsupported),
            Some(Truncated),
            None,
            Some(FramePointers),
        ];
        for (got, want) in marks.iter().zip(want) {
            match want {
                Some(mark) => assert_eq!(*got, FrameKey::Mark(mark)),
                None => assert!(!matches!(got, FrameKey::Mark(_)), "{got:?}"),
            }
        }
    }
}
