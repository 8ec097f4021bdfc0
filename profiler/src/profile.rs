//! The symbolized profile of one window: deduplicated mappings, functions,
//! locations and stacks, and samples that refer to them by index. It is
//! built once per window and every encoder (pprof, OTLP) reads it, so no
//! sink redoes symbolization or aggregation.

use hashbrown::{HashMap, HashSet};
use std::sync::Arc;

use crate::{
    aggregate::{GoKey, Instant2, LabelsId, SampleKey, Window},
    golang::samples::LabelSet,
    process::{FrameKey, ObjectFile, ObjectId, ProcId, ProcessMeta, StackMark, objects::hex},
    symbolize::{MAX_CACHED_ADDRESSES, SymFrame, Symbolizer},
};

/// What a mapping stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MappingKind {
    /// `[kernel.kallsyms]`: kernel and module text.
    Kernel,
    /// An object file (or the vDSO).
    Object(ObjectId),
    /// Anonymous executable memory (JIT code).
    Jit,
    /// User addresses in no known mapping.
    Unknown,
    /// `[unwind]`: the marks of incomplete user stacks.
    Unwind,
}

/// A mapping of the profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub kind: MappingKind,
    pub filename: Arc<str>,
    /// Lowercase hex GNU build id.
    pub build_id: Option<String>,
    pub memory_start: u64,
    pub memory_limit: u64,
    pub file_offset: u64,
    pub has_functions: bool,
    pub has_filenames: bool,
    pub has_line_numbers: bool,
    pub has_inline_frames: bool,
    /// A Go binary (its code is `profile.frame.type` go).
    pub is_go: bool,
    /// Its Go build id.
    pub go_build_id: Option<String>,
}

/// A function.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Function {
    pub name: Arc<str>,
    pub system_name: Arc<str>,
    pub filename: Arc<str>,
    pub start_line: i64,
}

/// One source line of a location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Line {
    /// Index into [`Profile::functions`].
    pub function: u32,
    pub line: i64,
}

/// The kind of code a location is in (OTLP `profile.frame.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    Kernel,
    Native,
    Go,
    Rust,
    /// A mark where a stack's walk stopped.
    Mark,
}

impl FrameType {
    /// The semantic-convention value.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameType::Kernel => "kernel",
            FrameType::Native => "native",
            FrameType::Go => "go",
            FrameType::Rust => "rust",
            // A custom value, as the OpenTelemetry eBPF profiler names it.
            FrameType::Mark => "abort-marker",
        }
    }
}

/// Whether `system_name` is a Rust symbol: v0 (`_R...`) or legacy mangling
/// (`_ZN...17h<16 hex digits>E`).
fn is_rust_symbol(system_name: &str) -> bool {
    if system_name.starts_with("_R") {
        return rustc_demangle::try_demangle(system_name).is_ok();
    }
    system_name.starts_with("_ZN")
        && system_name
            .strip_suffix('E')
            .and_then(|s| s.get(s.len().saturating_sub(19)..))
            .is_some_and(|tail| {
                tail.starts_with("17h") && tail[3..].bytes().all(|b| b.is_ascii_hexdigit())
            })
}

/// One address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// Index into [`Profile::mappings`].
    pub mapping: u32,
    pub frame_type: FrameType,
    /// Kernel address, link-time address in the object, or JIT address.
    pub address: u64,
    /// One entry per inlined call, innermost first; empty if unsymbolized.
    pub lines: Vec<Line>,
}

/// The goroutine of a Go sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoState {
    pub goid: u64,
    /// idle, runnable, running, syscall, waiting, dead, copystack, preempted.
    pub state: &'static str,
    /// Why it waits, when waiting.
    pub wait_reason: Option<Arc<str>>,
    /// Sampled on a system stack (g0/gsignal) working for it.
    pub system_stack: bool,
    pub labels: Option<Arc<LabelSet>>,
    /// It had labels whose record was lost.
    pub labels_unknown: bool,
}

