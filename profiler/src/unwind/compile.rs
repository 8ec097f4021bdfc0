//! Compiles one object file's call-frame information (`.eh_frame`, and
//! `.debug_frame` where `.eh_frame` says nothing) into the sorted 8-byte rows
//! of `profiler_common::unwind`.
//!
//! gimli runs each FDE's CFA program; this module only classifies the
//! resulting rows into the few [`Cfa`] / [`FpRule`] forms the BPF step can
//! apply, fills the gaps between FDEs with `NoInfo` rows, merges identical
//! neighbours, synthesizes rows for PLT sections no FDE covers, and records
//! every row it cannot express ([`Unsupported`]) so the loss is measurable.
//! It is hand-written because what is worth expressing (and what to do with
//! the rest) is a property of our BPF step, not of DWARF.

use std::{borrow::Cow, collections::BTreeMap, fmt, path::Path};

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, Encoding, Expression, Operation,
    RegisterRule, UnwindContext, UnwindSection, UnwindTableRow, X86_64,
};
use object::{Object, ObjectSection, ObjectSegment};
use profiler_common::unwind::{
    Cfa, FpRule, MAX_ROWS_PER_PAGE, PageEntry, ROW_BYTES, Row, Rule, x86_64_ucontext,
};

type Slice<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;
type Ops<'a> = Vec<Operation<Slice<'a>>>;

/// Why an object has no table at all.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not a readable object file: {0}")]
    Parse(#[from] object::Error),
    #[error("unwind tables are x86-64 only, not {0:?}")]
    Architecture(object::Architecture),
    #[error("code at {addr:#x} is more than 4 GiB past the object's base {base:#x}")]
    TooLarge { base: u64, addr: u64 },
}

/// A CFI row (or a part of a PLT) no [`Rule`] can express.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unsupported {
    /// The CFA is an offset from a register other than sp and fp.
    CfaRegister(u16),
    /// The CFA is an expression of none of the known forms.
    CfaExpression,
    /// The CFA offset is not a multiple of 8 or is beyond ±256 KiB.
    CfaOffset,
    /// The return address is not saved at CFA - 8.
    ReturnAddress,
    /// The frame pointer is restored by a rule other than "same", "at CFA + n"
    /// and "at fp + n", or its offset is not encodable.
    FramePointer,
    /// An explicit rule for the stack pointer (the caller's is not the CFA).
    StackPointer,
    /// A signal frame (`S` augmentation) that is not the kernel's x86-64
    /// `ucontext_t` layout.
    SignalFrame,
    /// A `.plt` whose entries are not laid out as we know them.
    PltLayout,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::CfaRegister(r) => write!(f, "CFA based on register {r}"),
            Unsupported::CfaExpression => f.write_str("CFA expression"),
            Unsupported::CfaOffset => f.write_str("CFA offset not encodable"),
            Unsupported::ReturnAddress => f.write_str("return address rule"),
            Unsupported::FramePointer => f.write_str("frame pointer rule"),
            Unsupported::StackPointer => f.write_str("stack pointer rule"),
            Unsupported::SignalFrame => f.write_str("signal frame layout"),
            Unsupported::PltLayout => f.write_str("PLT layout"),
        }
    }
}

/// Where a row's information came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    EhFrame,
    DebugFrame,
    /// Synthesized for a PLT section no FDE covers.
    Plt,
}

/// A range of link-time addresses whose CFI could not be expressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsupportedRange {
    pub start: u64,
    pub end: u64,
    pub reason: Unsupported,
    pub source: Source,
}

/// What compiling found, for logs and tests.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// FDEs used, per source.
    pub fdes: BTreeMap<Source, usize>,
    /// `.debug_frame` FDEs skipped because `.eh_frame` covers their code.
    pub debug_frame_shadowed: usize,
    /// CFI rows gimli produced (before merging).
    pub cfi_rows: usize,
    /// CIEs/FDEs gimli could not parse or evaluate (skipped).
    pub malformed: usize,
    /// FDEs that started inside an earlier one (the later one wins).
    pub overlaps: usize,
    /// PLT sections rows were synthesized for.
    pub synthesized_plt: Vec<String>,
    /// Every range no rule could express.
    pub unsupported: Vec<UnsupportedRange>,
}

impl Report {
    /// Unsupported ranges per reason: (ranges, bytes of code).
    pub fn unsupported_counts(&self) -> BTreeMap<Unsupported, (usize, u64)> {
        let mut out = BTreeMap::new();
        for u in &self.unsupported {
            let e = out.entry(u.reason).or_insert((0, 0));
            e.0 += 1;
            e.1 += u.end - u.start;
        }
        out
    }
}

/// The unwind table of one object file.
#[derive(Clone, Debug, Default)]
pub struct CompiledTable {
    /// Link-time address row pcs are relative to (the lowest PT_LOAD address).
    pub base: u64,
    /// Rows sorted by pc, no two neighbours alike, ending with a `NoInfo` row.
    /// Empty if the object has no CFI.
    pub rows: Vec<Row>,
    pub report: Report,
}

