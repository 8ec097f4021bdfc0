//! Table-driven user-stack unwinding, shared by the BPF program and the host.
//!
//! User space compiles each object file's `.eh_frame` / `.debug_frame` into a
//! sorted array of 8-byte [`Row`]s (see `profiler/src/unwind/compile.rs`);
//! this module is the part both sides run on those tables: decoding a row's
//! [`Rule`], finding the row for a pc ([`find_rule`], a bounded binary search
//! behind the [`TableSource`] trait so BPF can back it with array-map lookups
//! and the host with slices) and applying it to the registers ([`step`],
//! reading memory through [`Memory`], i.e. `bpf_probe_read_user` in BPF),
//! and the whole per-frame walk over a process's executable mappings
//! ([`ProcMappings`], [`find_mapping`], [`next_frame`]: table where there
//! is one, frame pointers where there is not).
//!
//! It is hand-written rather than built on a DWARF library because it must run
//! under the BPF verifier: no allocation, no recursion, no panicking indexing,
//! every loop with a constant bound, at most three memory reads per frame, and
//! only the handful of CFI forms compilers actually emit for the frames we
//! walk. Everything a DWARF CFA program can say beyond that is decided once,
//! in user space, and arrives here as [`Cfa::Unsupported`].
//!
//! # Table layout (what the BPF maps hold)
//!
//! ```text
//! TableInfo (one per object)   PageEntry (per object, per 2^page_shift bytes)   Row (per object)
//! first_row, n_rows  ───────────────────────────────────────────────────────▶  pc: u32 | rule: u32
//! first_page, n_pages ───────▶ first_row, n_rows (relative to the object)
//! page_shift
//! ```
//!
//! Row pcs are object-relative: the link-time address minus the object's base
//! (its lowest PT_LOAD address), so one table serves every process that maps
//! the object. A row covers the pcs from its own up to the next row's; gaps
//! between FDEs are explicit [`Cfa::NoInfo`] rows and the last row of a table
//! is one too. A page entry lists the rows that can cover its pcs, starting
//! with the one that covers the page's first byte, so the search per frame is
//! over a few hundred rows at most ([`MAX_SEARCH_STEPS`]).
//!
//! # Rule encoding (`Rule.0`, little end first)
//!
//! ```text
//! bits  0..4   CFA kind (CfaKind)
//! bits  4..6   frame-pointer kind (FpKind)
//! bits  6..8   reserved, zero (the return-address kind of a future arm64 table)
//! bits  8..16  i8: fp offset / 8           (Plt: the pc threshold, 0..=15)
//! bits 16..32  i16: CFA offset / 8
//! ```
//!
//! The return address is always at CFA - 8 and the caller's stack pointer is
//! the CFA (x86-64); rows where that is not so are [`Cfa::Unsupported`].
//! Register names are generic (`sp`, `fp`) so arm64 (`sp`, `x29`) can reuse
//! the layout with its own kinds.
//!
//! # Per-process mappings
//!
//! A process's executable mappings are one [`ProcMappings`] (a BPF hash
//! value keyed by pid): sorted [`MappingEntry`]s with, for each, its table
//! id and `rel_base` (runtime pc - `rel_base` = the table's object-relative
//! pc), or the mark that its code is walked by frame pointers.

/// Bytes of one [`Row`].
pub const ROW_BYTES: usize = core::mem::size_of::<Row>();

/// Upper bound of [`find_rule`]'s binary search: a page may hold at most
/// `2^MAX_SEARCH_STEPS` rows (the table compiler guarantees it).
pub const MAX_SEARCH_STEPS: u32 = 16;

/// Most rows one page may list.
pub const MAX_ROWS_PER_PAGE: u32 = 1 << MAX_SEARCH_STEPS;

/// Offsets of the saved registers in the `ucontext_t` the x86-64 kernel puts
/// at the stack pointer of a signal trampoline (`__restore_rt`):
/// `uc_mcontext.gregs[REG_RBP|REG_RSP|REG_RIP]`.
pub mod x86_64_ucontext {
    /// Saved `rbp`.
    pub const RBP: u64 = 120;
    /// Saved `rsp`.
    pub const RSP: u64 = 160;
    /// Saved `rip`.
    pub const RIP: u64 = 168;
}

/// One row of an unwind table: from `pc` (object-relative) up to the next
/// row's pc, unwind with `rule`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Row {
    /// First pc the rule applies to, relative to the object's base.
    pub pc: u32,
    /// The encoded rule.
    pub rule: Rule,
}

/// The encoded unwinding rule of a [`Row`] (layout in the module docs).
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule(pub u32);

/// The CFA kinds of bits 0..4 of a [`Rule`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CfaKind {
    /// [`Cfa::NoInfo`].
    NoInfo = 0,
    /// [`Cfa::SpOffset`].
    SpOffset = 1,
    /// [`Cfa::FpOffset`].
    FpOffset = 2,
    /// [`Cfa::Plt`].
    Plt = 3,
    /// [`Cfa::FpDeref`].
    FpDeref = 4,
    /// [`Cfa::Signal`].
    Signal = 5,
    /// [`Cfa::EndOfStack`].
    EndOfStack = 6,
    /// [`Cfa::Unsupported`].
    Unsupported = 7,
    /// [`Cfa::SpDeref`].
    SpDeref = 8,
}

/// The frame-pointer kinds of bits 4..6 of a [`Rule`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpKind {
    /// [`FpRule::Same`].
    Same = 0,
    /// [`FpRule::AtCfa`].
    AtCfa = 1,
    /// [`FpRule::AtFp`].
    AtFp = 2,
}

/// How to compute the canonical frame address (the caller's stack pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cfa {
    /// No unwind information covers the pc (between FDEs, past the last one):
    /// the caller may fall back to [`Rule::FRAME_POINTER`].
    NoInfo,
    /// `sp + offset`.
    SpOffset(i32),
    /// `fp + offset`.
    FpOffset(i32),
    /// A lazy-binding PLT entry: `sp + offset`, plus 8 once `pc & 15` reaches
    /// `threshold` (the entry has pushed its relocation index). This is what
    /// the `DW_CFA_def_cfa_expression` of `.plt` says (threshold 11 for the
    /// classic 16-byte entries, 10 for the IBT/BND ones).
    Plt {
        /// Offset from `sp` before the push.
        offset: i32,
        /// `pc & 15` from which the push has happened.
        threshold: u8,
    },
    /// `*(fp + offset)`: a function that realigned its stack and keeps the
    /// CFA in a slot below its frame pointer (GCC's DRAP,
    /// `DW_OP_breg6 (rbp): -8; DW_OP_deref`).
    FpDeref(i32),
    /// `*(sp + offset) + 8`: a function that saved its entry stack pointer
    /// (which points at the return address) in a slot of its frame and
    /// then moved `sp` freely (OpenSSL's perlasm, e.g. in the `ring` crate:
    /// `DW_OP_breg7 (rsp): N; DW_OP_deref; DW_OP_plus_uconst: 8`).
    SpDeref(i32),
    /// A signal trampoline (`S` augmentation): the interrupted registers are
    /// in the `ucontext_t` at `sp` ([`x86_64_ucontext`]); the caller's pc is
    /// exact, not a return address.
    Signal,
    /// The return address is undefined (`_start`, a thread's start): the
    /// stack ends here.
    EndOfStack,
    /// Unwind information exists but says something a row cannot express.
    Unsupported,
}

/// How to recover the caller's frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FpRule {
    /// Not saved by this frame: the caller's is the same.
    Same,
    /// Saved at `CFA + offset`.
    AtCfa(i32),
    /// Saved at `fp + offset` (the DRAP prologue, `DW_OP_breg6 (rbp): 0`).
    AtFp(i32),
}

const KIND_MASK: u32 = 0xf;
const FP_SHIFT: u32 = 4;
const FP_MASK: u32 = 0x3;
const RESERVED_MASK: u32 = 0xc0;
const FP_OFF_SHIFT: u32 = 8;
const CFA_OFF_SHIFT: u32 = 16;