/// Samples with one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Index into [`Profile::processes`].
    pub process: u32,
    pub tid: u32,
    pub thread_name: Arc<str>,
    /// Logical CPU the samples were taken on.
    pub cpu: u32,
    /// The goroutine, for Go processes.
    pub go: Option<GoState>,
    /// Index into [`Profile::stacks`].
    pub stack: u32,
    pub count: u64,
    /// Wall-clock time of each sample (ns since the epoch).
    pub times_ns: crate::aggregate::Times,
}

/// A symbolized window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Window start, ns since the epoch.
    pub start_ns: u64,
    pub duration_ns: u64,
    /// CPU nanoseconds per sample (1e9 / frequency).
    pub period_ns: u64,
    pub mappings: Vec<Mapping>,
    pub functions: Vec<Function>,
    pub locations: Vec<Location>,
    /// Location indices, innermost first.
    pub stacks: Vec<Vec<u32>>,
    pub processes: Vec<Arc<ProcessMeta>>,
    pub samples: Vec<Sample>,
}

impl Profile {
    /// Total number of samples.
    pub fn sample_count(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}

/// What the builder needs besides the window.
pub struct BuildInput<'a> {
    pub window: &'a Window,
    pub end: Instant2,
    pub period_ns: u64,
    /// Every object a frame of the window refers to.
    pub objects: &'a HashMap<ObjectId, Arc<ObjectFile>>,
}

struct Builder<'a> {
    input: &'a BuildInput<'a>,
    sym: &'a mut Symbolizer,
    profile: Profile,
    mapping_index: HashMap<MappingKind, u32>,
    function_index: HashMap<Function, u32>,
    location_index: HashMap<FrameKey, u32>,
}