/// Rows per page [`CompiledTable::choose_page_shift`] aims for: at most 8
/// halvings of the search.
pub const TARGET_ROWS_PER_PAGE: u32 = 256;
/// The largest page [`CompiledTable::choose_page_shift`] picks (64 KiB).
pub const MAX_PAGE_SHIFT: u32 = 16;
/// The smallest page [`CompiledTable::choose_page_shift`] picks (256 bytes,
/// so no page can list more than 257 rows).
pub const MIN_PAGE_SHIFT: u32 = 8;

impl CompiledTable {
    /// Compiles the file at `path`.
    pub fn from_path(path: &Path) -> Result<Self, CompileError> {
        let bytes = std::fs::read(path).map_err(|source| CompileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Compiles an ELF image.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CompileError> {
        let file = object::File::parse(bytes)?;
        Self::from_object(&file)
    }

    /// Compiles a parsed object.
    pub fn from_object(file: &object::File<'_>) -> Result<Self, CompileError> {
        if file.architecture() != object::Architecture::X86_64 {
            return Err(CompileError::Architecture(file.architecture()));
        }
        let base = file
            .segments()
            .map(|s| s.address())
            .min()
            .unwrap_or_default();
        let mut report = Report::default();
        let mut spans = Vec::new();

        let section_addr = |name: &str| file.section_by_name(name).map(|s| s.address());
        let eh = section_data(file, ".eh_frame");
        let mut eh_fdes = Vec::new();
        if let Some(data) = eh.as_deref() {
            let mut bases = BaseAddresses::default();
            if let Some(a) = section_addr(".eh_frame") {
                bases = bases.set_eh_frame(a);
            }
            if let Some(a) = section_addr(".eh_frame_hdr") {
                bases = bases.set_eh_frame_hdr(a);
            }
            if let Some(a) = section_addr(".text") {
                bases = bases.set_text(a);
            }
            if let Some(a) = section_addr(".got") {
                bases = bases.set_got(a);
            }
            let mut section = EhFrame::new(data, gimli::LittleEndian);
            section.set_address_size(8);
            collect(
                &section,
                &bases,
                Source::EhFrame,
                &[],
                &mut spans,
                &mut eh_fdes,
                &mut report,
            );
        }
        eh_fdes.sort_unstable();
        if let Some(data) = section_data(file, ".debug_frame").as_deref() {
            let mut section = DebugFrame::new(data, gimli::LittleEndian);
            section.set_address_size(8);
            let mut fdes = Vec::new();
            collect(
                &section,
                &BaseAddresses::default(),
                Source::DebugFrame,
                &eh_fdes,
                &mut spans,
                &mut fdes,
                &mut report,
            );
        }
        plt_spans(file, &mut spans, &mut report);

        let rows = build_rows(base, spans, &mut report)?;
        Ok(Self { base, rows, report })
    }

    /// Bytes the rows take.
    pub fn row_bytes(&self) -> usize {
        self.rows.len() * ROW_BYTES
    }

    /// The rule for a link-time address, by a plain binary search (for
    /// tests and tools; BPF goes through the page index).
    pub fn rule_at(&self, addr: u64) -> Option<Rule> {
        let rel = u32::try_from(addr.checked_sub(self.base)?).ok()?;
        let i = self.rows.partition_point(|r| r.pc <= rel).checked_sub(1)?;
        self.rows.get(i).map(|r| r.rule)
    }

    /// The page index for pages of `2^page_shift` bytes: page `p` lists the
    /// rows from the one covering `p << page_shift` to the last one starting
    /// inside the page. Row indices are relative to this table.
    pub fn page_index(&self, page_shift: u32) -> Vec<PageEntry> {
        let Some(last) = self.rows.last() else {
            return Vec::new();
        };
        let n_pages = (last.pc >> page_shift) + 1;
        (0..n_pages)
            .map(|p| {
                let start = u64::from(p) << page_shift;
                let end = start + (1u64 << page_shift);
                let first = self
                    .rows
                    .partition_point(|r| u64::from(r.pc) <= start)
                    .saturating_sub(1);
                let stop = self.rows.partition_point(|r| u64::from(r.pc) < end);
                PageEntry {
                    first_row: first as u32,
                    n_rows: stop.saturating_sub(first) as u32,
                }
            })
            .collect()
    }

    /// The largest page shift (fewest page entries) at which no page lists
    /// more than [`TARGET_ROWS_PER_PAGE`] rows, between [`MIN_PAGE_SHIFT`]
    /// and [`MAX_PAGE_SHIFT`].
    pub fn choose_page_shift(&self) -> u32 {
        (MIN_PAGE_SHIFT..=MAX_PAGE_SHIFT)
            .rev()
            .find(|&shift| {
                self.page_index(shift)
                    .iter()
                    .all(|p| p.n_rows <= TARGET_ROWS_PER_PAGE)
            })
            .unwrap_or(MIN_PAGE_SHIFT)
    }
}

// Not reachable with MIN_PAGE_SHIFT = 8 (a 256-byte page lists at most 257
// rows), but the BPF search bound depends on it.
const _: () = assert!((1u32 << MIN_PAGE_SHIFT) < MAX_ROWS_PER_PAGE);

fn section_data<'d>(file: &object::File<'d>, name: &str) -> Option<Cow<'d, [u8]>> {
    let section = file.section_by_name(name)?;
    section.uncompressed_data().ok().filter(|d| !d.is_empty())
}

