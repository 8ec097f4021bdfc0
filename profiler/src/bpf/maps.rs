//! Typed access to the BPF maps: the only code that knows their names and
//! value types.

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::ProgramFd,
};
use profiler_common::{Counter, names};

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

impl<'a> BpfMaps<'a> {
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