impl Rule {
    /// No unwind information here.
    pub const NO_INFO: Rule = Rule(CfaKind::NoInfo as u32);
    /// The outermost frame.
    pub const END_OF_STACK: Rule = Rule(CfaKind::EndOfStack as u32);
    /// A signal trampoline.
    pub const SIGNAL: Rule = Rule(CfaKind::Signal as u32);
    /// Information that cannot be expressed.
    pub const UNSUPPORTED: Rule = Rule(CfaKind::Unsupported as u32);
    /// The frame-pointer convention (`push rbp; mov rbp, rsp`): CFA = fp + 16,
    /// the caller's fp at CFA - 16. What a caller applies when there is no row.
    pub const FRAME_POINTER: Rule = Rule(
        CfaKind::FpOffset as u32
            | ((FpKind::AtCfa as u32) << FP_SHIFT)
            | (((-2i8) as u8 as u32) << FP_OFF_SHIFT)
            | ((2u16 as u32) << CFA_OFF_SHIFT),
    );

    /// Encodes a rule; `None` if an offset is not a multiple of 8 or out of
    /// range (the CFA's within ±256 KiB, the frame pointer's within ±1 KiB),
    /// or a PLT threshold is over 15.
    pub const fn encode(cfa: Cfa, fp: FpRule) -> Option<Rule> {
        let (kind, cfa_off, plt_threshold) = match cfa {
            Cfa::NoInfo => return Some(Rule::NO_INFO),
            Cfa::Signal => return Some(Rule::SIGNAL),
            Cfa::EndOfStack => return Some(Rule::END_OF_STACK),
            Cfa::Unsupported => return Some(Rule::UNSUPPORTED),
            Cfa::SpOffset(o) => (CfaKind::SpOffset, o, None),
            Cfa::FpOffset(o) => (CfaKind::FpOffset, o, None),
            Cfa::FpDeref(o) => (CfaKind::FpDeref, o, None),
            Cfa::SpDeref(o) => (CfaKind::SpDeref, o, None),
            Cfa::Plt { offset, threshold } => (CfaKind::Plt, offset, Some(threshold)),
        };
        let Some(cfa_units) = scaled(cfa_off, i16::MIN as i32, i16::MAX as i32) else {
            return None;
        };
        let (fp_kind, low_byte) = match (plt_threshold, fp) {
            (Some(t), FpRule::Same) if t <= 15 => (FpKind::Same, t as u32),
            (Some(_), _) => return None,
            (None, FpRule::Same) => (FpKind::Same, 0),
            (None, FpRule::AtCfa(o)) => match scaled(o, i8::MIN as i32, i8::MAX as i32) {
                Some(u) => (FpKind::AtCfa, u as i8 as u8 as u32),
                None => return None,
            },
            (None, FpRule::AtFp(o)) => match scaled(o, i8::MIN as i32, i8::MAX as i32) {
                Some(u) => (FpKind::AtFp, u as i8 as u8 as u32),
                None => return None,
            },
        };
        Some(Rule(
            kind as u32
                | ((fp_kind as u32) << FP_SHIFT)
                | (low_byte << FP_OFF_SHIFT)
                | ((cfa_units as i16 as u16 as u32) << CFA_OFF_SHIFT),
        ))
    }

    /// The CFA rule. Bits that decode to no known kind (a table from a newer
    /// compiler, a corrupted map) are [`Cfa::Unsupported`].
    #[inline(always)]
    pub const fn cfa(self) -> Cfa {
        if self.0 & RESERVED_MASK != 0 {
            return Cfa::Unsupported;
        }
        let off = ((self.0 >> CFA_OFF_SHIFT) as u16 as i16 as i32) * 8;
        match self.0 & KIND_MASK {
            0 => Cfa::NoInfo,
            1 => Cfa::SpOffset(off),
            2 => Cfa::FpOffset(off),
            3 => Cfa::Plt {
                offset: off,
                threshold: ((self.0 >> FP_OFF_SHIFT) & 0xf) as u8,
            },
            4 => Cfa::FpDeref(off),
            8 => Cfa::SpDeref(off),
            5 => Cfa::Signal,
            6 => Cfa::EndOfStack,
            _ => Cfa::Unsupported,
        }
    }

    /// The frame-pointer rule (`None`: the bits name no known kind).
    #[inline(always)]
    pub const fn fp(self) -> Option<FpRule> {
        let off = ((self.0 >> FP_OFF_SHIFT) as u8 as i8 as i32) * 8;
        match (self.0 >> FP_SHIFT) & FP_MASK {
            0 => Some(FpRule::Same),
            1 => Some(FpRule::AtCfa(off)),
            2 => Some(FpRule::AtFp(off)),
            _ => None,
        }
    }
}

impl core::fmt::Debug for Rule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match (self.cfa(), self.fp()) {
            (
                cfa @ (Cfa::SpOffset(_) | Cfa::FpOffset(_) | Cfa::FpDeref(_) | Cfa::SpDeref(_)),
                Some(fp),
            ) => {
                write!(f, "Rule({cfa:?}, {fp:?})")
            }
            (cfa, _) => write!(f, "Rule({cfa:?})"),
        }
    }
}

/// `v / 8` if `v` is a multiple of 8 and the quotient is in `min..=max`.
const fn scaled(v: i32, min: i32, max: i32) -> Option<i32> {
    if v % 8 != 0 {
        return None;
    }
    let u = v / 8;
    if u < min || u > max { None } else { Some(u) }
}

/// Where one object's table lives in the shared row and page arrays.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableInfo {
    /// Index of the object's first row in the row array.
    pub first_row: u32,
    /// Number of rows of the object.
    pub n_rows: u32,
    /// Index of the object's first page entry in the page array.
    pub first_page: u32,
    /// Number of page entries: page `i` covers object-relative pcs
    /// `[i << page_shift, (i + 1) << page_shift)`.
    pub n_pages: u32,
    /// log2 of the bytes of code one page entry covers.
    pub page_shift: u32,
    /// Zero.
    pub reserved: u32,
}

/// The rows that can cover one page of an object's code.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageEntry {
    /// First row, relative to [`TableInfo::first_row`]: the one covering the
    /// page's first byte (or the page's first row if none covers it).
    pub first_row: u32,
    /// Rows listed (zero: no row covers the page).
    pub n_rows: u32,
}

/// Read access to the shared row and page arrays: BPF array maps, or slices.
pub trait TableSource {
    /// Row `index` of the row array, if it exists.
    fn row(&self, index: u32) -> Option<Row>;
    /// Entry `index` of the page array, if it exists.
    fn page(&self, index: u32) -> Option<PageEntry>;
}

/// A [`TableSource`] over slices (the host side, tests).
#[derive(Clone, Copy, Debug)]
pub struct SliceTables<'a> {
    /// Every object's rows.
    pub rows: &'a [Row],
    /// Every object's page entries.
    pub pages: &'a [PageEntry],
}

impl TableSource for SliceTables<'_> {
    #[inline(always)]
    fn row(&self, index: u32) -> Option<Row> {
        self.rows.get(index as usize).copied()
    }
    #[inline(always)]
    fn page(&self, index: u32) -> Option<PageEntry> {
        self.pages.get(index as usize).copied()
    }
}

/// Why an unwinding step stopped (or that it did not). `repr(u8)` so the
/// BPF program can count outcomes in an array indexed by the value and store
/// the last one in [`SampleHeader::unwind_outcome`](crate::SampleHeader).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The caller's registers were recovered.
    Continue = 0,
    /// The stack ends here (undefined return address, or a zero one where
    /// frame pointers are followed).
    EndOfStack = 1,
    /// No row covers the pc (no table for it, a gap between FDEs): the
    /// caller may apply [`Rule::FRAME_POINTER`].
    NoRow = 2,
    /// A memory read failed.
    BadRead = 3,
    /// The row's rule cannot be applied.
    Unsupported = 4,
    /// The recovered stack pointer is not above the current one: the
    /// registers or the stack are inconsistent, following them could loop.
    NoProgress = 5,
    /// The table itself is inconsistent (a page or row index past its
    /// array, more rows in a page than the search can visit).
    BadTable = 6,
    /// A table's rule found a zero return address. Code with call-frame
    /// information ends its stacks with an undefined return address
    /// (`_start`, `clone3`); a zero is what a frame whose saved slots were
    /// overwritten shows (libgcc's unwinder installing a landing pad), so
    /// the walk stopped short, not at the end.
    ZeroReturn = 7,
}

