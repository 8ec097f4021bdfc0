//! The unwind maps as a [`TableStore`]: the row and page arrays are
//! `BPF_F_MMAPABLE`, so tables are copied into a shared mapping of them
//! (one memcpy per table instead of a syscall per row); table infos and
//! per-process mapping lists go through ordinary map updates. Also the
//! per-CPU outcome counters, read for the summary.

use std::{
    marker::PhantomData,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
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

/// A shared read-write mapping of a `BPF_F_MMAPABLE` array of `T`.
struct MmapArray<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    bytes: usize,
    /// Keeps the map (and so the mapping's object) alive.
    _map: MapData,
    _t: PhantomData<T>,
}

// SAFETY: the mapping is plain memory owned by this value; access goes
// through `&self`/`&mut self`.
unsafe impl<T: Copy + Send> Send for MmapArray<T> {}

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
        let bytes = (len * size_of::<T>()).next_multiple_of(page_size());
        // SAFETY: a shared mapping of the map's fd; the kernel checks that
        // the map is mmapable and `bytes` within it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!(
                "cannot map BPF array {name}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| anyhow!("mmap returned null"))?,
            len,
            bytes,
            _map: map,
            _t: PhantomData,
        })
    }

    fn slice_mut(&mut self) -> &mut [T] {
        // SAFETY: `len` elements of `T` are mapped; `&mut self` is unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn slice(&self) -> &[T] {
        // SAFETY: as above, shared.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn write(&mut self, at: u32, data: &[T]) -> Result<()> {
        let at = at as usize;
        let dst = self
            .slice_mut()
            .get_mut(at..at + data.len())
            .ok_or_else(|| anyhow!("write past the array"))?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn read(&self, at: u32, out: &mut [T]) -> Result<()> {
        let at = at as usize;
        let src = self
            .slice()
            .get(at..at + out.len())
            .ok_or_else(|| anyhow!("read past the array"))?;
        out.copy_from_slice(src);
        Ok(())
    }
}

impl<T: Copy> Drop for MmapArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
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
