//! The unwind tables of the profiled processes, kept in step with the
//! process tracker: one table per file (keyed by build id, else file
//! identity), compiled on first need, shared by every process that maps the
//! file, written into the shared row and page arrays, and freed when the
//! last process using it is gone; and one mapping list per process.
//!
//! [`TableManager`] is the bookkeeping only; it writes through a
//! [`TableStore`] (the BPF maps in the daemon, vectors in tests) and runs on
//! the unwind thread (`service`), never on the ring-buffer drain path.
//! A process's list is written once every table it needs is in; until then
//! (if a table has to be compiled) it gets a list that says "frame
//! pointers" for every mapping, so even those samples are walked, and
//! their failures reported, by the BPF walker. A file whose table does not
//! fit the budget, or that has no usable call-frame information, is walked
//! by frame pointers.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use profiler_common::unwind::{
    MAX_MAPPINGS, MappingEntry, PageEntry, ProcMappings, Row, TableInfo, mapping_kind,
};
use tracing::{debug, info, warn};

use super::{
    CompiledTable,
    alloc::{IdAlloc, Range, RangeAlloc},
};
use crate::{
    metrics::{self, Metrics},
    process::{
        ObjectFile, ObjectId,
        maps::{AddressSpace, Target},
        objects::{FileKey, ObjectKind},
    },
};

/// Where tables and mapping lists go: the BPF maps, or memory in tests.
pub trait TableStore: Send {
    /// Entries of the row array, the page array and table ids.
    fn capacity(&self) -> StoreCapacity;
    /// Writes `rows` at index `at` of the row array.
    fn write_rows(&mut self, at: u32, rows: &[Row]) -> Result<()>;
    /// Reads `out.len()` rows from index `at`.
    fn read_rows(&self, at: u32, out: &mut [Row]) -> Result<()>;
    /// Writes `pages` at index `at` of the page array.
    fn write_pages(&mut self, at: u32, pages: &[PageEntry]) -> Result<()>;
    /// Reads `out.len()` page entries from index `at`.
    fn read_pages(&self, at: u32, out: &mut [PageEntry]) -> Result<()>;
    /// Sets table `id`'s location.
    fn set_table(&mut self, id: u32, info: &TableInfo) -> Result<()>;
    /// Sets `pid`'s mapping list (its samples are walked with tables from
    /// then on).
    fn set_process(&mut self, pid: u32, list: &ProcMappings) -> Result<()>;
    /// Removes `pid`'s mapping list (back to frame pointers).
    fn remove_process(&mut self, pid: u32);
}

/// Sizes of a [`TableStore`]'s arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreCapacity {
    pub rows: u32,
    pub pages: u32,
    pub tables: u32,
}

impl StoreCapacity {
    /// Bytes of the row and page arrays.
    pub fn bytes(&self) -> u64 {
        8 * (u64::from(self.rows) + u64::from(self.pages))
    }
}

/// Identity of a table: the same key means the same `.eh_frame`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TableKey {
    /// A GNU build id.
    BuildId(Vec<u8>),
    /// A file without one.
    File(FileKey),
    /// Neither (an in-memory image): the registry's id.
    Object(ObjectId),
}

impl TableKey {
    /// The key of `object`'s table.
    pub fn of(object: &ObjectFile) -> Self {
        match (&object.build_id, object.key) {
            (Some(id), _) => TableKey::BuildId(id.clone()),
            (None, Some(key)) => TableKey::File(key),
            (None, None) => TableKey::Object(object.id),
        }
    }
}

/// How one executable mapping of a process is unwound.
#[derive(Clone, Debug)]
pub enum Code {
    /// By its file's table (frame pointers if it has none).
    Object {
        key: TableKey,
        object: Arc<ObjectFile>,
        /// Runtime address minus link-time address.
        bias: u64,
    },
    /// By frame pointers: Go and JIT code, unreadable files.
    FramePointer,
}

/// One executable mapping, as the unwinder needs it.
#[derive(Clone, Debug)]
pub struct MappingSpec {
    pub start: u64,
    pub end: u64,
    pub code: Code,
}

/// The mappings of `space` as the unwinder needs them: ELF files and the
/// vDSO by their tables, Go binaries (frame pointers by design), anonymous
/// memory (JIT code) and unreadable files by frame pointers.
pub fn specs(space: &AddressSpace) -> Vec<MappingSpec> {
    space
        .mappings()
        .iter()
        .map(|m| {
            let code = match &m.target {
                Target::Object { object, bias }
                    if matches!(object.kind, ObjectKind::Elf | ObjectKind::Vdso)
                        && object.go_binary().is_none() =>
                {
                    Code::Object {
                        key: TableKey::of(object),
                        object: Arc::clone(object),
                        bias: *bias,
                    }
                }
                _ => Code::FramePointer,
            };
            MappingSpec {
                start: m.start,
                end: m.end,
                code,
            }
        })
        .collect()
}