impl Outcome {
    /// Every outcome, in value order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Continue,
        Outcome::EndOfStack,
        Outcome::NoRow,
        Outcome::BadRead,
        Outcome::Unsupported,
        Outcome::NoProgress,
        Outcome::BadTable,
        Outcome::ZeroReturn,
    ];

    /// The outcome with wire value `v` (as in
    /// [`SampleHeader::unwind_outcome`](crate::SampleHeader)), if any.
    pub const fn from_u8(v: u8) -> Option<Self> {
        if (v as usize) < Self::ALL.len() {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// A short snake_case name for logs and summaries.
    pub const fn name(self) -> &'static str {
        match self {
            Outcome::Continue => "continue",
            Outcome::EndOfStack => "end_of_stack",
            Outcome::NoRow => "no_row",
            Outcome::BadRead => "bad_read",
            Outcome::Unsupported => "unsupported",
            Outcome::NoProgress => "no_progress",
            Outcome::BadTable => "bad_table",
            Outcome::ZeroReturn => "zero_return",
        }
    }
}

/// Finds the rule for the object-relative pc `rel_pc` in the object's table:
/// one page lookup and at most [`MAX_SEARCH_STEPS`] + 1 row lookups.
///
/// `Err(NoRow)` if the pc is outside the table; `Err(BadTable)` if an index
/// is missing from the arrays or a page lists more rows than the search
/// visits. A [`Cfa::NoInfo`] row is returned as a rule: [`step`] reports it.
#[inline(always)]
pub fn find_rule<S: TableSource + ?Sized>(
    src: &S,
    table: &TableInfo,
    rel_pc: u64,
) -> Result<Rule, Outcome> {
    if table.page_shift >= 32 || rel_pc > u64::from(u32::MAX) {
        return Err(Outcome::NoRow);
    }
    let pc = rel_pc as u32;
    let page = pc >> table.page_shift;
    if page >= table.n_pages {
        return Err(Outcome::NoRow);
    }
    let entry = src
        .page(table.first_page.wrapping_add(page))
        .ok_or(Outcome::BadTable)?;
    if entry.n_rows == 0 {
        return Err(Outcome::NoRow);
    }
    if entry.n_rows > MAX_ROWS_PER_PAGE
        || entry.first_row >= table.n_rows
        || table.n_rows - entry.first_row < entry.n_rows
    {
        return Err(Outcome::BadTable);
    }
    let base = table.first_row.wrapping_add(entry.first_row);
    // The last row in [lo, lo + len) whose pc is <= `pc`: halve `len` until
    // one candidate is left.
    let mut lo = base;
    let mut len = entry.n_rows;
    for _ in 0..MAX_SEARCH_STEPS {
        if len <= 1 {
            break;
        }
        let half = len / 2;
        let mid = lo.wrapping_add(half);
        let row = src.row(mid).ok_or(Outcome::BadTable)?;
        if row.pc <= pc {
            lo = mid;
        }
        len -= half;
    }
    if len > 1 {
        return Err(Outcome::BadTable);
    }
    let row = src.row(lo).ok_or(Outcome::BadTable)?;
    if row.pc > pc {
        return Err(Outcome::NoRow);
    }
    Ok(row.rule)
}

/// Reads the unwound process's memory (`bpf_probe_read_user` in BPF, a
/// captured stack on the host).
pub trait Memory {
    /// The little-endian u64 at `addr`, if readable.
    fn read_u64(&self, addr: u64) -> Option<u64>;
}

/// The registers unwinding needs (x86-64: rip, rsp, rbp).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// Program counter.
    pub pc: u64,
    /// Stack pointer.
    pub sp: u64,
    /// Frame pointer.
    pub fp: u64,
}

/// One frame being unwound.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// Its registers.
    pub regs: Regs,
    /// Non-zero if `regs.pc` is where execution stopped (the first frame,
    /// the frame a signal interrupted); zero if it is a return address, one
    /// past the call, which may be the first byte of the next function.
    pub exact_pc: u8,
}

impl Frame {
    /// The innermost frame, from the interrupted registers.
    #[inline(always)]
    pub const fn first(regs: Regs) -> Self {
        Self { regs, exact_pc: 1 }
    }

    /// The pc to look rows up for: `pc` itself if exact, else `pc - 1`
    /// (inside the call instruction).
    #[inline(always)]
    pub const fn lookup_pc(&self) -> u64 {
        if self.exact_pc != 0 {
            self.regs.pc
        } else {
            self.regs.pc.wrapping_sub(1)
        }
    }
}

/// Applies `rule` to `frame`: the caller's frame, or why there is none.
///
/// Reads memory at most three times (two for ordinary frames). Stops with
/// `EndOfStack` for an undefined or zero return address and with `NoProgress`
/// if the caller's stack pointer would not be above this one (except through
/// a signal frame, whose interrupted stack may be anywhere, e.g. below an
/// alternate signal stack).
#[inline(always)]
pub fn step<M: Memory + ?Sized>(rule: Rule, frame: &Frame, mem: &M) -> Result<Frame, Outcome> {
    let regs = &frame.regs;
    let cfa = match rule.cfa() {
        Cfa::NoInfo => return Err(Outcome::NoRow),
        Cfa::EndOfStack => return Err(Outcome::EndOfStack),
        Cfa::Unsupported => return Err(Outcome::Unsupported),
        Cfa::Signal => return signal_frame(regs.sp, mem),
        Cfa::SpOffset(off) => regs.sp.wrapping_add_signed(i64::from(off)),
        Cfa::FpOffset(off) => regs.fp.wrapping_add_signed(i64::from(off)),
        Cfa::Plt { offset, threshold } => {
            let pushed = if regs.pc & 15 >= u64::from(threshold) {
                8
            } else {
                0
            };
            regs.sp
                .wrapping_add_signed(i64::from(offset))
                .wrapping_add(pushed)
        }
        Cfa::FpDeref(off) => mem
            .read_u64(regs.fp.wrapping_add_signed(i64::from(off)))
            .ok_or(Outcome::BadRead)?,
        Cfa::SpDeref(off) => mem
            .read_u64(regs.sp.wrapping_add_signed(i64::from(off)))
            .ok_or(Outcome::BadRead)?
            .wrapping_add(8),
    };
    let fp = match rule.fp() {
        Some(FpRule::Same) => regs.fp,
        Some(FpRule::AtCfa(off)) => mem
            .read_u64(cfa.wrapping_add_signed(i64::from(off)))
            .ok_or(Outcome::BadRead)?,
        Some(FpRule::AtFp(off)) => mem
            .read_u64(regs.fp.wrapping_add_signed(i64::from(off)))
            .ok_or(Outcome::BadRead)?,
        None => return Err(Outcome::Unsupported),
    };
    let pc = mem.read_u64(cfa.wrapping_sub(8)).ok_or(Outcome::BadRead)?;
    if pc == 0 {
        return Err(Outcome::EndOfStack);
    }
    if cfa <= regs.sp {
        return Err(Outcome::NoProgress);
    }
    Ok(Frame {
        regs: Regs { pc, sp: cfa, fp },
        exact_pc: 0,
    })
}

/// [`step`] by a table's rule: there a zero return address is
/// [`Outcome::ZeroReturn`], since code with call-frame information ends its
/// stacks with an undefined one ([`Cfa::EndOfStack`]).
#[inline(always)]
pub fn step_by_table<M: Memory + ?Sized>(
    rule: Rule,
    frame: &Frame,
    mem: &M,
) -> Result<Frame, Outcome> {
    match step(rule, frame, mem) {
        Err(Outcome::EndOfStack) if rule.cfa() != Cfa::EndOfStack => Err(Outcome::ZeroReturn),
        other => other,
    }
}

