//! Counts samples per (process, thread, thread name, stack) over one time
//! window. Stacks, thread names and the rest of a sample's key are interned,
//! and a sample is appended to the window as 16 bytes (stack, thread key,
//! time); samples of one key are merged once, when the window is read.
//!
//! Why not a hash map from the full key to its count and times: with Go
//! programs a key holds the goroutine, so most keys are new (12,300 keys for
//! 19,800 samples in a 999 Hz window of the `go` bench) and each sample
//! wrote a fresh 80-byte bucket of a table larger than the cache and grew
//! its own list of times: perf put ~20% of the daemon's CPU in that insert
//! plus ~6% in `realloc`. Appending is sequential; the tables probed per
//! sample (stacks, thread keys) stay small.

use hashbrown::HashMap;
use std::{
    hash::{BuildHasher, Hash},
    sync::Arc,
};

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::{
    golang::samples::{GoSample, LabelSet, Labels},
    process::{FrameKey, ProcId, ProcessMeta},
};

/// Index of an interned stack in its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u32);

/// Index of an interned thread name in its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommId(pub u32);

/// Index of an interned Go label set in its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelsId {
    None,
    /// The set's record was lost.
    Unknown,
    Set(u32),
}

/// The goroutine part of a sample's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GoKey {
    pub goid: u64,
    pub status: u32,
    pub wait_reason: u8,
    pub system_stack: bool,
    pub labels: LabelsId,
}

/// Everything that makes two samples the same besides their stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadKey {
    pub process: ProcId,
    pub tid: u32,
    pub comm: CommId,
    pub cpu: u32,
    pub go: Option<GoKey>,
}

/// What makes two samples the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleKey {
    pub thread: ThreadKey,
    pub stack: StackId,
}

/// The per-sample facts besides the process and the stack.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    pub tid: u32,
    pub cpu: u32,
    /// The thread's name, NUL-padded.
    pub comm: &'a [u8; 16],
    /// CLOCK_MONOTONIC nanoseconds.
    pub time_ns: u64,
    /// The goroutine, for samples of Go processes.
    pub go: Option<&'a GoSample>,
}

/// Sample times of one key, the first one inline, so that a key seen once
/// in a window (a short-lived thread, a goroutine sampled once) costs no
/// allocation: with a `Vec` each new key allocated
/// (`tests/allocations.rs`: 64,010 allocations for 64,000 such samples, now 10).
pub type Times = smallvec::SmallVec<[u64; 1]>;

/// Samples with one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleCount {
    pub count: u64,
    /// CLOCK_MONOTONIC time of each sample, in time order.
    pub times_ns: Times,
}

/// A point in time on both clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instant2 {
    /// Nanoseconds since the Unix epoch.
    pub wall_ns: u64,
    /// CLOCK_MONOTONIC nanoseconds (the BPF `ktime` clock).
    pub mono_ns: u64,
}

