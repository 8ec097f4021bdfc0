//! Symbolizes code addresses of Go binaries through the runtime's own
//! function table, `.gopclntab`, which the Go runtime needs for tracebacks
//! and so survives stripping (`-ldflags=-s -w`). It gives each address its
//! function, file and line, and the chain of functions the compiler inlined
//! there, innermost first, like DWARF would.
//!
//! The table is read in place from the memory-mapped file: [`GoTable`] keeps
//! the mapping and a few offsets, and each lookup binary-searches the
//! function table and decodes only the pc-value streams of the one function
//! it lands in. Formats: Go 1.18–1.19 (magic `0xfffffff0`) and Go 1.20 and
//! later (`0xfffffff1`, which adds start lines). Little-endian only.
//!
//! Layout (offsets are relative to the table start, the `pcHeader`):
//!
//! ```text
//! pcHeader   magic u32, pad u8 ×2, minLC u8, ptrSize u8, then ptrSize words:
//!            nfunc, nfiles, textStart (0 since Go 1.26), funcnameOffset,
//!            cuOffset, filetabOffset, pctabOffset, pclnOffset
//! funcnametab  NUL-terminated names           cutab   u32 per CU file
//! filetab      NUL-terminated file names      pctab   pc-value streams
//! pclntable    functab: (entryOff u32, funcOff u32) × nfunc, end entryOff;
//!              then the _func records functab points at
//! ```
//!
//! Function entries are offsets from `moduledata.text`, and inline trees
//! (`FUNCDATA_InlTree`) are offsets from `moduledata.gofunc`; neither is in
//! the table itself, so the `runtime.firstmoduledata` record is found by the
//! pointer to the table it starts with. Its layout differs by version (no
//! coverage counters before Go 1.20; Go 1.27 added three words before
//! `gofunc`). If the table has no section of its own (before Go 1.26,
//! externally linked PIE puts it inside `.data.rel.ro`), it is found by its
//! header magic and validated. Hand-written for the reasons given in the parent module.

use std::{ops::Range, sync::Arc};

use object::{Object, ObjectSection, ObjectSymbol};

use super::{GoError, Memory, buildinfo, le_u32, le_word, uvarint};
use crate::process::objects::Bytes;

const MAGIC_118: u32 = 0xffff_fff0;
const MAGIC_120: u32 = 0xffff_fff1;
/// `abi.PCDATA_InlTreeIndex`: pc → index into the function's inline tree.
const PCDATA_INL_TREE_INDEX: usize = 2;
/// `abi.FUNCDATA_InlTree`: offset of the inline tree from `gofunc`.
const FUNCDATA_INL_TREE: usize = 3;
/// Bound on inline depth, against cycles in corrupt tables.
const MAX_INLINE_DEPTH: usize = 100;

/// One frame at an address: a function, or a call inlined into one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFrame {
    /// Go's symbol name, e.g. `main.(*acc).add` (`?` if unreadable).
    pub function: String,
    /// Source file (`?` if unknown).
    pub file: String,
    pub line: u32,
    /// Line of the `func` keyword; 0 before Go 1.20, which did not record it.
    pub start_line: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Go118,
    Go120,
}

impl Format {
    /// Size of the fixed part of `_func`.
    fn func_size(self) -> usize {
        match self {
            Format::Go118 => 40,
            Format::Go120 => 44,
        }
    }

    /// Size of an `inlinedCall` entry.
    fn inline_entry_size(self) -> usize {
        match self {
            Format::Go118 => 20,
            Format::Go120 => 16,
        }
    }
}

/// The header's view of the table; every offset is checked against its
/// length, and the function table against the records it points at.
#[derive(Clone, Copy, Debug)]
struct Layout {
    format: Format,
    ptr_size: u8,
    quantum: u64,
    nfunc: usize,
    text_start: u64,
    funcnames: usize,
    cu: usize,
    files: usize,
    pctab: usize,
    /// Start of `pclntable`, which begins with the function table.
    pcln: usize,
}