/// Sorts `entries` into a [`ProcMappings`], merging touching table-less
/// entries of one kind; the second value is the number of entries that did not fit.
pub fn build_list(mut entries: Vec<MappingEntry>) -> (ProcMappings, usize) {
    entries.retain(|e| e.start < e.end);
    entries.sort_by_key(|e| e.start);
    let mut merged: Vec<MappingEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        if let Some(last) = merged.last_mut() {
            if e.start < last.end {
                // Overlapping mappings cannot be: keep the first.
                continue;
            }
            if e.kind != mapping_kind::TABLE && e.kind == last.kind && e.start == last.end {
                last.end = e.end;
                continue;
            }
        }
        merged.push(e);
    }
    let mut list = ProcMappings::default();
    let kept = merged.len().min(MAX_MAPPINGS);
    list.entries[..kept].copy_from_slice(&merged[..kept]);
    list.len = kept as u32;
    (list, merged.len() - kept)
}

/// A table in the store.
#[derive(Debug)]
struct Loaded {
    id: u32,
    rows: Range,
    pages: Range,
    base: u64,
    page_shift: u32,
    /// Processes whose lists use it (one per mapping of the file).
    refs: u32,
    name: String,
}

/// What is known about a file's table.
#[derive(Debug)]
enum Known {
    Loaded(Loaded),
    /// No call-frame information: frame pointers.
    None,
    /// Call-frame information that did not compile: frame pointers, but
    /// only as a guess (such code need not keep them).
    Unusable,
}

/// A table taken out of the store, kept on the host so the next process
/// that maps the file does not compile it again.
#[derive(Clone, Debug)]
struct Image {
    base: u64,
    page_shift: u32,
    rows: Vec<Row>,
    pages: Vec<PageEntry>,
    /// When it was last wanted (for eviction).
    tick: u64,
}

impl Image {
    fn bytes(&self) -> u64 {
        8 * (self.rows.len() + self.pages.len()) as u64
    }

    fn from_compiled(t: &CompiledTable) -> Self {
        let page_shift = t.choose_page_shift();
        Self {
            base: t.base,
            page_shift,
            pages: t.page_index(page_shift),
            rows: t.rows.clone(),
            tick: 0,
        }
    }
}

/// What the manager did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ManagerStats {
    pub tables_loaded: u64,
    pub bytes_used: u64,
    pub processes: u64,
    pub compiled: u64,
    pub compile_time: Duration,
    pub cache_hits: u64,
    pub no_table: u64,
    pub no_room: u64,
    pub list_overflows: u64,
}

/// Tables and mapping lists, kept in a [`TableStore`].
pub struct TableManager<S: TableStore> {
    store: S,
    capacity: StoreCapacity,
    rows: RangeAlloc,
    pages: RangeAlloc,
    ids: IdAlloc,
    tables: HashMap<TableKey, Known>,
    /// The table keys each process's list uses (one per mapping).
    procs: HashMap<u32, Vec<TableKey>>,
    cache: HashMap<TableKey, Image>,
    cache_bytes: u64,
    /// Most bytes of host copies kept.
    cache_limit: u64,
    tick: u64,
    stats: ManagerStats,
    metrics: Arc<Metrics>,
    warned_full: bool,
    warned_store: bool,
    /// The last [`ProcMappings::generation`] written.
    generation: u32,
}

impl<S: TableStore> TableManager<S> {
    /// A manager of an empty `store`; host copies of unused tables take at
    /// most a quarter of the store's size.
    pub fn new(store: S, metrics: Arc<Metrics>) -> Self {
        let capacity = store.capacity();
        metrics::set(&metrics.unwind_table_capacity_bytes, capacity.bytes());
        Self {
            store,
            capacity,
            rows: RangeAlloc::new(capacity.rows),
            pages: RangeAlloc::new(capacity.pages),
            ids: IdAlloc::new(capacity.tables),
            tables: HashMap::new(),
            procs: HashMap::new(),
            cache: HashMap::new(),
            cache_bytes: 0,
            cache_limit: capacity.bytes() / 4,
            tick: 0,
            stats: ManagerStats::default(),
            metrics,
            warned_full: false,
            warned_store: false,
            generation: 0,
        }
    }