/// The frame a signal interrupted, from the `ucontext_t` at `sp`.
#[inline(always)]
fn signal_frame<M: Memory + ?Sized>(sp: u64, mem: &M) -> Result<Frame, Outcome> {
    let read = |off: u64| mem.read_u64(sp.wrapping_add(off)).ok_or(Outcome::BadRead);
    let pc = read(x86_64_ucontext::RIP)?;
    let new_sp = read(x86_64_ucontext::RSP)?;
    let fp = read(x86_64_ucontext::RBP)?;
    if pc == 0 {
        return Err(Outcome::EndOfStack);
    }
    Ok(Frame {
        regs: Regs { pc, sp: new_sp, fp },
        exact_pc: 1,
    })
}

// ---- per-process mappings and the whole per-frame walk ---------------------

/// Most executable mappings one process's [`ProcMappings`] lists (the
/// search takes at most [`MAPPING_SEARCH_STEPS`] halvings).
pub const MAX_MAPPINGS: usize = 256;

/// Upper bound of [`find_mapping`]'s binary search (`2^8 = MAX_MAPPINGS`).
pub const MAPPING_SEARCH_STEPS: u32 = 8;

const _: () = assert!(1usize << MAPPING_SEARCH_STEPS == MAX_MAPPINGS);

/// How the code of a [`MappingEntry`] is unwound.
pub mod mapping_kind {
    /// By the table [`MappingEntry::table`](super::MappingEntry), frame
    /// pointers where it has no row.
    pub const TABLE: u32 = 0;
    /// By frame pointers only (Go and JIT code, files without a table).
    pub const FRAME_POINTER: u32 = 1;
    /// By frame pointers for now: code whose table is not loaded (still
    /// compiling, or no room). Such code may use rbp as an ordinary
    /// register, so a zero frame pointer proves nothing and the walk stops
    /// there as [`Outcome::NoRow`](super::Outcome::NoRow), not as the end
    /// of the stack.
    pub const FRAME_POINTER_GUESS: u32 = 2;
}

/// One executable mapping of a process, as the unwinder sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingEntry {
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// What to subtract from a runtime pc to get the table's
    /// object-relative pc: the load bias plus the table's base.
    pub rel_base: u64,
    /// Index of the table's [`TableInfo`] (for [`mapping_kind::TABLE`]).
    pub table: u32,
    /// A [`mapping_kind`].
    pub kind: u32,
}

/// A process's executable mappings, sorted by start, not overlapping: the
/// value of the BPF map of per-process mapping lists, keyed by pid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcMappings {
    /// Entries in use (at most [`MAX_MAPPINGS`]).
    pub len: u32,
    /// Changes every time user space writes a list (any pid's), and is
    /// never zero in a written one: the BPF side's [`RuleCacheSlot`]s
    /// remember it, so a rule cached from an earlier list (or an earlier
    /// process with this pid) is not used with this one.
    pub generation: u32,
    /// The first `len` are the mappings; the rest are zero.
    pub entries: [MappingEntry; MAX_MAPPINGS],
}

impl ProcMappings {
    /// [`ProcMappings::generation`] read from memory now, not reused from an
    /// earlier read: the BPF side reads the list through a hash-map value
    /// that user space may replace while a walk reads it.
    #[inline(always)]
    pub fn generation_now(&self) -> u32 {
        // SAFETY: a read of a field of a live reference.
        unsafe { core::ptr::read_volatile(&self.generation) }
    }
}

impl Default for ProcMappings {
    fn default() -> Self {
        Self {
            len: 0,
            generation: 0,
            entries: [MappingEntry::default(); MAX_MAPPINGS],
        }
    }
}

/// The mapping containing `pc`: a bounded binary search over the sorted
/// entries (at most [`MAPPING_SEARCH_STEPS`] + 1 entries looked at).
#[inline(always)]
pub fn find_mapping(list: &ProcMappings, pc: u64) -> Option<MappingEntry> {
    // No upfront `len <= MAX_MAPPINGS` check: with it the compiler proves
    // the indices below in bounds and drops the checks the BPF verifier
    // needs (it cannot follow that proof). A longer `len` fails below.
    let mut len = list.len;
    if len == 0 {
        return None;
    }
    // The last entry whose start is <= pc, as in `find_rule`. The entry is
    // kept by reference rather than re-read by index afterwards, which
    // again would be a check the verifier cannot follow.
    let mut lo = 0u32;
    let mut found = list.entries.first()?;
    for _ in 0..MAPPING_SEARCH_STEPS {
        if len <= 1 {
            break;
        }
        let half = len / 2;
        let mid = lo.wrapping_add(half);
        let entry = list.entries.get(mid as usize)?;
        if entry.start <= pc {
            lo = mid;
            found = entry;
        }
        len -= half;
    }
    if len > 1 {
        return None;
    }
    let entry = *found;
    (entry.start <= pc && pc < entry.end).then_some(entry)
}

/// Read access to the [`TableInfo`]s by table id: a BPF array, or a slice.
pub trait TableIndex {
    /// The table with id `id`, if it exists.
    fn table(&self, id: u32) -> Option<TableInfo>;
}

impl TableIndex for [TableInfo] {
    #[inline(always)]
    fn table(&self, id: u32) -> Option<TableInfo> {
        self.get(id as usize).copied()
    }
}

/// How [`next_frame`] found a caller.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// A row of the mapping's table.
    Table = 0,
    /// The frame-pointer rule: a frame-pointer mapping, or no row.
    FramePointer = 1,
}

/// One step of the walk the BPF program does per user frame, with the same
/// code on the host: find `frame`'s mapping, its table and row, apply the
/// rule, and fall back to [`Rule::FRAME_POINTER`] where there is no row.
///
/// Outcomes beyond [`step`]'s:
/// - a pc in no listed mapping is [`Outcome::NoRow`] (a stale list, or a
///   wrong earlier step: following frame pointers from there would only
///   invent frames);
/// - in a [`mapping_kind::FRAME_POINTER`] mapping a zero frame pointer is the
///   end of the stack (the ABI's outermost-frame marker, what Go's and
///   glibc's thread starts leave); in a
///   [`mapping_kind::FRAME_POINTER_GUESS`] mapping it, and every failure of
///   the frame-pointer step, is [`Outcome::NoRow`];
/// - a table's rule that finds a zero return address is
///   [`Outcome::ZeroReturn`];
/// - where a table has no row and the frame-pointer guess fails, the outcome
///   is [`Outcome::NoRow`]: the walk stopped for lack of information, not
///   because memory was unreadable.
#[inline(always)]
pub fn next_frame<S, T, M>(
    src: &S,
    tables: &T,
    list: &ProcMappings,
    frame: &Frame,
    mem: &M,
) -> Result<(Frame, Via), Outcome>
where
    S: TableSource + ?Sized,
    T: TableIndex + ?Sized,
    M: Memory + ?Sized,
{
    let how = resolve(src, tables, list, frame.lookup_pc())?;
    apply(how, frame, mem)
}

/// How a frame is stepped, decided by its pc alone: the lookups of
/// [`next_frame`] before it reads any memory. The BPF side caches the
/// [`Resolution::Table`] ones by pc (see [`RuleCacheSlot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// A [`mapping_kind::FRAME_POINTER`] mapping.
    FramePointer,
    /// Frame pointers as a guess: a [`mapping_kind::FRAME_POINTER_GUESS`]
    /// (or unknown) mapping, or a table without a row, or with a
    /// [`Cfa::NoInfo`] row, for the pc.
    Guess,
    /// The row's rule.
    Table(Rule),
}

/// The first half of [`next_frame`]: the mapping, table and row of the
/// lookup pc `pc` (as [`Frame::lookup_pc`] gives it).
#[inline(always)]
pub fn resolve<S, T>(
    src: &S,
    tables: &T,
    list: &ProcMappings,
    pc: u64,
) -> Result<Resolution, Outcome>
where
    S: TableSource + ?Sized,
    T: TableIndex + ?Sized,
{
    let mapping = find_mapping(list, pc).ok_or(Outcome::NoRow)?;
    if mapping.kind == mapping_kind::FRAME_POINTER {
        return Ok(Resolution::FramePointer);
    }
    if mapping.kind != mapping_kind::TABLE {
        return Ok(Resolution::Guess);
    }
    let info = tables.table(mapping.table).ok_or(Outcome::BadTable)?;
    match find_rule(src, &info, pc.wrapping_sub(mapping.rel_base)) {
        Ok(rule) if rule.cfa() != Cfa::NoInfo => Ok(Resolution::Table(rule)),
        Ok(_) | Err(Outcome::NoRow) => Ok(Resolution::Guess),
        Err(e) => Err(e),
    }
}