impl Layout {
    fn parse(table: &[u8]) -> Result<Self, GoError> {
        let header = GoError::Truncated("pclntab header");
        let magic = le_u32(table, 0).ok_or(GoError::Truncated("pclntab header"))?;
        let format = match magic {
            MAGIC_118 => Format::Go118,
            MAGIC_120 => Format::Go120,
            other => return Err(GoError::UnsupportedMagic(other)),
        };
        let (pad, quantum, ptr_size) = match table.get(4..8) {
            Some(&[p1, p2, q, s]) => (p1 | p2, q, s),
            _ => return Err(header),
        };
        if pad != 0 || !matches!(quantum, 1 | 2 | 4) || !matches!(ptr_size, 4 | 8) {
            return Err(GoError::Malformed("pclntab header"));
        }
        let word = |i: usize| -> Result<usize, GoError> {
            le_word(table, 8 + i * usize::from(ptr_size), ptr_size)
                .ok_or(GoError::Truncated("pclntab header"))
                .and_then(|w| usize::try_from(w).map_err(|_| GoError::Malformed("pclntab header")))
        };
        let header_end = 8 + 8 * usize::from(ptr_size);
        let layout = Self {
            format,
            ptr_size,
            quantum: u64::from(quantum),
            nfunc: word(0)?,
            text_start: word(2)? as u64,
            funcnames: word(3)?,
            cu: word(4)?,
            files: word(5)?,
            pctab: word(6)?,
            pcln: word(7)?,
        };
        let offsets = [
            header_end,
            layout.funcnames,
            layout.cu,
            layout.files,
            layout.pctab,
            layout.pcln,
            table.len(),
        ];
        if offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err(GoError::Malformed("pclntab section offsets"));
        }
        if layout.nfunc == 0 || layout.nfunc > (table.len() - layout.pcln) / 8 {
            return Err(GoError::Truncated("pclntab function table"));
        }
        layout.check_functab(table)?;
        Ok(layout)
    }

    /// Entries must be sorted (lookups binary-search them) and point at
    /// whole `_func` records inside the table.
    fn check_functab(&self, table: &[u8]) -> Result<(), GoError> {
        let bad = GoError::Truncated("pclntab function table");
        let mut prev = 0;
        for i in 0..=self.nfunc {
            let entry = le_u32(table, self.pcln + 8 * i).ok_or(GoError::Truncated("functab"))?;
            if entry < prev {
                return Err(GoError::Malformed("pclntab function table order"));
            }
            prev = entry;
            if i == self.nfunc {
                break;
            }
            let func = le_u32(table, self.pcln + 8 * i + 4).ok_or(GoError::Truncated("functab"))?;
            let end = self
                .pcln
                .checked_add(func as usize + self.format.func_size());
            if end.is_none_or(|end| end > table.len()) {
                return Err(bad);
            }
        }
        Ok(())
    }
}

/// Where `go:func.*` (funcdata such as inline trees) lives in the file.
#[derive(Clone, Copy, Debug)]
struct GoFunc {
    /// File offset of `gofunc`.
    offset: usize,
    /// File-backed bytes from there.
    len: usize,
}

/// The Go function table of one binary, decoded on demand.
pub struct GoTable {
    bytes: Arc<Bytes>,
    /// File range of the table, from its header.
    table: Range<usize>,
    layout: Layout,
    /// Link-time address function entries are offsets from.
    text: u64,
    gofunc: Option<GoFunc>,
}

impl std::fmt::Debug for GoTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoTable")
            .field("table", &self.table)
            .field("format", &self.layout.format)
            .field("nfunc", &self.layout.nfunc)
            .field("text", &format_args!("{:#x}", self.text))
            .finish_non_exhaustive()
    }
}

/// A function record, as read for one lookup.
#[derive(Clone, Copy, Debug)]
struct Func {
    entry: u64,
    end: u64,
    /// Table offset of the `_func` record.
    base: usize,
}

/// One `inlinedCall`.
struct InlinedCall {
    name_off: u32,
    parent_pc: u32,
    start_line: u32,
}