    /// Writes `pid`'s list under a new generation (never zero), which tells
    /// the BPF side's rule cache that rules of `pid`'s earlier lists, and of
    /// earlier processes with its pid, no longer hold.
    fn store_list(&mut self, pid: u32, mut list: ProcMappings) -> Result<()> {
        self.generation = self.generation.wrapping_add(1).max(1);
        list.generation = self.generation;
        self.store.set_process(pid, &list)
    }

    /// The store (tests read it back).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Counts so far.
    pub fn stats(&self) -> ManagerStats {
        self.stats
    }

    /// Sets `pid`'s mappings: compiles and loads the tables it lacks, then
    /// writes its list and releases the tables its previous list used.
    pub fn set_process(&mut self, pid: u32, specs: &[MappingSpec]) {
        self.tick += 1;
        if !self.procs.contains_key(&pid) && specs.iter().any(|s| self.must_compile(s)) {
            self.provisional(pid, specs);
        }
        let mut entries = Vec::with_capacity(specs.len());
        let mut keys = Vec::new();
        for spec in specs {
            let table = match &spec.code {
                Code::Object { key, object, bias } => self
                    .ensure(key, object)
                    .map(|(id, base)| (key, id, bias.wrapping_add(base))),
                Code::FramePointer => None,
            };
            let entry = match table {
                Some((key, id, rel_base)) => {
                    keys.push(key.clone());
                    MappingEntry {
                        start: spec.start,
                        end: spec.end,
                        rel_base,
                        table: id,
                        kind: mapping_kind::TABLE,
                    }
                }
                None => MappingEntry {
                    start: spec.start,
                    end: spec.end,
                    rel_base: 0,
                    table: 0,
                    kind: self.without_table(&spec.code),
                },
            };
            entries.push(entry);
        }
        for key in &keys {
            if let Some(Known::Loaded(t)) = self.tables.get_mut(key) {
                t.refs += 1;
            }
        }
        let (list, dropped) = build_list(entries);
        if dropped > 0 {
            self.stats.list_overflows += 1;
            debug!("pid {pid}: {dropped} executable mappings beyond the {MAX_MAPPINGS} listed");
        }
        let old = match self.store_list(pid, list) {
            Ok(()) => self.procs.insert(pid, keys),
            Err(e) => {
                if self.warned_store {
                    debug!("pid {pid}: cannot store its unwind mappings: {e:#}");
                } else {
                    self.warned_store = true;
                    warn!(
                        "pid {pid}: cannot store its unwind mappings ({e:#}); such processes \
                         are walked by frame pointers"
                    );
                }
                Some(keys)
            }
        };
        for key in old.into_iter().flatten() {
            self.release(&key);
        }
        self.publish();
    }

    /// The kind of a mapping left without a table: frame pointers for code
    /// that has none (Go, JIT, objects without call-frame information), a
    /// frame-pointer guess for code whose table is compiling, did not
    /// compile or did not fit.
    fn without_table(&self, code: &Code) -> u32 {
        match code {
            Code::Object { key, .. } if !matches!(self.tables.get(key), Some(Known::None)) => {
                mapping_kind::FRAME_POINTER_GUESS
            }
            _ => mapping_kind::FRAME_POINTER,
        }
    }

    /// Whether `spec`'s table has to be compiled first.
    fn must_compile(&self, spec: &MappingSpec) -> bool {
        match &spec.code {
            Code::Object { key, .. } => {
                !self.tables.contains_key(key) && !self.cache.contains_key(key)
            }
            Code::FramePointer => false,
        }
    }

    /// Gives a new process a list of frame-pointer entries while its tables
    /// compile: its samples are then walked by the BPF walker, which
    /// reports where frame pointers fail, rather than by the kernel's walk,
    /// which cannot say. Objects with call-frame information get the guess
    /// kind (their tables are compiling, or loaded for another process and
    /// listed a moment later): a zero frame pointer there (rbp used as an
    /// ordinary register) must not end a walk as if the stack were complete.
    fn provisional(&mut self, pid: u32, specs: &[MappingSpec]) {
        let entries = specs
            .iter()
            .map(|s| MappingEntry {
                start: s.start,
                end: s.end,
                rel_base: 0,
                table: 0,
                kind: self.without_table(&s.code),
            })
            .collect();
        let (list, _) = build_list(entries);
        if self.store_list(pid, list).is_ok() {
            self.procs.insert(pid, Vec::new());
        }
    }

    /// Forgets `pid`: removes its list, then frees the tables no other
    /// process uses.
    pub fn remove_process(&mut self, pid: u32) {
        let Some(keys) = self.procs.remove(&pid) else {
            return;
        };
        self.store.remove_process(pid);
        for key in keys {
            self.release(&key);
        }
        self.publish();
    }