/// A range of addresses and what to do there, before rows are built.
struct Span {
    start: u64,
    end: u64,
    rule: Result<Rule, Unsupported>,
    source: Source,
    /// Its place in the list, set by [`build_rows`] before sorting, so that
    /// of spans starting at one address the later listed still wins after an
    /// in-place sort.
    seq: u32,
}

const _: () = assert!(std::mem::size_of::<Span>() == 32);

/// Runs every FDE of `section` and appends its rows to `spans`, skipping
/// FDEs that overlap one of `shadow` (sorted (start, end) ranges).
fn collect<'d, S: UnwindSection<Slice<'d>>>(
    section: &S,
    bases: &BaseAddresses,
    source: Source,
    shadow: &[(u64, u64)],
    spans: &mut Vec<Span>,
    fdes: &mut Vec<(u64, u64)>,
    report: &mut Report,
) {
    let mut ctx = UnwindContext::new();
    let mut entries = section.entries(bases);
    loop {
        let partial = match entries.next() {
            Ok(None) => break,
            Ok(Some(CieOrFde::Cie(_))) => continue,
            Ok(Some(CieOrFde::Fde(partial))) => partial,
            // A broken length: nothing after it can be found.
            Err(_) => {
                report.malformed += 1;
                break;
            }
        };
        let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
            report.malformed += 1;
            continue;
        };
        let (start, end) = (fde.initial_address(), fde.end_address());
        if start >= end {
            continue;
        }
        if overlaps(shadow, start, end) {
            report.debug_frame_shadowed += 1;
            continue;
        }
        let signal = fde.is_signal_trampoline();
        let encoding = fde.cie().encoding();
        let Ok(mut table) = fde.rows(section, bases, &mut ctx) else {
            report.malformed += 1;
            continue;
        };
        let first = spans.len();
        loop {
            match table.next_row() {
                Ok(Some(row)) => {
                    report.cfi_rows += 1;
                    if row.start_address() < row.end_address() {
                        let rule = classify(row, section, encoding, signal);
                        // Rows differing only in registers a rule does not
                        // track (callee-saved ones) merge at once: a large
                        // object's spans otherwise take several times the
                        // memory of its finished table while compiling.
                        match spans[first..].last_mut() {
                            Some(last) if last.end == row.start_address() && last.rule == rule => {
                                last.end = row.end_address();
                            }
                            _ => spans.push(Span {
                                seq: 0,
                                start: row.start_address(),
                                end: row.end_address(),
                                rule,
                                source,
                            }),
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // Keep nothing of a half-evaluated FDE.
                    spans.truncate(first);
                    report.malformed += 1;
                    break;
                }
            }
        }
        if spans.len() > first {
            fdes.push((start, end));
            *report.fdes.entry(source).or_default() += 1;
        }
    }
}

fn overlaps(sorted: &[(u64, u64)], start: u64, end: u64) -> bool {
    let i = sorted.partition_point(|&(_, e)| e <= start);
    sorted.get(i).is_some_and(|&(s, _)| s < end)
}

/// The rule for one CFI row.
fn classify<'d, S: UnwindSection<Slice<'d>>>(
    row: &UnwindTableRow<usize>,
    section: &S,
    encoding: Encoding,
    signal: bool,
) -> Result<Rule, Unsupported> {
    let expr = |e: &gimli::UnwindExpression<usize>| -> Option<Vec<Operation<Slice<'d>>>> {
        operations(e.get(section).ok()?, encoding)
    };
    if signal {
        return classify_signal(row, &expr).ok_or(Unsupported::SignalFrame);
    }
    match row.register(X86_64::RA) {
        Some(RegisterRule::Undefined) => return Ok(Rule::END_OF_STACK),
        Some(RegisterRule::Offset(-8)) => {}
        _ => return Err(Unsupported::ReturnAddress),
    }
    match row.register(X86_64::RSP) {
        None | Some(RegisterRule::ValOffset(0)) => {}
        Some(_) => return Err(Unsupported::StackPointer),
    }
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let offset = i32::try_from(*offset).map_err(|_| Unsupported::CfaOffset)?;
            match *register {
                X86_64::RSP => Cfa::SpOffset(offset),
                X86_64::RBP => Cfa::FpOffset(offset),
                other => return Err(Unsupported::CfaRegister(other.0)),
            }
        }
        CfaRule::Expression(e) => {
            let ops = expr(e).ok_or(Unsupported::CfaExpression)?;
            cfa_expression(&ops).ok_or(Unsupported::CfaExpression)?
        }
    };
    let fp = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) => FpRule::Same,
        Some(RegisterRule::Offset(off)) => {
            FpRule::AtCfa(i32::try_from(off).map_err(|_| Unsupported::FramePointer)?)
        }
        Some(RegisterRule::Expression(e)) => match expr(&e).as_deref() {
            Some(
                [
                    Operation::RegisterOffset {
                        register: X86_64::RBP,
                        offset,
                        ..
                    },
                ],
            ) => FpRule::AtFp(i32::try_from(*offset).map_err(|_| Unsupported::FramePointer)?),
            _ => return Err(Unsupported::FramePointer),
        },
        Some(_) => return Err(Unsupported::FramePointer),
    };
    Rule::encode(cfa, fp).ok_or(if Rule::encode(cfa, FpRule::Same).is_some() {
        Unsupported::FramePointer
    } else {
        Unsupported::CfaOffset
    })
}