impl GoTable {
    /// Reads the table of the ELF file in `bytes`: `Ok(None)` if it is not a
    /// Go binary (no table), an error if the table is malformed.
    pub fn parse(bytes: Arc<Bytes>) -> Result<Option<GoTable>, GoError> {
        let data: &[u8] = &bytes;
        let file = object::File::parse(data)?;
        let mut memory = Memory::new(&file);
        let version = buildinfo::read(&file).ok().flatten();
        let located = match file.section_by_name(".gopclntab") {
            Some(section) => Some((section.address(), section.data()?)),
            // Only Go binaries are worth a scan for the magic.
            None if version.is_some() => find_by_magic(&memory),
            None => None,
        };
        let Some((vaddr, table)) = located else {
            return Ok(None);
        };
        let layout = Layout::parse(table)?;
        let table = file_range(data, table).ok_or(GoError::Malformed("pclntab location"))?;
        let major_minor = version.as_ref().map(|v| (v.major, v.minor));
        let module = find_moduledata(&mut memory, &file, vaddr, &layout, major_minor);
        let text = match module {
            Some((text, _)) => text,
            None => fallback_text(&file, &layout).ok_or(GoError::Malformed("Go text start"))?,
        };
        let gofunc_addr = module.and_then(|(_, gofunc)| gofunc).or_else(|| {
            file.symbols()
                .find(|s| matches!(s.name(), Ok("go:func.*" | "go.func.*")))
                .map(|s| s.address())
        });
        let gofunc = gofunc_addr
            .and_then(|addr| memory.tail(addr))
            .and_then(|tail| {
                Some(GoFunc {
                    offset: file_range(data, tail)?.start,
                    len: tail.len(),
                })
            });
        Ok(Some(GoTable {
            bytes,
            table,
            layout,
            text,
            gofunc,
        }))
    }

    /// Number of functions in the table.
    pub fn function_count(&self) -> usize {
        self.layout.nfunc
    }

    /// The frames at link-time address `pc`, innermost first: calls inlined
    /// there (innermost callee first, each outer frame at its call site),
    /// then the function that holds the code. Empty if no Go function does.
    pub fn frames(&self, pc: u64) -> Vec<GoFrame> {
        let Some(func) = self.find_func(pc) else {
            return Vec::new();
        };
        let mut frames = Vec::new();
        let mut at = pc;
        if let Some((index_table, tree)) = self.inline_tree(&func) {
            while frames.len() < MAX_INLINE_DEPTH {
                let Some(Ok(index)) = self.pcvalue(&func, index_table, at).map(usize::try_from)
                else {
                    break;
                };
                let Some(call) = self.inlined_call(tree, index) else {
                    break;
                };
                let (file, line) = self.position(&func, at);
                frames.push(GoFrame {
                    function: self.name(call.name_off),
                    file,
                    line,
                    start_line: call.start_line,
                });
                match func.entry.checked_add(u64::from(call.parent_pc)) {
                    Some(parent) if parent < func.end => at = parent,
                    _ => break,
                }
            }
        }
        let (file, line) = self.position(&func, at);
        frames.push(GoFrame {
            function: self.name(self.u32_at(func.base + 4).unwrap_or(u32::MAX)),
            file,
            line,
            start_line: self.start_line(&func),
        });
        frames
    }

    /// The `[entry, end)` addresses of the function named `name`.
    pub fn function_entry(&self, name: &str) -> Option<(u64, u64)> {
        (0..self.layout.nfunc).find_map(|i| {
            let func = self.func(i)?;
            let off = self.u32_at(func.base + 4)?;
            (self.name_bytes(off)? == name.as_bytes()).then_some((func.entry, func.end))
        })
    }

    fn tab(&self) -> &[u8] {
        self.bytes.get(self.table.clone()).unwrap_or_default()
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        le_u32(self.tab(), off)
    }

    /// The function-table entry `i` and its `_func` record.
    fn func(&self, i: usize) -> Option<Func> {
        let at = self.layout.pcln + 8 * i;
        let entry = self.text.checked_add(u64::from(self.u32_at(at)?))?;
        let base = self.layout.pcln + self.u32_at(at + 4)? as usize;
        let end = self.text.checked_add(u64::from(self.u32_at(at + 8)?))?;
        Some(Func { entry, end, base })
    }

    fn find_func(&self, pc: u64) -> Option<Func> {
        let off = u32::try_from(pc.checked_sub(self.text)?).ok()?;
        let (mut lo, mut hi) = (0, self.layout.nfunc);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.u32_at(self.layout.pcln + 8 * mid)? <= off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let func = self.func(lo.checked_sub(1)?)?;
        (pc < func.end).then_some(func)
    }

    fn start_line(&self, func: &Func) -> u32 {
        match self.layout.format {
            Format::Go118 => 0,
            Format::Go120 => self.u32_at(func.base + 36).unwrap_or(0),
        }
    }