    /// The table of `key`, loading it if needed: (id, base).
    fn ensure(&mut self, key: &TableKey, object: &ObjectFile) -> Option<(u32, u64)> {
        match self.tables.get(key) {
            Some(Known::Loaded(t)) => return Some((t.id, t.base)),
            Some(Known::None | Known::Unusable) => return None,
            None => {}
        }
        let image = match self.cache.remove(key) {
            Some(image) => {
                self.cache_bytes -= image.bytes();
                self.stats.cache_hits += 1;
                image
            }
            None => {
                let started = Instant::now();
                let compiled = CompiledTable::from_bytes(&object.bytes);
                let took = started.elapsed();
                // The pages of `.eh_frame` read through the mapping are not
                // read again: until the symbolizer parsed and released the
                // object, they stayed in RSS (2.1 MiB before the first
                // window, 1.4 of it the daemon's own binary).
                object.bytes.release_pages();
                self.stats.compiled += 1;
                self.stats.compile_time += took;
                metrics::inc(&self.metrics.unwind_tables_compiled);
                metrics::add(&self.metrics.unwind_compile_us, took.as_micros() as u64);
                match compiled {
                    Ok(t) if !t.rows.is_empty() => {
                        let image = Image::from_compiled(&t);
                        debug!(
                            "unwind table of {}: {} rows, {} pages, {} KiB, compiled in {took:?}",
                            object.path,
                            image.rows.len(),
                            image.pages.len(),
                            image.bytes() / 1024
                        );
                        image
                    }
                    other => {
                        let known = match other {
                            Err(e) => {
                                debug!("{}: no unwind table: {e}", object.path);
                                Known::Unusable
                            }
                            Ok(_) => {
                                debug!("{}: no call-frame information", object.path);
                                Known::None
                            }
                        };
                        self.stats.no_table += 1;
                        metrics::inc(&self.metrics.unwind_tables_none);
                        self.tables.insert(key.clone(), known);
                        return None;
                    }
                }
            }
        };
        match self.load(&image, &object.path) {
            Some(loaded) => {
                let out = (loaded.id, loaded.base);
                self.tables.insert(key.clone(), Known::Loaded(loaded));
                Some(out)
            }
            None => {
                self.stats.no_room += 1;
                metrics::inc(&self.metrics.unwind_tables_no_room);
                if !self.warned_full {
                    self.warned_full = true;
                    warn!(
                        "unwind tables: no room for {} ({} KiB) in --unwind-table-memory {} MiB; \
                         its code is walked by frame pointers (raise the flag)",
                        object.path,
                        image.bytes() / 1024,
                        self.capacity.bytes() >> 20
                    );
                }
                self.keep(key.clone(), image);
                None
            }
        }
    }

    /// Writes `image` into free ranges of the store.
    fn load(&mut self, image: &Image, name: &str) -> Option<Loaded> {
        let n_rows = u32::try_from(image.rows.len()).ok()?;
        let n_pages = u32::try_from(image.pages.len()).ok()?;
        let id = self.ids.alloc()?;
        let Some(rows) = self.rows.alloc(n_rows) else {
            self.ids.free(id);
            return None;
        };
        let Some(pages) = self.pages.alloc(n_pages) else {
            self.ids.free(id);
            self.rows.free(rows);
            return None;
        };
        let info = TableInfo {
            first_row: rows.start,
            n_rows,
            first_page: pages.start,
            n_pages,
            page_shift: image.page_shift,
            reserved: 0,
        };
        let written = self
            .store
            .write_rows(rows.start, &image.rows)
            .and_then(|()| self.store.write_pages(pages.start, &image.pages))
            .and_then(|()| self.store.set_table(id, &info));
        if let Err(e) = written {
            warn!("cannot store the unwind table of {name}: {e:#}");
            self.ids.free(id);
            self.rows.free(rows);
            self.pages.free(pages);
            return None;
        }
        self.stats.tables_loaded += 1;
        Some(Loaded {
            id,
            rows,
            pages,
            base: image.base,
            page_shift: image.page_shift,
            refs: 0,
            name: name.to_owned(),
        })
    }

