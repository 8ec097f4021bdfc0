//! The unwind maps as a [`TableStore`]: the row and page arrays are
//! `BPF_F_MMAPABLE`, so tables are copied into a shared mapping of the
//! pages they cover (one memcpy per table instead of a syscall per row); table infos and
//! per-process mapping lists go through ordinary map updates. Also the
//! per-CPU outcome counters, read for the summary.

use std::{
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{Result, anyhow, bail, ensure};
use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
};
use profiler_common::{
    names,
    unwind::{Outcome, PageEntry, ProcMappings, Row, TableInfo},
};

use crate::unwind::manager::{StoreCapacity, TableStore};

/// A `BPF_F_MMAPABLE` array of `T`, written and read through a shared
/// mapping of just the pages an access covers, made for that access. The
/// kernel maps every page of a mapping at mmap time, so a mapping of the
/// whole array would put all of it (64 MiB by default) in the daemon's RSS
/// for as long as it lives; a table is written once, so the mmap per access
/// costs nothing that matters.
struct MmapArray<T: Copy> {
    map: MapData,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Copy> MmapArray<T> {
    fn new(map: MapData, name: &str) -> Result<Self> {
        let info = map.info().map_err(|e| anyhow!("BPF map {name}: {e}"))?;
        let len = info.max_entries() as usize;
        ensure!(
            info.value_size() as usize == size_of::<T>(),
            "BPF map {name}: values of {} bytes, expected {}",
            info.value_size(),
            size_of::<T>()
        );
        let array = Self {
            map,
            len,
            _t: PhantomData,
        };
        // Fail at start, not at the first table, if it cannot be mapped.
        array
            .with_window(0, len.min(1), |_| {})
            .map_err(|e| anyhow!("cannot map BPF array {name}: {e}"))?;
        Ok(array)
    }

    /// Runs `f` on elements `at..at + n` through a mapping of their pages.
    fn with_window<R>(&self, at: usize, n: usize, f: impl FnOnce(&mut [T]) -> R) -> Result<R> {
        let size = size_of::<T>();
        let end = at
            .checked_add(n)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| anyhow!("access past the array"))?;
        if n == 0 {
            return Ok(f(&mut []));
        }
        let page = procfs::page_size() as usize;
        let first = at * size / page * page;
        let bytes = (end * size).next_multiple_of(page) - first;
        // SAFETY: a shared mapping of the map's fd at a page-aligned offset;
        // the kernel checks that the map is mmapable and the range within it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.map.fd().as_fd().as_raw_fd(),
                libc::off_t::try_from(first)?,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("{}", std::io::Error::last_os_error());
        }
        // SAFETY: the mapping covers bytes `first..first + bytes` of the
        // array, so elements `at..end` start `at * size - first` bytes in
        // (aligned: `first` is a multiple of the page size, hence of
        // `size`'s alignment); it is ours alone until the munmap below.
        let out = unsafe {
            let base = ptr.cast::<u8>().add(at * size - first).cast::<T>();
            f(std::slice::from_raw_parts_mut(base, n))
        };
        // SAFETY: the mapping made above, unmapped once.
        unsafe { libc::munmap(ptr, bytes) };
        Ok(out)
    }

    fn write(&mut self, at: u32, data: &[T]) -> Result<()> {
        self.with_window(at as usize, data.len(), |dst| dst.copy_from_slice(data))
    }

    fn read(&self, at: u32, out: &mut [T]) -> Result<()> {
        self.with_window(at as usize, out.len(), |src| out.copy_from_slice(src))
    }
}

/// The unwind tables and mapping lists in BPF.
pub struct UnwindMaps {
    rows: MmapArray<Row>,
    pages: MmapArray<PageEntry>,
    tables: Array<MapData, TableInfo>,
    procs: HashMap<MapData, u32, ProcMappings>,
    tables_len: u32,
}