impl Instant2 {
    /// Now, read on both clocks.
    pub fn now() -> Self {
        Self {
            wall_ns: clock_ns(libc::CLOCK_REALTIME),
            mono_ns: clock_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// Wall time of a monotonic timestamp, assuming no clock step between.
    pub fn wall_of(&self, mono_ns: u64) -> u64 {
        (self.wall_ns as i128 + (mono_ns as i128 - self.mono_ns as i128)).max(0) as u64
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Interned stacks: each distinct frame sequence stored once.
#[derive(Default)]
pub struct StackTable {
    stacks: Vec<Box<[FrameKey]>>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl StackTable {
    /// The id of `frames`, interning it on first sight.
    pub fn intern(&mut self, frames: &[FrameKey]) -> StackId {
        let hash = self.hasher.hash_one(frames);
        let stacks = &self.stacks;
        if let Some(&id) = self.index.find(hash, |&id| *stacks[id as usize] == *frames) {
            return StackId(id);
        }
        let id = self.stacks.len() as u32;
        self.stacks.push(frames.into());
        let (stacks, hasher) = (&self.stacks, &self.hasher);
        self.index
            .insert_unique(hash, id, |&i| hasher.hash_one(&*stacks[i as usize]));
        StackId(id)
    }

    /// An empty table with room for `n` stacks.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            stacks: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// The frames of `id`, innermost first.
    pub fn get(&self, id: StackId) -> &[FrameKey] {
        &self.stacks[id.0 as usize]
    }

    /// Every stack, by id.
    pub fn iter(&self) -> impl Iterator<Item = &[FrameKey]> {
        self.stacks.iter().map(|s| &**s)
    }

    /// Number of distinct stacks.
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }
}

/// One sample as the window keeps it until it is read.
#[derive(Clone, Copy, Debug)]
struct Event {
    thread: u32,
    stack: StackId,
    time_ns: u64,
}

/// The samples of one time window.
pub struct Window {
    pub start: Instant2,
    pub stacks: StackTable,
    comms: Vec<Arc<str>>,
    comm_index: HashMap<[u8; 16], CommId>,
    threads: Vec<ThreadKey>,
    thread_index: HashMap<ThreadKey, u32>,
    events: Vec<Event>,
    processes: HashMap<ProcId, Arc<ProcessMeta>>,
    label_sets: Vec<Arc<LabelSet>>,
    /// Set address → index; the window holds the sets, so addresses are unique.
    label_index: HashMap<usize, u32>,
}

impl Window {
    /// An empty window starting at `start`.
    pub fn new(start: Instant2) -> Self {
        Self {
            start,
            stacks: StackTable::default(),
            comms: Vec::new(),
            comm_index: HashMap::new(),
            threads: Vec::new(),
            thread_index: HashMap::new(),
            events: Vec::new(),
            processes: HashMap::new(),
            label_sets: Vec::new(),
            label_index: HashMap::new(),
        }
    }

    /// An empty window starting at `start`, with room for as many stacks,
    /// thread keys and samples as `previous` had: windows at a steady rate
    /// are alike, and growing the tables sample by sample rehashed them ~15
    /// times per window.
    pub fn like(start: Instant2, previous: &Window) -> Self {
        let mut w = Self::new(start);
        w.stacks = StackTable::with_capacity(previous.stacks.len());
        w.threads.reserve(previous.threads.len());
        w.thread_index.reserve(previous.threads.len());
        w.events.reserve(previous.events.len());
        w
    }

    fn intern_labels(&mut self, labels: &Labels) -> LabelsId {
        match labels {
            Labels::None => LabelsId::None,
            Labels::Unknown => LabelsId::Unknown,
            Labels::Known(set) => {
                let ptr = Arc::as_ptr(set) as usize;
                if let Some(&i) = self.label_index.get(&ptr) {
                    return LabelsId::Set(i);
                }
                let i = self.label_sets.len() as u32;
                // The window holds the Arc, so the pointer stays unique.
                self.label_sets.push(Arc::clone(set));
                self.label_index.insert(ptr, i);
                LabelsId::Set(i)
            }
        }
    }

    /// The label set `id` stands for.
    pub fn labels(&self, id: LabelsId) -> Option<&Arc<LabelSet>> {
        match id {
            LabelsId::Set(i) => self.label_sets.get(i as usize),
            LabelsId::None | LabelsId::Unknown => None,
        }
    }

    /// Adds one sample.
    pub fn add(&mut self, process: &Arc<ProcessMeta>, obs: &Observation<'_>, frames: &[FrameKey]) {
        let stack = self.stacks.intern(frames);
        let comm = self.intern_comm(obs.comm);
        self.processes
            .entry(process.id)
            .or_insert_with(|| Arc::clone(process));
        let go = obs.go.map(|g| GoKey {
            goid: g.goid,
            status: g.status,
            wait_reason: g.wait_reason,
            system_stack: g.system_stack,
            labels: self.intern_labels(&g.labels),
        });
        let key = ThreadKey {
            process: process.id,
            tid: obs.tid,
            comm,
            cpu: obs.cpu,
            go,
        };
        let next = self.threads.len() as u32;
        let thread = *self.thread_index.entry(key).or_insert_with(|| {
            self.threads.push(key);
            next
        });
        self.events.push(Event {
            thread,
            stack,
            time_ns: obs.time_ns,
        });
    }

    fn intern_comm(&mut self, comm: &[u8; 16]) -> CommId {
        if let Some(&id) = self.comm_index.get(comm) {
            return id;
        }
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        let id = CommId(self.comms.len() as u32);
        self.comms
            .push(Arc::from(String::from_utf8_lossy(&comm[..end]).as_ref()));
        self.comm_index.insert(*comm, id);
        id
    }

    /// The thread name `id` stands for.
    pub fn comm(&self, id: CommId) -> &Arc<str> {
        &self.comms[id.0 as usize]
    }

    /// Samples in the window.
    pub fn total(&self) -> u64 {
        self.events.len() as u64
    }

    /// True when no sample was added.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Every key with its count and sample times (in time order), sorted
    /// by key.
    pub fn samples(&self) -> Vec<(SampleKey, SampleCount)> {
        let mut order = self.events.clone();
        // In place (a stable sort would allocate half the list again).
        order.sort_unstable_by_key(|e| (e.thread, e.stack, e.time_ns));
        let mut out: Vec<(SampleKey, SampleCount)> = Vec::new();
        for group in order.chunk_by(|a, b| (a.thread, a.stack) == (b.thread, b.stack)) {
            let key = SampleKey {
                thread: self.threads[group[0].thread as usize],
                stack: group[0].stack,
            };
            let count = SampleCount {
                count: group.len() as u64,
                times_ns: group.iter().map(|e| e.time_ns).collect(),
            };
            out.push((key, count));
        }
        out.sort_unstable_by_key(|(k, _)| *k);
        out
    }

    /// The process instances sampled in the window.
    pub fn process(&self, id: ProcId) -> Option<&Arc<ProcessMeta>> {
        self.processes.get(&id)
    }

    /// Number of distinct process instances sampled.
    pub fn process_count(&self) -> usize {
        self.processes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ObjectId;

    fn meta(id: u32, pid: u32) -> Arc<ProcessMeta> {
        Arc::new(ProcessMeta {
            id: ProcId(id),
            pid,
            ns_pid: pid,
            exe_name: "app".into(),
            exe_path: "/bin/app".into(),
            start_time: 1,
            container_id: None,
            go: None,
        })
    }

    fn comm(s: &str) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        c
    }

    #[test]
    fn interns_stacks() {
        let mut t = StackTable::default();
        let a = [FrameKey::Kernel(1), FrameKey::Unmapped(2)];
        let b = [FrameKey::Object {
            object: ObjectId(3),
            addr: 4,
        }];
        let ia = t.intern(&a);
        let ib = t.intern(&b);
        assert_ne!(ia, ib);
        assert_eq!(t.intern(&a), ia);
        assert_eq!(t.intern(&[]), StackId(2));
        assert_eq!(t.get(ia), a);
        assert_eq!(t.len(), 3);
        for i in 0..1000u64 {
            t.intern(&[FrameKey::Kernel(i + 100)]);
        }
        assert_eq!(t.intern(&b), ib);
        assert_eq!(t.len(), 1003);
    }

    #[test]
    fn merges_equal_samples_and_keeps_times() {
        let mut w = Window::new(Instant2 {
            wall_ns: 0,
            mono_ns: 0,
        });
        let p = meta(0, 10);
        let stack = [FrameKey::Kernel(0xffff)];
        let (worker, renamed) = (comm("worker"), comm("renamed"));
        let obs = |tid, cpu, comm, time_ns| Observation {
            tid,
            cpu,
            comm,
            time_ns,
            go: None,
        };
        w.add(&p, &obs(11, 0, &worker, 5), &stack);
        w.add(&p, &obs(11, 0, &worker, 7), &stack);
        w.add(&p, &obs(12, 0, &worker, 9), &stack);
        w.add(&p, &obs(11, 0, &renamed, 9), &stack);
        w.add(&p, &obs(11, 1, &worker, 11), &stack);
        // Read after the later ones (another CPU's ring-buffer record).
        w.add(&p, &obs(11, 0, &worker, 3), &stack);
        assert_eq!(w.total(), 6);
        let s = w.samples();
        assert_eq!(s.len(), 4);
        let (k, c) = &s[0];
        assert_eq!((k.thread.tid, &**w.comm(k.thread.comm)), (11, "worker"));
        assert_eq!(c.count, 3);
        assert_eq!(c.times_ns.as_slice(), [3, 5, 7]);
        assert_eq!(w.process_count(), 1);
        assert_eq!(w.stacks.len(), 1);
    }

    #[test]
    fn converts_monotonic_to_wall_time() {
        let start = Instant2 {
            wall_ns: 1_000_000,
            mono_ns: 500,
        };
        assert_eq!(start.wall_of(600), 1_000_100);
        assert_eq!(start.wall_of(400), 999_900);
    }
}
