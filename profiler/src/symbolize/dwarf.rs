//! DWARF line and inline information, read lazily straight from the
//! memory-mapped file.
//!
//! Objects are already mapped (through /proc/PID/map_files), so this module
//! builds the `gimli::Dwarf` from those mappings with a reader type,
//! [`SectionBytes`], that keeps its mapping alive (compressed sections are
//! inflated once into owned buffers).
//!
//! Why not `addr2line::Context`: it parses every compilation unit's
//! abbreviations and line-program header up front and keeps them for its
//! life. For Debian's libc debug file (dwz-processed, with a supplementary
//! file) that was 22.9 MiB of heap per daemon (15 MiB abbreviations, 6 MiB
//! line headers, measured with heaptrack), for a handful of hot units. This
//! reader is a port of addr2line 0.27's lookup (`ResUnits`, `Functions`,
//! `Lines`, `FrameIter`) that keeps only an address-range → unit index and
//! parses units on demand, holding the last [`UNIT_CACHE`] parsed units
//! (abbreviations, function/inline tree, line rows): the daemon's DWARF heap
//! for the same libc went from 32.4 to 9.8 MiB at its peak, most of that now
//! the inflated compressed sections (heaptrack of a whole-system record).
//! Its output is checked against addr2line's in `dwarf/tests.rs`. It also reads each function's
//! `DW_AT_decl_line`, which addr2line does not expose, for pprof's
//! `Function.start_line`.

use std::{
    borrow::Cow,
    cmp::Ordering,
    ops::Deref,
    sync::{Arc, Mutex},
};

use gimli::{AttributeValue, Reader as _, RunTimeEndian};
use object::{CompressionFormat, Object, ObjectSection};

use crate::process::objects::Bytes;

/// Bytes of one DWARF section, borrowed from a mapping kept alive by `owner`.
#[derive(Clone)]
pub struct SectionBytes {
    _owner: Arc<dyn Send + Sync>,
    ptr: *const u8,
    len: usize,
}

impl std::fmt::Debug for SectionBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SectionBytes({} bytes)", self.len)
    }
}

// SAFETY: the pointed-to bytes are immutable and owned by `_owner`, which is
// itself Send + Sync.
unsafe impl Send for SectionBytes {}
// SAFETY: as above.
unsafe impl Sync for SectionBytes {}