impl Builder<'_> {
    fn mapping(&mut self, kind: MappingKind) -> u32 {
        if let Some(&i) = self.mapping_index.get(&kind) {
            return i;
        }
        let mut go_build_id = None;
        let mut is_go = false;
        let (filename, build_id, (start, limit, offset), inline): (Arc<str>, _, _, _) = match kind {
            MappingKind::Kernel => {
                let ((lo, hi), id) = self.sym.kernel_mapping();
                (
                    "[kernel.kallsyms]".into(),
                    id.as_deref().map(hex),
                    (lo, hi, 0),
                    false,
                )
            }
            MappingKind::Object(id) => match self.input.objects.get(&id) {
                Some(obj) => {
                    let (lo, hi) = obj.vaddr_range();
                    let off = obj
                        .segments
                        .iter()
                        .find(|s| s.vaddr == lo)
                        .map_or(0, |s| s.file_offset);
                    let info = self.sym.object_info(obj);
                    is_go = info.is_go;
                    go_build_id = info.go_build_id;
                    (
                        obj.path.as_str().into(),
                        obj.build_id_hex(),
                        (lo, hi, off),
                        info.has_dwarf,
                    )
                }
                None => ("[unknown]".into(), None, (0, 0, 0), false),
            },
            MappingKind::Jit => ("[jit]".into(), None, (0, 0, 0), false),
            MappingKind::Unknown => ("[unknown]".into(), None, (0, 0, 0), false),
            MappingKind::Unwind => ("[unwind]".into(), None, (0, 0, 0), false),
        };
        let i = self.profile.mappings.len() as u32;
        self.profile.mappings.push(Mapping {
            kind,
            filename,
            build_id,
            memory_start: start,
            memory_limit: limit,
            file_offset: offset,
            // Computed from the locations once all are known.
            has_functions: false,
            has_filenames: false,
            has_line_numbers: false,
            has_inline_frames: inline,
            is_go,
            go_build_id,
        });
        self.mapping_index.insert(kind, i);
        i
    }

    fn function(&mut self, f: &SymFrame) -> u32 {
        let func = Function {
            name: Arc::clone(&f.name),
            system_name: Arc::clone(&f.system_name),
            filename: Arc::clone(&f.file),
            start_line: i64::from(f.start_line),
        };
        if let Some(&i) = self.function_index.get(&func) {
            return i;
        }
        let i = self.profile.functions.len() as u32;
        self.profile.functions.push(func.clone());
        self.function_index.insert(func, i);
        i
    }

    fn location(&mut self, key: FrameKey) -> u32 {
        if let Some(&i) = self.location_index.get(&key) {
            return i;
        }
        let (kind, address, frames): (MappingKind, u64, Arc<[SymFrame]>) = match key {
            FrameKey::Kernel(addr) => (MappingKind::Kernel, addr, self.sym.kernel_frames(addr)),
            FrameKey::Object { object, addr } => {
                let frames = match self.input.objects.get(&object) {
                    Some(obj) => self.sym.object_frames(obj, addr),
                    None => Arc::from([]),
                };
                (MappingKind::Object(object), addr, frames)
            }
            FrameKey::Jit { process, addr } => {
                let frames = match self.input.window.process(process) {
                    Some(meta) => self.sym.jit_frames(meta, addr),
                    None => Arc::from([]),
                };
                (MappingKind::Jit, addr, frames)
            }
            FrameKey::Unmapped(addr) => (MappingKind::Unknown, addr, Arc::from([])),
            FrameKey::Mark(mark) => return self.mark_location(mark),
        };
        let mapping = self.mapping(kind);
        let frame_type = match kind {
            MappingKind::Kernel => FrameType::Kernel,
            _ if self.profile.mappings[mapping as usize].is_go => FrameType::Go,
            _ if frames
                .first()
                .is_some_and(|f| is_rust_symbol(&f.system_name)) =>
            {
                FrameType::Rust
            }
            _ => FrameType::Native,
        };
        let lines = frames
            .iter()
            .filter(|f| !f.name.is_empty())
            .map(|f| Line {
                function: self.function(f),
                line: i64::from(f.line),
            })
            .collect();
        let i = self.profile.locations.len() as u32;
        self.profile.locations.push(Location {
            mapping,
            frame_type,
            address,
            lines,
        });
        self.location_index.insert(key, i);
        i
    }

    /// The location of a stack mark: a function named for it, no address,
    /// under the `[unwind]` mapping.
    fn mark_location(&mut self, mark: StackMark) -> u32 {
        let mapping = self.mapping(MappingKind::Unwind);
        let func = Function {
            name: mark.name().into(),
            system_name: mark.name().into(),
            filename: "".into(),
            start_line: 0,
        };
        let function = match self.function_index.get(&func) {
            Some(&i) => i,
            None => {
                let i = self.profile.functions.len() as u32;
                self.profile.functions.push(func.clone());
                self.function_index.insert(func, i);
                i
            }
        };
        let i = self.profile.locations.len() as u32;
        self.profile.locations.push(Location {
            mapping,
            frame_type: FrameType::Mark,
            address: 0,
            lines: vec![Line { function, line: 0 }],
        });
        self.location_index.insert(FrameKey::Mark(mark), i);
        i
    }

    /// Sets each mapping's has_functions/filenames/line_numbers to whether
    /// every one of its locations has them.
    fn finish_mappings(&mut self) {
        let n = self.profile.mappings.len();
        let (mut funcs, mut files, mut lines) = (vec![true; n], vec![true; n], vec![true; n]);
        for loc in &self.profile.locations {
            let m = loc.mapping as usize;
            funcs[m] &= !loc.lines.is_empty();
            files[m] &= !loc.lines.is_empty()
                && loc.lines.iter().all(|l| {
                    !self.profile.functions[l.function as usize]
                        .filename
                        .is_empty()
                });
            lines[m] &= !loc.lines.is_empty() && loc.lines.iter().all(|l| l.line > 0);
        }
        for (i, m) in self.profile.mappings.iter_mut().enumerate() {
            m.has_functions = funcs[i];
            m.has_filenames = files[i];
            m.has_line_numbers = lines[i];
            m.has_inline_frames &= lines[i];
        }
    }
}

fn go_state(g: &GoKey, meta: &ProcessMeta, window: &Window) -> GoState {
    let (state, wait_reason) = match &meta.go {
        Some(go) => (
            go.status_name(g.status),
            go.wait_reason(g.status, g.wait_reason).cloned(),
        ),
        None => ("unknown", None),
    };
    GoState {
        goid: g.goid,
        state,
        wait_reason,
        system_stack: g.system_stack,
        labels: window.labels(g.labels).cloned(),
        labels_unknown: g.labels == LabelsId::Unknown,
    }
}

