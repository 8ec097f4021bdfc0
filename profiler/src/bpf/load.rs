//! Loads the embedded BPF object, configures it (ring buffer and unwind
//! table sizes), loads the tail-called stages, and attaches the sampler to
//! a CPU-clock perf event on every online CPU plus the exec/exit raw
//! tracepoints. Dropping [`Loaded`] detaches everything.
//!
//! The loader gets no kernel BTF: Rust BPF has no CO-RE relocations, and raw
//! tracepoints attach by name, so the only BTF this daemon reads is the few
//! struct offsets of [`super::btf`]. aya's `EbpfLoader::new()` parses the
//! whole kernel BTF (~16 MiB of heap here) and `btf(None)` frees it at once;
//! a `tp_btf` attachment would need a second full parse, which was the
//! daemon's start-up memory peak.

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        PerfEvent, ProgramError, RawTracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use profiler_common::{Config, names, prog_slot};
use tracing::{debug, warn};

use crate::{bpf::maps::BpfMaps, config::Sampling};

/// The BPF object built by build.rs from `profiler-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler"));

/// Loaded and attached programs; detached on drop.
pub struct Loaded {
    ebpf: Ebpf,
    /// CPUs with an attached perf event.
    pub cpus: Vec<u32>,
    /// Whether exec/exit events are being delivered.
    pub process_events: bool,
    frequency: u64,
    /// The unwind-table arrays' sizes, if the unwind stage loaded (else
    /// every stack is walked by frame pointers).
    pub unwind: Option<UnwindCapacity>,
}

/// Entries of the unwind-table arrays, from `--unwind-table-memory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindCapacity {
    /// Rows (8 bytes each).
    pub rows: u32,
    /// Page entries (8 bytes each).
    pub pages: u32,
}

impl UnwindCapacity {
    /// Splits `bytes` between rows (15/16) and page entries (1/16): a page
    /// entry covers 256 bytes to 64 KiB of code, which takes a few to
    /// several hundred rows. `None` for 0 (table unwinding off).
    pub fn for_bytes(bytes: u64) -> Option<Self> {
        if bytes == 0 {
            return None;
        }
        let entries = |b: u64| u32::try_from((b / 8).max(1)).unwrap_or(u32::MAX);
        Some(Self {
            rows: entries(bytes / 16 * 15),
            pages: entries(bytes / 16),
        })
    }

    /// Bytes of the two arrays.
    pub fn bytes(&self) -> u64 {
        8 * (u64::from(self.rows) + u64::from(self.pages))
    }
}

impl Loaded {
    /// Loads, configures and attaches everything for `sampling`.
    pub fn load(sampling: &Sampling) -> Result<Self> {
        let t = std::time::Instant::now();
        let task_fsbase = match super::btf::task_fsbase(&sampling.btf) {
            Ok(off) => off.unwrap_or(0),
            Err(e) => {
                warn!("Go goroutine state unavailable: {e:#}");
                0
            }
        };
        debug!("kernel offsets read at {:?}", t.elapsed());
        let config = Config {
            filter_pids: u32::from(!sampling.pids.is_empty()),
            // Wake the reader when a quarter of the buffer is in use.
            wakeup_bytes: sampling.ring_buffer_size / 4,
            task_fsbase,
            reserved: 0,
        };
        let capacity = UnwindCapacity::for_bytes(sampling.unwind_table_memory);
        let mut loader = EbpfLoader::new();
        loader
            .btf(None)
            .override_global(names::CONFIG, &config, true)
            .map_max_entries(names::RING_BUFFER, sampling.ring_buffer_size);
        if let Some(c) = capacity {
            loader
                .map_max_entries(names::UNWIND_ROWS, c.rows)
                .map_max_entries(names::UNWIND_PAGES, c.pages);
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| anyhow!("cannot load the BPF object: {e}"))?;

        debug!("BPF object loaded at {:?}", t.elapsed());
        BpfMaps::fill_pid_filter(&mut ebpf, &sampling.pids)?;

        load_stages(&mut ebpf)?;
        let unwind = match capacity {
            Some(c) => match load_unwind_stage(&mut ebpf) {
                Ok(()) => Some(c),
                Err(e) => {
                    warn!("table-driven unwinding unavailable, frame pointers only: {e:#}");
                    None
                }
            },
            None => None,
        };
        debug!("BPF stages loaded at {:?}", t.elapsed());
        let process_events = match attach_process_events(&mut ebpf) {
            Ok(()) => true,
            Err(e) => {
                warn!(
                    "exec/exit tracking unavailable ({e:#}); mappings are re-read when an address is unknown"
                );
                false
            }
        };
        Ok(Self {
            ebpf,
            cpus: Vec::new(),
            process_events,
            frequency: sampling.frequency,
            unwind,
        })
    }