/// The second half of [`next_frame`]: steps `frame` as `how` says.
#[inline(always)]
pub fn apply<M: Memory + ?Sized>(
    how: Resolution,
    frame: &Frame,
    mem: &M,
) -> Result<(Frame, Via), Outcome> {
    match how {
        Resolution::FramePointer => {
            if frame.regs.fp == 0 {
                return Err(Outcome::EndOfStack);
            }
            step(Rule::FRAME_POINTER, frame, mem).map(|f| (f, Via::FramePointer))
        }
        Resolution::Guess => frame_pointer_guess(frame, mem),
        Resolution::Table(rule) => step_by_table(rule, frame, mem).map(|f| (f, Via::Table)),
    }
}

/// Slots of the BPF side's per-CPU rule cache (a power of two).
pub const RULE_CACHE_SLOTS: u32 = 1 << RULE_CACHE_BITS;

/// log2 of [`RULE_CACHE_SLOTS`].
pub const RULE_CACHE_BITS: u32 = 10;

/// One slot of the BPF side's per-CPU, direct-mapped cache of table rules
/// by (pid, [`ProcMappings::generation`], lookup pc). A profiled program
/// spends its time in a few hot stacks, so most frames of a sample were
/// resolved moments ago: a hit replaces [`resolve`]'s mapping search, table
/// lookup and row search (~30 ns a frame on the bench machine, about a
/// third of the walk) by one slot read. Only [`Resolution::Table`] is
/// cached; the frame-pointer kinds cost little to resolve.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCacheSlot {
    /// The lookup pc.
    pub pc: u64,
    pub pid: u32,
    /// The list's generation when the rule was found (0: empty slot).
    pub generation: u32,
    pub rule: Rule,
    /// Zero.
    pub reserved: u32,
}

impl RuleCacheSlot {
    /// The slot `(pid, pc)` lives in: a multiplicative hash's top bits.
    #[inline(always)]
    pub fn index(pid: u32, pc: u64) -> u32 {
        let h = (pc ^ (u64::from(pid) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> (64 - RULE_CACHE_BITS)) as u32
    }

    /// A slot holding `rule` for `(pid, generation, pc)`.
    #[inline(always)]
    pub fn new(pid: u32, generation: u32, pc: u64, rule: Rule) -> Self {
        Self {
            pc,
            pid,
            generation,
            rule,
            reserved: 0,
        }
    }

    /// The cached rule, if this slot holds one for exactly these keys (a
    /// zero generation, an empty slot's, matches nothing).
    #[inline(always)]
    pub fn rule_for(&self, pid: u32, generation: u32, pc: u64) -> Option<Rule> {
        (self.generation != 0 && self.generation == generation && self.pid == pid && self.pc == pc)
            .then_some(self.rule)
    }
}

/// The per-CPU rule cache's slots: a BPF per-CPU array, or memory in tests.
pub trait RuleCache {
    /// Slot `index`'s content (`index < RULE_CACHE_SLOTS`).
    fn slot(&self, index: u32) -> Option<RuleCacheSlot>;
    /// Replaces slot `index`'s content.
    fn keep(&mut self, index: u32, slot: RuleCacheSlot);
}

/// The rule `cache` holds for `pid`'s list of generation `generation` at
/// lookup pc `pc`, if any: the cheap first half of [`resolve_cached`].
#[inline(always)]
pub fn cached_rule<C: RuleCache + ?Sized>(
    cache: &C,
    pid: u32,
    generation: u32,
    pc: u64,
) -> Option<Rule> {
    cache
        .slot(RuleCacheSlot::index(pid, pc))?
        .rule_for(pid, generation, pc)
}

/// A cache miss: [`resolve`], then keep a table rule in `cache` under
/// `generation`, the list's generation read *before* resolving, and only
/// if `list.generation` still reads the same afterwards. (The BPF side
/// reads `list` through a hash-map value that user space may replace while
/// the walk reads it; every write carries a new generation, so a list
/// rewritten under the walk is not cached from, though the one walk may
/// still use what it read.)
#[inline(always)]
pub fn resolve_and_keep<S, T, C>(
    src: &S,
    tables: &T,
    cache: &mut C,
    list: &ProcMappings,
    pid: u32,
    generation: u32,
    pc: u64,
) -> Result<Resolution, Outcome>
where
    S: TableSource + ?Sized,
    T: TableIndex + ?Sized,
    C: RuleCache + ?Sized,
{
    let how = resolve(src, tables, list, pc)?;
    if let Resolution::Table(rule) = how
        && generation != 0
        && list.generation_now() == generation
    {
        cache.keep(
            RuleCacheSlot::index(pid, pc),
            RuleCacheSlot::new(pid, generation, pc, rule),
        );
    }
    Ok(how)
}

/// [`resolve`] through `cache`: what the BPF walk does for each frame.
#[inline(always)]
pub fn resolve_cached<S, T, C>(
    src: &S,
    tables: &T,
    cache: &mut C,
    list: &ProcMappings,
    pid: u32,
    pc: u64,
) -> Result<Resolution, Outcome>
where
    S: TableSource + ?Sized,
    T: TableIndex + ?Sized,
    C: RuleCache + ?Sized,
{
    let generation = list.generation_now();
    match cached_rule(cache, pid, generation, pc) {
        Some(rule) => Ok(Resolution::Table(rule)),
        None => resolve_and_keep(src, tables, cache, list, pid, generation, pc),
    }
}

/// A [`RuleCache`] in memory, for tests and the host replayer.
impl RuleCache for [RuleCacheSlot] {
    fn slot(&self, index: u32) -> Option<RuleCacheSlot> {
        self.get(index as usize).copied()
    }
    fn keep(&mut self, index: u32, slot: RuleCacheSlot) {
        if let Some(s) = self.get_mut(index as usize) {
            *s = slot;
        }
    }
}

/// Frame pointers where they are only a guess (a table without a row for
/// the pc, or code whose table is not loaded): such code may use rbp as an
/// ordinary register, so any failure, a zero frame pointer or return
/// address included, is a missing table ([`Outcome::NoRow`]), not a bad
/// read, a loop or the end of the stack.
#[inline(always)]
fn frame_pointer_guess<M: Memory + ?Sized>(
    frame: &Frame,
    mem: &M,
) -> Result<(Frame, Via), Outcome> {
    step(Rule::FRAME_POINTER, frame, mem)
        .map(|f| (f, Via::FramePointer))
        .map_err(|_| Outcome::NoRow)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::BTreeMap, vec::Vec};

    use super::*;

    /// Memory backed by a map of u64 slots; everything else is unreadable.
    #[derive(Default)]
    struct Mem(BTreeMap<u64, u64>);

    impl Memory for Mem {
        fn read_u64(&self, addr: u64) -> Option<u64> {
            self.0.get(&addr).copied()
        }
    }

    fn rule(cfa: Cfa, fp: FpRule) -> Rule {
        Rule::encode(cfa, fp).unwrap()
    }

    fn regs(pc: u64, sp: u64, fp: u64) -> Frame {
        Frame::first(Regs { pc, sp, fp })
    }