    /// Drops one reference to `key`'s table; frees it at zero (keeping a
    /// host copy while there is room).
    fn release(&mut self, key: &TableKey) {
        let Some(Known::Loaded(t)) = self.tables.get_mut(key) else {
            return;
        };
        t.refs = t.refs.saturating_sub(1);
        if t.refs > 0 {
            return;
        }
        let Some(Known::Loaded(t)) = self.tables.remove(key) else {
            return;
        };
        let mut image = Image {
            base: t.base,
            page_shift: t.page_shift,
            rows: vec![Row::default(); t.rows.len as usize],
            pages: vec![PageEntry::default(); t.pages.len as usize],
            tick: 0,
        };
        let read = self
            .store
            .read_rows(t.rows.start, &mut image.rows)
            .and_then(|()| self.store.read_pages(t.pages.start, &mut image.pages));
        // No list refers to the table any more: its id and ranges can go.
        let _ = self.store.set_table(t.id, &TableInfo::default());
        self.ids.free(t.id);
        self.rows.free(t.rows);
        self.pages.free(t.pages);
        self.stats.tables_loaded = self.stats.tables_loaded.saturating_sub(1);
        debug!("unwind table of {} unloaded", t.name);
        if read.is_ok() {
            self.keep(key.clone(), image);
        }
    }

    /// Keeps a host copy of a table, evicting the least recently wanted
    /// copies beyond the limit.
    fn keep(&mut self, key: TableKey, mut image: Image) {
        image.tick = self.tick;
        let bytes = image.bytes();
        if bytes > self.cache_limit {
            return;
        }
        self.cache_bytes += bytes;
        if let Some(old) = self.cache.insert(key, image) {
            self.cache_bytes -= old.bytes();
        }
        while self.cache_bytes > self.cache_limit {
            let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, i)| i.tick)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(i) = self.cache.remove(&oldest) {
                self.cache_bytes -= i.bytes();
            }
        }
    }

    fn publish(&mut self) {
        self.stats.bytes_used = 8 * (self.rows.used() + self.pages.used());
        self.stats.processes = self.procs.len() as u64;
        let m = &self.metrics;
        metrics::set(&m.unwind_tables_loaded, self.stats.tables_loaded);
        metrics::set(&m.unwind_table_bytes, self.stats.bytes_used);
        metrics::set(&m.unwind_processes, self.stats.processes);
    }

    /// Logs what is loaded (at the end of a session).
    pub fn log_summary(&self) {
        info!(
            "unwind tables: {} loaded, {} KiB of {} KiB, {} processes, {} compiled in {:?}, \
             {} files without tables, {} did not fit",
            self.stats.tables_loaded,
            self.stats.bytes_used / 1024,
            self.capacity.bytes() / 1024,
            self.stats.processes,
            self.stats.compiled,
            self.stats.compile_time,
            self.stats.no_table,
            self.stats.no_room
        );
    }
}

/// A [`TableStore`] in memory, laid out exactly as the BPF maps: what the
/// host harness (`replay`) and tests unwind with.
#[derive(Clone, Debug)]
pub struct MemStore {
    pub rows: Vec<Row>,
    pub pages: Vec<PageEntry>,
    pub tables: Vec<TableInfo>,
    pub procs: HashMap<u32, ProcMappings>,
    /// Every `set_process` call, in order: pid and the kinds of its list's
    /// entries.
    pub history: Vec<(u32, Vec<u32>)>,
}

impl MemStore {
    /// Arrays of the given sizes, zeroed.
    pub fn new(capacity: StoreCapacity) -> Self {
        Self {
            rows: vec![Row::default(); capacity.rows as usize],
            pages: vec![PageEntry::default(); capacity.pages as usize],
            tables: vec![TableInfo::default(); capacity.tables as usize],
            procs: HashMap::new(),
            history: Vec::new(),
        }
    }

    /// The row and page arrays, for `find_rule` and `next_frame`.
    pub fn source(&self) -> profiler_common::unwind::SliceTables<'_> {
        profiler_common::unwind::SliceTables {
            rows: &self.rows,
            pages: &self.pages,
        }
    }
}

fn copy_in<T: Copy>(dst: &mut [T], at: u32, src: &[T]) -> Result<()> {
    let at = at as usize;
    dst.get_mut(at..at + src.len())
        .ok_or_else(|| anyhow::anyhow!("write past the array"))?
        .copy_from_slice(src);
    Ok(())
}

fn copy_out<T: Copy>(src: &[T], at: u32, out: &mut [T]) -> Result<()> {
    let at = at as usize;
    out.copy_from_slice(
        src.get(at..at + out.len())
            .ok_or_else(|| anyhow::anyhow!("read past the array"))?,
    );
    Ok(())
}

