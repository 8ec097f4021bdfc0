//! From a sample's pid and raw addresses to process-independent frame keys:
//! which process instance it was (`tracker`), which mapping an address is in
//! (`maps`), and which object file backs it (`objects`).

pub mod container;
pub mod maps;
pub mod objects;
pub mod tracker;

use std::sync::Arc;

pub use objects::{ObjectFile, ObjectId};
pub use tracker::ProcessTracker;

/// Id of one process instance (a pid reused, or a process that exec'd,
/// gets a new one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcId(pub u32);

/// One frame, identified independently of the process it came from where
/// possible, so identical code in many processes shares symbolization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKey {
    /// A kernel address.
    Kernel(u64),
    /// A link-time address inside an object file.
    Object { object: ObjectId, addr: u64 },
    /// An address in anonymous executable memory of a process (JIT code).
    Jit { process: ProcId, addr: u64 },
    /// A user address in no readable mapping.
    Unmapped(u64),
    /// Not an address: where the user stack's walk stopped short of its
    /// start, as the outermost frame, so no profile shows it as complete.
    Mark(StackMark),
}

/// One word per frame: stacks are hashed on every sample, and the derived
/// hash fed the hasher a discriminant and each field separately.
impl std::hash::Hash for FrameKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (tag, id, addr) = match *self {
            FrameKey::Kernel(a) => (0u64, 0u64, a),
            FrameKey::Object { object, addr } => (1, u64::from(object.0), addr),
            FrameKey::Jit { process, addr } => (2, u64::from(process.0), addr),
            FrameKey::Unmapped(a) => (3, 0, a),
            FrameKey::Mark(m) => (4, 0, m as u64),
        };
        // Equal keys give equal words; the rare collisions (addresses
        // differing only in their top bits) are told apart by `Eq`.
        state.write_u64(addr ^ (id << 40) ^ (tag << 61));
    }
}

/// Why a user stack is incomplete (a [`FrameKey::Mark`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StackMark {
    /// The walk stopped at the frame limit.
    Truncated,
    /// A pc with no unwind information (no table or row, and frame
    /// pointers failed), or in no known mapping.
    NoTable,
    /// Reading the stack failed.
    BadRead,
    /// A rule the unwinder cannot apply.
    Unsupported,
    /// The stack pointer did not move up: the registers or stack are bad.
    NoProgress,
    /// An inconsistent table.
    BadTable,
    /// A zero return address where the table promised one.
    ZeroReturn,
    /// Walked by the kernel's frame-pointer walk although table unwinding
    /// is on (the process's first samples, before its mapping list is in):
    /// wrong wherever code has no frame pointers, and nothing says where.
    FramePointers,
}

impl StackMark {
    /// The function name the mark is shown as.
    pub const fn name(self) -> &'static str {
        match self {
            StackMark::Truncated => "[truncated]",
            StackMark::NoTable => "[unwind: no_table]",
            StackMark::BadRead => "[unwind: bad_read]",
            StackMark::Unsupported => "[unwind: unsupported]",
            StackMark::NoProgress => "[unwind: no_progress]",
            StackMark::BadTable => "[unwind: bad_table]",
            StackMark::ZeroReturn => "[unwind: zero_return]",
            StackMark::FramePointers => "[unwind: frame_pointers]",
        }
    }
}

/// Told about process instances as they start and end, so per-process
/// state kept elsewhere (the BPF `PROCS` map, the unwind tables) follows
/// the tracker.
pub trait ProcessHooks: Send {
    /// A process instance was read from /proc.
    fn started(&mut self, meta: &ProcessMeta);
    /// A process instance's executable mappings, after `started` and again
    /// whenever they are re-read (dlopen, new JIT code).
    fn mappings(&mut self, _meta: &ProcessMeta, _space: &maps::AddressSpace) {}
    /// A pid's instance ended (exec, exit, or gone).
    fn ended(&mut self, pid: u32);
}

/// What the profile says about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessMeta {
    pub id: ProcId,
    pub pid: u32,
    /// The pid inside the process's own pid namespace (for /tmp/perf-N.map).
    pub ns_pid: u32,
    /// Executable base name (or the command name for kernel threads).
    pub exe_name: Arc<str>,
    /// Executable path as the process sees it; empty for kernel threads.
    pub exe_path: Arc<str>,
    /// Start time in clock ticks after boot (/proc/PID/stat field 22).
    pub start_time: u64,
    /// The container it runs in (from its cgroup), if any.
    pub container_id: Option<Arc<str>>,
    /// Go runtime facts, for Go processes.
    pub go: Option<Arc<crate::golang::process::GoBinary>>,
}