    /// The `InlTreeIndex` pc-value table and the file offset of the inline
    /// tree of `func`, if it has inlined calls.
    fn inline_tree(&self, func: &Func) -> Option<(u32, usize)> {
        let size = self.layout.format.func_size();
        let npcdata = self.u32_at(func.base + 28)? as usize;
        let nfuncdata = usize::from(*self.tab().get(func.base + size - 1)?);
        if npcdata <= PCDATA_INL_TREE_INDEX || nfuncdata <= FUNCDATA_INL_TREE {
            return None;
        }
        let index_table = self.u32_at(func.base + size + 4 * PCDATA_INL_TREE_INDEX)?;
        let funcdata = func.base + size + 4 * npcdata;
        let tree = self.u32_at(funcdata + 4 * FUNCDATA_INL_TREE)?;
        let gofunc = self.gofunc?;
        if tree == u32::MAX || tree as usize >= gofunc.len {
            return None;
        }
        Some((index_table, gofunc.offset + tree as usize))
    }

    fn inlined_call(&self, tree: usize, index: usize) -> Option<InlinedCall> {
        let gofunc = self.gofunc?;
        let size = self.layout.format.inline_entry_size();
        let start = tree.checked_add(index.checked_mul(size)?)?;
        if start.checked_add(size)? > gofunc.offset + gofunc.len {
            return None;
        }
        let entry = self.bytes.get(start..start + size)?;
        let field = |at: usize| le_u32(entry, at);
        Some(match self.layout.format {
            Format::Go118 => InlinedCall {
                name_off: field(12)?,
                parent_pc: field(16)?,
                start_line: 0,
            },
            Format::Go120 => InlinedCall {
                name_off: field(4)?,
                parent_pc: field(8)?,
                start_line: field(12)?,
            },
        })
    }

    /// File and line at `pc` in `func` (innermost position).
    fn position(&self, func: &Func, pc: u64) -> (String, u32) {
        let file = self
            .u32_at(func.base + 20)
            .and_then(|t| self.pcvalue(func, t, pc))
            .and_then(|fileno| self.file_name(func, fileno))
            .unwrap_or_else(|| "?".to_owned());
        let line = self
            .u32_at(func.base + 24)
            .and_then(|t| self.pcvalue(func, t, pc))
            .and_then(|l| u32::try_from(l).ok())
            .unwrap_or(0);
        (file, line)
    }