/// The kernel's signal frame: CFA = *(rsp + RSP), rip at rsp + RIP, rbp at
/// rsp + RBP (glibc's `__restore_rt`).
fn classify_signal<'d>(
    row: &UnwindTableRow<usize>,
    expr: &dyn Fn(&gimli::UnwindExpression<usize>) -> Option<Ops<'d>>,
) -> Option<Rule> {
    let sp_relative = |ops: &[Operation<Slice<'d>>]| match ops {
        [
            Operation::RegisterOffset {
                register: X86_64::RSP,
                offset,
                ..
            },
        ] => u64::try_from(*offset).ok(),
        _ => None,
    };
    let CfaRule::Expression(cfa) = row.cfa() else {
        return None;
    };
    match expr(cfa)?.as_slice() {
        [
            Operation::RegisterOffset {
                register: X86_64::RSP,
                offset,
                ..
            },
            Operation::Deref { size: 8, .. },
        ] if u64::try_from(*offset).ok()? == x86_64_ucontext::RSP => {}
        _ => return None,
    }
    let saved_at = |reg| match row.register(reg) {
        Some(RegisterRule::Expression(e)) => sp_relative(&expr(&e)?),
        _ => None,
    };
    (saved_at(X86_64::RA)? == x86_64_ucontext::RIP
        && saved_at(X86_64::RBP)? == x86_64_ucontext::RBP)
        .then_some(Rule::SIGNAL)
}

/// The known CFA expressions: the PLT entry form, the DRAP dereference and
/// the saved entry stack pointer.
fn cfa_expression(ops: &[Operation<Slice<'_>>]) -> Option<Cfa> {
    match ops {
        // DW_OP_breg7 (rsp): N; DW_OP_breg16 (rip): 0; DW_OP_lit15; DW_OP_and;
        // DW_OP_litT; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus
        [
            Operation::RegisterOffset {
                register: X86_64::RSP,
                offset,
                ..
            },
            Operation::RegisterOffset {
                register: X86_64::RA,
                offset: 0,
                ..
            },
            Operation::UnsignedConstant { value: 15 },
            Operation::And,
            Operation::UnsignedConstant { value: threshold },
            Operation::Ge,
            Operation::UnsignedConstant { value: 3 },
            Operation::Shl,
            Operation::Plus,
        ] => Some(Cfa::Plt {
            offset: i32::try_from(*offset).ok()?,
            threshold: u8::try_from(*threshold).ok().filter(|&t| t <= 15)?,
        }),
        // DW_OP_breg6 (rbp): N; DW_OP_deref
        [
            Operation::RegisterOffset {
                register: X86_64::RBP,
                offset,
                ..
            },
            Operation::Deref { size: 8, .. },
        ] => Some(Cfa::FpDeref(i32::try_from(*offset).ok()?)),
        // DW_OP_breg7 (rsp): N; DW_OP_deref; DW_OP_plus_uconst: 8
        [
            Operation::RegisterOffset {
                register: X86_64::RSP,
                offset,
                ..
            },
            Operation::Deref { size: 8, .. },
            Operation::PlusConstant { value: 8 },
        ] => Some(Cfa::SpDeref(i32::try_from(*offset).ok()?)),
        _ => None,
    }
}

/// The operations of a short expression (longer ones match no known form).
fn operations<'d>(
    expr: Expression<Slice<'d>>,
    encoding: Encoding,
) -> Option<Vec<Operation<Slice<'d>>>> {
    let mut ops = Vec::new();
    let mut iter = expr.operations(encoding);
    while let Some(op) = iter.next().ok()? {
        if ops.len() == 16 {
            return None;
        }
        ops.push(op);
    }
    Some(ops)
}

