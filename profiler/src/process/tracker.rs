//! Process lifecycle: which process instance a pid names right now, its
//! metadata and executable mappings, and the translation of its user
//! addresses into [`FrameKey`]s.
//!
//! A pid is read from /proc the first time a sample names it. Exec events
//! drop the state (the next sample re-reads the new image); exit events mark
//! it, and a later sample for that pid checks the start time to tell the
//! process's remaining threads from a new process that reused the pid. An
//! address outside every known mapping (dlopen, new JIT code) triggers a
//! rate-limited re-read of the maps.

use hashbrown::HashMap;
use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use procfs::process::{MemoryMap, Process};
use tracing::debug;

use super::{
    FrameKey, ProcId, ProcessHooks, ProcessMeta, container,
    maps::{AddressSpace, Mapping, Resolver, Target},
    objects::{Bytes, ObjectFile, ObjectId, ObjectKind, ObjectRegistry},
};
use crate::metrics::{self, Metrics};

/// Minimum time between two re-reads of one process's maps.
const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// Windows a process that was not sampled stays tracked.
const KEEP_IDLE_WINDOWS: u64 = 3;

struct ProcState {
    meta: Arc<ProcessMeta>,
    space: AddressSpace,
    /// An exit event arrived for the leader.
    exited: bool,
    /// /proc could be read when the state was built.
    readable: bool,
    last_refresh: Instant,
    last_window: u64,
}

/// Tracks every sampled process and the objects they map.
pub struct ProcessTracker {
    procs: HashMap<u32, ProcState>,
    registry: ObjectRegistry,
    vdso: Option<Arc<ObjectFile>>,
    next_proc: u32,
    window: u64,
    metrics: Arc<Metrics>,
    hooks: Option<Box<dyn ProcessHooks>>,
}

struct RegistryResolver<'a> {
    pid: u32,
    registry: &'a mut ObjectRegistry,
    vdso: Option<Arc<ObjectFile>>,
    metrics: &'a Metrics,
}

impl Resolver for RegistryResolver<'_> {
    fn file(&mut self, map: &MemoryMap, path: &Path) -> Result<Arc<ObjectFile>, String> {
        let (start, end) = map.address;
        self.registry
            .open_mapped(self.pid, start, end, path)
            .map_err(|e| {
                metrics::inc(&self.metrics.objects_unreadable);
                debug!("pid {}: {e}", self.pid);
                e.to_string()
            })
    }

    fn vdso(&mut self) -> Option<Arc<ObjectFile>> {
        self.vdso.clone()
    }
}

/// Copies this process's vDSO image: the kernel maps the same one into
/// every (64-bit) process.
fn load_vdso(id: ObjectId) -> Option<ObjectFile> {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let mut bytes = vec![0u8; usize::try_from(end - start).ok()?];
    std::fs::File::open("/proc/self/mem")
        .ok()?
        .read_exact_at(&mut bytes, start)
        .ok()?;
    Some(ObjectFile::from_bytes(
        id,
        "[vdso]".into(),
        ObjectKind::Vdso,
        Bytes::Owned(bytes),
    ))
}

fn base_name(path: &str) -> &str {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    path.rsplit('/').next().unwrap_or(path)
}

/// What /proc says about a process.
struct ProcInfo {
    start_time: u64,
    ns_pid: u32,
    exe_path: String,
    exe_name: String,
    maps: Vec<MemoryMap>,
}

fn read_proc(pid: u32) -> procfs::ProcResult<ProcInfo> {
    let p = Process::new(pid as i32)?;
    let stat = p.stat()?;
    let exe_path = p
        .exe()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ns_pid = p
        .status()
        .ok()
        .and_then(|s| s.nspid)
        .and_then(|v| v.last().copied())
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(pid);
    let maps = p.maps()?.0;
    let exe_name = if exe_path.is_empty() {
        stat.comm.clone()
    } else {
        base_name(&exe_path).to_owned()
    };
    Ok(ProcInfo {
        start_time: stat.starttime,
        ns_pid,
        exe_path,
        exe_name,
        maps,
    })
}

fn start_time(pid: u32) -> Option<u64> {
    Process::new(pid as i32)
        .ok()?
        .stat()
        .ok()
        .map(|s| s.starttime)
}