    #[test]
    fn outcomes_round_trip_their_values() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_u8(o as u8), Some(o));
        }
        assert_eq!(Outcome::from_u8(Outcome::ALL.len() as u8), None);
        assert_eq!(Outcome::from_u8(255), None);
    }

    #[test]
    fn rule_cache_slots_match_only_their_keys() {
        assert_eq!(core::mem::size_of::<RuleCacheSlot>(), 24);
        let r = rule(Cfa::SpOffset(16), FpRule::AtCfa(-16));
        let slot = RuleCacheSlot::new(7, 3, 0x40_1234, r);
        assert_eq!(slot.rule_for(7, 3, 0x40_1234), Some(r));
        // Another list of the same process, another process, another pc.
        assert_eq!(slot.rule_for(7, 4, 0x40_1234), None);
        assert_eq!(slot.rule_for(8, 3, 0x40_1234), None);
        assert_eq!(slot.rule_for(7, 3, 0x40_1235), None);
        // An empty slot matches nothing, not even all-zero keys.
        assert_eq!(RuleCacheSlot::default().rule_for(0, 0, 0), None);
    }

    #[test]
    fn rule_cache_index_is_in_range_and_spreads_neighbouring_pcs() {
        let mut used = BTreeMap::new();
        for pc in (0x40_0000u64..0x40_0000 + 4096).step_by(4) {
            let i = RuleCacheSlot::index(42, pc);
            assert!(i < RULE_CACHE_SLOTS);
            *used.entry(i).or_insert(0u32) += 1;
        }
        // 1,024 pcs of one page: most land in a slot of their own.
        assert!(used.len() > 600, "{} slots used", used.len());
        assert_ne!(
            RuleCacheSlot::index(1, 0x1000),
            RuleCacheSlot::index(2, 0x1000)
        );
    }

    #[test]
    fn row_is_eight_bytes() {
        assert_eq!(ROW_BYTES, 8);
        assert_eq!(core::mem::size_of::<PageEntry>(), 8);
        assert_eq!(core::mem::size_of::<TableInfo>(), 24);
    }

    #[test]
    fn rules_round_trip() {
        let cases = [
            (Cfa::SpOffset(8), FpRule::Same),
            (Cfa::SpOffset(262_136), FpRule::AtCfa(-16)),
            (Cfa::SpOffset(-262_144), FpRule::AtCfa(1016)),
            (Cfa::FpOffset(16), FpRule::AtCfa(-16)),
            (Cfa::FpOffset(-8), FpRule::AtCfa(-1024)),
            (Cfa::FpDeref(-8), FpRule::AtFp(0)),
            (Cfa::SpDeref(40), FpRule::AtCfa(-24)),
            (
                Cfa::Plt {
                    offset: 8,
                    threshold: 11,
                },
                FpRule::Same,
            ),
            (
                Cfa::Plt {
                    offset: 8,
                    threshold: 10,
                },
                FpRule::Same,
            ),
        ];
        for (cfa, fp) in cases {
            let r = rule(cfa, fp);
            assert_eq!(r.cfa(), cfa, "{r:?}");
            assert_eq!(r.fp(), Some(fp), "{r:?}");
        }
        for cfa in [Cfa::NoInfo, Cfa::Signal, Cfa::EndOfStack, Cfa::Unsupported] {
            assert_eq!(rule(cfa, FpRule::Same).cfa(), cfa);
        }
        assert_eq!(Rule::NO_INFO, Rule::default());
        assert_eq!(Rule::FRAME_POINTER.cfa(), Cfa::FpOffset(16));
        assert_eq!(Rule::FRAME_POINTER.fp(), Some(FpRule::AtCfa(-16)));
    }

    #[test]
    fn unencodable_rules_are_refused() {
        // Not a multiple of 8, out of range, threshold past the mask.
        assert_eq!(Rule::encode(Cfa::SpOffset(12), FpRule::Same), None);
        assert_eq!(Rule::encode(Cfa::SpOffset(262_144), FpRule::Same), None);
        assert_eq!(Rule::encode(Cfa::SpOffset(16), FpRule::AtCfa(-1032)), None);
        assert_eq!(Rule::encode(Cfa::SpOffset(16), FpRule::AtCfa(-20)), None);
        let plt = |threshold| Cfa::Plt {
            offset: 8,
            threshold,
        };
        assert_eq!(Rule::encode(plt(16), FpRule::Same), None);
        assert_eq!(Rule::encode(plt(11), FpRule::AtCfa(-16)), None);
    }

    #[test]
    fn unknown_bits_decode_as_unsupported() {
        for bits in [9u32, 15, 0x41, 0x81] {
            assert_eq!(Rule(bits).cfa(), Cfa::Unsupported, "{bits:#x}");
        }
        assert_eq!(Rule(0x31).fp(), None);
        let m = Mem::default();
        assert_eq!(
            step(Rule(0x31), &regs(1, 0x1000, 0), &m),
            Err(Outcome::Unsupported)
        );
    }

    #[test]
    fn sp_offset_frame() {
        let mut m = Mem::default();
        m.0.insert(0x1000 + 24 - 8, 0xdead);
        let r = rule(Cfa::SpOffset(24), FpRule::Same);
        let next = step(r, &regs(0x400, 0x1000, 0x77), &m).unwrap();
        assert_eq!(
            next.regs,
            Regs {
                pc: 0xdead,
                sp: 0x1018,
                fp: 0x77
            }
        );
        assert_eq!(next.exact_pc, 0);
        assert_eq!(next.lookup_pc(), 0xdeac);
    }

    #[test]
    fn fp_offset_frame_restores_fp() {
        let mut m = Mem::default();
        let fp = 0x2000;
        m.0.insert(fp + 8, 0x1234); // return address at CFA - 8
        m.0.insert(fp, 0x3000); // saved fp at CFA - 16
        let next = step(Rule::FRAME_POINTER, &regs(0x400, 0x1f00, fp), &m).unwrap();
        assert_eq!(
            next.regs,
            Regs {
                pc: 0x1234,
                sp: fp + 16,
                fp: 0x3000
            }
        );
    }

    #[test]
    fn drap_frame_dereferences_fp() {
        // CFA = *(fp - 8); fp saved at fp + 0.
        let mut m = Mem::default();
        let (sp, fp, cfa) = (0x1000u64, 0x1100u64, 0x1200u64);
        m.0.insert(fp - 8, cfa);
        m.0.insert(fp, 0x5000);
        m.0.insert(cfa - 8, 0x4242);
        let r = rule(Cfa::FpDeref(-8), FpRule::AtFp(0));
        let next = step(r, &regs(0x400, sp, fp), &m).unwrap();
        assert_eq!(
            next.regs,
            Regs {
                pc: 0x4242,
                sp: cfa,
                fp: 0x5000
            }
        );
    }

    #[test]
    fn saved_sp_frame_dereferences_sp() {
        // CFA = *(sp + 40) + 8; fp saved at CFA - 24; RA at CFA - 8.
        let mut m = Mem::default();
        let (sp, entry_sp) = (0x1000u64, 0x1400u64);
        m.0.insert(sp + 40, entry_sp);
        m.0.insert(entry_sp + 8 - 24, 0x5000);
        m.0.insert(entry_sp, 0x4242);
        let r = rule(Cfa::SpDeref(40), FpRule::AtCfa(-24));
        let next = step(r, &regs(0x400, sp, 7), &m).unwrap();
        assert_eq!(
            next.regs,
            Regs {
                pc: 0x4242,
                sp: entry_sp + 8,
                fp: 0x5000
            }
        );
        m.0.remove(&(sp + 40));
        assert_eq!(step(r, &regs(0x400, sp, 7), &m), Err(Outcome::BadRead));
    }

    #[test]
    fn plt_expression_depends_on_pc_low_bits() {
        let mut m = Mem::default();
        let sp = 0x1000;
        m.0.insert(sp, 0xa); // RA when CFA = sp + 8
        m.0.insert(sp + 8, 0xb); // RA when CFA = sp + 16
        for (threshold, pc_low, want_pc, want_sp) in [
            (11, 0, 0xa, sp + 8),
            (11, 6, 0xa, sp + 8),
            (11, 10, 0xa, sp + 8),
            (11, 11, 0xb, sp + 16),
            (11, 15, 0xb, sp + 16),
            (10, 10, 0xb, sp + 16),
            (10, 9, 0xa, sp + 8),
        ] {
            let r = rule(
                Cfa::Plt {
                    offset: 8,
                    threshold,
                },
                FpRule::Same,
            );
            let next = step(r, &regs(0x7000_1230 + pc_low, sp, 9), &m).unwrap();
            assert_eq!(
                (next.regs.pc, next.regs.sp, next.regs.fp),
                (want_pc, want_sp, 9),
                "threshold {threshold}, pc & 15 = {pc_low}"
            );
        }
    }

    #[test]
    fn signal_frame_reads_ucontext() {
        let mut m = Mem::default();
        let sp = 0x8000;
        m.0.insert(sp + x86_64_ucontext::RIP, 0x4011);
        m.0.insert(sp + x86_64_ucontext::RSP, 0x9000);
        m.0.insert(sp + x86_64_ucontext::RBP, 0x9100);
        let next = step(Rule::SIGNAL, &regs(0x7f00, sp, 1), &m).unwrap();
        assert_eq!(
            next.regs,
            Regs {
                pc: 0x4011,
                sp: 0x9000,
                fp: 0x9100
            }
        );
        // The interrupted pc is exact: look it up as is.
        assert_eq!(next.exact_pc, 1);
        assert_eq!(next.lookup_pc(), 0x4011);
        // A signal frame may point below itself (alternate signal stack).
        m.0.insert(sp + x86_64_ucontext::RSP, 0x100);
        assert_eq!(
            step(Rule::SIGNAL, &regs(0, sp, 1), &m).unwrap().regs.sp,
            0x100
        );
        m.0.remove(&(sp + x86_64_ucontext::RBP));
        assert_eq!(
            step(Rule::SIGNAL, &regs(0, sp, 1), &m),
            Err(Outcome::BadRead)
        );
    }

    #[test]
    fn end_of_stack_and_no_info() {
        let m = Mem::default();
        let f = regs(1, 0x1000, 0);
        assert_eq!(step(Rule::END_OF_STACK, &f, &m), Err(Outcome::EndOfStack));
        assert_eq!(step(Rule::NO_INFO, &f, &m), Err(Outcome::NoRow));
        assert_eq!(step(Rule::UNSUPPORTED, &f, &m), Err(Outcome::Unsupported));
        // A zero return address ends the stack too.
        let mut m = Mem::default();
        m.0.insert(0x1000, 0);
        let r = rule(Cfa::SpOffset(8), FpRule::Same);
        assert_eq!(step(r, &f, &m), Err(Outcome::EndOfStack));
    }

    #[test]
    fn bad_reads_and_no_progress() {
        let m = Mem::default();
        let f = regs(1, 0x1000, 0x2000);
        assert_eq!(
            step(rule(Cfa::SpOffset(8), FpRule::Same), &f, &m),
            Err(Outcome::BadRead)
        );
        assert_eq!(
            step(rule(Cfa::FpDeref(-8), FpRule::AtFp(0)), &f, &m),
            Err(Outcome::BadRead)
        );
        let mut m = Mem::default();
        m.0.insert(0x1010 - 8, 5);
        assert_eq!(
            step(rule(Cfa::SpOffset(16), FpRule::AtCfa(-16)), &f, &m),
            Err(Outcome::BadRead)
        );
        // fp below sp: following it would walk back down the stack.
        let mut m = Mem::default();
        m.0.insert(0x800 + 8, 5);
        m.0.insert(0x800, 6);
        assert_eq!(
            step(Rule::FRAME_POINTER, &regs(1, 0x1000, 0x800), &m),
            Err(Outcome::NoProgress)
        );
    }

    /// A table of rows at `pcs`, the rule of row `i` being `SpOffset(8 * (i + 1))`.
    fn table(pcs: &[u32], page_shift: u32) -> (Vec<Row>, Vec<PageEntry>, TableInfo) {
        let rows: Vec<Row> = pcs
            .iter()
            .enumerate()
            .map(|(i, &pc)| Row {
                pc,
                rule: rule(Cfa::SpOffset(8 * (i as i32 + 1)), FpRule::Same),
            })
            .collect();
        let last = *pcs.last().unwrap();
        let n_pages = (last >> page_shift) + 1;
        let pages = (0..n_pages)
            .map(|p| {
                let (start, end) = (p << page_shift, (p + 1) << page_shift);
                let first = rows.partition_point(|r| r.pc <= start).saturating_sub(1);
                let end_i = rows.partition_point(|r| r.pc < end);
                PageEntry {
                    first_row: first as u32,
                    n_rows: (end_i - first) as u32,
                }
            })
            .collect();
        let info = TableInfo {
            first_row: 0,
            n_rows: rows.len() as u32,
            first_page: 0,
            n_pages,
            page_shift,
            reserved: 0,
        };
        (rows, pages, info)
    }

    fn expected(pcs: &[u32], pc: u32) -> Option<usize> {
        pcs.iter().rposition(|&p| p <= pc)
    }

    #[test]
    fn search_finds_the_covering_row() {
        let pcs = [
            0x10u32, 0x20, 0x21, 0x100, 0x1ff, 0x200, 0x1000, 0x1003, 0x5000,
        ];
        for shift in [4, 8, 12, 16] {
            let (rows, pages, info) = table(&pcs, shift);
            let src = SliceTables {
                rows: &rows,
                pages: &pages,
            };
            for pc in 0..0x5100u32 {
                let got = find_rule(&src, &info, u64::from(pc));
                let want = if pc >> shift >= info.n_pages {
                    Err(Outcome::NoRow)
                } else {
                    expected(&pcs, pc)
                        .map(|i| rows[i].rule)
                        .ok_or(Outcome::NoRow)
                };
                assert_eq!(got, want, "pc {pc:#x} shift {shift}");
            }
        }
    }

    #[test]
    fn search_with_offset_tables_in_shared_arrays() {
        // Two objects in one array: the second's indices are offset.
        let (rows_a, pages_a, _) = table(&[0, 0x40, 0x80], 6);
        let (rows_b, pages_b, info_b) = table(&[0x8, 0x18, 0x28, 0x38, 0x48], 5);
        let rows: Vec<Row> = rows_a.iter().chain(&rows_b).copied().collect();
        let pages: Vec<PageEntry> = pages_a.iter().chain(&pages_b).copied().collect();
        let info = TableInfo {
            first_row: rows_a.len() as u32,
            first_page: pages_a.len() as u32,
            ..info_b
        };
        let src = SliceTables {
            rows: &rows,
            pages: &pages,
        };
        assert_eq!(find_rule(&src, &info, 0x30), Ok(rows_b[2].rule));
        assert_eq!(find_rule(&src, &info, 0x4f), Ok(rows_b[4].rule));
        assert_eq!(find_rule(&src, &info, 0x7), Err(Outcome::NoRow));
        assert_eq!(find_rule(&src, &info, 0x60), Err(Outcome::NoRow));
        assert_eq!(find_rule(&src, &info, u64::MAX), Err(Outcome::NoRow));
    }

    #[test]
    fn truncated_tables_are_bad_not_panics() {
        let pcs: Vec<u32> = (0..100).map(|i| i * 4).collect();
        let (rows, pages, info) = table(&pcs, 8);
        // Rows cut short: the search runs off the array.
        let short = SliceTables {
            rows: &rows[..50],
            pages: &pages,
        };
        assert_eq!(find_rule(&short, &info, 0x180), Err(Outcome::BadTable));
        // Pages cut short.
        let no_pages = SliceTables {
            rows: &rows,
            pages: &pages[..1],
        };
        assert_eq!(find_rule(&no_pages, &info, 0x180), Err(Outcome::BadTable));
        // A page claiming rows past the object's.
        let src = SliceTables {
            rows: &rows,
            pages: &pages,
        };
        let lying = TableInfo { n_rows: 10, ..info };
        assert_eq!(find_rule(&src, &lying, 0x180), Err(Outcome::BadTable));
        // A page too large for the bounded search.
        let huge = [PageEntry {
            first_row: 0,
            n_rows: MAX_ROWS_PER_PAGE + 1,
        }];
        let info = TableInfo {
            n_rows: u32::MAX,
            n_pages: 1,
            ..info
        };
        let src = SliceTables {
            rows: &rows,
            pages: &huge,
        };
        assert_eq!(find_rule(&src, &info, 0), Err(Outcome::BadTable));
        // Empty pages and absurd shifts.
        let empty = [PageEntry::default()];
        let src = SliceTables {
            rows: &rows,
            pages: &empty,
        };
        assert_eq!(find_rule(&src, &info, 0), Err(Outcome::NoRow));
        let info = TableInfo {
            page_shift: 40,
            ..info
        };
        assert_eq!(find_rule(&src, &info, 0), Err(Outcome::NoRow));
    }

    #[test]
    fn search_visits_at_most_log2_rows() {
        use core::cell::Cell;
        struct Counting<'a>(SliceTables<'a>, Cell<u32>);
        impl TableSource for Counting<'_> {
            fn row(&self, index: u32) -> Option<Row> {
                self.1.set(self.1.get() + 1);
                self.0.row(index)
            }
            fn page(&self, index: u32) -> Option<PageEntry> {
                self.0.page(index)
            }
        }
        let pcs: Vec<u32> = (0..256).collect();
        let (rows, pages, info) = table(&pcs, 16);
        let src = Counting(
            SliceTables {
                rows: &rows,
                pages: &pages,
            },
            Cell::new(0),
        );
        for pc in 0..256 {
            src.1.set(0);
            assert_eq!(find_rule(&src, &info, pc), Ok(rows[pc as usize].rule));
            assert!(src.1.get() <= 9, "{} lookups", src.1.get());
        }
    }

    fn list(entries: &[MappingEntry]) -> ProcMappings {
        let mut l = ProcMappings {
            len: entries.len() as u32,
            ..ProcMappings::default()
        };
        l.entries[..entries.len()].copy_from_slice(entries);
        l
    }

    fn entry(start: u64, end: u64, kind: u32) -> MappingEntry {
        MappingEntry {
            start,
            end,
            rel_base: start,
            table: 0,
            kind,
        }
    }

    #[test]
    fn mapping_search_finds_containing_entry_or_none() {
        assert_eq!(find_mapping(&ProcMappings::default(), 5), None);
        for n in [1usize, 2, 3, 7, 100, MAX_MAPPINGS] {
            // Mappings [0x1000 * (2i + 1), 0x1000 * (2i + 2)): gaps between.
            let entries: Vec<MappingEntry> = (0..n as u64)
                .map(|i| entry(0x1000 * (2 * i + 1), 0x1000 * (2 * i + 2), 0))
                .collect();
            let l = list(&entries);
            for (i, e) in entries.iter().enumerate() {
                assert_eq!(find_mapping(&l, e.start), Some(*e), "n {n} i {i}");
                assert_eq!(find_mapping(&l, e.end - 1), Some(*e), "n {n} i {i}");
                assert_eq!(find_mapping(&l, e.end), None, "gap after {i}");
            }
            assert_eq!(find_mapping(&l, 0), None);
            assert_eq!(find_mapping(&l, u64::MAX), None);
        }
        // A corrupted length never reads past the array.
        let mut l = list(&[entry(0x1000, 0x2000, 0)]);
        l.len = MAX_MAPPINGS as u32 + 1;
        assert_eq!(find_mapping(&l, 0x1000), None);
    }

    #[test]
    fn next_frame_uses_tables_then_frame_pointers() {
        // One table mapping at 0x10000 (rows: 0x0 sp+16, 0x100 no info,
        // past 0x200 nothing) and a frame-pointer mapping at 0x40000.
        let rows = [
            Row {
                pc: 0,
                rule: rule(Cfa::SpOffset(16), FpRule::Same),
            },
            Row {
                pc: 0x100,
                rule: Rule::NO_INFO,
            },
        ];
        let pages = [PageEntry {
            first_row: 0,
            n_rows: 2,
        }];
        let infos = [TableInfo {
            first_row: 0,
            n_rows: 2,
            first_page: 0,
            n_pages: 1,
            page_shift: 12,
            reserved: 0,
        }];
        let src = SliceTables {
            rows: &rows,
            pages: &pages,
        };
        let l = list(&[
            entry(0x10000, 0x11000, mapping_kind::TABLE),
            entry(0x40000, 0x41000, mapping_kind::FRAME_POINTER),
            entry(0x50000, 0x51000, mapping_kind::FRAME_POINTER_GUESS),
        ]);
        let mut m = Mem::default();
        // Table frame: RA at sp + 8.
        m.0.insert(0x1008, 0x40010);
        let f = regs(0x10010, 0x1000, 0x2000);
        let (next, via) = next_frame(&src, &infos[..], &l, &f, &m).unwrap();
        assert_eq!(via, Via::Table);
        assert_eq!(
            next.regs,
            Regs {
                pc: 0x40010,
                sp: 0x1010,
                fp: 0x2000
            }
        );
        // Frame-pointer mapping: saved fp at fp, RA at fp + 8.
        m.0.insert(0x2000, 0x3000);
        m.0.insert(0x2008, 0x10020);
        let (next2, via) = next_frame(&src, &infos[..], &l, &next, &m).unwrap();
        assert_eq!(via, Via::FramePointer);
        assert_eq!(
            next2.regs,
            Regs {
                pc: 0x10020,
                sp: 0x2010,
                fp: 0x3000
            }
        );
        // A zero fp in a frame-pointer mapping ends the stack.
        let end = regs(0x40020, 0x1000, 0);
        assert_eq!(
            next_frame(&src, &infos[..], &l, &end, &m),
            Err(Outcome::EndOfStack)
        );
        // Where frame pointers are only a guess, a zero one proves nothing.
        let guess = regs(0x50020, 0x1000, 0);
        assert_eq!(
            next_frame(&src, &infos[..], &l, &guess, &m),
            Err(Outcome::NoRow)
        );
        let guess = regs(0x50020, 0x1000, 0x2000);
        let (g, via) = next_frame(&src, &infos[..], &l, &guess, &m).unwrap();
        assert_eq!((g.regs.pc, via), (0x10020, Via::FramePointer));
        // ...nor does a zero return address found by following one.
        m.0.insert(0x6000, 0x7000);
        m.0.insert(0x6008, 0);
        let guess = regs(0x50020, 0x1000, 0x6000);
        assert_eq!(
            next_frame(&src, &infos[..], &l, &guess, &m),
            Err(Outcome::NoRow)
        );
        // ...nor an unreadable one: the guess failed, the table is missing.
        let guess = regs(0x50020, 0x1000, 0xdead_0000);
        assert_eq!(
            next_frame(&src, &infos[..], &l, &guess, &m),
            Err(Outcome::NoRow)
        );
        // In real frame-pointer code that is a bad read.
        let fp_code = regs(0x40020, 0x1000, 0xdead_0000);
        assert_eq!(
            next_frame(&src, &infos[..], &l, &fp_code, &m),
            Err(Outcome::BadRead)
        );
        // A table's rule finding a zero return address stopped short.
        m.0.insert(0x5008, 0);
        assert_eq!(
            next_frame(&src, &infos[..], &l, &regs(0x10010, 0x5000, 0x2000), &m),
            Err(Outcome::ZeroReturn)
        );
        // No row in a table mapping: the frame-pointer guess...
        let gap = regs(0x10180, 0x1000, 0x2000);
        let (g, via) = next_frame(&src, &infos[..], &l, &gap, &m).unwrap();
        assert_eq!((g.regs.pc, via), (0x10020, Via::FramePointer));
        // ...and when it fails, "no row", not a bad read.
        let gap = regs(0x10180, 0x1000, 0x9000);
        assert_eq!(
            next_frame(&src, &infos[..], &l, &gap, &m),
            Err(Outcome::NoRow)
        );
        // Past the table's last page: no row either.
        let past = regs(0x10f00, 0x1000, 0x9000);
        assert_eq!(
            next_frame(&src, &infos[..], &l, &past, &m),
            Err(Outcome::NoRow)
        );
        // Outside every mapping: stop.
        let out = regs(0x90000, 0x1000, 0x2000);
        assert_eq!(
            next_frame(&src, &infos[..], &l, &out, &m),
            Err(Outcome::NoRow)
        );
        // A table id with no table.
        let mut bad = l;
        bad.entries[0].table = 7;
        assert_eq!(
            next_frame(&src, &infos[..], &bad, &f, &m),
            Err(Outcome::BadTable)
        );
        // A return address is looked up one byte back: the RA 0x10100 is
        // the last byte of the row at 0, not the NO_INFO row at 0x100.
        m.0.insert(0x5008, 0x77);
        let ra = Frame {
            regs: Regs {
                pc: 0x10100,
                sp: 0x5000,
                fp: 0,
            },
            exact_pc: 0,
        };
        let (n, via) = next_frame(&src, &infos[..], &l, &ra, &m).unwrap();
        assert_eq!((n.regs.pc, via), (0x77, Via::Table));
    }
}
