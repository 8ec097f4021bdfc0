//! Table-driven unwinding of user stacks without frame pointers.
//!
//! `compile` turns an object file's `.eh_frame` / `.debug_frame` into the
//! compact rows of [`profiler_common::unwind`]; [`TableSet`] lays the tables
//! of many objects out the way the BPF maps hold them (one row array, one
//! page array, one [`TableInfo`] per object); `replay` unwinds a captured
//! stack on the host with exactly the lookup and step code BPF runs, which is
//! how the tables are tested against an independent unwinder (gdb).
//!
//! In the daemon, `manager` keeps the BPF maps' tables in step with the
//! profiled processes (one table per file, shared, reference-counted; one
//! mapping list per process) on the thread `service` runs, fed by the
//! process tracker's hooks. The BPF unwind stage then walks each user frame
//! as `profiler_common::unwind::next_frame` does (through a per-CPU cache
//! of the rules found in step 2, keyed by pid, list generation and pc):
//!
//! 1. find the mapping of `frame.lookup_pc()` in the process's list (a
//!    bounded binary search), its table, and the object-relative pc
//!    `lookup_pc - rel_base`;
//! 2. `find_rule`: one page lookup, at most 9 row lookups (pages are sized
//!    for at most 256 rows);
//! 3. `step`: at most 3 `bpf_probe_read_user` (2 for ordinary frames); on
//!    no row (a gap, a frame-pointer mapping) apply `Rule::FRAME_POINTER`;
//! 4. record the pc and stop on anything but `Continue`, with the outcome
//!    in the sample header.

pub mod alloc;
pub mod compile;
pub mod manager;
pub mod replay;
pub mod service;

#[cfg(test)]
mod differential;
#[cfg(test)]
mod fixtures;

pub use compile::{CompileError, CompiledTable, Report, Unsupported};
use profiler_common::unwind::{PageEntry, Row, SliceTables, TableInfo};

/// Why a table could not be added to a [`TableSet`].
#[derive(Debug, thiserror::Error)]
#[error("the unwind table set is full (more than 2^32 rows or pages)")]
pub struct TableSetFull;

/// The tables of many objects, laid out as the BPF maps hold them.
#[derive(Clone, Debug, Default)]
pub struct TableSet {
    rows: Vec<Row>,
    pages: Vec<PageEntry>,
    tables: Vec<TableInfo>,
}

/// Index of a table in its [`TableSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableId(pub u32);

impl TableSet {
    /// Appends `table` with the page size it chooses for itself.
    pub fn add(&mut self, table: &CompiledTable) -> Result<TableId, TableSetFull> {
        self.add_with_page_shift(table, table.choose_page_shift())
    }

    /// Appends `table` with pages of `2^page_shift` bytes.
    pub fn add_with_page_shift(
        &mut self,
        table: &CompiledTable,
        page_shift: u32,
    ) -> Result<TableId, TableSetFull> {
        let pages = table.page_index(page_shift);
        let info = TableInfo {
            first_row: u32::try_from(self.rows.len()).map_err(|_| TableSetFull)?,
            n_rows: u32::try_from(table.rows.len()).map_err(|_| TableSetFull)?,
            first_page: u32::try_from(self.pages.len()).map_err(|_| TableSetFull)?,
            n_pages: u32::try_from(pages.len()).map_err(|_| TableSetFull)?,
            page_shift,
            reserved: 0,
        };
        let id = TableId(u32::try_from(self.tables.len()).map_err(|_| TableSetFull)?);
        info.first_row
            .checked_add(info.n_rows)
            .zip(info.first_page.checked_add(info.n_pages))
            .ok_or(TableSetFull)?;
        self.rows.extend_from_slice(&table.rows);
        self.pages.extend(pages);
        self.tables.push(info);
        Ok(id)
    }

    /// Where table `id` lives in the arrays.
    pub fn info(&self, id: TableId) -> Option<&TableInfo> {
        self.tables.get(id.0 as usize)
    }

    /// The arrays, for `profiler_common::unwind::find_rule`.
    pub fn source(&self) -> SliceTables<'_> {
        SliceTables {
            rows: &self.rows,
            pages: &self.pages,
        }
    }

    /// Every row of every table.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// Every page entry of every table.
    pub fn pages(&self) -> &[PageEntry] {
        &self.pages
    }

    /// Bytes the row and page arrays take.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.rows.as_slice()) + std::mem::size_of_val(self.pages.as_slice())
    }
}