impl ProcessTracker {
    /// A tracker with no processes; loads the vDSO image.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        let mut registry = ObjectRegistry::default();
        let vdso_id = registry.allocate_id();
        let vdso = load_vdso(vdso_id).map(Arc::new);
        if vdso.is_none() {
            debug!("no vDSO image: [vdso] frames stay unsymbolized");
        }
        Self {
            procs: HashMap::new(),
            registry,
            vdso,
            next_proc: 0,
            window: 0,
            metrics,
            hooks: None,
        }
    }

    /// Reports process starts and ends to `hooks` from now on.
    pub fn set_hooks(&mut self, hooks: Box<dyn ProcessHooks>) {
        self.hooks = Some(hooks);
    }

    fn ended(&mut self, pid: u32) {
        if let Some(h) = &mut self.hooks {
            h.ended(pid);
        }
    }

    /// `pid` exec'd: forget its old image.
    pub fn on_exec(&mut self, pid: u32) {
        metrics::inc(&self.metrics.execs);
        if self.procs.remove(&pid).is_some() {
            self.ended(pid);
        }
    }

    /// The leader of `pid` exited.
    pub fn on_exit(&mut self, pid: u32) {
        metrics::inc(&self.metrics.exits);
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exited = true;
            self.ended(pid);
        }
    }

    /// Number of tracked processes.
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Whether no process is tracked.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Number of cached object files.
    pub fn objects_cached(&self) -> usize {
        self.registry.len()
    }

    fn new_state(&mut self, pid: u32, comm: &[u8]) -> ProcState {
        let id = ProcId(self.next_proc);
        self.next_proc += 1;
        metrics::inc(&self.metrics.processes);
        let (info, readable) = match read_proc(pid) {
            Ok(info) => (info, true),
            Err(e) => {
                metrics::inc(&self.metrics.processes_unreadable);
                debug!("pid {pid} unreadable: {e}");
                let name = String::from_utf8_lossy(comm).into_owned();
                (
                    ProcInfo {
                        start_time: 0,
                        ns_pid: pid,
                        exe_path: String::new(),
                        exe_name: name,
                        maps: Vec::new(),
                    },
                    false,
                )
            }
        };
        let space = self.build_space(pid, &info.maps);
        let exe = info
            .exe_path
            .strip_suffix(" (deleted)")
            .unwrap_or(&info.exe_path);
        let go = space.mappings().iter().find_map(|m| match &m.target {
            Target::Object { object, .. }
                if object
                    .path
                    .strip_suffix(" (deleted)")
                    .unwrap_or(&object.path)
                    == exe =>
            {
                object.go_binary()
            }
            _ => None,
        });
        ProcState {
            meta: Arc::new(ProcessMeta {
                id,
                pid,
                ns_pid: info.ns_pid,
                exe_name: Arc::from(info.exe_name),
                exe_path: Arc::from(info.exe_path),
                start_time: info.start_time,
                container_id: readable
                    .then(|| container::of_pid(pid))
                    .flatten()
                    .map(Arc::from),
                go,
            }),
            space,
            exited: false,
            readable,
            last_refresh: Instant::now(),
            last_window: self.window,
        }
    }

    fn build_space(&mut self, pid: u32, maps: &[MemoryMap]) -> AddressSpace {
        let mut resolver = RegistryResolver {
            pid,
            registry: &mut self.registry,
            vdso: self.vdso.clone(),
            metrics: &self.metrics,
        };
        AddressSpace::build(maps, &mut resolver)
    }

    /// Makes sure `pid`'s state describes the process running now.
    fn ensure(&mut self, pid: u32, comm: &[u8]) {
        let stale = match self.procs.get(&pid) {
            None => true,
            // Threads may outlive the leader's exit; a different start time
            // means the pid was reused.
            Some(p) if p.exited => start_time(pid) != Some(p.meta.start_time),
            Some(_) => false,
        };
        if stale {
            let state = self.new_state(pid, comm);
            if let Some(h) = &mut self.hooks {
                h.started(&state.meta);
                h.mappings(&state.meta, &state.space);
            }
            self.procs.insert(pid, state);
        } else if let Some(p) = self.procs.get_mut(&pid) {
            p.exited = false;
        }
    }

    /// Reads `pid` now (it has not been sampled yet).
    pub fn prime(&mut self, pid: u32) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        self.ensure(pid, comm.trim_end().as_bytes());
    }

    /// Translates the user addresses of one sample of `pid` (already
    /// adjusted to point into the call instruction) into `out`, and returns
    /// the process's metadata.
    pub fn translate_user(
        &mut self,
        pid: u32,
        comm: &[u8],
        addrs: &[u64],
        out: &mut Vec<FrameKey>,
    ) -> Arc<ProcessMeta> {
        self.ensure(pid, comm);
        let window = self.window;
        let start = out.len();
        let missed = {
            let state = self.procs.get_mut(&pid).expect("ensured above");
            state.last_window = window;
            translate(state, addrs, out)
        };
        if missed {
            let state = self.procs.get(&pid).expect("ensured above");
            if state.readable && state.last_refresh.elapsed() >= REFRESH_EVERY {
                metrics::inc(&self.metrics.maps_refreshes);
                if let Ok(p) = Process::new(pid as i32)
                    && let Ok(maps) = p.maps()
                {
                    let space = self.build_space(pid, &maps.0);
                    let state = self.procs.get_mut(&pid).expect("ensured above");
                    if let Some(h) = &mut self.hooks {
                        h.mappings(&state.meta, &space);
                    }
                    state.space = space;
                    state.last_refresh = Instant::now();
                    out.truncate(start);
                    translate(state, addrs, out);
                } else if let Some(state) = self.procs.get_mut(&pid) {
                    state.last_refresh = Instant::now();
                }
            }
        }
        let unmapped = out[start..]
            .iter()
            .filter(|f| matches!(f, FrameKey::Unmapped(_)))
            .count();
        metrics::add(&self.metrics.frames_unmapped, unmapped as u64);
        Arc::clone(&self.procs[&pid].meta)
    }

    /// The object with id `id`, if still cached.
    pub fn object(&self, id: ObjectId) -> Option<Arc<ObjectFile>> {
        if let Some(v) = &self.vdso
            && v.id == id
        {
            return Some(Arc::clone(v));
        }
        self.registry.get(id)
    }

    /// Ends a window: forgets processes that exited or went quiet and are
    /// gone, and objects nobody maps any more.
    pub fn end_window(&mut self) {
        self.window += 1;
        let window = self.window;
        let mut gone = Vec::new();
        self.procs.retain(|&pid, p| {
            if p.last_window + KEEP_IDLE_WINDOWS > window {
                return true;
            }
            // Quiet for a while: keep it only if it is still the same process.
            let keep = !p.exited && start_time(pid) == Some(p.meta.start_time);
            if !keep {
                gone.push(pid);
            }
            keep
        });
        for pid in gone {
            self.ended(pid);
        }
        self.registry.collect_garbage();
    }
}