/// Symbolizes the window's object addresses one object at a time, in
/// address order, dropping each object's file pages from RSS before the
/// next object's are read; the builder then finds them in the symbolizer's
/// cache. In stack order the objects interleave, and every page touched in
/// any of them stayed resident until the window's end: at a daemon's first
/// window, file-backed RSS went from 10 to 20 MiB, 5–7 MiB of it pages of
/// one sampled library whose DWARF is not compressed.
fn symbolize_by_object(input: &BuildInput<'_>, sym: &mut Symbolizer) {
    let mut keys: Vec<(ObjectId, u64)> = input
        .window
        .stacks
        .iter()
        .flatten()
        .filter_map(|k| match *k {
            FrameKey::Object { object, addr } => Some((object, addr)),
            _ => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for group in keys.chunk_by(|a, b| a.0 == b.0) {
        // More addresses than the object's cache keeps would be looked up
        // twice: the builder's own pass does those.
        let Some(obj) = input.objects.get(&group[0].0) else {
            continue;
        };
        if group.len() > MAX_CACHED_ADDRESSES {
            continue;
        }
        for &(_, addr) in group {
            sym.object_frames(obj, addr);
        }
        sym.release_pages(obj);
    }
}

/// Symbolizes `input.window` into a [`Profile`].
pub fn build(input: &BuildInput<'_>, sym: &mut Symbolizer) -> Profile {
    let window = input.window;
    let mut b = Builder {
        input,
        sym,
        profile: Profile {
            start_ns: window.start.wall_ns,
            duration_ns: input.end.mono_ns.saturating_sub(window.start.mono_ns),
            period_ns: input.period_ns,
            ..Profile::default()
        },
        mapping_index: HashMap::new(),
        function_index: HashMap::new(),
        location_index: HashMap::new(),
    };
    symbolize_by_object(input, b.sym);
    for frames in window.stacks.iter() {
        let stack = frames.iter().map(|&k| b.location(k)).collect();
        b.profile.stacks.push(stack);
    }
    let mut process_index: HashMap<ProcId, u32> = HashMap::new();
    for (SampleKey { thread: key, stack }, mut count) in window.samples() {
        let Some(meta) = window.process(key.process) else {
            continue;
        };
        let next = b.profile.processes.len() as u32;
        let process = *process_index.entry(key.process).or_insert_with(|| {
            b.profile.processes.push(Arc::clone(meta));
            next
        });
        b.profile.samples.push(Sample {
            process,
            tid: key.tid,
            thread_name: Arc::clone(window.comm(key.comm)),
            cpu: key.cpu,
            go: key.go.map(|g| go_state(&g, meta, window)),
            stack: stack.0,
            count: count.count,
            times_ns: {
                for t in &mut count.times_ns {
                    *t = window.start.wall_of(*t);
                }
                count.times_ns
            },
        });
    }
    b.finish_mappings();
    // Samples taken just before the window started but read after it are
    // in it: widen the range so every timestamp falls inside.
    let end = window.start.wall_of(input.end.mono_ns);
    let (first, last) = b
        .profile
        .samples
        .iter()
        .flat_map(|s| s.times_ns.iter().copied())
        .fold((b.profile.start_ns, end), |(lo, hi), t| {
            (lo.min(t), hi.max(t + 1))
        });
    b.profile.start_ns = first;
    b.profile.duration_ns = last - first;
    b.profile
}

/// Objects referenced by `window`'s frames.
pub fn referenced_objects(window: &Window) -> HashSet<ObjectId> {
    window
        .stacks
        .iter()
        .flatten()
        .filter_map(|k| match k {
            FrameKey::Object { object, .. } => Some(*object),
            _ => None,
        })
        .collect()
}

/// A small hand-built profile for encoder tests: two mappings (kernel and
/// `/bin/app`), an inlined location, one process, two samples.
#[cfg(test)]
pub fn example() -> Profile {
    let m = |kind, name: &str, f| Mapping {
        kind,
        filename: name.into(),
        build_id: Some("abcd".into()),
        memory_start: 0x1000,
        memory_limit: 0x2000,
        file_offset: 0,
        has_functions: f,
        has_filenames: f,
        has_line_numbers: f,
        has_inline_frames: f,
        is_go: false,
        go_build_id: None,
    };
    let func = |name: &str| Function {
        name: name.into(),
        system_name: format!("_Z{name}").into(),
        filename: "a.c".into(),
        start_line: 3,
    };
    Profile {
        start_ns: 1_700_000_000_000_000_000,
        duration_ns: 10_000_000_000,
        period_ns: 10_101_010,
        mappings: vec![
            m(MappingKind::Kernel, "[kernel.kallsyms]", false),
            m(MappingKind::Object(ObjectId(1)), "/bin/app", true),
        ],
        functions: vec![func("inner"), func("outer"), func("main")],
        locations: vec![
            Location {
                mapping: 1,
                frame_type: FrameType::Native,
                address: 0x1100,
                lines: vec![
                    Line {
                        function: 0,
                        line: 10,
                    },
                    Line {
                        function: 1,
                        line: 20,
                    },
                ],
            },
            Location {
                mapping: 1,
                frame_type: FrameType::Native,
                address: 0x1200,
                lines: vec![Line {
                    function: 2,
                    line: 30,
                }],
            },
            Location {
                mapping: 0,
                frame_type: FrameType::Kernel,
                address: 0xffff_ffff_8100_0000,
                lines: vec![],
            },
        ],
        stacks: vec![vec![0, 1], vec![2, 0, 1]],
        processes: vec![Arc::new(ProcessMeta {
            id: ProcId(0),
            pid: 99,
            ns_pid: 99,
            exe_name: "app".into(),
            exe_path: "/bin/app".into(),
            start_time: 5,
            container_id: None,
            go: None,
        })],
        samples: vec![
            Sample {
                process: 0,
                tid: 100,
                thread_name: "worker".into(),
                cpu: 0,
                go: None,
                stack: 0,
                count: 3,
                times_ns: [1, 2, 3].into_iter().collect(),
            },
            Sample {
                process: 0,
                tid: 101,
                thread_name: "io".into(),
                cpu: 1,
                go: None,
                stack: 1,
                count: 2,
                times_ns: [4, 5].into_iter().collect(),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::objects::{Bytes, ObjectKind};

    #[test]
    fn recognises_rust_symbols() {
        assert!(is_rust_symbol("_ZN4core3fmt5write17h0123456789abcdefE"));
        assert!(is_rust_symbol("_RNvCskwGfYPst2Cb_3foo16example_function"));
        assert!(!is_rust_symbol("_ZNSt6vectorIiSaIiEE9push_backERKi"));
        assert!(!is_rust_symbol("_ZN3foo3barE"));
        assert!(!is_rust_symbol("main"));
    }

    fn meta() -> Arc<ProcessMeta> {
        Arc::new(ProcessMeta {
            id: ProcId(0),
            pid: 42,
            ns_pid: 42,
            exe_name: "test".into(),
            exe_path: "/proc/self/exe".into(),
            start_time: 1,
            container_id: None,
            go: None,
        })
    }

    /// Builds a profile of this test binary's own functions.
    #[test]
    fn symbolizes_own_binary_and_dedups_tables() {
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let obj = Arc::new(ObjectFile::from_bytes(
            ObjectId(7),
            "/proc/self/exe".into(),
            ObjectKind::Elf,
            Bytes::Owned(bytes),
        ));
        // Link-time address of a function in this binary.
        let data = object::File::parse(&**obj.bytes).unwrap();
        use object::{Object, ObjectSymbol};
        let addr = data
            .symbols()
            .find(|s| {
                s.name()
                    .is_ok_and(|n| n.contains("symbolizes_own_binary_and_dedups_tables"))
            })
            .map(|s| s.address())
            .expect("own symbol");
        let mut window = Window::new(Instant2 {
            wall_ns: 1_000,
            mono_ns: 10,
        });
        let p = meta();
        let comm = *b"t\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        let stack = [
            FrameKey::Object {
                object: ObjectId(7),
                addr,
            },
            FrameKey::Object {
                object: ObjectId(7),
                addr,
            },
            FrameKey::Unmapped(0x1234),
        ];
        let obs = |tid, time_ns| crate::aggregate::Observation {
            tid,
            cpu: 0,
            comm: &comm,
            time_ns,
            go: None,
        };
        window.add(&p, &obs(42, 20), &stack);
        window.add(&p, &obs(42, 30), &stack);
        window.add(&p, &obs(43, 40), &stack[1..]);
        let objects = HashMap::from([(ObjectId(7), Arc::clone(&obj))]);
        let input = BuildInput {
            window: &window,
            end: Instant2 {
                wall_ns: 2_000,
                mono_ns: 1_010,
            },
            period_ns: 10,
            objects: &objects,
        };
        let mut sym = Symbolizer::new();
        let profile = build(&input, &mut sym);
        assert_eq!(profile.sample_count(), 3);
        assert_eq!(profile.start_ns, 1_000);
        assert_eq!(profile.duration_ns, 1_000);
        assert_eq!(profile.samples.len(), 2);
        assert_eq!(profile.samples[0].times_ns.as_slice(), [1_010, 1_020]);
        // Two distinct locations, two mappings, one process.
        assert_eq!(profile.locations.len(), 2);
        assert_eq!(profile.mappings.len(), 2);
        assert_eq!(profile.processes.len(), 1);
        assert_eq!(profile.stacks, [vec![0, 0, 1], vec![0, 1]]);
        let loc = &profile.locations[0];
        assert!(!loc.lines.is_empty());
        let f = &profile.functions[loc.lines.last().unwrap().function as usize];
        assert!(
            f.name.contains("symbolizes_own_binary_and_dedups_tables"),
            "{f:?}"
        );
        // The unknown mapping has no functions; the object's has them.
        let unknown = &profile.mappings[profile.locations[1].mapping as usize];
        assert_eq!(&*unknown.filename, "[unknown]");
        assert!(!unknown.has_functions);
        let own = &profile.mappings[loc.mapping as usize];
        assert!(own.has_functions);
        assert!(own.build_id.is_some());
        // No duplicate functions.
        let set: HashSet<_> = profile.functions.iter().collect();
        assert_eq!(set.len(), profile.functions.len());
    }

    #[test]
    fn stack_marks_are_named_locations_under_the_unwind_mapping() {
        let mut window = Window::new(Instant2 {
            wall_ns: 1_000,
            mono_ns: 10,
        });
        let p = meta();
        let comm = *b"t\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        let obs = crate::aggregate::Observation {
            tid: 42,
            cpu: 0,
            comm: &comm,
            time_ns: 20,
            go: None,
        };
        window.add(
            &p,
            &obs,
            &[FrameKey::Unmapped(0x10), FrameKey::Mark(StackMark::BadRead)],
        );
        window.add(
            &p,
            &obs,
            &[FrameKey::Unmapped(0x20), FrameKey::Mark(StackMark::BadRead)],
        );
        window.add(&p, &obs, &[FrameKey::Mark(StackMark::Truncated)]);
        let input = BuildInput {
            window: &window,
            end: Instant2 {
                wall_ns: 2_000,
                mono_ns: 1_010,
            },
            period_ns: 10,
            objects: &HashMap::new(),
        };
        let profile = build(&input, &mut Symbolizer::new());
        let marks: Vec<&Location> = profile
            .locations
            .iter()
            .filter(|l| l.frame_type == FrameType::Mark)
            .collect();
        // One location per mark, shared by the stacks that end in it.
        assert_eq!(marks.len(), 2);
        for l in &marks {
            let m = &profile.mappings[l.mapping as usize];
            assert_eq!((&*m.filename, m.kind), ("[unwind]", MappingKind::Unwind));
            assert_eq!(l.lines.len(), 1);
        }
        let name = |l: &Location| &*profile.functions[l.lines[0].function as usize].name;
        let names: HashSet<&str> = marks.iter().map(|l| name(l)).collect();
        assert_eq!(names, HashSet::from(["[unwind: bad_read]", "[truncated]"]));
        assert_eq!(profile.stacks[0].last(), profile.stacks[1].last());
        assert_eq!(FrameType::Mark.as_str(), "abort-marker");
    }
}
