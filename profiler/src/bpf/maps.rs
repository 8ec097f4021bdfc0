//! Typed access to the BPF maps: the only code that knows their names and
//! value types (the unwind maps' are in `unwind_maps`).

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::ProgramFd,
};
use profiler_common::{Counter, ProcInfo, golang::GoOffsets, names, proc_flags};
use tracing::{debug, warn};

use super::unwind_maps::{OutcomeMap, UnwindMaps};
use crate::{
    process::{ProcessHooks, ProcessMeta, maps::AddressSpace},
    unwind::{manager, service::UnwindHandle},
};

/// Borrowed view of a loaded object's maps.
pub struct BpfMaps<'a> {
    ebpf: &'a mut Ebpf,
}

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters(pub [u64; Counter::COUNT as usize]);

impl KernelCounters {
    /// One counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    /// Per-counter difference `self - earlier`.
    pub fn since(&self, earlier: &KernelCounters) -> KernelCounters {
        let mut out = *self;
        for (o, e) in out.0.iter_mut().zip(earlier.0) {
            *o = o.saturating_sub(e);
        }
        out
    }
}

/// The per-CPU counter array, owned.
pub struct CounterMap(PerCpuArray<MapData, u64>);

impl CounterMap {
    /// Sums every counter over CPUs.
    pub fn read(&self) -> Result<KernelCounters> {
        let mut out = KernelCounters::default();
        for c in Counter::ALL {
            let per_cpu = self
                .0
                .get(&(c as u32), 0)
                .map_err(|e| anyhow!("cannot read BPF counter {}: {e}", c.name()))?;
            out.0[c as usize] = per_cpu.iter().sum();
        }
        Ok(out)
    }
}

/// The per-process BPF state (`PROCS`) and the Go offsets it points into
/// (`GO_OFFSETS`), kept in step with the process tracker; and, when table
/// unwinding is on, each process's mappings sent to the unwind thread
/// (which owns the `UNWIND_*` maps).
pub struct ProcTable {
    procs: HashMap<MapData, u32, ProcInfo>,
    offsets: Array<MapData, GoOffsets>,
    /// Offsets already in `GO_OFFSETS`, by index.
    known: Vec<GoOffsets>,
    unwind: Option<UnwindHandle>,
    /// Whether Go processes get goroutine state (`--no-go-state` clears it).
    go_state: bool,
}

impl ProcTable {
    /// Sends each process's mappings to the unwind thread from now on.
    pub fn set_unwinder(&mut self, unwind: UnwindHandle) {
        self.unwind = Some(unwind);
    }

    /// Enables or disables goroutine state for processes seen from now on.
    pub fn set_go_state(&mut self, on: bool) {
        self.go_state = on;
    }

    /// The index of `o` in `GO_OFFSETS`, adding it if new.
    fn offsets_index(&mut self, o: &GoOffsets) -> Option<u32> {
        if let Some(i) = self.known.iter().position(|k| k == o) {
            return Some(i as u32);
        }
        let i = self.known.len() as u32;
        if i >= self.offsets.len() {
            warn!("more distinct Go runtime layouts than the BPF table holds ({i})");
            return None;
        }
        if let Err(e) = self.offsets.set(i, *o, 0) {
            warn!("cannot store Go offsets in BPF: {e}");
            return None;
        }
        self.known.push(*o);
        Some(i)
    }
}

impl ProcessHooks for ProcTable {
    fn started(&mut self, meta: &ProcessMeta) {
        let Some(go) = meta.go.as_ref().filter(|_| self.go_state) else {
            // A pid reused by a process that is not Go.
            let _ = self.procs.remove(&meta.pid);
            return;
        };
        let Some(index) = self.offsets_index(&go.offsets) else {
            return;
        };
        let info = ProcInfo {
            flags: proc_flags::GO,
            go_offsets: index,
            go_tls: i32::try_from(go.tls).unwrap_or(0),
            reserved: 0,
        };
        match self.procs.insert(meta.pid, info, 0) {
            Ok(()) => debug!("pid {}: {} goroutine state enabled", meta.pid, go.version),
            Err(e) => warn!("pid {}: cannot enable goroutine state: {e}", meta.pid),
        }
    }