    fn file_name(&self, func: &Func, fileno: i32) -> Option<String> {
        let cu_offset = self.u32_at(func.base + 32)?;
        let index = cu_offset.checked_add(u32::try_from(fileno).ok()?)? as usize;
        let at = self.layout.cu.checked_add(index.checked_mul(4)?)?;
        if at + 4 > self.layout.files {
            return None;
        }
        let off = self.u32_at(at)?;
        let names = self.tab().get(self.layout.files..self.layout.pctab)?;
        let bytes = c_string(names, off as usize)?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    fn name_bytes(&self, off: u32) -> Option<&[u8]> {
        let names = self.tab().get(self.layout.funcnames..self.layout.cu)?;
        c_string(names, off as usize)
    }

    fn name(&self, off: u32) -> String {
        self.name_bytes(off).map_or_else(
            || "?".to_owned(),
            |b| String::from_utf8_lossy(b).into_owned(),
        )
    }

    /// The value at `pc` of the pc-value stream at `pctab + off`: a varint
    /// sequence of (zigzag value delta, pc delta / quantum) pairs starting at
    /// value -1 at the function entry, ended by a zero value delta.
    fn pcvalue(&self, func: &Func, off: u32, pc: u64) -> Option<i32> {
        if off == 0 {
            return None;
        }
        let mut p = self.tab().get(self.layout.pctab + off as usize..)?;
        let (mut at, mut value) = (func.entry, -1i32);
        loop {
            let (delta, n) = uvarint(p)?;
            if delta == 0 && at != func.entry {
                return None;
            }
            let delta = delta as u32;
            value = value.wrapping_add((0u32.wrapping_sub(delta & 1) ^ (delta >> 1)) as i32);
            let (pc_delta, m) = uvarint(p.get(n..)?)?;
            p = p.get(n + m..)?;
            at = at.checked_add(pc_delta.checked_mul(self.layout.quantum)?)?;
            if pc < at {
                return Some(value);
            }
        }
    }
}

/// The NUL-terminated string at `off` in `data`.
fn c_string(data: &[u8], off: usize) -> Option<&[u8]> {
    let rest = data.get(off..)?;
    rest.get(..rest.iter().position(|&b| b == 0)?)
}

/// The range `sub` occupies in `data`, if it lies inside it.
fn file_range(data: &[u8], sub: &[u8]) -> Option<Range<usize>> {
    let start = (sub.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
    let end = start.checked_add(sub.len())?;
    (end <= data.len()).then_some(start..end)
}

/// A table found by its magic in data regions (the first that validates).
fn find_by_magic<'a>(memory: &Memory<'a>) -> Option<(u64, &'a [u8])> {
    let regions = memory.data_regions(false).chain(memory.data_regions(true));
    for (vaddr, data) in regions {
        let skip = usize::try_from(vaddr.wrapping_neg() % 4).ok()?;
        let mut at = skip;
        while let Some(window) = data.get(at..at + 8) {
            if matches!(window, [0xf0 | 0xf1, 0xff, 0xff, 0xff, 0, 0, _, _])
                && let Some(table) = data.get(at..)
                && Layout::parse(table).is_ok()
            {
                return Some((vaddr.wrapping_add(at as u64), table));
            }
            at += 4;
        }
    }
    None
}

/// Word index of `moduledata.gofunc`: Go 1.18–1.19 lack `covctrs`/`ecovctrs`;
/// Go 1.27 added `typedesclen`, `itaboffset` and `itabsize` before it.
fn gofunc_index(format: Format, version: Option<(u32, u32)>) -> u64 {
    match (format, version) {
        (Format::Go118, _) => 38,
        (Format::Go120, Some(v)) if v >= (1, 27) => 43,
        (Format::Go120, _) => 40,
    }
}

/// `runtime.firstmoduledata`'s (text, gofunc), found by its first word, a
/// pointer to the table, and checked against two more (the `funcnametab`
/// and `pclntable` slices). The pointer is looked for in place, then
/// through relative relocations for linkers that leave places zero.
fn find_moduledata(
    memory: &mut Memory<'_>,
    file: &object::File<'_>,
    table: u64,
    layout: &Layout,
    version: Option<(u32, u32)>,
) -> Option<(u64, Option<u64>)> {
    let ps = layout.ptr_size;
    let step = u64::from(ps);
    let matches = |memory: &Memory<'_>, md: u64| {
        let field = |i: u64| memory.word(md.wrapping_add(i * step), ps);
        field(1) == Some(table.wrapping_add(layout.funcnames as u64))
            && field(13) == Some(table.wrapping_add(layout.pcln as u64))
    };
    let mut candidates = Vec::new();
    for (vaddr, data) in memory.data_regions(true) {
        let skip = usize::try_from(vaddr.wrapping_neg() % step).ok()?;
        let mut at = skip;
        while at + usize::from(ps) <= data.len() {
            if le_word(data, at, ps) == Some(table) {
                candidates.push(vaddr.wrapping_add(at as u64));
            }
            at += usize::from(ps);
        }
    }
    let mut found = candidates.into_iter().find(|&md| matches(memory, md));
    if found.is_none() {
        memory.load_relocations(file);
        found = memory
            .relocated_to(table)
            .into_iter()
            .find(|&md| matches(memory, md));
    }
    let md = found?;
    let text = memory.word(md.wrapping_add(22 * step), ps)?;
    let gofunc_at = md.wrapping_add(gofunc_index(layout.format, version) * step);
    let gofunc = memory.word(gofunc_at, ps);
    Some((text, gofunc))
}