impl UnwindMaps {
    /// Takes the unwind maps from `ebpf` (once) and maps the arrays.
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("BPF map {name} already taken"))
        };
        let array = |map: Map, name: &str| match map {
            Map::Array(data) => Ok(data),
            _ => Err(anyhow!("BPF map {name} is not an array")),
        };
        let rows = MmapArray::new(
            array(take(names::UNWIND_ROWS)?, names::UNWIND_ROWS)?,
            names::UNWIND_ROWS,
        )?;
        let pages = MmapArray::new(
            array(take(names::UNWIND_PAGES)?, names::UNWIND_PAGES)?,
            names::UNWIND_PAGES,
        )?;
        let tables: Array<MapData, TableInfo> = Array::try_from(take(names::UNWIND_TABLES)?)
            .map_err(|e| anyhow!("BPF map {}: {e}", names::UNWIND_TABLES))?;
        let procs = HashMap::try_from(take(names::UNWIND_PROCS)?)
            .map_err(|e| anyhow!("BPF map {}: {e}", names::UNWIND_PROCS))?;
        let tables_len = tables.len();
        Ok(Self {
            rows,
            pages,
            tables,
            procs,
            tables_len,
        })
    }
}

impl TableStore for UnwindMaps {
    fn capacity(&self) -> StoreCapacity {
        StoreCapacity {
            rows: self.rows.len as u32,
            pages: self.pages.len as u32,
            tables: self.tables_len,
        }
    }

    fn write_rows(&mut self, at: u32, rows: &[Row]) -> Result<()> {
        self.rows.write(at, rows)
    }

    fn read_rows(&self, at: u32, out: &mut [Row]) -> Result<()> {
        self.rows.read(at, out)
    }

    fn write_pages(&mut self, at: u32, pages: &[PageEntry]) -> Result<()> {
        self.pages.write(at, pages)
    }

    fn read_pages(&self, at: u32, out: &mut [PageEntry]) -> Result<()> {
        self.pages.read(at, out)
    }

    fn set_table(&mut self, id: u32, info: &TableInfo) -> Result<()> {
        self.tables
            .set(id, *info, 0)
            .map_err(|e| anyhow!("table {id}: {e}"))
    }

    fn set_process(&mut self, pid: u32, list: &ProcMappings) -> Result<()> {
        self.procs.insert(pid, *list, 0).map_err(|e| anyhow!("{e}"))
    }

    fn remove_process(&mut self, pid: u32) {
        let _ = self.procs.remove(&pid);
    }
}

/// Final outcomes of table-driven walks, summed over CPUs, by
/// [`Outcome`] value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts(pub [u64; Outcome::ALL.len()]);

impl OutcomeCounts {
    /// Per-outcome difference `self - earlier`.
    pub fn since(&self, earlier: &OutcomeCounts) -> OutcomeCounts {
        let mut out = *self;
        for (o, e) in out.0.iter_mut().zip(earlier.0) {
            *o = o.saturating_sub(e);
        }
        out
    }

    /// Walks counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// The per-CPU outcome array, owned.
pub struct OutcomeMap(PerCpuArray<MapData, u64>);

impl OutcomeMap {
    /// Takes it from `ebpf` (once).
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let map = ebpf
            .take_map(names::UNWIND_OUTCOMES)
            .ok_or_else(|| anyhow!("BPF map {} already taken", names::UNWIND_OUTCOMES))?;
        PerCpuArray::try_from(map)
            .map(Self)
            .map_err(|e| anyhow!("BPF map {}: {e}", names::UNWIND_OUTCOMES))
    }

    /// Sums every outcome over CPUs.
    pub fn read(&self) -> Result<OutcomeCounts> {
        let mut out = OutcomeCounts::default();
        for o in Outcome::ALL {
            let per_cpu = self
                .0
                .get(&(o as u32), 0)
                .map_err(|e| anyhow!("cannot read unwind outcome {}: {e}", o.name()))?;
            out.0[o as usize] = per_cpu.iter().sum();
        }
        Ok(out)
    }
}