    fn mappings(&mut self, meta: &ProcessMeta, space: &AddressSpace) {
        if let Some(u) = &self.unwind
            && !space.is_empty()
        {
            u.set_process(meta.pid, manager::specs(space));
        }
    }

    fn ended(&mut self, pid: u32) {
        let _ = self.procs.remove(&pid);
        if let Some(u) = &self.unwind {
            u.remove_process(pid);
        }
    }
}

impl<'a> BpfMaps<'a> {
    /// Takes the per-process tables (once).
    pub fn take_proc_table(&mut self) -> Result<ProcTable> {
        let mut take = |name: &str| {
            self.ebpf
                .take_map(name)
                .ok_or_else(|| anyhow!("BPF map {name} already taken"))
        };
        let procs = HashMap::try_from(take(names::PROCS)?)
            .map_err(|e| anyhow!("BPF map {}: {e}", names::PROCS))?;
        let offsets = Array::try_from(take(names::GO_OFFSETS)?)
            .map_err(|e| anyhow!("BPF map {}: {e}", names::GO_OFFSETS))?;
        Ok(ProcTable {
            procs,
            offsets,
            known: Vec::new(),
            unwind: None,
            go_state: true,
        })
    }

    /// Takes the unwind tables and mapping lists (once), for the unwind
    /// thread.
    pub fn take_unwind_maps(&mut self) -> Result<UnwindMaps> {
        UnwindMaps::take(self.ebpf)
    }

    /// Takes the unwind outcome counters (once).
    pub fn take_unwind_outcomes(&mut self) -> Result<OutcomeMap> {
        OutcomeMap::take(self.ebpf)
    }

    pub(crate) fn new(ebpf: &'a mut Ebpf) -> Self {
        Self { ebpf }
    }

    /// Takes the ring buffer (once).
    pub fn take_ring_buffer(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(names::RING_BUFFER)
            .ok_or_else(|| anyhow!("BPF ring buffer {} already taken", names::RING_BUFFER))?;
        RingBuf::try_from(map).map_err(|e| anyhow!("BPF map {}: {e}", names::RING_BUFFER))
    }

    /// Takes the counter array (once).
    pub fn take_counters(&mut self) -> Result<CounterMap> {
        let map = self
            .ebpf
            .take_map(names::COUNTERS)
            .ok_or_else(|| anyhow!("BPF counters {} already taken", names::COUNTERS))?;
        PerCpuArray::try_from(map)
            .map(CounterMap)
            .map_err(|e| anyhow!("BPF map {}: {e}", names::COUNTERS))
    }

    /// Puts a loaded program in slot `slot` of the tail-call array.
    pub(crate) fn set_stage(ebpf: &mut Ebpf, slot: u32, fd: &ProgramFd) -> Result<()> {
        let map = ebpf
            .map_mut(names::PROGS)
            .ok_or_else(|| anyhow!("BPF object has no map {}", names::PROGS))?;
        let mut progs =
            ProgramArray::try_from(map).map_err(|e| anyhow!("BPF map {}: {e}", names::PROGS))?;
        progs
            .set(slot, fd, 0)
            .map_err(|e| anyhow!("cannot install BPF stage {slot}: {e}"))
    }

    /// Puts `pids` in the pid filter (before the sampler is attached).
    pub(crate) fn fill_pid_filter(ebpf: &mut Ebpf, pids: &[u32]) -> Result<()> {
        let map = ebpf
            .map_mut(names::PID_FILTER)
            .ok_or_else(|| anyhow!("BPF object has no map {}", names::PID_FILTER))?;
        let mut filter: HashMap<_, u32, u8> =
            HashMap::try_from(map).map_err(|e| anyhow!("BPF map {}: {e}", names::PID_FILTER))?;
        for &pid in pids {
            filter
                .insert(pid, 1, 0)
                .map_err(|e| anyhow!("cannot add pid {pid} to the BPF filter: {e}"))?;
        }
        Ok(())
    }
}