/// Appends rows for PLT sections that no span covers, decoding the entry
/// layout from the code.
fn plt_spans(file: &object::File<'_>, spans: &mut Vec<Span>, report: &mut Report) {
    let mut covered: Vec<(u64, u64)> = spans.iter().map(|s| (s.start, s.end)).collect();
    covered.sort_unstable();
    for name in [".plt", ".plt.sec", ".plt.got", ".plt.bnd"] {
        let Some(section) = file.section_by_name(name) else {
            continue;
        };
        let (start, size) = (section.address(), section.size());
        if size == 0 || overlaps(&covered, start, start + size) {
            continue;
        }
        let Ok(code) = section.data() else { continue };
        let before = spans.len();
        if name == ".plt" {
            lazy_plt_spans(start, code, spans);
        } else {
            // Plain `jmp *GOT(%rip)` stubs: nothing pushed.
            spans.push(Span {
                seq: 0,
                start,
                end: start + size,
                rule: Ok(Rule::encode(Cfa::SpOffset(8), FpRule::Same).unwrap_or(Rule::UNSUPPORTED)),
                source: Source::Plt,
            });
        }
        if spans.len() > before {
            report.synthesized_plt.push(name.to_owned());
            *report.fdes.entry(Source::Plt).or_default() += 1;
        }
    }
}

/// The lazy-binding `.plt`: a 16-byte header (`[endbr64;] push GOT+8;
/// jmp *GOT+16`) entered with the relocation index already pushed, then
/// 16-byte entries that push their index before jumping to the header.
fn lazy_plt_spans(start: u64, code: &[u8], spans: &mut Vec<Span>) {
    let end = start + code.len() as u64;
    let unsupported = |spans: &mut Vec<Span>| {
        spans.push(Span {
            seq: 0,
            start,
            end,
            rule: Err(Unsupported::PltLayout),
            source: Source::Plt,
        })
    };
    let header_push = match code {
        [0xff, 0x35, ..] => 0,
        [0xf3, 0x0f, 0x1e, 0xfa, 0xff, 0x35, ..] => 4,
        _ => return unsupported(spans),
    };
    // Offset of the `push imm32` (0x68) in an entry.
    let entry_push = |e: &[u8]| match e {
        [0xff, 0x25, _, _, _, _, 0x68, ..] => Some(6),
        [0xf2, 0xff, 0x25, _, _, _, _, 0x68, ..] => Some(7),
        [0xf3, 0x0f, 0x1e, 0xfa, 0x68, ..] => Some(4),
        [0x68, ..] => Some(0),
        _ => None,
    };
    let mut entries = code.chunks_exact(16).skip(1);
    let Some(push) = entries.next().map_or(Some(6), entry_push) else {
        return unsupported(spans);
    };
    if !code.len().is_multiple_of(16) || entries.any(|e| entry_push(e) != Some(push)) {
        return unsupported(spans);
    }
    let rule = |cfa| Ok(Rule::encode(cfa, FpRule::Same).unwrap_or(Rule::UNSUPPORTED));
    let after_header_push = start + header_push + 6;
    spans.push(Span {
        seq: 0,
        start,
        end: after_header_push,
        rule: rule(Cfa::SpOffset(16)),
        source: Source::Plt,
    });
    spans.push(Span {
        seq: 0,
        start: after_header_push,
        end: start + 16,
        rule: rule(Cfa::SpOffset(24)),
        source: Source::Plt,
    });
    if end > start + 16 {
        spans.push(Span {
            seq: 0,
            start: start + 16,
            end,
            rule: rule(Cfa::Plt {
                offset: 8,
                threshold: push + 5,
            }),
            source: Source::Plt,
        });
    }
}