/// Without `moduledata`: the header's `textStart` (stored until Go 1.25),
/// else `runtime.text`, else the `.text` section.
fn fallback_text(file: &object::File<'_>, layout: &Layout) -> Option<u64> {
    if layout.text_start != 0 {
        return Some(layout.text_start);
    }
    file.symbols()
        .find(|s| s.name() == Ok("runtime.text"))
        .map(|s| s.address())
        .or_else(|| file.section_by_name(".text").map(|s| s.address()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-function Go 1.20 table, built by hand: `main.a` at text+0 and
    /// `main.b` at text+16, both in `/src/x.go`, line 10 for their first 4
    /// bytes and line 12 after.
    fn synthetic() -> Vec<u8> {
        let names = b"main.a\0main.b\0";
        let files = b"/src/x.go\0";
        // Offset 0 means "no table", so the streams start at 1.
        let pcfile = [2, 16, 0]; // value -1 → 0 (zigzag 2) for 16 bytes
        let pcln = [22, 4, 4, 12, 0]; // -1 → 10 for 4 bytes, → 12 for 12
        let funcnames = 72;
        let cu = funcnames + names.len();
        let filetab = cu + 4;
        let pctab = filetab + files.len();
        let pcln_off = pctab + 1 + pcfile.len() + pcln.len();
        let mut t = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        for w in [2, 1, 0, funcnames, cu, filetab, pctab, pcln_off] {
            t.extend_from_slice(&(w as u64).to_le_bytes());
        }
        t.extend_from_slice(names);
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(files);
        t.push(0);
        t.extend_from_slice(&pcfile);
        t.extend_from_slice(&pcln);
        let (pcfile_at, pcln_at) = (1, 1 + pcfile.len() as u32);
        let functab = [0, 20, 16, 64, 32];
        t.extend(functab.iter().flat_map(|v: &u32| v.to_le_bytes()));
        for (entry, name, start) in [(0, 0, 9), (16, 7, 11)] {
            let fields = [entry, name, 0, 0, 0, pcfile_at, pcln_at, 0, 0, start, 0];
            t.extend(fields.iter().flat_map(|v: &u32| v.to_le_bytes()));
        }
        t
    }

    fn table(bytes: Vec<u8>) -> GoTable {
        let layout = Layout::parse(&bytes).unwrap();
        GoTable {
            table: 0..bytes.len(),
            bytes: Arc::new(Bytes::Owned(bytes)),
            layout,
            text: 0x1000,
            gofunc: None,
        }
    }

    #[test]
    fn synthetic_table_decodes() {
        let t = table(synthetic());
        let frame = |pc| {
            t.frames(pc)
                .into_iter()
                .map(|f| (f.function, f.file, f.line, f.start_line))
        };
        let at = |pc| frame(pc).collect::<Vec<_>>();
        let x = || "/src/x.go".to_owned();
        assert_eq!(at(0x1000), [("main.a".to_owned(), x(), 10, 9)]);
        assert_eq!(at(0x1003), [("main.a".to_owned(), x(), 10, 9)]);
        assert_eq!(at(0x1004), [("main.a".to_owned(), x(), 12, 9)]);
        assert_eq!(at(0x1010), [("main.b".to_owned(), x(), 10, 11)]);
        assert_eq!(at(0x101f), [("main.b".to_owned(), x(), 12, 11)]);
        assert!(at(0x1020).is_empty() && at(0xfff).is_empty() && at(0).is_empty());
        assert_eq!(t.function_entry("main.b"), Some((0x1010, 0x1020)));
        assert_eq!(t.function_count(), 2);
    }

    #[test]
    fn synthetic_table_rejects_damage() {
        let bytes = synthetic();
        // The last record ends the table: every shorter table is an error.
        for cut in 0..bytes.len() {
            assert!(Layout::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let damaged = |at: usize, value: u8| {
            let mut b = bytes.clone();
            b[at] = value;
            Layout::parse(&b).map(|_| ())
        };
        assert!(matches!(
            damaged(0, 0xfb),
            Err(GoError::UnsupportedMagic(0xffff_fffb))
        ));
        assert!(matches!(damaged(4, 1), Err(GoError::Malformed(_))));
        assert!(matches!(
            damaged(7, 4),
            Err(GoError::Truncated(_) | GoError::Malformed(_))
        ));
        assert!(matches!(damaged(8, 200), Err(GoError::Truncated(_))));
        // funcnameOffset past cuOffset.
        assert!(matches!(
            damaged(8 + 3 * 8, 200),
            Err(GoError::Malformed(_))
        ));
        // Second function before the first.
        let functab = bytes.len() - 2 * 44 - 20;
        let mut unsorted = bytes.clone();
        unsorted[functab] = 17;
        assert!(matches!(
            Layout::parse(&unsorted),
            Err(GoError::Malformed(_))
        ));
        // Corrupt streams and names degrade to "?" and 0, never panic.
        for at in 72..functab {
            let mut b = bytes.clone();
            b[at] ^= 0xff;
            let t = table(b);
            for pc in 0x1000..0x1020 {
                assert_eq!(t.frames(pc).len(), 1);
            }
        }
    }
}