impl Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` lies inside the buffer `_owner` keeps alive.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

// SAFETY: the target never moves while any clone holds `_owner`.
unsafe impl gimli::StableDeref for SectionBytes {}
// SAFETY: clones point at the same, still-owned bytes.
unsafe impl gimli::CloneStableDeref for SectionBytes {}

impl SectionBytes {
    fn empty() -> Self {
        static EMPTY: [u8; 0] = [];
        Self {
            _owner: Arc::new(()),
            ptr: EMPTY.as_ptr(),
            len: 0,
        }
    }

    /// Bytes of `data` that live inside `owner`, or an owned copy.
    fn from_cow(owner: &Arc<Bytes>, data: Cow<'_, [u8]>) -> Self {
        match data {
            Cow::Borrowed(slice) => {
                let base = owner.as_ptr() as usize;
                let start = slice.as_ptr() as usize;
                debug_assert!(start >= base && start + slice.len() <= base + owner.len());
                Self {
                    _owner: Arc::clone(owner) as Arc<dyn Send + Sync>,
                    ptr: slice.as_ptr(),
                    len: slice.len(),
                }
            }
            Cow::Owned(vec) => Self::owned(vec),
        }
    }

    /// Bytes that own their buffer. The vector itself is kept (not copied
    /// into an `Arc<[u8]>`, which for libc's 5.8 MiB `.debug_info` held
    /// both copies at once): its heap buffer never moves.
    fn owned(vec: Vec<u8>) -> Self {
        let owned = Arc::new(vec);
        Self {
            ptr: owned.as_ptr(),
            len: owned.len(),
            _owner: owned as Arc<dyn Send + Sync>,
        }
    }

    /// A section's bytes: borrowed from the mapping when stored plain; when
    /// zlib-compressed, inflated into an owned buffer while the compressed
    /// input's pages are dropped from RSS as they are consumed (see
    /// [`inflate_releasing`]).
    fn of_section(owner: &Arc<Bytes>, section: &object::Section<'_, '_>) -> Option<Self> {
        let data = section.compressed_data().ok()?;
        match data.format {
            CompressionFormat::None => Some(Self::from_cow(owner, Cow::Borrowed(data.data))),
            CompressionFormat::Zlib => inflate_releasing(owner, &data).map(Self::owned),
            _ => data.decompress().ok().map(|d| Self::from_cow(owner, d)),
        }
    }
}

/// Input consumed between two releases of the compressed bytes' pages.
const INFLATE_CHUNK: usize = 256 << 10;

/// Inflates a zlib section read through `owner`'s mapping, dropping the
/// pages of its compressed bytes [`INFLATE_CHUNK`] at a time as the inflater
/// consumes them. Inflating in one call kept every compressed page resident
/// until the whole object was parsed: for Debian's libc debug file 3.8 MiB
/// of file-backed RSS on top of the inflated sections, in the first window
/// where the daemon's peak RSS is made. `None` if the data is corrupt or
/// does not inflate to the size its header gives.
fn inflate_releasing(owner: &Bytes, data: &object::CompressedData<'_>) -> Option<Vec<u8>> {
    let size = usize::try_from(data.uncompressed_size).ok()?;
    let mut out = Vec::new();
    // The size comes from the file: a corrupt one fails here, not in abort.
    out.try_reserve_exact(size).ok()?;
    let mut z = flate2::Decompress::new(true);
    let input = data.data;
    let mut released = 0;
    loop {
        let consumed = z.total_in() as usize;
        let chunk = &input[consumed..input.len().min(consumed + INFLATE_CHUNK)];
        let produced = out.len();
        let status = z
            .decompress_vec(chunk, &mut out, flate2::FlushDecompress::None)
            .ok()?;
        let now = z.total_in() as usize;
        match status {
            // All of it: the pages on chunk boundaries were faulted in
            // again (with their neighbours) after their first release.
            flate2::Status::StreamEnd => {
                owner.release_range(input);
                break;
            }
            // No progress: truncated input or an output larger than its header says.
            _ if now == consumed && out.len() == produced => return None,
            _ if now - released >= INFLATE_CHUNK => {
                owner.release_range(&input[released..now]);
                released = now;
            }
            _ => {}
        }
    }
    (out.len() == size).then_some(out)
}

/// The reader every DWARF structure here is built on.
pub type Reader = gimli::EndianReader<RunTimeEndian, SectionBytes>;

/// One frame of an address's inline chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DwarfFrame {
    /// Linkage (mangled) name if present, else the plain name.
    pub name: Option<String>,
    pub file: Option<String>,
    pub line: u32,
    /// Line the function is declared on.
    pub decl_line: u32,
}

/// Line and inline information of one object.
///
/// Only the address → unit index is kept between lookups; units are parsed
/// on demand and the last [`UNIT_CACHE`] of them stay parsed.
pub struct DwarfInfo {
    dwarf: gimli::Dwarf<Reader>,
    /// `.debug_info` offsets of the units addr2line's `ResUnits` keeps
    /// (every unit that parses, but type units), ascending.
    units: Box<[usize]>,
    /// The same for the supplementary file.
    sup_units: Box<[usize]>,
    /// Address ranges of the units, sorted by end (see [`DwarfInfo::find`]).
    ranges: Box<[UnitRange]>,
    cache: Mutex<Cache>,
}

/// Parsed units kept for later lookups.
const UNIT_CACHE: usize = 8;
/// Units parsed only to follow a cross-unit reference for a name.
const REF_CACHE: usize = 16;

struct UnitRange {
    begin: u64,
    end: u64,
    /// Smallest `begin` of this and every later range.
    min_begin: u64,
    /// Index into `DwarfInfo::units`.
    unit: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DebugFile {
    Primary,
    Supplementary,
}

/// A tiny least-recently-used cache (most recent last).
struct Lru<K, V> {
    cap: usize,
    entries: Vec<(K, V)>,
}

impl<K: PartialEq + Copy, V> Lru<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            entries: Vec::with_capacity(cap),
        }
    }

    fn get_or_try_insert(
        &mut self,
        key: K,
        make: impl FnOnce() -> Result<V, Error>,
    ) -> Result<&mut V, Error> {
        if let Some(i) = self.entries.iter().position(|(k, _)| *k == key) {
            let hit = self.entries.remove(i);
            self.entries.push(hit);
        } else {
            let value = make()?;
            if self.entries.len() == self.cap {
                self.entries.remove(0);
            }
            self.entries.push((key, value));
        }
        Ok(&mut self.entries.last_mut().expect("just pushed").1)
    }
}

struct Cache {
    units: Lru<u32, Box<LoadedUnit>>,
    refs: Lru<(DebugFile, usize), Arc<gimli::Unit<Reader>>>,
}

type Error = gimli::Error;

/// One parsed compilation unit with its (lazily parsed) functions and lines.
struct LoadedUnit {
    unit: gimli::Unit<Reader>,
    lines: Option<Result<Option<Lines>, Error>>,
    functions: Option<Result<Functions, Error>>,
}

/// What name resolution needs besides the unit being parsed.
struct Resolver<'a> {
    dwarf: &'a gimli::Dwarf<Reader>,
    units: &'a [usize],
    sup_units: &'a [usize],
    refs: &'a mut Lru<(DebugFile, usize), Arc<gimli::Unit<Reader>>>,
}

impl Resolver<'_> {
    /// The unit holding `offset` and the offset within it (addr2line's
    /// `Context::find_unit`).
    fn find_unit(
        &mut self,
        offset: gimli::DebugInfoOffset<usize>,
        file: DebugFile,
    ) -> Result<(Arc<gimli::Unit<Reader>>, gimli::UnitOffset<usize>), Error> {
        let (list, dwarf) = match file {
            DebugFile::Primary => (self.units, self.dwarf),
            DebugFile::Supplementary => match self.dwarf.sup.as_deref() {
                Some(sup) => (self.sup_units, sup),
                None => return Err(Error::NoEntryAtGivenOffset(offset.0 as u64)),
            },
        };
        let start = match list.binary_search(&offset.0) {
            Ok(_) | Err(0) => return Err(Error::NoEntryAtGivenOffset(offset.0 as u64)),
            Err(i) => list[i - 1],
        };
        let unit = self.refs.get_or_try_insert((file, start), || {
            let header = dwarf.unit_header(gimli::DebugInfoOffset(start))?;
            Ok(Arc::new(dwarf.unit(header)?))
        })?;
        let unit = Arc::clone(unit);
        let unit_offset = offset
            .to_unit_offset(&unit.header)
            .ok_or(Error::NoEntryAtGivenOffset(offset.0 as u64))?;
        Ok((unit, unit_offset))
    }
}

#[derive(Default)]
struct RangeAttributes {
    low_pc: Option<u64>,
    high_pc: Option<u64>,
    size: Option<u64>,
    ranges_offset: Option<gimli::RangeListsOffset<usize>>,
}

impl RangeAttributes {
    /// Reads a range attribute into `self`; false if `attr` is not one.
    fn read(
        &mut self,
        unit: gimli::UnitRef<'_, Reader>,
        attr: &gimli::Attribute<Reader>,
    ) -> Result<bool, Error> {
        match attr.name() {
            gimli::DW_AT_low_pc => match attr.value() {
                AttributeValue::Addr(val) => self.low_pc = Some(val),
                AttributeValue::DebugAddrIndex(index) => self.low_pc = Some(unit.address(index)?),
                _ => {}
            },
            gimli::DW_AT_high_pc => match attr.value() {
                AttributeValue::Addr(val) => self.high_pc = Some(val),
                AttributeValue::DebugAddrIndex(index) => {
                    self.high_pc = Some(unit.address(index)?);
                }
                AttributeValue::Udata(val) => self.size = Some(val),
                _ => {}
            },
            gimli::DW_AT_ranges => {
                self.ranges_offset = unit.attr_ranges_offset(attr.value())?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn for_each_range(
        &self,
        unit: gimli::UnitRef<'_, Reader>,
        mut f: impl FnMut(gimli::Range),
    ) -> Result<bool, Error> {
        let mut added_any = false;
        let mut add_range = |range: gimli::Range| {
            if range.begin < range.end {
                f(range);
                added_any = true;
            }
        };
        if let Some(ranges_offset) = self.ranges_offset {
            let mut range_list = unit.ranges(ranges_offset)?;
            while let Some(range) = range_list.next()? {
                add_range(range);
            }
        } else if let (Some(begin), Some(end)) = (self.low_pc, self.high_pc) {
            add_range(gimli::Range { begin, end });
        } else if let (Some(begin), Some(size)) = (self.low_pc, self.size) {
            add_range(gimli::Range {
                begin,
                end: begin.wrapping_add(size),
            });
        }
        Ok(added_any)
    }
}

impl DwarfInfo {
    /// Indexes `file` (whose bytes are `owner`) and an optional dwz
    /// supplementary file.
    pub fn load(
        file: &object::File<'_>,
        owner: &Arc<Bytes>,
        sup: Option<(&object::File<'_>, &Arc<Bytes>)>,
    ) -> Result<Self, gimli::Error> {
        let mut dwarf = load_dwarf(file, owner)?;
        if let Some((sup_file, sup_owner)) = sup {
            dwarf.set_sup(load_dwarf(sup_file, sup_owner)?);
        }
        let release = || {
            owner.release_pages();
            if let Some((_, sup_owner)) = sup {
                sup_owner.release_pages();
            }
        };
        let (units, ranges) = index_units(&dwarf, &release)?;
        let sup_units = match dwarf.sup.as_deref() {
            Some(sup) => index_sup_units(sup, &release)?,
            None => Box::default(),
        };
        Ok(Self {
            dwarf,
            units,
            sup_units,
            ranges,
            cache: Mutex::new(Cache {
                units: Lru::new(UNIT_CACHE),
                refs: Lru::new(REF_CACHE),
            }),
        })
    }

    /// The inline chain at `addr`, innermost first; empty if no unit covers it.
    pub fn frames(&self, addr: u64) -> Vec<DwarfFrame> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        self.lookup(&mut cache, addr).unwrap_or_default()
    }

    /// Indexes into `self.units` of the units whose ranges hold `probe`
    /// (addr2line's `ResUnits::find_range`).
    fn find(&self, probe: u64) -> impl Iterator<Item = u32> + '_ {
        let probe_high = probe.wrapping_add(1);
        let pos = match self.ranges.binary_search_by_key(&probe, |r| r.end) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        self.ranges[pos..]
            .iter()
            .take_while(move |r| probe_high > r.min_begin)
            .filter(move |r| probe < r.end && probe_high > r.begin)
            .map(|r| r.unit)
    }

    fn lookup(&self, cache: &mut Cache, probe: u64) -> Result<Vec<DwarfFrame>, Error> {
        let Cache { units, refs } = cache;
        for id in self.find(probe) {
            let loaded = units.get_or_try_insert(id, || {
                let offset = gimli::DebugInfoOffset(self.units[id as usize]);
                let header = self.dwarf.unit_header(offset)?;
                Ok(Box::new(LoadedUnit {
                    unit: self.dwarf.unit(header)?,
                    lines: None,
                    functions: None,
                }))
            })?;
            let mut resolver = Resolver {
                dwarf: &self.dwarf,
                units: &self.units,
                sup_units: &self.sup_units,
                refs,
            };
            let function = loaded.find_function(&self.dwarf, probe, &mut resolver)?;
            loaded.parse_lines(&self.dwarf)?;
            let LoadedUnit {
                unit,
                lines,
                functions,
            } = &**loaded;
            let unit = gimli::UnitRef::new(&self.dwarf, unit);
            let lines = match lines {
                Some(Ok(lines)) => lines.as_ref(),
                _ => None,
            };
            let location = lines.and_then(|l| l.find_location(probe));
            let function = match (function, functions) {
                (Some(i), Some(Ok(functions))) => match &functions.functions[i].parsed {
                    Some(Ok(f)) => Some(f),
                    _ => None,
                },
                _ => None,
            };
            let Some(function) = function else {
                match location {
                    Some((file, line)) => {
                        return Ok(vec![DwarfFrame {
                            name: None,
                            file: file.map(str::to_owned),
                            line,
                            decl_line: 0,
                        }]);
                    }
                    None => continue,
                }
            };
            let mut out = Vec::new();
            let mut location = location.map(|(f, l)| (f.map(str::to_owned), l));
            for inlined in function.find_inlined_functions(probe).iter().rev() {
                let (file, line) = location.take().unwrap_or((None, 0));
                out.push(DwarfFrame {
                    name: raw_name(&inlined.name),
                    file,
                    line,
                    decl_line: decl_line(unit, inlined.offset),
                });
                let call_file = inlined
                    .call_file
                    .and_then(|f| lines.and_then(|l| l.file(f)))
                    .map(str::to_owned);
                location = Some((call_file, inlined.call_line));
            }
            let (file, line) = location.unwrap_or((None, 0));
            out.push(DwarfFrame {
                name: raw_name(&function.name),
                file,
                line,
                decl_line: decl_line(unit, function.offset),
            });
            return Ok(out);
        }
        Ok(Vec::new())
    }
}

fn raw_name(name: &Option<Reader>) -> Option<String> {
    name.as_ref()
        .and_then(|n| n.to_string_lossy().ok().map(Cow::into_owned))
}

/// Unit offsets and the sorted address ranges that map to them.
type UnitIndex = (Box<[usize]>, Box<[UnitRange]>);

/// Units indexed between two calls of the `release` callback of
/// [`index_units`]. Reading each unit's header, abbreviations and
/// line-program header touches pages all over an uncompressed file's debug
/// sections, which were released only after the whole object: a copy of
/// this daemon's own release binary (23 MiB of `.debug_info`) as the
/// profiled program took the daemon to 76 MiB of RSS, 58 of it file-backed,
/// for the milliseconds of its parse; releasing every 64 units, 40–42 MiB
/// (BENCHMARKS.md, run K).
const RELEASE_EVERY_UNITS: usize = 64;

/// Calls `release` every [`RELEASE_EVERY_UNITS`] units.
struct Ticks<'a> {
    release: &'a dyn Fn(),
    seen: usize,
}

impl<'a> Ticks<'a> {
    fn new(release: &'a dyn Fn()) -> Self {
        Self { release, seen: 0 }
    }

    fn unit(&mut self) {
        self.seen += 1;
        if self.seen.is_multiple_of(RELEASE_EVERY_UNITS) {
            (self.release)();
        }
    }
}

/// addr2line's `ResUnits::parse`, keeping only offsets and ranges: each
/// unit's abbreviations and line program header are dropped after use.
/// Calls `release` (which drops the file's pages from RSS) every
/// [`RELEASE_EVERY_UNITS`] units.
fn index_units(dwarf: &gimli::Dwarf<Reader>, release: &dyn Fn()) -> Result<UnitIndex, Error> {
    let mut aranges = Vec::new();
    let mut headers = dwarf.debug_aranges.headers();
    while let Some(header) = headers.next()? {
        aranges.push((header.debug_info_offset(), header.offset()));
    }
    aranges.sort_unstable_by_key(|i| i.0);

    let mut ranges: Vec<UnitRange> = Vec::new();
    let mut offsets = Vec::new();
    let mut iter = dwarf.units();
    let mut ticks = Ticks::new(release);
    while let Some(header) = iter.next()? {
        ticks.unit();
        let id = u32::try_from(offsets.len()).map_err(|_| Error::UnsupportedOffset)?;
        let mut push = |range: gimli::Range| {
            ranges.push(UnitRange {
                begin: range.begin,
                end: range.end,
                min_begin: 0,
                unit: id,
            });
        };
        let Some(offset) = header.debug_info_offset() else {
            continue;
        };
        let mut need_range = match header.type_() {
            gimli::UnitType::Type { .. } | gimli::UnitType::SplitType { .. } => continue,
            gimli::UnitType::Partial => false,
            _ => true,
        };
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let unit = gimli::UnitRef::new(dwarf, &unit);
        if need_range {
            let mut entries = unit.entries_raw(None)?;
            let Some(abbrev) = entries.read_abbreviation()? else {
                continue;
            };
            let mut attrs = RangeAttributes::default();
            for spec in abbrev.attributes() {
                let attr = entries.read_attribute(*spec)?;
                attrs.read(unit, &attr)?;
            }
            let i = match attrs.ranges_offset {
                Some(_) => None,
                None => aranges.binary_search_by_key(&offset, |x| x.0).ok(),
            };
            if let Some(mut i) = i {
                while i > 0 && aranges[i - 1].0 == offset {
                    i -= 1;
                }
                for (_, aranges_offset) in aranges[i..].iter().take_while(|x| x.0 == offset) {
                    let aranges_header = dwarf.debug_aranges.header(*aranges_offset)?;
                    let mut entries = aranges_header.entries();
                    while let Some(arange) = entries.next().transpose() {
                        let Ok(arange) = arange else { continue };
                        if arange.length() != 0 {
                            push(arange.range());
                            need_range = false;
                        }
                    }
                }
            }
            if need_range {
                need_range = !attrs.for_each_range(unit, &mut push)?;
            }
        }
        if need_range
            && let Some(program) = &unit.line_program
            && let Ok(lines) = Lines::parse(unit, program.clone())
        {
            for seq in &lines.sequences {
                push(gimli::Range {
                    begin: seq.start,
                    end: seq.end,
                });
            }
        }
        offsets.push(offset.0);
    }
    ranges.sort_unstable_by_key(|r| (r.end, r.unit));
    let mut min = !0;
    for r in ranges.iter_mut().rev() {
        min = min.min(r.begin);
        r.min_begin = min;
    }
    Ok((offsets.into(), ranges.into()))
}

/// addr2line's `SupUnits::parse`, keeping only the offsets.
fn index_sup_units(sup: &gimli::Dwarf<Reader>, release: &dyn Fn()) -> Result<Box<[usize]>, Error> {
    let mut offsets = Vec::new();
    let mut iter = sup.units();
    let mut ticks = Ticks::new(release);
    while let Some(header) = iter.next()? {
        ticks.unit();
        let Some(offset) = header.debug_info_offset() else {
            continue;
        };
        if sup.unit(header).is_ok() {
            offsets.push(offset.0);
        }
    }
    Ok(offsets.into())
}

impl LoadedUnit {
    fn parse_lines(&mut self, dwarf: &gimli::Dwarf<Reader>) -> Result<(), Error> {
        if self.lines.is_none() {
            let unit = gimli::UnitRef::new(dwarf, &self.unit);
            self.lines = Some(match &self.unit.line_program {
                Some(program) => Lines::parse(unit, program.clone()).map(Some),
                None => Ok(None),
            });
        }
        match &self.lines {
            Some(Err(e)) => Err(*e),
            _ => Ok(()),
        }
    }

    /// Index of the function holding `probe`, parsed with its inline tree.
    fn find_function(
        &mut self,
        dwarf: &gimli::Dwarf<Reader>,
        probe: u64,
        resolver: &mut Resolver<'_>,
    ) -> Result<Option<usize>, Error> {
        let Self {
            unit, functions, ..
        } = self;
        let unit = gimli::UnitRef::new(dwarf, unit);
        let functions = functions
            .get_or_insert_with(|| Functions::parse(unit))
            .as_mut()
            .map_err(|e| *e)?;
        let Some(address) = functions.find_address(probe) else {
            return Ok(None);
        };
        let index = functions.addresses[address].function;
        let lazy = &mut functions.functions[index];
        let parsed = lazy.parsed.get_or_insert_with(|| {
            Function::parse(lazy.offset, DebugFile::Primary, unit, resolver)
        });
        parsed.as_ref().map_err(|e| *e)?;
        Ok(Some(index))
    }
}

struct Functions {
    functions: Box<[LazyFunction]>,
    addresses: Box<[FunctionAddress]>,
}

struct FunctionAddress {
    range: gimli::Range,
    function: usize,
}

struct LazyFunction {
    offset: gimli::UnitOffset<usize>,
    parsed: Option<Result<Function, Error>>,
}

struct Function {
    offset: gimli::UnitOffset<usize>,
    name: Option<Reader>,
    inlined_functions: Box<[InlinedFunction]>,
    inlined_addresses: Box<[InlinedFunctionAddress]>,
}

struct InlinedFunctionAddress {
    range: gimli::Range,
    call_depth: usize,
    function: usize,
}

struct InlinedFunction {
    offset: gimli::UnitOffset<usize>,
    name: Option<Reader>,
    call_file: Option<u64>,
    call_line: u32,
}

impl Functions {
    fn parse(unit: gimli::UnitRef<'_, Reader>) -> Result<Self, Error> {
        let mut functions = Vec::new();
        let mut addresses = Vec::new();
        let mut entries = unit.entries_raw(None)?;
        while !entries.is_empty() {
            let offset = entries.next_offset();
            let Some(abbrev) = entries.read_abbreviation()? else {
                continue;
            };
            if abbrev.tag() != gimli::DW_TAG_subprogram {
                entries.skip_attributes(abbrev.attributes())?;
                continue;
            }
            let mut ranges = RangeAttributes::default();
            for spec in abbrev.attributes() {
                let attr = entries.read_attribute(*spec)?;
                ranges.read(unit, &attr)?;
            }
            let function = functions.len();
            if ranges.for_each_range(unit, |range| {
                addresses.push(FunctionAddress { range, function });
            })? {
                functions.push(LazyFunction {
                    offset,
                    parsed: None,
                });
            }
        }
        addresses.sort_unstable_by_key(|x| x.range.begin);
        Ok(Self {
            functions: functions.into(),
            addresses: addresses.into(),
        })
    }

    fn find_address(&self, probe: u64) -> Option<usize> {
        self.addresses
            .binary_search_by(|a| {
                if probe < a.range.begin {
                    Ordering::Greater
                } else if probe >= a.range.end {
                    Ordering::Less
                } else {
                    Ordering::Equal
                }
            })
            .ok()
    }
}

struct InlinedState<'a, 'r> {
    entries: gimli::EntriesRaw<'a, Reader>,
    functions: Vec<InlinedFunction>,
    addresses: Vec<InlinedFunctionAddress>,
    file: DebugFile,
    unit: gimli::UnitRef<'a, Reader>,
    resolver: &'a mut Resolver<'r>,
}

impl Function {
    fn parse(
        offset: gimli::UnitOffset<usize>,
        file: DebugFile,
        unit: gimli::UnitRef<'_, Reader>,
        resolver: &mut Resolver<'_>,
    ) -> Result<Self, Error> {
        let mut entries = unit.entries_raw(Some(offset))?;
        let depth = entries.next_depth();
        let abbrev = entries
            .read_abbreviation()?
            .ok_or(Error::NoEntryAtGivenOffset(offset.0 as u64))?;
        let mut name = None;
        for spec in abbrev.attributes() {
            let attr = entries.read_attribute(*spec)?;
            read_name(&attr, &mut name, file, unit, resolver)?;
        }
        let mut state = InlinedState {
            entries,
            functions: Vec::new(),
            addresses: Vec::new(),
            file,
            unit,
            resolver,
        };
        Self::parse_children(&mut state, depth, 0)?;
        // Breadth-first order: by call depth, then address (see addr2line).
        state
            .addresses
            .sort_unstable_by_key(|a| (a.call_depth, a.range.begin));
        Ok(Self {
            offset,
            name,
            inlined_functions: state.functions.into(),
            inlined_addresses: state.addresses.into(),
        })
    }

    fn parse_children(
        state: &mut InlinedState<'_, '_>,
        depth: isize,
        inlined_depth: usize,
    ) -> Result<(), Error> {
        loop {
            let offset = state.entries.next_offset();
            let next_depth = state.entries.next_depth();
            if next_depth <= depth {
                return Ok(());
            }
            if let Some(abbrev) = state.entries.read_abbreviation()? {
                match abbrev.tag() {
                    gimli::DW_TAG_subprogram => {
                        state.entries.skip_attributes(abbrev.attributes())?;
                        while state.entries.next_depth() > next_depth {
                            if let Some(abbrev) = state.entries.read_abbreviation()? {
                                state.entries.skip_attributes(abbrev.attributes())?;
                            }
                        }
                    }
                    gimli::DW_TAG_inlined_subroutine => {
                        InlinedFunction::parse(state, offset, abbrev, next_depth, inlined_depth)?;
                    }
                    _ => state.entries.skip_attributes(abbrev.attributes())?,
                }
            }
        }
    }

    /// The inlined functions holding `probe`, outermost first.
    fn find_inlined_functions(&self, probe: u64) -> Vec<&InlinedFunction> {
        let mut found = Vec::new();
        let mut addresses = &self.inlined_addresses[..];
        loop {
            let depth = found.len();
            let search = addresses.binary_search_by(|a| {
                if a.call_depth > depth {
                    Ordering::Greater
                } else if a.call_depth < depth {
                    Ordering::Less
                } else if a.range.begin > probe {
                    Ordering::Greater
                } else if a.range.end <= probe {
                    Ordering::Less
                } else {
                    Ordering::Equal
                }
            });
            let Ok(index) = search else {
                return found;
            };
            found.push(&self.inlined_functions[addresses[index].function]);
            addresses = &addresses[index + 1..];
        }
    }
}

impl InlinedFunction {
    fn parse(
        state: &mut InlinedState<'_, '_>,
        offset: gimli::UnitOffset<usize>,
        abbrev: &gimli::Abbreviation,
        depth: isize,
        inlined_depth: usize,
    ) -> Result<(), Error> {
        let unit = state.unit;
        let mut ranges = RangeAttributes::default();
        let mut name = None;
        let mut call_file = None;
        let mut call_line = 0;
        for spec in abbrev.attributes() {
            let attr = state.entries.read_attribute(*spec)?;
            if ranges.read(unit, &attr)? {
                continue;
            }
            match attr.name() {
                gimli::DW_AT_call_file => {
                    // DWARF 5 numbers files from 0; before, 0 meant none.
                    if let AttributeValue::FileIndex(fi) = attr.value()
                        && (fi > 0 || unit.header.version() >= 5)
                    {
                        call_file = Some(fi);
                    }
                }
                gimli::DW_AT_call_line => {
                    call_line = attr.udata_value().unwrap_or(0) as u32;
                }
                _ => read_name(&attr, &mut name, state.file, unit, state.resolver)?,
            }
        }
        let function = state.functions.len();
        state.functions.push(InlinedFunction {
            offset,
            name,
            call_file,
            call_line,
        });
        ranges.for_each_range(unit, |range| {
            state.addresses.push(InlinedFunctionAddress {
                range,
                call_depth: inlined_depth,
                function,
            });
        })?;
        Function::parse_children(state, depth, inlined_depth + 1)
    }
}

/// Takes a function's name from `attr` if it gives one: a linkage name
/// wins over a plain name, which wins over the name of an abstract origin or
/// specification (as addr2line orders them).
fn read_name(
    attr: &gimli::Attribute<Reader>,
    name: &mut Option<Reader>,
    file: DebugFile,
    unit: gimli::UnitRef<'_, Reader>,
    resolver: &mut Resolver<'_>,
) -> Result<(), Error> {
    match attr.name() {
        gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
            if let Ok(val) = unit.attr_string(attr.value()) {
                *name = Some(val);
            }
        }
        gimli::DW_AT_name if name.is_none() => {
            *name = unit.attr_string(attr.value()).ok();
        }
        gimli::DW_AT_abstract_origin | gimli::DW_AT_specification if name.is_none() => {
            *name = name_attr(attr.value(), file, unit, resolver, 16)?;
        }
        _ => {}
    }
    Ok(())
}

/// The name an abstract origin or specification points at, possibly in
/// another unit or in the supplementary file.
fn name_attr(
    attr: AttributeValue<Reader>,
    file: DebugFile,
    unit: gimli::UnitRef<'_, Reader>,
    resolver: &mut Resolver<'_>,
    recursion_limit: usize,
) -> Result<Option<Reader>, Error> {
    if recursion_limit == 0 {
        return Ok(None);
    }
    match attr {
        AttributeValue::UnitRef(offset) => {
            name_entry(file, unit, offset, resolver, recursion_limit)
        }
        AttributeValue::DebugInfoRef(dr) => {
            let (target, offset) = resolver.find_unit(dr, file)?;
            let target = gimli::UnitRef::new(unit.dwarf, &target);
            name_entry(file, target, offset, resolver, recursion_limit)
        }
        AttributeValue::DebugInfoRefSup(dr) => match unit.dwarf.sup.as_deref() {
            Some(sup) => {
                let (target, offset) = resolver.find_unit(dr, DebugFile::Supplementary)?;
                let target = gimli::UnitRef::new(sup, &target);
                name_entry(
                    DebugFile::Supplementary,
                    target,
                    offset,
                    resolver,
                    recursion_limit,
                )
            }
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

fn name_entry(
    file: DebugFile,
    unit: gimli::UnitRef<'_, Reader>,
    offset: gimli::UnitOffset<usize>,
    resolver: &mut Resolver<'_>,
    recursion_limit: usize,
) -> Result<Option<Reader>, Error> {
    let mut entries = unit.entries_raw(Some(offset))?;
    let abbrev = entries
        .read_abbreviation()?
        .ok_or(Error::NoEntryAtGivenOffset(offset.0 as u64))?;
    let mut name = None;
    let mut next = None;
    for spec in abbrev.attributes() {
        let attr = entries.read_attribute(*spec)?;
        match attr.name() {
            gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
                if let Ok(val) = unit.attr_string(attr.value()) {
                    return Ok(Some(val));
                }
            }
            gimli::DW_AT_name => {
                if let Ok(val) = unit.attr_string(attr.value()) {
                    name = Some(val);
                }
            }
            gimli::DW_AT_abstract_origin | gimli::DW_AT_specification => {
                next = Some(attr.value());
            }
            _ => {}
        }
    }
    if name.is_some() {
        return Ok(name);
    }
    match next {
        Some(next) => name_attr(next, file, unit, resolver, recursion_limit - 1),
        None => Ok(None),
    }
}

/// A unit's line table: rows per sequence, and rendered file names.
struct Lines {
    files: Box<[String]>,
    sequences: Box<[LineSequence]>,
}

struct LineSequence {
    start: u64,
    end: u64,
    rows: Box<[LineRow]>,
}

struct LineRow {
    address: u64,
    file_index: u64,
    line: u32,
}

impl Lines {
    fn parse(
        unit: gimli::UnitRef<'_, Reader>,
        program: gimli::IncompleteLineProgram<Reader, usize>,
    ) -> Result<Self, Error> {
        let mut sequences = Vec::new();
        let mut sequence_rows = Vec::<LineRow>::new();
        let mut rows = program.rows();
        while let Some((_, row)) = rows.next_row()? {
            if row.end_sequence() {
                if let Some(start) = sequence_rows.first().map(|x| x.address) {
                    let end = row.address();
                    let rows = std::mem::take(&mut sequence_rows);
                    if start < end {
                        sequences.push(LineSequence {
                            start,
                            end,
                            rows: rows.into(),
                        });
                    }
                }
                continue;
            }
            let address = row.address();
            let file_index = row.file_index();
            let line = row.line().map(std::num::NonZeroU64::get).unwrap_or(0) as u32;
            if let Some(last) = sequence_rows.last_mut()
                && last.address == address
            {
                last.file_index = file_index;
                last.line = line;
                continue;
            }
            sequence_rows.push(LineRow {
                address,
                file_index,
                line,
            });
        }
        sequences.sort_unstable_by_key(|x| x.start);

        let header = rows.header();
        let mut files = Vec::new();
        match header.file(0) {
            Some(file) => files.push(render_file(unit, file, header)?),
            // DWARF 4 and older have no file 0.
            None => files.push(String::new()),
        }
        let mut index = 1;
        while let Some(file) = header.file(index) {
            files.push(render_file(unit, file, header)?);
            index += 1;
        }
        Ok(Self {
            files: files.into(),
            sequences: sequences.into(),
        })
    }

    fn file(&self, index: u64) -> Option<&str> {
        self.files.get(index as usize).map(String::as_str)
    }

    /// File and line of the row holding `probe`.
    fn find_location(&self, probe: u64) -> Option<(Option<&str>, u32)> {
        let seq = self
            .sequences
            .binary_search_by(|s| {
                if probe < s.start {
                    Ordering::Greater
                } else if probe >= s.end {
                    Ordering::Less
                } else {
                    Ordering::Equal
                }
            })
            .ok()?;
        let rows = &self.sequences[seq].rows;
        let idx = match rows.binary_search_by(|row| row.address.cmp(&probe)) {
            Ok(x) => x,
            Err(0) => return None,
            Err(x) => x - 1,
        };
        let row = &rows[idx];
        Some((self.file(row.file_index), row.line))
    }
}

/// comp_dir + include directory + file name, joined as addr2line does.
fn render_file(
    unit: gimli::UnitRef<'_, Reader>,
    file: &gimli::FileEntry<Reader, usize>,
    header: &gimli::LineProgramHeader<Reader, usize>,
) -> Result<String, Error> {
    let mut path = match &unit.comp_dir {
        Some(dir) => dir.to_string_lossy()?.into_owned(),
        None => String::new(),
    };
    // Directory 0 is the compilation directory.
    if file.directory_index() != 0
        && let Some(directory) = file.directory(header)
    {
        path_push(
            &mut path,
            unit.attr_string(directory)?.to_string_lossy()?.as_ref(),
        );
    }
    path_push(
        &mut path,
        unit.attr_string(file.path_name())?
            .to_string_lossy()?
            .as_ref(),
    );
    Ok(path)
}

fn path_push(path: &mut String, p: &str) {
    let forward_root = |p: &str| p.starts_with('/') || p.get(1..3) == Some(":/");
    let backward_root = |p: &str| p.starts_with('\\') || p.get(1..3) == Some(":\\");
    if forward_root(p) || backward_root(p) {
        *path = p.to_string();
    } else {
        let separator = if backward_root(path) { '\\' } else { '/' };
        if !path.is_empty() && !path.ends_with(separator) {
            path.push(separator);
        }
        *path += p;
    }
}

fn load_dwarf(
    file: &object::File<'_>,
    owner: &Arc<Bytes>,
) -> Result<gimli::Dwarf<Reader>, gimli::Error> {
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    gimli::Dwarf::load(|id: gimli::SectionId| -> Result<Reader, gimli::Error> {
        // Variable locations name no function or line: never read, so a
        // compressed one (1.3 MiB for Debian's libc) is not inflated.
        if matches!(
            id,
            gimli::SectionId::DebugLoc | gimli::SectionId::DebugLocLists
        ) {
            return Ok(gimli::EndianReader::new(SectionBytes::empty(), endian));
        }
        let bytes = file
            .section_by_name(id.name())
            .and_then(|s| SectionBytes::of_section(owner, &s))
            .unwrap_or_else(SectionBytes::empty);
        Ok(gimli::EndianReader::new(bytes, endian))
    })
}
/// True if `file` carries DWARF debug info.
pub fn has_debug_info(file: &object::File<'_>) -> bool {
    file.section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0)
}

/// `DW_AT_decl_line` of the DIE at `offset`, following abstract origins
/// and specifications within the unit.
fn decl_line(unit: gimli::UnitRef<'_, Reader>, mut offset: gimli::UnitOffset<usize>) -> u32 {
    for _ in 0..4 {
        let Ok(entry) = unit.entry(offset) else {
            return 0;
        };
        if let Some(v) = entry.attr_value(gimli::DW_AT_decl_line)
            && let Some(line) = v.udata_value()
        {
            return u32::try_from(line).unwrap_or(0);
        }
        let next = entry
            .attr_value(gimli::DW_AT_abstract_origin)
            .or_else(|| entry.attr_value(gimli::DW_AT_specification));
        match next {
            Some(AttributeValue::UnitRef(o)) => offset = o,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests;