    /// Starts sampling: attaches the sampler to a CPU-clock perf event on
    /// every online CPU. Separate from [`Loaded::load`] so per-process maps
    /// can be filled first.
    pub fn attach(&mut self) -> Result<()> {
        self.cpus = attach_sampler(&mut self.ebpf, self.frequency)?;
        Ok(())
    }

    /// Typed access to the maps (the ring buffer can be taken once).
    pub fn maps(&mut self) -> BpfMaps<'_> {
        BpfMaps::new(&mut self.ebpf)
    }
}

fn program_error(name: &str, e: ProgramError) -> anyhow::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            debug!("verifier log for {name}:\n{verifier_log}");
            anyhow!(
                "the kernel rejected BPF program {name}: {io_error} (run with -vv for the verifier log)"
            )
        }
        other => anyhow!("BPF program {name}: {other}"),
    }
}

fn attach_sampler(ebpf: &mut Ebpf, frequency: u64) -> Result<Vec<u32>> {
    let prog: &mut PerfEvent = ebpf
        .program_mut(names::PROG_SAMPLE)
        .ok_or_else(|| anyhow!("BPF object has no program {}", names::PROG_SAMPLE))?
        .try_into()
        .map_err(|e| program_error(names::PROG_SAMPLE, e))?;
    prog.load()
        .map_err(|e| program_error(names::PROG_SAMPLE, e))?;
    let cpus = aya::util::online_cpus()
        .map_err(|(what, e)| anyhow!("cannot list online CPUs ({what}): {e}"))?;
    for &cpu in &cpus {
        prog.attach(
            PerfEventConfig::Software(SoftwareEvent::CpuClock),
            PerfEventScope::AllProcessesOneCpu { cpu },
            SamplePolicy::Frequency(frequency),
            false,
        )
        .map_err(|e| {
            anyhow!(
                "cannot open a CPU-clock perf event on CPU {cpu}: {e} \
                 (is CONFIG_PERF_EVENTS enabled and kernel.perf_event_paranoid permissive?)"
            )
        })?;
    }
    Ok(cpus)
}

/// Loads the tail-called stages and puts them in the `PROGS` array.
fn load_stages(ebpf: &mut Ebpf) -> Result<()> {
    load_stage(ebpf, names::PROG_GO, prog_slot::GO)
}

/// Loads the unwind stage (which needs `bpf_task_pt_regs`, Linux 5.15+).
fn load_unwind_stage(ebpf: &mut Ebpf) -> Result<()> {
    load_stage(ebpf, names::PROG_UNWIND, prog_slot::UNWIND)
}

fn load_stage(ebpf: &mut Ebpf, name: &str, slot: u32) -> Result<()> {
    let fd = {
        let prog: &mut PerfEvent = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("BPF object has no program {name}"))?
            .try_into()
            .map_err(|e| program_error(name, e))?;
        prog.load().map_err(|e| program_error(name, e))?;
        if let Ok(info) = prog.info() {
            debug!(
                "BPF stage {name}: {} instructions, {} processed by the verifier",
                info.size_translated().unwrap_or(0) / 8,
                info.verified_instruction_count().unwrap_or(0)
            );
        }
        prog.fd()
            .map_err(|e| program_error(name, e))?
            .try_clone()
            .context("cannot duplicate a program fd")?
    };
    BpfMaps::set_stage(ebpf, slot, &fd)
}

fn attach_process_events(ebpf: &mut Ebpf) -> Result<()> {
    for (name, tracepoint) in [
        (names::PROG_EXEC, "sched_process_exec"),
        (names::PROG_EXIT, "sched_process_exit"),
    ] {
        let prog: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("BPF object has no program {name}"))?
            .try_into()
            .map_err(|e| program_error(name, e))?;
        prog.load().map_err(|e| program_error(name, e))?;
        prog.attach(tracepoint)
            .map_err(|e| program_error(name, e))?;
    }
    Ok(())
}