impl TableStore for MemStore {
    fn capacity(&self) -> StoreCapacity {
        StoreCapacity {
            rows: self.rows.len() as u32,
            pages: self.pages.len() as u32,
            tables: self.tables.len() as u32,
        }
    }
    fn write_rows(&mut self, at: u32, rows: &[Row]) -> Result<()> {
        copy_in(&mut self.rows, at, rows)
    }
    fn read_rows(&self, at: u32, out: &mut [Row]) -> Result<()> {
        copy_out(&self.rows, at, out)
    }
    fn write_pages(&mut self, at: u32, pages: &[PageEntry]) -> Result<()> {
        copy_in(&mut self.pages, at, pages)
    }
    fn read_pages(&self, at: u32, out: &mut [PageEntry]) -> Result<()> {
        copy_out(&self.pages, at, out)
    }
    fn set_table(&mut self, id: u32, info: &TableInfo) -> Result<()> {
        *self
            .tables
            .get_mut(id as usize)
            .ok_or_else(|| anyhow::anyhow!("no table {id}"))? = *info;
        Ok(())
    }
    fn set_process(&mut self, pid: u32, list: &ProcMappings) -> Result<()> {
        let kinds = list.entries[..list.len as usize].iter().map(|e| e.kind);
        self.history.push((pid, kinds.collect()));
        self.procs.insert(pid, *list);
        Ok(())
    }
    fn remove_process(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use profiler_common::unwind::find_rule;

    use super::*;
    use crate::process::objects::Bytes;

    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
    const LIBSTDCXX: &str = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6";

    fn object(id: u32, path: &str) -> Arc<ObjectFile> {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Arc::new(ObjectFile::from_bytes(
            ObjectId(id),
            path.into(),
            ObjectKind::Elf,
            Bytes::Owned(bytes),
        ))
    }

    fn table_spec(object: &Arc<ObjectFile>, bias: u64) -> MappingSpec {
        let (lo, hi) = object.vaddr_range();
        MappingSpec {
            start: lo + bias,
            end: hi + bias,
            code: Code::Object {
                key: TableKey::of(object),
                object: Arc::clone(object),
                bias,
            },
        }
    }

    fn fp_spec(start: u64, end: u64) -> MappingSpec {
        MappingSpec {
            start,
            end,
            code: Code::FramePointer,
        }
    }

    fn manager(rows: u32) -> TableManager<MemStore> {
        let store = MemStore::new(StoreCapacity {
            rows,
            pages: rows / 8,
            tables: 16,
        });
        TableManager::new(store, Arc::default())
    }

    fn entry_for(m: &TableManager<MemStore>, pid: u32, pc: u64) -> MappingEntry {
        let list = &m.store().procs[&pid];
        profiler_common::unwind::find_mapping(list, pc).expect("pc in a listed mapping")
    }

    #[test]
    fn unwind_tables_are_shared_refcounted_freed_and_reused() {
        let libc = object(1, LIBC);
        let cxx = object(2, LIBSTDCXX);
        let compiled = CompiledTable::from_bytes(&libc.bytes).unwrap();
        let mut m = manager(1 << 20);
        let (a, b) = (0x7f00_0000_0000u64, 0x7e00_0000_0000u64);
        m.set_process(10, &[table_spec(&libc, a), fp_spec(0x1000, 0x2000)]);
        m.set_process(
            11,
            &[table_spec(&libc, b), table_spec(&cxx, 0x7d00_0000_0000)],
        );
        let s = m.stats();
        assert_eq!((s.compiled, s.tables_loaded, s.processes), (2, 2, 2));

        // Both processes use one copy of libc's table, each with its bias.
        let (lo, _) = libc.vaddr_range();
        let ea = entry_for(&m, 10, lo + a + 0x100);
        let eb = entry_for(&m, 11, lo + b + 0x100);
        assert_eq!(
            (ea.kind, eb.kind),
            (mapping_kind::TABLE, mapping_kind::TABLE)
        );
        assert_eq!(ea.table, eb.table);
        assert_eq!(ea.rel_base, a + compiled.base);
        assert_eq!(eb.rel_base, b + compiled.base);
        assert_eq!(entry_for(&m, 10, 0x1800).kind, mapping_kind::FRAME_POINTER);

        // Every row is found through the stored arrays, as BPF finds it.
        let info = m.store().tables[ea.table as usize];
        assert_eq!(info.n_rows as usize, compiled.rows.len());
        for row in compiled.rows.iter().step_by(7) {
            for pc in [row.pc, row.pc + 1] {
                let link = compiled.base + u64::from(pc);
                let got = find_rule(&m.store().source(), &info, link + b - eb.rel_base);
                assert_eq!(got.ok(), compiled.rule_at(link), "pc {link:#x}");
            }
        }

        // One process gone: the shared table stays; both gone: freed.
        m.remove_process(10);
        assert!(!m.store().procs.contains_key(&10));
        assert_eq!(m.stats().tables_loaded, 2);
        m.remove_process(11);
        let s = m.stats();
        assert_eq!((s.tables_loaded, s.bytes_used, s.processes), (0, 0, 0));
        assert!(m.store().procs.is_empty());

        // Back again: from the host copy, not compiled a second time.
        m.set_process(12, &[table_spec(&libc, a)]);
        let s = m.stats();
        assert_eq!((s.compiled, s.cache_hits, s.tables_loaded), (2, 1, 1));
        let e = entry_for(&m, 12, lo + a + 0x100);
        let info = m.store().tables[e.table as usize];
        let row = compiled.rows[compiled.rows.len() / 2];
        let link = compiled.base + u64::from(row.pc);
        assert_eq!(
            find_rule(&m.store().source(), &info, link + a - e.rel_base).ok(),
            Some(row.rule)
        );
    }

    #[test]
    fn unwind_every_written_list_has_a_new_nonzero_generation() {
        let libc = object(1, LIBC);
        let mut m = manager(1 << 20);
        let generation = |m: &TableManager<MemStore>, pid: u32| m.store().procs[&pid].generation;
        // A new process: two writes (its provisional list, then its list
        // with the table); `first` is the second's.
        m.set_process(10, &[table_spec(&libc, 0x7f00_0000_0000)]);
        let first = generation(&m, 10);
        assert_eq!(m.store().history.len(), 2);
        m.set_process(10, &[fp_spec(0x1000, 0x2000)]);
        let second = generation(&m, 10);
        m.set_process(11, &[fp_spec(0x1000, 0x2000)]);
        // The same pid again after its process went: not its old generation.
        m.remove_process(10);
        m.set_process(10, &[fp_spec(0x1000, 0x2000)]);
        let third = generation(&m, 10);
        let all = [first, second, generation(&m, 11), third];
        assert!(all.iter().all(|&g| g != 0), "{all:?}");
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");

        // Past u32::MAX the counter skips zero, an empty cache slot's.
        m.generation = u32::MAX;
        m.set_process(12, &[fp_spec(0x1000, 0x2000)]);
        assert_eq!(generation(&m, 12), 1);
    }

    #[test]
    fn unwind_rule_cache_never_serves_a_rule_of_another_list() {
        use profiler_common::unwind::{
            RULE_CACHE_SLOTS, Resolution, RuleCacheSlot, resolve, resolve_and_keep, resolve_cached,
        };
        let libc = object(1, LIBC);
        let cxx = object(2, LIBSTDCXX);
        let mut m = manager(1 << 20);
        let mut cache = vec![RuleCacheSlot::default(); RULE_CACHE_SLOTS as usize];
        let base = 0x7f00_0000_0000u64;
        // Pcs spread over libc's text at `base`; pcs of whatever is mapped
        // there now, walked through the cache twice (filling it, then from
        // it) and checked against a fresh resolve each time.
        let (lo, hi) = libc.vaddr_range();
        let pcs: Vec<u64> = (0..400).map(|i| base + lo + (hi - lo) * i / 400).collect();
        let check = |m: &TableManager<MemStore>, cache: &mut Vec<RuleCacheSlot>, pid: u32| {
            let store = m.store();
            let (src, list) = (store.source(), &store.procs[&pid]);
            let mut tables = 0;
            for _ in 0..2 {
                for &pc in &pcs {
                    let fresh = resolve(&src, &store.tables[..], list, pc);
                    let cached =
                        resolve_cached(&src, &store.tables[..], &mut cache[..], list, pid, pc);
                    assert_eq!(cached, fresh, "pid {pid} pc {pc:#x}");
                    tables += usize::from(matches!(fresh, Ok(Resolution::Table(_))));
                }
            }
            tables
        };
        m.set_process(10, &[table_spec(&libc, base)]);
        let tables = check(&m, &mut cache, 10);
        assert!(tables > 400, "{tables} of 800 by tables");
        let kept = cache.iter().filter(|s| s.generation != 0).count();
        assert!(kept > 150, "{kept} slots filled");

        // The same process, libc moved by a page: same pcs, other rules.
        m.set_process(10, &[table_spec(&libc, base + 0x1000)]);
        check(&m, &mut cache, 10);
        // Gone, its table freed; libstdc++ gets the id; a new process with
        // the same pid maps libstdc++ where libc was.
        m.remove_process(10);
        m.set_process(11, &[table_spec(&cxx, base)]);
        m.set_process(10, &[table_spec(&cxx, base)]);
        check(&m, &mut cache, 10);

        // A list rewritten while it was being resolved (its generation
        // changed between the read before and the read after): the rule is
        // used but not kept.
        let mut cold = vec![RuleCacheSlot::default(); RULE_CACHE_SLOTS as usize];
        let store = m.store();
        let list = &store.procs[&10];
        let pc = pcs[pcs.len() / 2];
        let stale = list.generation - 1;
        let how = resolve_and_keep(
            &store.source(),
            &store.tables[..],
            &mut cold[..],
            list,
            10,
            stale,
            pc,
        );
        assert!(matches!(how, Ok(Resolution::Table(_))), "{how:?}");
        assert!(cold.iter().all(|s| s.generation == 0));
    }

    #[test]
    fn unwind_tables_that_do_not_fit_or_do_not_exist_use_frame_pointers() {
        let libc = object(1, LIBC);
        let junk = Arc::new(ObjectFile::from_bytes(
            ObjectId(3),
            "junk".into(),
            ObjectKind::Elf,
            Bytes::Owned(b"not an object file".to_vec()),
        ));
        let junk_spec = MappingSpec {
            start: 0x5000,
            end: 0x6000,
            code: Code::Object {
                key: TableKey::of(&junk),
                object: Arc::clone(&junk),
                bias: 0,
            },
        };
        // Room for a few thousand rows: libc needs tens of thousands.
        let mut m = manager(4096);
        m.set_process(
            20,
            &[table_spec(&libc, 0x7f00_0000_0000), junk_spec.clone()],
        );
        let s = m.stats();
        assert_eq!((s.no_room, s.no_table, s.tables_loaded), (1, 1, 0));
        let (lo, _) = libc.vaddr_range();
        assert_eq!(
            entry_for(&m, 20, lo + 0x7f00_0000_0000).kind,
            mapping_kind::FRAME_POINTER_GUESS
        );
        // A file that does not parse may still be code without frame
        // pointers: a guess too.
        assert_eq!(
            entry_for(&m, 20, 0x5000).kind,
            mapping_kind::FRAME_POINTER_GUESS
        );
        // The file without a table is not tried again.
        m.set_process(21, &[junk_spec]);
        assert_eq!(m.stats().no_table, 1);
    }

    #[test]
    fn unwind_new_process_gets_a_provisional_list_only_while_compiling() {
        let libc = object(1, LIBC);
        let mut m = manager(1 << 20);
        m.set_process(
            30,
            &[table_spec(&libc, 0x7f00_0000_0000), fp_spec(0x1000, 0x2000)],
        );
        // First every mapping by frame pointers (only a guess for libc, whose
        // table is compiling), then the real list.
        use mapping_kind::{FRAME_POINTER, FRAME_POINTER_GUESS, TABLE};
        let h = &m.store().history;
        assert_eq!(h[0], (30, vec![FRAME_POINTER, FRAME_POINTER_GUESS]));
        assert_eq!(h[1], (30, vec![FRAME_POINTER, TABLE]));
        assert_eq!(h.len(), 2);
        // libc is loaded now: a second process gets its list at once.
        m.set_process(31, &[table_spec(&libc, 0x7e00_0000_0000)]);
        assert_eq!(m.store().history[2..], [(31, vec![TABLE])]);
        // Re-read mappings of a known process: no provisional list.
        m.set_process(30, &[table_spec(&libc, 0x7f00_0000_0000)]);
        assert_eq!(m.store().history.len(), 4);
        assert_eq!(m.stats().tables_loaded, 1);
    }

    #[test]
    fn unwind_lists_are_sorted_merged_and_capped() {
        let fp = |start, end| MappingEntry {
            start,
            end,
            rel_base: 0,
            table: 0,
            kind: mapping_kind::FRAME_POINTER,
        };
        let table = |start, end| MappingEntry {
            kind: mapping_kind::TABLE,
            ..fp(start, end)
        };
        let (list, dropped) = build_list(vec![
            table(0x5000, 0x6000),
            fp(0x1000, 0x2000),
            fp(0x2000, 0x3000),
            fp(0x3800, 0x4000),
            fp(0x5800, 0x5900), // overlaps the table: dropped
            fp(0x7000, 0x7000), // empty: dropped
        ]);
        assert_eq!(dropped, 0);
        let got: Vec<(u64, u64, u32)> = list.entries[..list.len as usize]
            .iter()
            .map(|e| (e.start, e.end, e.kind))
            .collect();
        assert_eq!(
            got,
            [
                (0x1000, 0x3000, mapping_kind::FRAME_POINTER),
                (0x3800, 0x4000, mapping_kind::FRAME_POINTER),
                (0x5000, 0x6000, mapping_kind::TABLE),
            ]
        );
        let many = (0..MAX_MAPPINGS as u64 + 10)
            .map(|i| table(i * 0x2000, i * 0x2000 + 0x1000))
            .collect();
        let (list, dropped) = build_list(many);
        assert_eq!((list.len as usize, dropped), (MAX_MAPPINGS, 10));
    }
}