/// Translates `addrs` with `state`'s mappings; true if any address missed.
fn translate(state: &ProcState, addrs: &[u64], out: &mut Vec<FrameKey>) -> bool {
    let mut missed = false;
    // A caller is usually in the same mapping as its callee: check that one
    // before searching (under perf on the 999 Hz `cpu` bench workload,
    // translation was 27% of the daemon's steady CPU, this search 11%).
    let mut last: Option<&Mapping> = None;
    for &addr in addrs {
        let found = match last {
            Some(m) if m.contains(addr) => Some(m),
            _ => state.space.find(addr),
        };
        last = found.or(last);
        let key = match found {
            Some(m) => match &m.target {
                Target::Object { object, bias } => FrameKey::Object {
                    object: object.id,
                    addr: addr.wrapping_sub(*bias),
                },
                Target::Anonymous => FrameKey::Jit {
                    process: state.meta.id,
                    addr,
                },
                Target::Unreadable { .. } => FrameKey::Unmapped(addr),
            },
            None => {
                missed = true;
                FrameKey::Unmapped(addr)
            }
        };
        out.push(key);
    }
    missed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names() {
        assert_eq!(base_name("/usr/bin/python3.11"), "python3.11");
        assert_eq!(base_name("/tmp/a.out (deleted)"), "a.out");
        assert_eq!(base_name("sh"), "sh");
    }

    #[test]
    fn loads_the_vdso() {
        let vdso = load_vdso(ObjectId(0)).expect("x86_64 Linux has a vDSO");
        assert_eq!(vdso.kind, ObjectKind::Vdso);
        assert!(vdso.segments.iter().any(|s| s.executable));
    }

    #[test]
    fn translates_own_process() {
        let mut t = ProcessTracker::new(Arc::default());
        let pid = std::process::id();
        let here = translates_own_process as *const () as u64;
        let mut out = Vec::new();
        let meta = t.translate_user(pid, b"test", &[here, 8], &mut out);
        assert_eq!(meta.pid, pid);
        assert!(!meta.exe_name.is_empty());
        assert!(matches!(out[0], FrameKey::Object { .. }), "{out:?}");
        assert_eq!(out[1], FrameKey::Unmapped(8));
        // Frames moving between mappings (this binary, libc, nowhere)
        // translate as each does alone.
        let libc_fn = libc::getpid as *const () as u64;
        let mixed = [here, here + 1, libc_fn, 8, libc_fn, here, 8, here];
        let mut out = Vec::new();
        t.translate_user(pid, b"test", &mixed, &mut out);
        let alone: Vec<FrameKey> = mixed
            .iter()
            .map(|&a| {
                let mut one = Vec::new();
                t.translate_user(pid, b"test", &[a], &mut one);
                one[0]
            })
            .collect();
        assert_eq!(out, alone);
        let object = |k: &FrameKey| match k {
            FrameKey::Object { object, .. } => Some(*object),
            _ => None,
        };
        assert_ne!(object(&out[0]), object(&out[2]), "{out:?}");
        assert!(object(&out[2]).is_some(), "{out:?}");
        // Same process, same instance.
        let again = t.translate_user(pid, b"test", &[here], &mut Vec::new());
        assert_eq!(again.id, meta.id);
        // An exec gives a new instance.
        t.on_exec(pid);
        let after = t.translate_user(pid, b"test", &[here], &mut Vec::new());
        assert_ne!(after.id, meta.id);
        // An exit of a still-running pid keeps the instance (same start time).
        t.on_exit(pid);
        let still = t.translate_user(pid, b"test", &[here], &mut Vec::new());
        assert_eq!(still.id, after.id);
    }

    #[test]
    fn vanished_process_keeps_its_comm() {
        let mut t = ProcessTracker::new(Arc::default());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut out = Vec::new();
        let meta = t.translate_user(pid, b"true", &[0x401000], &mut out);
        assert_eq!(&*meta.exe_name, "true");
        assert_eq!(out, [FrameKey::Unmapped(0x401000)]);
    }
}