/// Sorts the spans into rows: gaps become `NoInfo`, a span starting inside
/// an earlier one cuts it short, identical neighbours merge. Rows are made
/// in their final 8-byte form as the spans are consumed (an intermediate
/// list of 16-byte rows was a third of the compile's peak memory for large
/// objects).
fn build_rows(
    base: u64,
    mut spans: Vec<Span>,
    report: &mut Report,
) -> Result<Vec<Row>, CompileError> {
    // In place: a stable sort's buffer as large as the list was a third of
    // the compile's peak memory for large objects.
    for (i, s) in spans.iter_mut().enumerate() {
        s.seq = i as u32;
    }
    spans.sort_unstable_by_key(|s| (s.start, s.seq));
    let rel = |addr: u64| {
        addr.checked_sub(base)
            .and_then(|rel| u32::try_from(rel).ok())
            .ok_or(CompileError::TooLarge { base, addr })
    };
    let mut out: Vec<Row> = Vec::with_capacity(spans.len() + spans.len() / 4);
    let push = |out: &mut Vec<Row>, pc: u32, rule: Rule| match out.last_mut() {
        Some(last) if last.rule == rule => {}
        Some(last) if last.pc == pc => last.rule = rule,
        _ => out.push(Row { pc, rule }),
    };
    let mut end: Option<u64> = None;
    for span in spans {
        let start = rel(span.start)?;
        match end {
            Some(e) if span.start > e => push(&mut out, rel(e)?, Rule::NO_INFO),
            Some(e) if span.start < e => {
                // Rows of one FDE are contiguous: this is another FDE.
                report.overlaps += 1;
                while out.last().is_some_and(|r| r.pc >= start) {
                    out.pop();
                }
            }
            _ => {}
        }
        let rule = match span.rule {
            Ok(rule) => rule,
            Err(reason) => {
                report.unsupported.push(UnsupportedRange {
                    start: span.start,
                    end: span.end,
                    reason,
                    source: span.source,
                });
                Rule::UNSUPPORTED
            }
        };
        push(&mut out, start, rule);
        end = Some(span.end);
    }
    if let Some(e) = end {
        push(&mut out, rel(e)?, Rule::NO_INFO);
    }
    // A replaced or popped rule may leave equal neighbours.
    out.dedup_by(|next, prev| next.rule == prev.rule);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use profiler_common::unwind::{TableSource, find_rule};

    use super::*;
    use crate::unwind::{TableSet, fixtures};

    fn sp(off: i32) -> Rule {
        Rule::encode(Cfa::SpOffset(off), FpRule::Same).unwrap()
    }

    fn span(start: u64, end: u64, rule: Result<Rule, Unsupported>) -> Span {
        Span {
            seq: 0,
            start,
            end,
            rule,
            source: Source::EhFrame,
        }
    }

    fn rows(v: &[(u32, Rule)]) -> Vec<Row> {
        v.iter().map(|&(pc, rule)| Row { pc, rule }).collect()
    }

    #[test]
    fn of_spans_starting_together_the_later_listed_wins() {
        // 100 spans at 0x1000 (the last listed 8 bytes long), each followed
        // in the list by one of 100 spans further up in descending order, so
        // that the sort has to move everything.
        let mut spans = Vec::new();
        for i in (1..=100u32).rev() {
            spans.push(span(0x1000, 0x1000 + u64::from(i) * 8, Ok(sp(8))));
            let at = 0x2000 + u64::from(i) * 16;
            spans.push(span(at, at + 8, Ok(sp(16))));
        }
        let mut report = Report::default();
        let got = build_rows(0x1000, spans, &mut report).unwrap();
        let mut want = vec![(0x00, sp(8)), (0x08, Rule::NO_INFO)];
        for i in 1..=100u32 {
            want.extend([
                (0x1000 + i * 16, sp(16)),
                (0x1000 + i * 16 + 8, Rule::NO_INFO),
            ]);
        }
        assert_eq!(got, rows(&want));
        assert_eq!(report.overlaps, 99);
    }

    #[test]
    fn rows_fill_gaps_merge_neighbours_and_cut_overlaps() {
        let mut report = Report::default();
        let spans = vec![
            span(0x1030, 0x1040, Ok(sp(16))),
            span(0x1000, 0x1010, Ok(sp(8))),
            span(0x1010, 0x1020, Ok(sp(16))),
            span(0x1040, 0x1050, Ok(sp(16))),
            span(0x1048, 0x1060, Ok(sp(24))),
            span(0x1060, 0x1064, Err(Unsupported::CfaRegister(10))),
        ];
        let got = build_rows(0x1000, spans, &mut report).unwrap();
        assert_eq!(
            got,
            rows(&[
                (0x00, sp(8)),
                (0x10, sp(16)),
                (0x20, Rule::NO_INFO),
                (0x30, sp(16)),
                (0x48, sp(24)),
                (0x60, Rule::UNSUPPORTED),
                (0x64, Rule::NO_INFO),
            ])
        );
        assert_eq!(report.overlaps, 1);
        assert_eq!(
            report.unsupported,
            [UnsupportedRange {
                start: 0x1060,
                end: 0x1064,
                reason: Unsupported::CfaRegister(10),
                source: Source::EhFrame,
            }]
        );
        assert_eq!(
            report
                .unsupported_counts()
                .get(&Unsupported::CfaRegister(10)),
            Some(&(1, 4))
        );
    }

    #[test]
    fn rows_past_four_gib_are_an_error() {
        let spans = vec![span(0x1_0000_0000, 0x1_0000_0010, Ok(sp(8)))];
        let err = build_rows(0, spans, &mut Report::default()).unwrap_err();
        assert!(matches!(err, CompileError::TooLarge { .. }), "{err}");
        let spans = vec![span(0x10, 0x20, Ok(sp(8)))];
        assert!(build_rows(0x100, spans, &mut Report::default()).is_err());
    }

    fn plt(header: &[u8], entry: &[u8], entries: usize) -> Vec<u8> {
        let mut code = header.to_vec();
        code.resize(16, 0x90);
        for _ in 0..entries {
            let mut e = entry.to_vec();
            e.resize(16, 0x90);
            code.extend(e);
        }
        code
    }

    fn plt_rules(code: &[u8]) -> Vec<(u64, u64, Result<Rule, Unsupported>)> {
        let mut spans = Vec::new();
        lazy_plt_spans(0x2000, code, &mut spans);
        spans
            .into_iter()
            .map(|s| (s.start, s.end, s.rule))
            .collect()
    }

    #[test]
    fn lazy_plt_layouts_are_decoded_from_the_code() {
        let plt_rule = |threshold| {
            Ok(Rule::encode(
                Cfa::Plt {
                    offset: 8,
                    threshold,
                },
                FpRule::Same,
            )
            .unwrap())
        };
        // Classic: push GOT+8 (6 bytes); entries jmp *GOT (6), push (5), jmp.
        let classic = plt(
            &[0xff, 0x35, 1, 2, 3, 4, 0xff, 0x25, 1, 2, 3, 4],
            &[0xff, 0x25, 1, 2, 3, 4, 0x68, 0, 0, 0, 0, 0xe9, 1, 2, 3, 4],
            3,
        );
        assert_eq!(
            plt_rules(&classic),
            [
                (0x2000, 0x2006, Ok(sp(16))),
                (0x2006, 0x2010, Ok(sp(24))),
                (0x2010, 0x2040, plt_rule(11)),
            ]
        );
        // IBT: endbr64 first, then the push.
        let ibt = plt(
            &[0xf3, 0x0f, 0x1e, 0xfa, 0xff, 0x35, 1, 2, 3, 4],
            &[
                0xf3, 0x0f, 0x1e, 0xfa, 0x68, 1, 0, 0, 0, 0xf2, 0xe9, 1, 2, 3, 4,
            ],
            2,
        );
        assert_eq!(
            plt_rules(&ibt),
            [
                (0x2000, 0x200a, Ok(sp(16))),
                (0x200a, 0x2010, Ok(sp(24))),
                (0x2010, 0x2030, plt_rule(9)),
            ]
        );
        // Unknown header, entries that disagree, a size not a multiple of 16.
        let unknown = plt(&[0x90; 16], &[0xff, 0x25, 1, 2, 3, 4, 0x68], 1);
        let mut mixed = classic.clone();
        mixed[0x20..0x24].copy_from_slice(&[0xf3, 0x0f, 0x1e, 0xfa]);
        let mut odd = classic.clone();
        odd.push(0x90);
        for code in [unknown, mixed, odd] {
            assert_eq!(
                plt_rules(&code),
                [(
                    0x2000,
                    0x2000 + code.len() as u64,
                    Err(Unsupported::PltLayout)
                )]
            );
        }
    }

    fn symbol(bytes: &[u8], name: &str) -> u64 {
        use object::ObjectSymbol;
        let file = object::File::parse(bytes).unwrap();
        file.symbols()
            .chain(file.dynamic_symbols())
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("no symbol {name}"))
            .address()
    }

    /// The rows of functions whose CFI we know: `_start` ends the stack, the
    /// realigned function's body dereferences fp, the 200 KB frame fits.
    #[test]
    fn fixture_rows_have_the_expected_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(fixtures::c_fixture(dir.path())).unwrap();
        let table = CompiledTable::from_bytes(&bytes).unwrap();
        let rule_in = |name: &str| -> Vec<Rule> {
            let start = symbol(&bytes, name);
            let first = table
                .rows
                .partition_point(|r| u64::from(r.pc) + table.base <= start)
                - 1;
            let end = table.rows[first + 1..]
                .iter()
                .position(|r| r.rule == Rule::NO_INFO)
                .map_or(table.rows.len(), |i| first + 1 + i);
            table.rows[first..end].iter().map(|r| r.rule).collect()
        };
        assert!(rule_in("_start").contains(&Rule::END_OF_STACK));
        assert!(
            rule_in("realigned")
                .iter()
                .any(|r| matches!(r.cfa(), Cfa::FpDeref(_)) && r.fp() == Some(FpRule::AtFp(0))),
            "{:?}",
            rule_in("realigned")
        );
        assert!(
            rule_in("big_frame")
                .iter()
                .any(|r| matches!(r.cfa(), Cfa::SpOffset(o) if o > 200_000)),
            "{:?}",
            rule_in("big_frame")
        );
        // The realignment prologue keeps the CFA in r10 for a few bytes.
        assert_eq!(
            table.report.unsupported_counts().keys().collect::<Vec<_>>(),
            [&Unsupported::CfaRegister(10)]
        );
        assert_eq!(table.rows.last().map(|r| r.rule), Some(Rule::NO_INFO));
        assert!(
            table
                .rows
                .windows(2)
                .all(|w| w[0].pc < w[1].pc && w[0].rule != w[1].rule)
        );
    }

    #[test]
    fn libc_signal_trampoline_is_a_signal_row() {
        let path = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if !path.exists() {
            eprintln!("SKIPPED: no {}", path.display());
            return;
        }
        let bytes = std::fs::read(path).unwrap();
        let table = CompiledTable::from_bytes(&bytes).unwrap();
        // One signal row, on glibc's __restore_rt (not in .dynsym): its FDE
        // starts one byte early, so a return address to it looked up
        // at pc - 1 finds the row; then comes `mov $15, %rax; syscall`
        // (rt_sigreturn).
        let signal: Vec<usize> = (0..table.rows.len())
            .filter(|&i| table.rows[i].rule == Rule::SIGNAL)
            .collect();
        assert_eq!(signal.len(), 1, "{signal:?}");
        let start = u64::from(table.rows[signal[0]].pc) + table.base;
        let file = object::File::parse(&*bytes).unwrap();
        let text = file.section_by_name(".text").unwrap();
        let code = text.data().unwrap();
        let at = (start - text.address()) as usize;
        assert_eq!(
            &code[at + 1..at + 10],
            [0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05]
        );
    }

    #[test]
    fn objects_without_cfi_or_not_elf() {
        assert!(matches!(
            CompiledTable::from_bytes(b"not an object"),
            Err(CompileError::Parse(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let bin = fixtures::c_fixture(dir.path());
        let bare = dir.path().join("bare");
        crate::testutil::run(
            std::process::Command::new("objcopy")
                .args([
                    "--remove-section=.eh_frame",
                    "--remove-section=.eh_frame_hdr",
                ])
                .args(["--remove-section=.debug_frame"])
                .arg(&bin)
                .arg(&bare),
        );
        let table = CompiledTable::from_path(&bare).unwrap();
        // Only the synthesized PLT rows are left.
        assert!(
            table.report.fdes.keys().all(|s| *s == Source::Plt),
            "{:?}",
            table.report
        );
        assert!(matches!(
            CompiledTable::from_path(&dir.path().join("missing")),
            Err(CompileError::Read { .. })
        ));
    }

    /// Corrupted CFI and truncated files give errors or smaller tables,
    /// never panics or unsorted rows.
    #[test]
    fn corrupted_cfi_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(fixtures::c_fixture(dir.path())).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let (off, size) = file
            .section_by_name(".eh_frame")
            .unwrap()
            .file_range()
            .unwrap();
        let mut seed = 1u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut compiled = 0;
        for _ in 0..500 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 8 {
                let at = (off + next() % size) as usize;
                b[at] = next() as u8;
            }
            if let Ok(t) = CompiledTable::from_bytes(&b) {
                compiled += 1;
                assert!(t.rows.windows(2).all(|w| w[0].pc < w[1].pc));
            }
        }
        assert!(compiled > 0);
        for len in (0..bytes.len()).step_by(bytes.len() / 50) {
            let _ = CompiledTable::from_bytes(&bytes[..len]);
        }
    }

    /// Rows through the page index at every page size equal a plain binary
    /// search; prints the sizes and build times the BPF maps must plan for.
    #[test]
    fn unwind_table_stats_and_page_index() {
        let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/profiler");
        for path in [
            Path::new("/lib/x86_64-linux-gnu/libc.so.6"),
            Path::new("/usr/lib/x86_64-linux-gnu/libstdc++.so.6"),
            release.as_path(),
        ] {
            if !path.exists() {
                eprintln!("SKIPPED: {} is missing", path.display());
                continue;
            }
            let t0 = Instant::now();
            let table = CompiledTable::from_path(path).unwrap();
            let elapsed = t0.elapsed();
            let shift = table.choose_page_shift();
            let pages = table.page_index(shift);
            let max_rows = pages.iter().map(|p| p.n_rows).max().unwrap_or(0);
            let code = u64::from(table.rows.last().map_or(0, |r| r.pc));
            let gaps = table
                .rows
                .iter()
                .filter(|r| r.rule == Rule::NO_INFO)
                .count();
            eprintln!(
                "{}: {} rows ({gaps} of them gaps; {} B/row, {} KiB) from {} CFI rows, {} KiB of code; \
                 page shift {shift}: {} pages ({} KiB), at most {max_rows} rows per page \
                 ({} search steps); compiled in {:.0?}; FDEs {:?}; unsupported {:?}",
                path.display(),
                table.rows.len(),
                ROW_BYTES,
                table.row_bytes() / 1024,
                table.report.cfi_rows,
                code / 1024,
                pages.len(),
                pages.len() * std::mem::size_of::<PageEntry>() / 1024,
                u32::BITS - max_rows.saturating_sub(1).leading_zeros(),
                elapsed,
                table.report.fdes,
                table.report.unsupported_counts(),
            );
            assert!(max_rows <= TARGET_ROWS_PER_PAGE || shift == MIN_PAGE_SHIFT);

            let mut set = TableSet::default();
            let ids: Vec<_> = (MIN_PAGE_SHIFT..=MAX_PAGE_SHIFT)
                .map(|s| set.add_with_page_shift(&table, s).unwrap())
                .collect();
            let src = set.source();
            let mut probes: Vec<u64> = table
                .rows
                .iter()
                .flat_map(|r| [u64::from(r.pc), u64::from(r.pc).saturating_sub(1)])
                .step_by(7)
                .collect();
            probes.extend((0..2000u64).map(|i| i.wrapping_mul(0x9e37_79b9) % (code + 64)));
            for id in ids {
                let info = *set.info(id).unwrap();
                for &pc in &probes {
                    let want = table.rule_at(pc + table.base);
                    let got = find_rule(&src, &info, pc).ok();
                    assert_eq!(got, want, "pc {pc:#x}, page shift {}", info.page_shift);
                }
                assert!(src.row(info.first_row + info.n_rows - 1).is_some());
            }
        }
    }
}
