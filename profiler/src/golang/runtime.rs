//! What the BPF program must know to read the running goroutine of a Go
//! thread: where `g` lives in thread-local storage, the offsets of the
//! runtime fields it reads (`g.m`, `g.goid`, `g.atomicstatus`,
//! `g.waitreason`, `g.labels`, `m.curg`), how pprof labels are laid out
//! behind `g.labels`, and the values of goroutine statuses and wait reasons.
//!
//! The Go runtime exports none of this: the structs are private and change
//! between releases. They come from the binary's DWARF when it has some
//! ([`from_dwarf`]) and otherwise from a table generated from official
//! toolchains and checked in ([`for_version`], `runtime_table.rs`, written by
//! `cargo run -p profiler --example go_offsets`). Where `g` is in TLS depends
//! on how the binary was linked and is detected per binary
//! ([`g_tls_offset`]).
//!
//! [`read_goroutine`] is the reference for the BPF side: it decodes a thread's
//! goroutine from process memory with the same steps the BPF program takes
//! (a fixed number of reads, bounded loops, fixed-size copies), so that the
//! two can be compared on the same process. It is written by hand, not with a
//! generic struct reader, so that each step maps onto one BPF helper call.
//!
//! Layouts verified for Go 1.21 to 1.27 on amd64:
//! - `g.labels` is an `unsafe.Pointer` set by `runtime/pprof` to a
//!   `*labelMap`. Up to Go 1.23 `labelMap` is `map[string]string`, so the
//!   pointer is to a map variable, which points to the `hmap`. From Go 1.24
//!   `labelMap` is a struct holding a slice of `{key, value string}` sorted
//!   by key (Go 1.26 moved the element type to
//!   `internal/runtime/pprof/label` with the same layout).
//! - Statuses 0..=9 are the same in every version; Go 1.26 adds `_Gleaked`
//!   (10) and `_Gdeadextra` (11). The scan bit is 0x1000.
//! - Wait reasons are a `uint8` index into `runtime.waitReasonStrings`,
//!   whose order changes between releases (Go 1.26 reordered it).

use std::{borrow::Cow, collections::HashMap};

use gimli::{AttributeValue, Reader, ReaderOffset};
use object::{
    Object, ObjectSection, ObjectSegment, ObjectSymbol, ObjectSymbolTable, read::elf::ProgramHeader,
};

#[path = "runtime_table.rs"]
mod table;

/// Why offsets, the TLS slot or a goroutine could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading DWARF: {0}")]
    Dwarf(#[from] gimli::Error),
    #[error("reading the object file: {0}")]
    Object(#[from] object::Error),
    #[error("no DWARF entry for {0}")]
    Missing(String),
    #[error("unexpected layout of {what}: {why}")]
    Layout { what: String, why: String },
    #[error("architecture {0:?} is not supported")]
    UnsupportedArch(object::Architecture),
    #[error("could not find where the g pointer is in TLS")]
    TlsNotFound,
    #[error("code uses TLS offset {code} but runtime.tlsg and PT_TLS give {segment}")]
    TlsMismatch { code: i64, segment: i64 },
    #[error("cannot read {len} bytes at {addr:#x}")]
    Read { addr: u64, len: usize },
}

fn layout(what: impl Into<String>, why: impl Into<String>) -> Error {
    Error::Layout {
        what: what.into(),
        why: why.into(),
    }
}

/// Offsets into the Go runtime's structs and the values the BPF program
/// compares against, for one Go release (or one binary, from its DWARF).
/// All offsets are in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoOffsets {
    /// Size of a pointer (and of `int`, `uintptr`).
    pub ptr_size: u32,
    /// `runtime.g.m`: `*m`, the thread running the goroutine.
    pub g_m: u32,
    /// `runtime.g.goid`: `uint64`.
    pub g_goid: u32,
    /// `runtime.g.atomicstatus`: `uint32` (an `atomic.Uint32`).
    pub g_atomicstatus: u32,
    /// `runtime.g.waitreason`: `uint8` index into the wait reason strings.
    pub g_waitreason: u32,
    /// `runtime.g.labels`: `unsafe.Pointer` to `runtime/pprof.labelMap`.
    pub g_labels: u32,
    /// `runtime.m.curg`: `*g`, the user goroutine the thread runs.
    pub m_curg: u32,
    /// What `g.labels` points to.
    pub labels: LabelLayout,
    /// Values of `g.atomicstatus`.
    pub status: StatusValues,
}

impl GoOffsets {
    /// The offsets as the BPF program (and its shared reader in
    /// `profiler_common::golang`) takes them; fails if one does not fit 16 bits.
    pub fn to_bpf(&self) -> Result<profiler_common::golang::GoOffsets, Error> {
        use profiler_common::golang::{GoOffsets as Bpf, labels_layout};
        let narrow = |v: u32, what: &str| {
            u16::try_from(v).map_err(|_| layout(what, "offset does not fit 16 bits"))
        };
        let mut b = Bpf {
            g_m: narrow(self.g_m, "g.m")?,
            g_goid: narrow(self.g_goid, "g.goid")?,
            g_atomicstatus: narrow(self.g_atomicstatus, "g.atomicstatus")?,
            g_waitreason: narrow(self.g_waitreason, "g.waitreason")?,
            g_labels: narrow(self.g_labels, "g.labels")?,
            m_curg: narrow(self.m_curg, "m.curg")?,
            status_scan: self.status.scan,
            ..Bpf::default()
        };
        match &self.labels {
            LabelLayout::NotLinked => b.labels_layout = labels_layout::NONE,
            LabelLayout::Map(m) => {
                if m.bucket_size as usize > profiler_common::golang::MAX_BUCKET_BYTES {
                    return Err(layout("map bucket", "larger than the BPF copy"));
                }
                b.labels_layout = labels_layout::MAP;
                b.min_top_hash = m.min_top_hash;
                b.same_size_grow = m.same_size_grow;
                b.bucket_slots = u8::try_from(m.bucket_slots)
                    .map_err(|_| layout("map bucket", "too many slots"))?;
                b.hmap_count = narrow(m.hmap_count, "hmap.count")?;
                b.hmap_flags = narrow(m.hmap_flags, "hmap.flags")?;
                b.hmap_b = narrow(m.hmap_b, "hmap.B")?;
                b.hmap_buckets = narrow(m.hmap_buckets, "hmap.buckets")?;
                b.hmap_oldbuckets = narrow(m.hmap_oldbuckets, "hmap.oldbuckets")?;
                b.bucket_size = narrow(m.bucket_size, "bucket size")?;
                b.bucket_tophash = narrow(m.bucket_tophash, "bucket.tophash")?;
                b.bucket_keys = narrow(m.bucket_keys, "bucket.keys")?;
                b.bucket_values = narrow(m.bucket_values, "bucket.values")?;
                b.bucket_overflow = narrow(m.bucket_overflow, "bucket.overflow")?;
            }
            LabelLayout::Slice(s) => {
                if s.label_size as usize > profiler_common::golang::MAX_BUCKET_BYTES {
                    return Err(layout("label", "larger than the BPF copy"));
                }
                b.labels_layout = labels_layout::SLICE;
                b.slice_list = narrow(s.list, "labelMap.list")?;
                b.label_size = narrow(s.label_size, "label size")?;
                b.label_key = narrow(s.label_key, "label.key")?;
                b.label_value = narrow(s.label_value, "label.value")?;
            }
        }
        Ok(b)
    }
}

/// Layout of the pprof label set that a non-nil `g.labels` points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelLayout {
    /// The binary does not link `runtime/pprof`, so no goroutine has labels
    /// (only possible from [`from_dwarf`]; the version table never says so).
    NotLinked,
    /// Go <= 1.23: `g.labels` → map variable → `hmap` of `map[string]string`.
    Map(MapLayout),
    /// Go >= 1.24: `g.labels` → `labelMap` struct with a sorted slice of
    /// `{key, value string}`.
    Slice(SliceLayout),
}

/// A `map[string]string` of the pre-Swiss-table runtime (Go <= 1.23):
/// `hmap` → `2^B` buckets (and `oldbuckets` while growing), each with
/// `bucket_slots` tophash bytes, keys, values and an overflow pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLayout {
    /// `hmap.count`: `int`, live entries.
    pub hmap_count: u32,
    /// `hmap.flags`: `uint8`.
    pub hmap_flags: u32,
    /// `hmap.B`: `uint8`, log2 of the number of buckets.
    pub hmap_b: u32,
    /// `hmap.buckets`: pointer to `2^B` buckets.
    pub hmap_buckets: u32,
    /// `hmap.oldbuckets`: non-nil while the map grows.
    pub hmap_oldbuckets: u32,
    /// Size of one bucket.
    pub bucket_size: u32,
    /// Entries per bucket (`bucketCnt`).
    pub bucket_slots: u32,
    /// Offset of `tophash [bucket_slots]uint8` in a bucket.
    pub bucket_tophash: u32,
    /// Offset of `keys [bucket_slots]string`.
    pub bucket_keys: u32,
    /// Offset of `values [bucket_slots]string`.
    pub bucket_values: u32,
    /// Offset of the overflow bucket pointer.
    pub bucket_overflow: u32,
    /// A slot holds a live entry iff its tophash is >= this (`minTopHash`);
    /// smaller values mark empty or evacuated slots.
    pub min_top_hash: u8,
    /// `hmap.flags` bit set when the map grows to the same size
    /// (`sameSizeGrow`): then there are as many old buckets as new ones,
    /// otherwise half as many.
    pub same_size_grow: u8,
}

/// `runtime/pprof.labelMap` of Go >= 1.24: a struct embedding a set whose
/// only field is `[]label`, sorted by key without duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceLayout {
    /// Offset of the slice header (`array`, `len`, `cap`) in `labelMap`.
    pub list: u32,
    /// Size of one label.
    pub label_size: u32,
    /// Offset of `key string` in a label.
    pub label_key: u32,
    /// Offset of `value string` in a label.
    pub label_value: u32,
}

/// Values of `g.atomicstatus`; `scan` is a bit or-ed into the others while
/// the GC scans the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusValues {
    pub idle: u32,
    pub runnable: u32,
    pub running: u32,
    pub syscall: u32,
    pub waiting: u32,
    pub dead: u32,
    pub copystack: u32,
    pub preempted: u32,
    /// `_Gleaked`, Go >= 1.26.
    pub leaked: Option<u32>,
    /// `_Gdeadextra`, Go >= 1.26.
    pub deadextra: Option<u32>,
    pub scan: u32,
}

/// A goroutine status with the scan bit removed, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GStatus {
    Idle,
    Runnable,
    Running,
    Syscall,
    Waiting,
    Dead,
    Copystack,
    Preempted,
    Leaked,
    DeadExtra,
    Other(u32),
}

impl StatusValues {
    /// Names `status` (scan bit already stripped).
    pub fn classify(&self, status: u32) -> GStatus {
        let named = [
            (self.idle, GStatus::Idle),
            (self.runnable, GStatus::Runnable),
            (self.running, GStatus::Running),
            (self.syscall, GStatus::Syscall),
            (self.waiting, GStatus::Waiting),
            (self.dead, GStatus::Dead),
            (self.copystack, GStatus::Copystack),
            (self.preempted, GStatus::Preempted),
        ];
        let optional = [
            (self.leaked, GStatus::Leaked),
            (self.deadextra, GStatus::DeadExtra),
        ];
        named
            .into_iter()
            .chain(optional.into_iter().filter_map(|(v, s)| Some((v?, s))))
            .find_map(|(v, s)| (v == status).then_some(s))
            .unwrap_or(GStatus::Other(status))
    }
}

/// One row of the generated table (`runtime_table.rs`).
#[derive(Debug)]
pub struct VersionEntry {
    pub major: u32,
    pub minor: u32,
    /// The toolchain whose fixture the row was read from, e.g. `go1.21.13`.
    pub toolchain: &'static str,
    pub offsets: GoOffsets,
    /// `runtime.waitReasonStrings`, by `g.waitreason` index.
    pub wait_reasons: &'static [&'static str],
}

/// The checked-in table, oldest release first.
pub fn table() -> &'static [VersionEntry] {
    table::TABLE
}

/// Offsets for Go `major.minor` (any patch release), from the checked-in
/// table; `None` for releases it does not know (older, or newer than the
/// table: layouts change without notice, so guessing would be worse).
pub fn for_version(major: u32, minor: u32) -> Option<&'static GoOffsets> {
    entry(major, minor).map(|e| &e.offsets)
}

/// The wait reason strings of Go `major.minor`, indexed by `g.waitreason`.
pub fn wait_reasons(major: u32, minor: u32) -> Option<&'static [&'static str]> {
    entry(major, minor).map(|e| e.wait_reasons)
}

fn entry(major: u32, minor: u32) -> Option<&'static VersionEntry> {
    table::TABLE
        .iter()
        .find(|e| e.major == major && e.minor == minor)
}

// ---------------------------------------------------------------------------
// DWARF
// ---------------------------------------------------------------------------

/// A type DIE at the top level of a unit, with its members (structs) or
/// element count (arrays).
#[derive(Debug)]
struct TypeDie {
    tag: gimli::DwTag,
    name: String,
    size: Option<u64>,
    /// `DW_AT_type`, as a `.debug_info` offset.
    ty: Option<u64>,
    members: Vec<Member>,
    count: Option<u64>,
}

#[derive(Debug)]
struct Member {
    name: String,
    offset: u64,
    ty: Option<u64>,
}

/// The parts of a Go binary's DWARF this module reads: every type, package
/// constants, and a few variables.
#[derive(Debug, Default)]
struct Index {
    types: HashMap<u64, TypeDie>,
    by_name: HashMap<String, Vec<u64>>,
    consts: HashMap<String, i64>,
    /// name → (address, type)
    vars: HashMap<String, (Option<u64>, Option<u64>)>,
    address_size: u8,
}

const VARIABLES: [&str; 1] = ["runtime.waitReasonStrings"];

impl Index {
    fn build<R: Reader>(dwarf: &gimli::Dwarf<R>) -> Result<Self, Error> {
        let mut index = Index::default();
        let mut units = dwarf.units();
        while let Some(header) = units.next()? {
            let unit = dwarf.unit(header)?;
            index.address_size = unit.header.address_size();
            let mut cursor = unit.entries();
            // The type DIE whose children (members, subranges) follow.
            let mut parent: Option<u64> = None;
            while let Some(entry) = cursor.next_dfs()? {
                let Some(offset) = entry.offset().to_debug_info_offset(&unit.header) else {
                    continue;
                };
                let offset = offset.0.into_u64();
                let name = match entry.attr_value(gimli::DW_AT_name) {
                    Some(v) => Some(dwarf.attr_string(&unit, v)?.to_string_lossy()?.into_owned()),
                    None => None,
                };
                let ty = entry
                    .attr_value(gimli::DW_AT_type)
                    .and_then(|v| type_ref(&unit, v));
                match (entry.depth(), entry.tag()) {
                    (
                        1,
                        gimli::DW_TAG_structure_type
                        | gimli::DW_TAG_typedef
                        | gimli::DW_TAG_pointer_type
                        | gimli::DW_TAG_array_type
                        | gimli::DW_TAG_base_type,
                    ) => {
                        let name = name.unwrap_or_default();
                        index.by_name.entry(name.clone()).or_default().push(offset);
                        let size = entry
                            .attr(gimli::DW_AT_byte_size)
                            .and_then(|a| a.udata_value());
                        index.types.insert(
                            offset,
                            TypeDie {
                                tag: entry.tag(),
                                name,
                                size,
                                ty,
                                members: Vec::new(),
                                count: None,
                            },
                        );
                        parent = Some(offset);
                    }
                    (1, gimli::DW_TAG_constant) => {
                        parent = None;
                        let value = entry.attr(gimli::DW_AT_const_value).and_then(|a| {
                            a.sdata_value()
                                .or_else(|| a.udata_value().and_then(|u| i64::try_from(u).ok()))
                        });
                        if let (Some(name), Some(value)) = (name, value) {
                            index.consts.insert(name, value);
                        }
                    }
                    (1, gimli::DW_TAG_variable) => {
                        parent = None;
                        if let Some(name) = name.filter(|n| VARIABLES.contains(&n.as_str())) {
                            let addr = match entry.attr_value(gimli::DW_AT_location) {
                                Some(AttributeValue::Exprloc(expr)) => op_addr(expr.0),
                                _ => None,
                            };
                            index.vars.insert(name, (addr, ty));
                        }
                    }
                    (2, gimli::DW_TAG_member) => {
                        let offset = entry
                            .attr(gimli::DW_AT_data_member_location)
                            .and_then(|a| a.udata_value());
                        if let (Some(p), Some(name), Some(offset)) = (parent, name, offset)
                            && let Some(t) = index.types.get_mut(&p)
                        {
                            t.members.push(Member { name, offset, ty });
                        }
                    }
                    (2, gimli::DW_TAG_subrange_type) => {
                        let count = entry.attr(gimli::DW_AT_count).and_then(|a| a.udata_value());
                        if let (Some(p), Some(count)) = (parent, count)
                            && let Some(t) = index.types.get_mut(&p)
                        {
                            t.count = Some(count);
                        }
                    }
                    (1, _) => parent = None,
                    _ => {}
                }
            }
        }
        Ok(index)
    }

    /// The DIE named `name` with tag `tag`.
    fn named(&self, name: &str, tag: gimli::DwTag) -> Option<&TypeDie> {
        self.by_name
            .get(name)?
            .iter()
            .filter_map(|o| self.types.get(o))
            .find(|t| t.tag == tag)
    }

    fn struct_named(&self, name: &str) -> Result<&TypeDie, Error> {
        self.named(name, gimli::DW_TAG_structure_type)
            .ok_or_else(|| Error::Missing(format!("struct {name}")))
    }

    /// Follows typedefs from `offset` to the type they name.
    fn resolve(&self, mut offset: u64) -> Option<&TypeDie> {
        for _ in 0..16 {
            let t = self.types.get(&offset)?;
            if t.tag != gimli::DW_TAG_typedef {
                return Some(t);
            }
            offset = t.ty?;
        }
        None
    }

    /// The type of `ty.member`, typedefs resolved.
    fn member_type(&self, ty: &TypeDie, member: &str) -> Result<&TypeDie, Error> {
        let m = find_member(ty, member)?;
        m.ty.and_then(|o| self.resolve(o))
            .ok_or_else(|| Error::Missing(format!("type of {}.{member}", ty.name)))
    }

    /// The type a pointer type points to.
    fn pointee(&self, ptr: &TypeDie) -> Result<&TypeDie, Error> {
        if ptr.tag != gimli::DW_TAG_pointer_type {
            return Err(layout(&ptr.name, "not a pointer"));
        }
        ptr.ty
            .and_then(|o| self.resolve(o))
            .ok_or_else(|| Error::Missing(format!("pointee of {}", ptr.name)))
    }

    fn constant(&self, name: &str) -> Result<i64, Error> {
        self.consts
            .get(name)
            .copied()
            .ok_or_else(|| Error::Missing(format!("constant {name}")))
    }

    fn constant_u32(&self, name: &str) -> Result<u32, Error> {
        let v = self.constant(name)?;
        u32::try_from(v).map_err(|_| layout(name, format!("value {v} out of range")))
    }
}

fn type_ref<R: Reader>(unit: &gimli::Unit<R>, value: AttributeValue<R>) -> Option<u64> {
    match value {
        AttributeValue::UnitRef(o) => o.to_debug_info_offset(&unit.header).map(|o| o.0.into_u64()),
        AttributeValue::DebugInfoRef(o) => Some(o.0.into_u64()),
        _ => None,
    }
}

/// The address of a `DW_OP_addr <addr>` location expression.
fn op_addr<R: Reader>(mut expr: R) -> Option<u64> {
    (expr.read_u8().ok()? == gimli::DW_OP_addr.0).then_some(())?;
    expr.read_u64().ok()
}

fn find_member<'a>(ty: &'a TypeDie, name: &str) -> Result<&'a Member, Error> {
    ty.members
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::Missing(format!("member {}.{name}", ty.name)))
}

fn offset_u32(ty: &TypeDie, member: &str) -> Result<u32, Error> {
    let m = find_member(ty, member)?;
    u32::try_from(m.offset).map_err(|_| layout(&ty.name, format!("{member} offset too large")))
}

/// Checks that `ty.member` is `size` bytes, so the fixed-size reads of the
/// BPF program stay right.
fn expect_size(index: &Index, ty: &TypeDie, member: &str, size: u64) -> Result<(), Error> {
    let t = index.member_type(ty, member)?;
    let actual = match t.tag {
        gimli::DW_TAG_pointer_type => Some(u64::from(index.address_size)),
        _ => t.size,
    };
    if actual != Some(size) {
        return Err(layout(
            format!("{}.{member}", ty.name),
            format!("{} is {actual:?} bytes, expected {size}", t.name),
        ));
    }
    Ok(())
}

/// Reads the offsets of a Go binary from its DWARF (`.debug_*`, which Go
/// compresses; load it with `object`'s `uncompressed_data`, or use
/// [`from_elf`]).
pub fn from_dwarf<R: Reader>(dwarf: &gimli::Dwarf<R>) -> Result<GoOffsets, Error> {
    offsets_from_index(&Index::build(dwarf)?)
}

fn offsets_from_index(index: &Index) -> Result<GoOffsets, Error> {
    let ptr = u64::from(index.address_size);
    let g = index.struct_named("runtime.g")?;
    let m = index.struct_named("runtime.m")?;
    expect_size(index, g, "m", ptr)?;
    expect_size(index, g, "goid", 8)?;
    expect_size(index, g, "atomicstatus", 4)?;
    expect_size(index, g, "waitreason", 1)?;
    expect_size(index, g, "labels", ptr)?;
    expect_size(index, m, "curg", ptr)?;
    Ok(GoOffsets {
        ptr_size: u32::from(index.address_size),
        g_m: offset_u32(g, "m")?,
        g_goid: offset_u32(g, "goid")?,
        g_atomicstatus: offset_u32(g, "atomicstatus")?,
        g_waitreason: offset_u32(g, "waitreason")?,
        g_labels: offset_u32(g, "labels")?,
        m_curg: offset_u32(m, "curg")?,
        labels: label_layout(index)?,
        status: StatusValues {
            idle: index.constant_u32("runtime._Gidle")?,
            runnable: index.constant_u32("runtime._Grunnable")?,
            running: index.constant_u32("runtime._Grunning")?,
            syscall: index.constant_u32("runtime._Gsyscall")?,
            waiting: index.constant_u32("runtime._Gwaiting")?,
            dead: index.constant_u32("runtime._Gdead")?,
            copystack: index.constant_u32("runtime._Gcopystack")?,
            preempted: index.constant_u32("runtime._Gpreempted")?,
            leaked: index.constant_u32("runtime._Gleaked").ok(),
            deadextra: index.constant_u32("runtime._Gdeadextra").ok(),
            scan: index.constant_u32("runtime._Gscan")?,
        },
    })
}

/// Follows `runtime/pprof.labelMap` to the map or slice it is.
fn label_layout(index: &Index) -> Result<LabelLayout, Error> {
    const LABEL_MAP: &str = "runtime/pprof.labelMap";
    let ptr = u64::from(index.address_size);
    let string = 2 * ptr;
    let Some(label_map) = index
        .named(LABEL_MAP, gimli::DW_TAG_structure_type)
        .or_else(|| index.named(LABEL_MAP, gimli::DW_TAG_typedef))
        .and_then(|t| match t.tag {
            gimli::DW_TAG_typedef => index.resolve(t.ty?),
            _ => Some(t),
        })
    else {
        return Ok(LabelLayout::NotLinked);
    };
    match label_map.tag {
        // map[string]string: a pointer to the hmap.
        gimli::DW_TAG_pointer_type => {
            let hmap = index.pointee(label_map)?;
            let bucket = index.pointee(index.member_type(hmap, "buckets")?)?;
            expect_size(index, hmap, "count", ptr)?;
            expect_size(index, hmap, "flags", 1)?;
            expect_size(index, hmap, "B", 1)?;
            let tophash = offset_u32(bucket, "tophash")?;
            let keys = offset_u32(bucket, "keys")?;
            let values = offset_u32(bucket, "values")?;
            let overflow = offset_u32(bucket, "overflow")?;
            let slots = index
                .member_type(bucket, "tophash")?
                .size
                .and_then(|s| u32::try_from(s).ok())
                .ok_or_else(|| layout(&bucket.name, "tophash has no size"))?;
            let slots_u64 = u64::from(slots);
            expect_size(index, bucket, "keys", slots_u64 * string)?;
            expect_size(index, bucket, "values", slots_u64 * string)?;
            if index
                .constant("runtime.bucketCnt")
                .is_ok_and(|c| c != i64::from(slots))
            {
                return Err(layout(&bucket.name, "tophash size is not bucketCnt"));
            }
            let small = |name: &str| -> Result<u8, Error> {
                let v = index.constant(name)?;
                u8::try_from(v).map_err(|_| layout(name, format!("value {v} out of range")))
            };
            Ok(LabelLayout::Map(MapLayout {
                hmap_count: offset_u32(hmap, "count")?,
                hmap_flags: offset_u32(hmap, "flags")?,
                hmap_b: offset_u32(hmap, "B")?,
                hmap_buckets: offset_u32(hmap, "buckets")?,
                hmap_oldbuckets: offset_u32(hmap, "oldbuckets")?,
                bucket_size: bucket
                    .size
                    .and_then(|s| u32::try_from(s).ok())
                    .ok_or_else(|| layout(&bucket.name, "no size"))?,
                bucket_slots: slots,
                bucket_tophash: tophash,
                bucket_keys: keys,
                bucket_values: values,
                bucket_overflow: overflow,
                min_top_hash: small("runtime.minTopHash")?,
                same_size_grow: small("runtime.sameSizeGrow")?,
            }))
        }
        // struct { LabelSet } with LabelSet struct { list []label }: descend
        // through the single-field structs to the slice.
        gimli::DW_TAG_structure_type => {
            let mut ty = label_map;
            let mut list = 0u64;
            for _ in 0..4 {
                if ty.name.starts_with("[]") {
                    break;
                }
                let [only] = ty.members.as_slice() else {
                    return Err(layout(&ty.name, "expected a single field"));
                };
                list += only.offset;
                ty = index.member_type(ty, &only.name)?;
            }
            if !ty.name.starts_with("[]") {
                return Err(layout(LABEL_MAP, "no label slice"));
            }
            let slice = ty;
            if offset_u32(slice, "array")? != 0 || u64::from(offset_u32(slice, "len")?) != ptr {
                return Err(layout(&slice.name, "not a {array, len, cap} slice header"));
            }
            let label = index.pointee(index.member_type(slice, "array")?)?;
            let [key, value] = label.members.as_slice() else {
                return Err(layout(&label.name, "expected key and value"));
            };
            for field in [key, value] {
                expect_size(index, label, &field.name, string)?;
            }
            let u32_of = |v: u64| u32::try_from(v).map_err(|_| layout(&label.name, "too large"));
            Ok(LabelLayout::Slice(SliceLayout {
                list: u32_of(list)?,
                label_size: u32_of(label.size.unwrap_or(0))?,
                label_key: u32_of(key.offset)?,
                label_value: u32_of(value.offset)?,
            }))
        }
        _ => Err(layout(
            LABEL_MAP,
            format!("unexpected DWARF tag {}", label_map.tag),
        )),
    }
}

/// DWARF of `file` with compressed sections inflated.
fn load_dwarf<'a>(file: &object::File<'a>) -> Result<gimli::DwarfSections<Cow<'a, [u8]>>, Error> {
    gimli::DwarfSections::load(|id| -> Result<Cow<'a, [u8]>, Error> {
        match file.section_by_name(id.name()) {
            Some(section) => Ok(section.uncompressed_data()?),
            None => Ok(Cow::Borrowed(&[])),
        }
    })
}

fn with_index<T>(
    file: &object::File<'_>,
    f: impl FnOnce(&Index) -> Result<T, Error>,
) -> Result<T, Error> {
    let sections = load_dwarf(file)?;
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, endian));
    f(&Index::build(&dwarf)?)
}

/// [`from_dwarf`] on the DWARF of `file`.
pub fn from_elf(file: &object::File<'_>) -> Result<GoOffsets, Error> {
    with_index(file, offsets_from_index)
}

/// The strings of `runtime.waitReasonStrings`, by wait reason index, read
/// from the data of `file` at the address its DWARF gives. The string
/// headers must hold link-time addresses (not a PIE binary, whose pointers
/// are relocated at load time).
pub fn wait_reasons_from_elf(file: &object::File<'_>) -> Result<Vec<String>, Error> {
    with_index(file, |index| {
        const NAME: &str = "runtime.waitReasonStrings";
        let (addr, ty) = index
            .vars
            .get(NAME)
            .copied()
            .ok_or_else(|| Error::Missing(format!("variable {NAME}")))?;
        let addr = addr.ok_or_else(|| layout(NAME, "no static address"))?;
        let array = ty
            .and_then(|t| index.resolve(t))
            .ok_or_else(|| Error::Missing(format!("type of {NAME}")))?;
        let count = array
            .count
            .ok_or_else(|| layout(NAME, "array without count"))?;
        let ptr = u64::from(index.address_size);
        let size = count.saturating_mul(2 * ptr);
        let headers = file_bytes(file, addr, size).ok_or(Error::Read {
            addr,
            len: usize::try_from(size).unwrap_or(usize::MAX),
        })?;
        headers
            .chunks_exact(16)
            .map(|h| {
                let p = le_u64(h, 0).unwrap_or(0);
                let n = le_u64(h, 8).unwrap_or(0);
                if n == 0 {
                    return Ok(String::new());
                }
                let bytes = file_bytes(file, p, n).ok_or(Error::Read {
                    addr: p,
                    len: usize::try_from(n).unwrap_or(usize::MAX),
                })?;
                Ok(String::from_utf8_lossy(bytes).into_owned())
            })
            .collect()
    })
}

/// `len` bytes at virtual address `addr` of `file`, if a segment has them
/// in the file.
fn file_bytes<'a>(file: &object::File<'a>, addr: u64, len: u64) -> Option<&'a [u8]> {
    file.segments()
        .find_map(|s| s.data_range(addr, len).ok().flatten())
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

/// Runtime functions that read or write `g` through TLS near their start
/// (`get_tls` + `g(CX)` in the assembly). `runtime.stackcheck` and
/// `runtime.morestack` do it in their first instruction.
const TLS_PROBES: [&str; 5] = [
    "runtime.stackcheck",
    "runtime.morestack",
    "runtime.systemstack",
    "runtime.mcall",
    "runtime.asmcgocall",
];

/// Bytes of each probe function that are searched for the TLS access.
const TLS_PROBE_BYTES: u64 = 128;

/// Offset from the thread pointer (the fs base on amd64) of the slot that
/// holds the current `g`: `fs_base + offset` is the address of `g`.
///
/// Detected from the binary, in two ways that must agree when both apply:
/// - the code: the first FS-relative `mov` in runtime functions that access
///   `g` through TLS (located with `find_function`, which returns an
///   address and size and may be backed by the symbol table, or by
///   `.gopclntab` for stripped binaries; both `name` and `name.abi0` are
///   tried). Internally linked binaries use `-8` directly (`mov %fs:-8`) or,
///   for PIE, through a register (`mov $-8, %rcx; mov %fs:(%rcx), ...`);
///   externally linked ones get the offset the system linker assigned to
///   `runtime.tlsg`, possibly through a GOT slot.
/// - the `runtime.tlsg` symbol (when the symbol table has it) placed in the
///   `PT_TLS` segment, which is the executable's block just below the thread
///   pointer (x86-64 TLS variant II).
///
/// Observed with Go 1.21-1.27 and glibc: -8 for static, PIE, cgo (dynamic,
/// internally or externally linked) and cgo + PIE binaries; -88 for cgo
/// linked statically against glibc, whose own TLS shares the block.
///
/// amd64 has no `runtime.load_g`/`save_g` (the ports that keep `g` in a
/// register, like arm64, have them, and use `TPIDR_EL0` plus
/// `runtime.tls_g`): other architectures return
/// [`Error::UnsupportedArch`] for now.
pub fn g_tls_offset(
    file: &object::File<'_>,
    find_function: &dyn Fn(&str) -> Option<(u64, u64)>,
) -> Result<i64, Error> {
    if file.architecture() != object::Architecture::X86_64 {
        return Err(Error::UnsupportedArch(file.architecture()));
    }
    let tls = tls_segment(file);
    let mut from_code: Option<i64> = None;
    for probe in TLS_PROBES {
        let abi0 = format!("{probe}.abi0");
        let Some((addr, size)) = find_function(probe).or_else(|| find_function(&abi0)) else {
            continue;
        };
        let len = if size == 0 {
            TLS_PROBE_BYTES
        } else {
            size.min(TLS_PROBE_BYTES)
        };
        let Some(code) = file_bytes(file, addr, len) else {
            continue;
        };
        let got = |slot: u64| got_tls_offset(file, tls, slot);
        if let Some(found) = decode_fs_access(code, addr, &got) {
            match from_code {
                Some(previous) if previous != found => {
                    return Err(layout(
                        probe,
                        format!("uses TLS offset {found}, others {previous}"),
                    ));
                }
                _ => from_code = Some(found),
            }
        }
    }
    let from_segment = tls.and_then(|tls| {
        let tlsg = file
            .symbols()
            .find(|s| s.kind() == object::SymbolKind::Tls && s.name() == Ok("runtime.tlsg"))?;
        i64::try_from(tlsg.address())
            .ok()?
            .checked_sub(tls.block_offset()?)
    });
    match (from_code, from_segment) {
        (Some(code), Some(segment)) if code != segment => Err(Error::TlsMismatch { code, segment }),
        (Some(offset), _) | (None, Some(offset)) => Ok(offset),
        (None, None) => Err(Error::TlsNotFound),
    }
}

/// The `PT_TLS` program header: the executable's TLS initialization image.
#[derive(Debug, Clone, Copy)]
struct TlsSegment {
    vaddr: u64,
    memsz: u64,
    align: u64,
}

impl TlsSegment {
    /// Distance from the thread pointer down to the start of the
    /// executable's TLS block, as glibc's `_dl_determine_tlsoffset` places
    /// the first module (x86-64, TLS_TCB_AT_TP).
    fn block_offset(&self) -> Option<i64> {
        let align = self.align.max(1);
        if !align.is_power_of_two() {
            return None;
        }
        let firstbyte = self.vaddr.wrapping_neg() & (align - 1);
        let off = self
            .memsz
            .checked_sub(firstbyte)?
            .checked_next_multiple_of(align)?
            .checked_add(firstbyte)?;
        i64::try_from(off).ok()
    }
}

fn tls_segment(file: &object::File<'_>) -> Option<TlsSegment> {
    let object::File::Elf64(elf) = file else {
        return None;
    };
    let endian = elf.endian();
    elf.elf_program_headers()
        .iter()
        .find(|p| p.p_type(endian) == object::elf::PT_TLS)
        .map(|p| TlsSegment {
            vaddr: p.p_vaddr(endian),
            memsz: p.p_memsz(endian),
            align: p.p_align(endian),
        })
}

/// The TLS offset held in the GOT slot at `slot` (initial-exec TLS access):
/// from a dynamic `R_X86_64_TPOFF64` relocation of the slot if there is
/// one, otherwise the value the static linker wrote.
fn got_tls_offset(file: &object::File<'_>, tls: Option<TlsSegment>, slot: u64) -> Option<i64> {
    if let Some(relocations) = file.dynamic_relocations() {
        for (at, reloc) in relocations {
            if at != slot {
                continue;
            }
            let object::RelocationFlags::Elf { r_type } = reloc.flags() else {
                return None;
            };
            if r_type != object::elf::R_X86_64_TPOFF64 {
                return None;
            }
            let symbol_value = match reloc.target() {
                object::RelocationTarget::Symbol(index) => i64::try_from(
                    file.dynamic_symbol_table()?
                        .symbol_by_index(index)
                        .ok()?
                        .address(),
                )
                .ok()?,
                _ => 0,
            };
            return symbol_value
                .checked_add(reloc.addend())?
                .checked_sub(tls?.block_offset()?);
        }
    }
    le_u64(file_bytes(file, slot, 8)?, 0).map(|v| v as i64)
}

/// Finds the first `mov` through `%fs` in `code` (at address `addr`) and
/// returns the TLS offset it uses. Understood forms (REX.W moves, to or
/// from any register):
/// - `mov %fs:disp32, %reg` (`64 REX 8B|89 /r` with SIB `25`, no base);
/// - `mov $imm32, %base; mov %fs:(%base), %reg`;
/// - `mov disp32(%rip), %base; mov %fs:(%base), %reg`, the offset being in
///   the GOT slot at `rip + disp32`, read with `got`.
fn decode_fs_access(code: &[u8], addr: u64, got: &dyn Fn(u64) -> Option<i64>) -> Option<i64> {
    let valid = |off: i64| (off < 0 && off > -0x1_0000 && off % 8 == 0).then_some(off);
    for i in 0..code.len() {
        let Some(&[prefix, rex, op, modrm]) = code.get(i..i + 4) else {
            break;
        };
        if prefix != 0x64 || rex & 0xf8 != 0x48 || !matches!(op, 0x8b | 0x89) {
            continue;
        }
        let (mode, rm) = (modrm >> 6, modrm & 7);
        if mode != 0 || rm == 5 {
            continue;
        }
        let base = if rm == 4 {
            let Some(&sib) = code.get(i + 4) else {
                continue;
            };
            let index = ((sib >> 3) & 7) | ((rex & 2) << 2);
            if index != 4 {
                continue;
            }
            if sib & 7 == 5 {
                // No base: absolute disp32, sign-extended.
                let Some(disp) = le_u32(code, i + 5) else {
                    continue;
                };
                return valid(i64::from(disp as i32));
            }
            (sib & 7) | ((rex & 1) << 3)
        } else {
            rm | ((rex & 1) << 3)
        };
        // The instruction just before must load `base`.
        let Some(prev) = i.checked_sub(7).and_then(|p| code.get(p..i)) else {
            continue;
        };
        let (prex, pop, pmodrm) = (prev[0], prev[1], prev[2]);
        if prex & 0xf8 != 0x48 {
            continue;
        }
        let imm = le_u32(prev, 3)? as i32;
        if pop == 0xc7 && pmodrm & 0xf8 == 0xc0 && ((pmodrm & 7) | ((prex & 1) << 3)) == base {
            return valid(i64::from(imm));
        }
        if pop == 0x8b && pmodrm & 0xc7 == 0x05 && (((pmodrm >> 3) & 7) | ((prex & 4) << 1)) == base
        {
            let next = addr.wrapping_add(i as u64);
            return valid(got(next.wrapping_add_signed(i64::from(imm)))?);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Reference reader
// ---------------------------------------------------------------------------

/// Memory of the process being read (`/proc/PID/mem` in tests, a core file,
/// `bpf_probe_read_user` in BPF).
pub trait Memory {
    /// Fills `buf` from `addr`; false if any byte is unreadable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

/// `/proc/PID/mem` opened for reading.
impl Memory for std::fs::File {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, addr).is_ok()
    }
}

/// Bounds of what [`read_goroutine`] copies, the same the BPF program has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Labels copied at most; more set [`Labels::truncated`].
    pub max_labels: usize,
    /// Bytes of a key copied at most.
    pub max_key_len: usize,
    /// Bytes of a value copied at most.
    pub max_value_len: usize,
    /// Map buckets (new, old and overflow) read at most (Go <= 1.23).
    pub max_bucket_reads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_labels: 16,
            max_key_len: 64,
            max_value_len: 128,
            max_bucket_reads: 16,
        }
    }
}

/// What a thread was running, from its TLS `g`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoroutineState {
    /// The `g` in TLS; 0 on threads without one (threads created by C code,
    /// or before the runtime set TLS up).
    pub g: u64,
    /// `g.m`.
    pub m: u64,
    /// The thread ran on a system goroutine (`g0`, or `gsignal` in a signal
    /// handler), not on `m.curg`; `goroutine` is then `m.curg`, the user
    /// goroutine it works for.
    pub system_stack: bool,
    /// `m.curg`, the user goroutine; `None` when the thread has none (the
    /// scheduler, an idle thread, a thread parked while its locked goroutine
    /// waits).
    pub goroutine: Option<Goroutine>,
}

/// A user goroutine as the BPF program reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goroutine {
    /// Address of its `g`.
    pub addr: u64,
    pub goid: u64,
    /// `g.atomicstatus` without the scan bit (see [`StatusValues::classify`]).
    pub status: u32,
    /// The scan bit was set: the GC was scanning the stack.
    pub scan: bool,
    /// `g.waitreason`, an index into [`wait_reasons`]. Meaningful while
    /// waiting; the runtime leaves the last reason in place afterwards.
    pub wait_reason: u8,
    pub labels: Labels,
}

/// The pprof labels of a goroutine, as copied within [`Limits`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// In the order found: sorted by key for Go >= 1.24, in hash order before.
    pub list: Vec<Label>,
    /// Labels the runtime says the set has (`hmap.count` or the slice length).
    pub total: u64,
    /// Some labels were not copied (more than `max_labels`, or more buckets
    /// than `max_bucket_reads`).
    pub truncated: bool,
}

/// One label; `key` and `value` are cut at the limits, `key_len` and
/// `value_len` are the full lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub key: Vec<u8>,
    pub key_len: u64,
    pub value: Vec<u8>,
    pub value_len: u64,
}

impl Label {
    pub fn key_truncated(&self) -> bool {
        self.key_len > self.key.len() as u64
    }

    pub fn value_truncated(&self) -> bool {
        self.value_len > self.value.len() as u64
    }
}

impl Labels {
    /// Any label missing or cut short.
    pub fn any_truncated(&self) -> bool {
        self.truncated
            || self
                .list
                .iter()
                .any(|l| l.key_truncated() || l.value_truncated())
    }
}

fn read_bytes(mem: &dyn Memory, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
    if buf.is_empty() || mem.read(addr, buf) {
        Ok(())
    } else {
        Err(Error::Read {
            addr,
            len: buf.len(),
        })
    }
}

fn read_u64(mem: &dyn Memory, addr: u64) -> Result<u64, Error> {
    let mut b = [0u8; 8];
    read_bytes(mem, addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_u32(mem: &dyn Memory, addr: u64) -> Result<u32, Error> {
    let mut b = [0u8; 4];
    read_bytes(mem, addr, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u8(mem: &dyn Memory, addr: u64) -> Result<u8, Error> {
    let mut b = [0u8; 1];
    read_bytes(mem, addr, &mut b)?;
    Ok(b[0])
}

/// Decodes the goroutine of the thread whose thread pointer is `fs_base`,
/// exactly as the BPF program does (64-bit little-endian targets):
///
/// 1. `g = *(fs_base + tls_off)`; 0 → no goroutine.
/// 2. `m = *(g + g_m)`, `curg = *(m + m_curg)`; `system_stack = g != curg`;
///    `curg == 0` → no user goroutine.
/// 3. From `curg`: `goid` (u64), `atomicstatus` (u32, scan bit split off),
///    `waitreason` (u8), `labels` (pointer).
/// 4. Labels, if the pointer is not nil, per [`LabelLayout`]:
///    - slice: read the slice header, copy `min(len, max_labels)` labels in
///      one read, then each key and value cut at the limits;
///    - map: read the map pointer, then `count`, `flags`, `B`, `buckets`,
///      `oldbuckets`; visit at most `max_bucket_reads` buckets: the `2^B`
///      new ones, each followed by its overflow chain, then the old ones if
///      the map is growing (half as many, or as many on a same-size grow).
///      Each bucket is one fixed-size copy; a slot is live iff its tophash
///      is >= `min_top_hash` (evacuated slots are marked below it, and
///      entries not yet evacuated are only in old buckets, so nothing is
///      seen twice).
pub fn read_goroutine(
    mem: &dyn Memory,
    fs_base: u64,
    tls_off: i64,
    o: &GoOffsets,
    limits: Limits,
) -> Result<GoroutineState, Error> {
    let mut state = GoroutineState {
        g: read_u64(mem, fs_base.wrapping_add_signed(tls_off))?,
        m: 0,
        system_stack: false,
        goroutine: None,
    };
    if state.g == 0 {
        return Ok(state);
    }
    state.m = read_u64(mem, state.g.wrapping_add(u64::from(o.g_m)))?;
    if state.m == 0 {
        return Ok(state);
    }
    let curg = read_u64(mem, state.m.wrapping_add(u64::from(o.m_curg)))?;
    state.system_stack = curg != state.g;
    if curg != 0 {
        state.goroutine = Some(read_g(mem, curg, o, limits)?);
    }
    Ok(state)
}

/// Step 3 and 4 of [`read_goroutine`] for the goroutine at `g`.
pub fn read_g(mem: &dyn Memory, g: u64, o: &GoOffsets, limits: Limits) -> Result<Goroutine, Error> {
    let status = read_u32(mem, g.wrapping_add(u64::from(o.g_atomicstatus)))?;
    let labels_ptr = read_u64(mem, g.wrapping_add(u64::from(o.g_labels)))?;
    let labels = if labels_ptr == 0 {
        Labels::default()
    } else {
        match &o.labels {
            LabelLayout::NotLinked => Labels {
                truncated: true,
                ..Labels::default()
            },
            LabelLayout::Slice(s) => read_slice_labels(mem, labels_ptr, s, limits)?,
            LabelLayout::Map(m) => read_map_labels(mem, labels_ptr, m, limits)?,
        }
    };
    Ok(Goroutine {
        addr: g,
        goid: read_u64(mem, g.wrapping_add(u64::from(o.g_goid)))?,
        status: status & !o.status.scan,
        scan: status & o.status.scan != 0,
        wait_reason: read_u8(mem, g.wrapping_add(u64::from(o.g_waitreason)))?,
        labels,
    })
}

/// Copies `min(len, max)` bytes of the Go string at `ptr`.
fn read_string(mem: &dyn Memory, ptr: u64, len: u64, max: usize) -> Result<Vec<u8>, Error> {
    let n = usize::try_from(len).unwrap_or(usize::MAX).min(max);
    let mut buf = vec![0u8; n];
    read_bytes(mem, ptr, &mut buf)?;
    Ok(buf)
}

/// A label from the two string headers at `key` and `value` of `bytes`.
fn label_at(
    mem: &dyn Memory,
    bytes: &[u8],
    key: usize,
    value: usize,
    limits: Limits,
) -> Result<Label, Error> {
    let field =
        |at: usize| le_u64(bytes, at).ok_or_else(|| layout("label", "outside the copied bytes"));
    let (kp, kl) = (field(key)?, field(key + 8)?);
    let (vp, vl) = (field(value)?, field(value + 8)?);
    Ok(Label {
        key: read_string(mem, kp, kl, limits.max_key_len)?,
        key_len: kl,
        value: read_string(mem, vp, vl, limits.max_value_len)?,
        value_len: vl,
    })
}

fn read_slice_labels(
    mem: &dyn Memory,
    label_map: u64,
    s: &SliceLayout,
    limits: Limits,
) -> Result<Labels, Error> {
    let header = label_map.wrapping_add(u64::from(s.list));
    let array = read_u64(mem, header)?;
    let len = read_u64(mem, header.wrapping_add(8))?;
    let n = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(limits.max_labels);
    let size = s.label_size as usize;
    let mut bytes = vec![0u8; n.saturating_mul(size)];
    read_bytes(mem, array, &mut bytes)?;
    let mut labels = Labels {
        list: Vec::with_capacity(n),
        total: len,
        truncated: len > n as u64,
    };
    for i in 0..n {
        let base = i * size;
        labels.list.push(label_at(
            mem,
            &bytes,
            base + s.label_key as usize,
            base + s.label_value as usize,
            limits,
        )?);
    }
    Ok(labels)
}

fn read_map_labels(
    mem: &dyn Memory,
    label_map: u64,
    m: &MapLayout,
    limits: Limits,
) -> Result<Labels, Error> {
    let hmap = read_u64(mem, label_map)?;
    if hmap == 0 {
        return Ok(Labels::default());
    }
    let count = read_u64(mem, hmap.wrapping_add(u64::from(m.hmap_count)))?;
    let flags = read_u8(mem, hmap.wrapping_add(u64::from(m.hmap_flags)))?;
    let b = read_u8(mem, hmap.wrapping_add(u64::from(m.hmap_b)))?;
    let buckets = read_u64(mem, hmap.wrapping_add(u64::from(m.hmap_buckets)))?;
    let oldbuckets = read_u64(mem, hmap.wrapping_add(u64::from(m.hmap_oldbuckets)))?;
    // More buckets than could ever be read; keeps the shift defined.
    let nbuckets = 1u64 << b.min(32);
    let nold = match (oldbuckets, flags & m.same_size_grow != 0) {
        (0, _) => 0,
        (_, true) => nbuckets,
        (_, false) => nbuckets >> 1,
    };
    let mut labels = Labels {
        total: count,
        ..Labels::default()
    };
    if buckets == 0 {
        return Ok(labels);
    }
    let size = m.bucket_size as usize;
    // Keys and values are arrays of string headers.
    let stride = (m.bucket_values.saturating_sub(m.bucket_keys) / m.bucket_slots.max(1)) as usize;
    let mut bucket = vec![0u8; size];
    let (mut next_new, mut next_old, mut overflow) = (0u64, 0u64, 0u64);
    for _ in 0..limits.max_bucket_reads {
        let addr = if overflow != 0 {
            overflow
        } else if next_new < nbuckets {
            next_new += 1;
            buckets.wrapping_add((next_new - 1).wrapping_mul(size as u64))
        } else if next_old < nold {
            next_old += 1;
            oldbuckets.wrapping_add((next_old - 1).wrapping_mul(size as u64))
        } else {
            break;
        };
        read_bytes(mem, addr, &mut bucket)?;
        for slot in 0..m.bucket_slots as usize {
            let tophash = bucket
                .get(m.bucket_tophash as usize + slot)
                .copied()
                .unwrap_or(0);
            if tophash < m.min_top_hash {
                continue;
            }
            if labels.list.len() >= limits.max_labels {
                labels.truncated = true;
                return Ok(labels);
            }
            let key = m.bucket_keys as usize + slot * stride;
            let value = m.bucket_values as usize + slot * stride;
            labels
                .list
                .push(label_at(mem, &bucket, key, value, limits)?);
        }
        overflow = le_u64(&bucket, m.bucket_overflow as usize).unwrap_or(0);
        if labels.list.len() as u64 >= count {
            // All found: the rest of the buckets are empty.
            return Ok(labels);
        }
    }
    if overflow != 0 || next_new < nbuckets || next_old < nold {
        labels.truncated = true;
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, HashMap},
        io::{BufRead, BufReader},
        path::{Path, PathBuf},
        process::{Child, Command, Stdio},
    };

    use super::*;
    use crate::testutil::{build_go, go_toolchains, run};

    // -- Unit tests on synthetic input ------------------------------------

    #[test]
    fn goruntime_decodes_tls_accesses() {
        let no_got = |_: u64| None;
        let cases: [(&[u8], Option<i64>); 7] = [
            // mov %fs:0xfffffffffffffff8,%rax
            (
                &[0x64, 0x48, 0x8b, 0x04, 0x25, 0xf8, 0xff, 0xff, 0xff],
                Some(-8),
            ),
            // mov %r14,%fs:0xffffffffffffffa8 (a store, REX.R)
            (
                &[0x64, 0x4c, 0x89, 0x34, 0x25, 0xa8, 0xff, 0xff, 0xff],
                Some(-88),
            ),
            // mov $-8,%rcx; mov %fs:(%rcx),%rax
            (
                &[
                    0x48, 0xc7, 0xc1, 0xf8, 0xff, 0xff, 0xff, 0x64, 0x48, 0x8b, 0x01,
                ],
                Some(-8),
            ),
            // mov $-16,%r12; mov %fs:(%r12),%r14 (SIB base r12)
            (
                &[
                    0x49, 0xc7, 0xc4, 0xf0, 0xff, 0xff, 0xff, 0x64, 0x4d, 0x8b, 0x34, 0x24,
                ],
                Some(-16),
            ),
            // mov $-8,%rdx; mov %fs:(%rcx),%rax: the register does not match.
            (
                &[
                    0x48, 0xc7, 0xc2, 0xf8, 0xff, 0xff, 0xff, 0x64, 0x48, 0x8b, 0x01,
                ],
                None,
            ),
            // No %fs prefix.
            (&[0x48, 0x8b, 0x04, 0x25, 0xf8, 0xff, 0xff, 0xff], None),
            // A positive offset is not where an executable's TLS is.
            (
                &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x08, 0x00, 0x00, 0x00],
                None,
            ),
        ];
        for (code, want) in cases {
            assert_eq!(decode_fs_access(code, 0x1000, &no_got), want, "{code:x?}");
        }
        // mov 0x10(%rip),%rcx; mov %fs:(%rcx),%rax: the offset is in the GOT
        // slot at 0x1000 + 7 + 0x10.
        let code = [0x48, 0x8b, 0x0d, 0x10, 0, 0, 0, 0x64, 0x48, 0x8b, 0x01];
        let got = |slot: u64| (slot == 0x1017).then_some(-24);
        assert_eq!(decode_fs_access(&code, 0x1000, &got), Some(-24));
        assert_eq!(decode_fs_access(&code, 0x1000, &no_got), None);
    }

    #[test]
    fn goruntime_tls_block_offset_follows_glibc() {
        let seg = |vaddr, memsz, align| TlsSegment {
            vaddr,
            memsz,
            align,
        };
        assert_eq!(seg(0x51bdf0, 8, 8).block_offset(), Some(8));
        assert_eq!(seg(0x63b6b0, 0x78, 8).block_offset(), Some(0x78));
        assert_eq!(seg(0x1000, 0x11, 16).block_offset(), Some(0x20));
        // The block starts 8 bytes into a 16-aligned line.
        assert_eq!(seg(0x1008, 0x10, 16).block_offset(), Some(0x18));
        assert_eq!(seg(0, 8, 3).block_offset(), None);
    }

    /// Process memory made of regions.
    #[derive(Default)]
    struct FakeMemory {
        regions: BTreeMap<u64, Vec<u8>>,
        next: u64,
    }

    impl Memory for FakeMemory {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            let Some((base, data)) = self.regions.range(..=addr).next_back() else {
                return false;
            };
            let start = (addr - base) as usize;
            match data.get(start..start + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    impl FakeMemory {
        fn alloc(&mut self, data: Vec<u8>) -> u64 {
            let addr = 0x10_0000 + self.next;
            self.next += (data.len() as u64).next_multiple_of(0x100) + 0x100;
            self.regions.insert(addr, data);
            addr
        }

        /// A Go string header for `s`.
        fn string(&mut self, s: &str) -> [u8; 16] {
            let ptr = self.alloc(s.as_bytes().to_vec());
            let mut h = [0u8; 16];
            h[..8].copy_from_slice(&ptr.to_le_bytes());
            h[8..].copy_from_slice(&(s.len() as u64).to_le_bytes());
            h
        }

        fn write(&mut self, addr: u64, bytes: &[u8]) {
            let (base, data) = self.regions.range_mut(..=addr).next_back().unwrap();
            let at = (addr - base) as usize;
            data[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }

    fn map_layout() -> MapLayout {
        match for_version(1, 21).unwrap().labels {
            LabelLayout::Map(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn slice_layout() -> SliceLayout {
        match for_version(1, 24).unwrap().labels {
            LabelLayout::Slice(s) => s,
            other => panic!("{other:?}"),
        }
    }

    /// A bucket with `entries` in slots given by (slot, tophash, key, value).
    fn bucket(
        mem: &mut FakeMemory,
        m: &MapLayout,
        entries: &[(usize, u8, &str, &str)],
        overflow: u64,
    ) -> Vec<u8> {
        let mut b = vec![0u8; m.bucket_size as usize];
        for &(slot, tophash, key, value) in entries {
            b[m.bucket_tophash as usize + slot] = tophash;
            let k = mem.string(key);
            let v = mem.string(value);
            let at = m.bucket_keys as usize + slot * 16;
            b[at..at + 16].copy_from_slice(&k);
            let at = m.bucket_values as usize + slot * 16;
            b[at..at + 16].copy_from_slice(&v);
        }
        let at = m.bucket_overflow as usize;
        b[at..at + 8].copy_from_slice(&overflow.to_le_bytes());
        b
    }

    fn sorted_pairs(labels: &Labels) -> Vec<(String, String)> {
        let mut v: Vec<_> = labels
            .list
            .iter()
            .map(|l| {
                (
                    String::from_utf8_lossy(&l.key).into_owned(),
                    String::from_utf8_lossy(&l.value).into_owned(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// A map in the middle of growing from 1 to 2 buckets: the old bucket
    /// has one slot evacuated (its entry is now in a new bucket) and one not
    /// yet; new bucket 1 has an overflow bucket.
    fn growing_map(mem: &mut FakeMemory, m: &MapLayout) -> u64 {
        let overflow = bucket(mem, m, &[(0, 200, "e", "5")], 0);
        let overflow = mem.alloc(overflow);
        let mut new = bucket(mem, m, &[(0, 17, "a", "1"), (3, 99, "b", "2")], 0);
        new.extend(bucket(mem, m, &[(1, 5, "c", "3")], overflow));
        let buckets = mem.alloc(new);
        // Slot 0 was evacuated to X (tophash 2) and its memory cleared; slot
        // 1 still holds "d"; slot 2 is empty.
        let old = bucket(mem, m, &[(0, 2, "a", "stale"), (1, 250, "d", "4")], 0);
        let oldbuckets = mem.alloc(old);
        let mut hmap = vec![0u8; 48];
        hmap[m.hmap_count as usize..][..8].copy_from_slice(&5u64.to_le_bytes());
        hmap[m.hmap_b as usize] = 1;
        hmap[m.hmap_buckets as usize..][..8].copy_from_slice(&buckets.to_le_bytes());
        hmap[m.hmap_oldbuckets as usize..][..8].copy_from_slice(&oldbuckets.to_le_bytes());
        let hmap = mem.alloc(hmap);
        mem.alloc(hmap.to_le_bytes().to_vec())
    }

    #[test]
    fn goruntime_reads_growing_maps() {
        let m = map_layout();
        let mut mem = FakeMemory::default();
        let label_map = growing_map(&mut mem, &m);
        let labels = read_map_labels(&mem, label_map, &m, Limits::default()).unwrap();
        let want: Vec<(String, String)> =
            [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(sorted_pairs(&labels), want);
        assert_eq!(labels.total, 5);
        assert!(!labels.any_truncated());

        // Three bucket reads reach the overflow bucket but not the old one.
        let few_reads = Limits {
            max_bucket_reads: 3,
            ..Limits::default()
        };
        let labels = read_map_labels(&mem, label_map, &m, few_reads).unwrap();
        assert_eq!(labels.list.len(), 4);
        assert!(labels.truncated);
        let two = Limits {
            max_labels: 2,
            ..Limits::default()
        };
        let labels = read_map_labels(&mem, label_map, &m, two).unwrap();
        assert_eq!(labels.list.len(), 2);
        assert!(labels.truncated);

        // A same-size grow has as many old buckets as new ones: the second
        // old bucket is read too.
        let mut mem = FakeMemory::default();
        let label_map = growing_map(&mut mem, &m);
        let hmap = le_u64(&mem.regions[&label_map], 0).unwrap();
        let old = le_u64(&mem.regions[&hmap], m.hmap_oldbuckets as usize).unwrap();
        mem.regions
            .get_mut(&old)
            .unwrap()
            .truncate(m.bucket_size as usize);
        let second = bucket(&mut mem, &m, &[(7, 5, "f", "6")], 0);
        mem.regions.get_mut(&old).unwrap().extend(second);
        mem.write(hmap + u64::from(m.hmap_flags), &[m.same_size_grow]);
        mem.write(hmap + u64::from(m.hmap_count), &6u64.to_le_bytes());
        let labels = read_map_labels(&mem, label_map, &m, Limits::default()).unwrap();
        assert_eq!(sorted_pairs(&labels).len(), 6);
        assert!(!labels.truncated);
        // Reading stops once `count` labels are found: with a count of 4 the
        // old buckets are not read.
        mem.write(hmap + u64::from(m.hmap_count), &4u64.to_le_bytes());
        let labels = read_map_labels(&mem, label_map, &m, Limits::default()).unwrap();
        assert_eq!(sorted_pairs(&labels).len(), 4);
    }

    #[test]
    fn goruntime_reads_label_slices_within_limits() {
        let s = slice_layout();
        let mut mem = FakeMemory::default();
        let long = "v".repeat(200);
        let pairs = [
            ("alpha", "1"),
            ("k".repeat(80).leak() as &str, "2"),
            ("zeta", long.as_str()),
        ];
        let mut array = Vec::new();
        for (k, v) in pairs {
            let mut label = vec![0u8; s.label_size as usize];
            label[s.label_key as usize..][..16].copy_from_slice(&mem.string(k));
            label[s.label_value as usize..][..16].copy_from_slice(&mem.string(v));
            array.extend(label);
        }
        let array = mem.alloc(array);
        let mut header = vec![0u8; 24];
        header[..8].copy_from_slice(&array.to_le_bytes());
        header[8..16].copy_from_slice(&3u64.to_le_bytes());
        header[16..].copy_from_slice(&3u64.to_le_bytes());
        let label_map = mem.alloc(header);

        let labels = read_slice_labels(&mem, label_map, &s, Limits::default()).unwrap();
        assert_eq!(labels.list.len(), 3);
        assert!(!labels.truncated);
        assert_eq!(labels.list[0].key, b"alpha");
        assert!(labels.list[1].key_truncated());
        assert_eq!(labels.list[1].key.len(), 64);
        assert_eq!(labels.list[1].key_len, 80);
        assert!(labels.list[2].value_truncated());
        assert_eq!(labels.list[2].value, &long.as_bytes()[..128]);
        assert!(labels.any_truncated());

        let two = Limits {
            max_labels: 2,
            ..Limits::default()
        };
        let labels = read_slice_labels(&mem, label_map, &s, two).unwrap();
        assert_eq!(
            (labels.list.len(), labels.total, labels.truncated),
            (2, 3, true)
        );
    }

    #[test]
    fn goruntime_reads_goroutine_through_tls_and_curg() {
        let o = *for_version(1, 24).unwrap();
        let mut mem = FakeMemory::default();
        let curg = mem.alloc(vec![0u8; 512]);
        let m = mem.alloc(vec![0u8; 512]);
        let g0 = mem.alloc(vec![0u8; 512]);
        let tls = mem.alloc(vec![0u8; 64]);
        let fs_base = tls + 32;
        mem.write(curg + u64::from(o.g_m), &m.to_le_bytes());
        mem.write(curg + u64::from(o.g_goid), &42u64.to_le_bytes());
        let status = o.status.running | o.status.scan;
        mem.write(curg + u64::from(o.g_atomicstatus), &status.to_le_bytes());
        mem.write(curg + u64::from(o.g_waitreason), &[7]);
        mem.write(g0 + u64::from(o.g_m), &m.to_le_bytes());
        mem.write(m + u64::from(o.m_curg), &curg.to_le_bytes());

        // On the goroutine itself.
        mem.write(fs_base - 8, &curg.to_le_bytes());
        let state = read_goroutine(&mem, fs_base, -8, &o, Limits::default()).unwrap();
        assert!(!state.system_stack);
        let g = state.goroutine.unwrap();
        assert_eq!((g.addr, g.goid, g.wait_reason), (curg, 42, 7));
        assert_eq!(o.status.classify(g.status), GStatus::Running);
        assert!(g.scan);
        assert_eq!(g.labels, Labels::default());

        // On g0, working for curg.
        mem.write(fs_base - 8, &g0.to_le_bytes());
        let state = read_goroutine(&mem, fs_base, -8, &o, Limits::default()).unwrap();
        assert!(state.system_stack);
        assert_eq!(state.goroutine.unwrap().goid, 42);

        // In the scheduler: no user goroutine.
        mem.write(m + u64::from(o.m_curg), &0u64.to_le_bytes());
        let state = read_goroutine(&mem, fs_base, -8, &o, Limits::default()).unwrap();
        assert!(state.system_stack && state.goroutine.is_none());

        // A thread without g, and unreadable memory.
        mem.write(fs_base - 8, &0u64.to_le_bytes());
        let state = read_goroutine(&mem, fs_base, -8, &o, Limits::default()).unwrap();
        assert_eq!((state.g, state.goroutine), (0, None));
        assert!(matches!(
            read_goroutine(&mem, 8, -8, &o, Limits::default()),
            Err(Error::Read { addr: 0, len: 8 })
        ));
    }

    #[test]
    fn goruntime_table_covers_1_21_to_1_27() {
        for minor in 21..=27 {
            let o = for_version(1, minor).unwrap_or_else(|| panic!("1.{minor}"));
            assert_eq!(
                matches!(o.labels, LabelLayout::Map(_)),
                minor <= 23,
                "1.{minor}: {:?}",
                o.labels
            );
            assert!(wait_reasons(1, minor).is_some_and(|w| w[0].is_empty() && w.len() > 30));
        }
        assert!(for_version(1, 20).is_none());
        assert!(for_version(1, 28).is_none());
        assert!(for_version(2, 0).is_none());
        assert!(
            table()
                .windows(2)
                .all(|w| (w[0].major, w[0].minor) < (w[1].major, w[1].minor))
        );
    }

    // -- Tests against binaries built by each toolchain --------------------

    /// A directory kept across runs for fixtures and their Go build cache,
    /// so that later runs reuse compiled packages.
    fn fixture_dir() -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/goruntime-fixtures");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn version_of(toolchain: &str) -> (u32, u32) {
        let mut parts = toolchain.split('.').map(|p| p.parse::<u32>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    }

    fn dwarf_of<'a>(
        data: &'a [u8],
        sections: &'a mut Option<gimli::DwarfSections<Cow<'a, [u8]>>>,
    ) -> gimli::Dwarf<gimli::EndianSlice<'a, gimli::LittleEndian>> {
        let file = object::File::parse(data).unwrap();
        *sections = Some(load_dwarf(&file).unwrap());
        sections
            .as_ref()
            .unwrap()
            .borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian))
    }

    const OFFSETS_FIXTURE: &str = r#"package main

import (
	"context"
	"fmt"
	"runtime/pprof"
)

func main() {
	pprof.Do(context.Background(), pprof.Labels("a", "b"), func(ctx context.Context) {
		fmt.Println(pprof.Label(ctx, "a"))
	})
}
"#;

    /// For every toolchain, the offsets and wait reasons read from a
    /// binary's DWARF are the checked-in table row of its version.
    #[test]
    fn goruntime_dwarf_offsets_match_table() {
        let toolchains = go_toolchains();
        let dir = fixture_dir();
        for (version, go) in &toolchains {
            let bin = build_go(
                go,
                &dir,
                &format!("offsets-{version}"),
                OFFSETS_FIXTURE,
                &[],
            );
            let data = std::fs::read(&bin).unwrap();
            let mut sections = None;
            let dwarf = dwarf_of(&data, &mut sections);
            let from_dwarf = from_dwarf(&dwarf).unwrap();
            let (major, minor) = version_of(version);
            let table =
                for_version(major, minor).unwrap_or_else(|| panic!("{version} not in the table"));
            assert_eq!(&from_dwarf, table, "{version}");
            let file = object::File::parse(&*data).unwrap();
            assert_eq!(from_elf(&file).unwrap(), from_dwarf);
            let reasons = wait_reasons_from_elf(&file).unwrap();
            assert_eq!(reasons, wait_reasons(major, minor).unwrap(), "{version}");
            eprintln!("{version}: {from_dwarf:?}, {} wait reasons", reasons.len());
        }
    }

    /// Running the generator again gives the checked-in table.
    #[test]
    fn goruntime_table_is_reproducible() {
        let toolchains = go_toolchains();
        if toolchains.is_empty() {
            return;
        }
        let installed: Vec<String> = toolchains.iter().map(|(v, _)| format!("go{v}")).collect();
        let in_table: Vec<&str> = table().iter().map(|e| e.toolchain).collect();
        assert_eq!(
            installed, in_table,
            "the table was generated with other toolchains"
        );
        let out = tempfile::tempdir().unwrap();
        let table_rs = out.path().join("runtime_table.rs");
        run(Command::new(env!("CARGO"))
            .args([
                "run",
                "-q",
                "-p",
                "profiler",
                "--example",
                "go_offsets",
                "--",
                "--out",
            ])
            .arg(&table_rs)
            .args(toolchains.iter().map(|(_, go)| go))
            .env("GOCACHE", fixture_dir().join("gocache"))
            .current_dir(env!("CARGO_MANIFEST_DIR")));
        let regenerated = std::fs::read_to_string(&table_rs).unwrap();
        assert!(
            regenerated == include_str!("runtime_table.rs"),
            "regenerated table differs from runtime_table.rs"
        );
    }

    // -- Live processes ----------------------------------------------------

    /// Goroutines locked to their threads, each in its own loop under its
    /// own labels, printing `worker NAME goid N tid T` before they start.
    /// `CGO` and `NOTE` are replaced to make cgo builds call C.
    const LIVE_FIXTURE: &str = r#"package main

CGO
import (
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	ready sync.WaitGroup
	start = make(chan struct{})
	sink  [8]uint64
)

func goid() uint64 {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, err := strconv.ParseUint(strings.Fields(string(buf))[1], 10, 64)
	if err != nil {
		panic(err)
	}
	return id
}

//go:noinline
func spinAlpha(i int) {
	for {
		sink[i]++
	}
}

//go:noinline
func spinBeta(i int) {
	for {
		sink[i] += sink[i]>>3 + 1
	}
}

//go:noinline
func spinGamma(i int) {
	for {
		sink[i] ^= sink[i]<<1 + 7
	}
}

//go:noinline
func spinDelta(i int) {
	for {
		sink[i] = sink[i]*3 + 1
	}
}

//go:noinline
func spinEpsilon(i int) {
	for {
		sink[i] -= 5
	}
}

//go:noinline
func spinZeta(i int) {
	for {
		sink[i] += uint64(i)
	}
}

func sleepForever(int) {
	ts := syscall.Timespec{Sec: 3600}
	for {
		syscall.Nanosleep(&ts, nil)
	}
}

func worker(name string, work func(int), i int) func(context.Context) {
	return func(context.Context) {
		runtime.LockOSThread()
		fmt.Printf("worker %s goid %d tid %d\n", name, goid(), syscall.Gettid())
		ready.Done()
		<-start
		work(i)
	}
}

func main() {
	var many, more []string
	for i := 0; i < 20; i++ {
		many = append(many, fmt.Sprintf("k%02d", i), fmt.Sprintf("v%02d", i))
	}
	// Up to Go 1.23 the entry past 6 (Go 1.21) or 6.5 per bucket makes the
	// map grow from 4 to 8 buckets and evacuates only 2 of the old ones: the
	// map stays mid-growth.
	n := 27
	if strings.HasPrefix(runtime.Version(), "go1.21.") {
		n = 25
	}
	for i := 0; i < n; i++ {
		more = append(more, fmt.Sprintf("z%02d", i), fmt.Sprint(i))
	}
	long := strings.Repeat("0123456789", 10)
	bg := context.Background()
	ready.Add(7)
	go pprof.Do(bg, pprof.Labels("worker", "alpha", "kind", "spin"), worker("alpha", spinAlpha, 0))
	go pprof.Do(bg, pprof.Labels(many...), worker("beta", spinBeta, 1))
	go pprof.Do(bg, pprof.Labels("worker", "gamma", "long", long), worker("gamma", spinGamma, 2))
	go worker("delta", spinDelta, 3)(bg)
	go pprof.Do(bg, pprof.Labels("outer", "1"), func(ctx context.Context) {
		pprof.Do(ctx, pprof.Labels("inner", "2"), worker("epsilon", spinEpsilon, 4))
	})
	go pprof.Do(bg, pprof.Labels("worker", "sys"), worker("sys", sleepForever, 5))
	go pprof.Do(bg, pprof.Labels(more...), worker("zeta", spinZeta, 6))
	ready.Wait()
	// Let every worker block on start, so that its wait reason is "chan receive".
	time.Sleep(200 * time.Millisecond)
	close(start)
	fmt.Println("ready" + cgoNote())
	select {}
}

NOTE
"#;

    /// Replaces `CGO` for the cgo builds (a C function, called by main).
    const CGO_IMPORT: &str = "/*\nstatic int one(void) { return 1; }\n*/\nimport \"C\"\n";
    const CGO_NOTE: &str = "func cgoNote() string { return fmt.Sprint(\" cgo \", C.one()) }\n";
    const NO_CGO_NOTE: &str = "func cgoNote() string { return \"\" }\n";

    /// How a fixture is built: name, cgo, `go build` flags.
    const BUILD_MODES: [(&str, bool, &[&str]); 6] = [
        ("static", false, &[]),
        ("pie", false, &["-buildmode=pie"]),
        ("cgo", true, &[]),
        ("cgo-pie", true, &["-buildmode=pie"]),
        ("cgo-internal", true, &["-ldflags=-linkmode=internal"]),
        (
            "cgo-static",
            true,
            &["-ldflags=-linkmode=external -extldflags=-static"],
        ),
    ];

    /// The labels each worker was started with, sorted.
    fn expected_labels(worker: &str, version: (u32, u32)) -> Vec<(String, String)> {
        let pairs: Vec<(String, String)> = match worker {
            "alpha" => vec![
                ("kind".into(), "spin".into()),
                ("worker".into(), "alpha".into()),
            ],
            "beta" => (0..20)
                .map(|i| (format!("k{i:02}"), format!("v{i:02}")))
                .collect(),
            "gamma" => vec![
                ("long".into(), "0123456789".repeat(10)),
                ("worker".into(), "gamma".into()),
            ],
            "delta" => vec![],
            "epsilon" => vec![("inner".into(), "2".into()), ("outer".into(), "1".into())],
            "sys" => vec![("worker".into(), "sys".into())],
            "zeta" => {
                let n = if version == (1, 21) { 25 } else { 27 };
                (0..n)
                    .map(|i| (format!("z{i:02}"), i.to_string()))
                    .collect()
            }
            other => panic!("unknown worker {other}"),
        };
        let mut sorted = pairs;
        sorted.sort();
        sorted
    }

    /// A running fixture, killed when dropped.
    struct LiveProcess {
        child: Child,
        /// worker name → (goid, tid)
        workers: HashMap<String, (u64, i32)>,
    }

    impl Drop for LiveProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn start(bin: &Path) -> LiveProcess {
        let child = Command::new(bin)
            .env("GOMAXPROCS", "10")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut process = LiveProcess {
            child,
            workers: HashMap::new(),
        };
        let stdout = process.child.stdout.take().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.starts_with("ready") {
                return process;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() == 6 && f[0] == "worker", "{line}");
            process.workers.insert(
                f[1].to_owned(),
                (f[3].parse().unwrap(), f[5].parse().unwrap()),
            );
        }
        panic!("{} exited before it was ready", bin.display());
    }

    /// Stops thread `tid` (without a signal: PTRACE_SEIZE + INTERRUPT),
    /// calls `f` with its fs base while it is stopped, and lets it go.
    fn with_thread_stopped<T>(tid: i32, f: impl FnOnce(u64) -> T) -> T {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: ptrace requests on a thread of our own child, with the
        // argument types each request expects; `regs` outlives the call.
        unsafe {
            assert_eq!(
                libc::ptrace(libc::PTRACE_SEIZE, tid, null, null),
                0,
                "seize {tid}"
            );
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null), 0);
            let mut status = 0;
            assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
            let mut regs: libc::user_regs_struct = std::mem::zeroed();
            let got = libc::ptrace(libc::PTRACE_GETREGS, tid, null, &mut regs as *mut _);
            let result = f(regs.fs_base);
            assert_eq!(libc::ptrace(libc::PTRACE_DETACH, tid, null, null), 0);
            assert_eq!(got, 0, "getregs {tid}");
            result
        }
    }

    /// How a process is read: offsets and TLS offset.
    struct Knowledge {
        version: (u32, u32),
        offsets: GoOffsets,
        tls: i64,
    }

    /// Reads every worker of `process` until it is seen on its own
    /// goroutine (not between two time slices in the scheduler) and checks
    /// it. Returns how many samples were taken.
    /// What the shared no_std reader (the one the BPF program runs) reads:
    /// the sample part and, when there is a label set, the labels record.
    fn read_with_core(
        mem: &std::fs::File,
        fs_base: u64,
        tls: i64,
        o: &GoOffsets,
    ) -> (
        profiler_common::golang::GoSampleExt,
        Option<Box<profiler_common::golang::GoLabelsRecord>>,
    ) {
        use profiler_common::golang::{self as core, GoMemory};
        struct Proc<'a>(&'a std::fs::File);
        impl GoMemory for Proc<'_> {
            fn read(&self, addr: u64, dst: &mut [u8]) -> bool {
                Memory::read(self.0, addr, dst)
            }
        }
        let bpf = o.to_bpf().unwrap();
        let g = read_u64(mem, fs_base.wrapping_add_signed(tls)).unwrap();
        let mut ext = core::GoSampleExt::default();
        core::read_state(&Proc(mem), g, &bpf, &mut ext);
        if ext.labels == 0 {
            return (ext, None);
        }
        let mut rec = Box::new(core::GoLabelsRecord {
            labels: ext.labels,
            fingerprint: ext.labels_fingerprint,
            ..core::GoLabelsRecord::EMPTY
        });
        let mut bucket = [0u8; core::MAX_BUCKET_BYTES];
        core::read_labels(&Proc(mem), ext.labels, &bpf, &mut rec, &mut bucket).unwrap();
        (ext, Some(rec))
    }

    fn assert_core_agrees(
        core: &(
            profiler_common::golang::GoSampleExt,
            Option<Box<profiler_common::golang::GoLabelsRecord>>,
        ),
        reference: &GoroutineState,
        context: &str,
    ) {
        use profiler_common::golang::go_flags;
        let (ext, labels) = core;
        assert_eq!(ext.flags & go_flags::READ_ERROR, 0, "{context}");
        assert_eq!(
            ext.flags & go_flags::SYSTEM_STACK != 0,
            reference.system_stack,
            "{context}"
        );
        let Some(g) = &reference.goroutine else {
            assert_ne!(ext.flags & go_flags::NO_GOROUTINE, 0, "{context}");
            return;
        };
        assert_eq!(
            (ext.goid, ext.status, ext.wait_reason),
            (g.goid, g.status, g.wait_reason),
            "{context}"
        );
        let got: Vec<(Vec<u8>, u64, Vec<u8>, u64)> = labels
            .iter()
            .flat_map(|r| r.list[..r.count as usize].iter())
            .map(|l| {
                (
                    l.key().to_vec(),
                    u64::from(l.key_len),
                    l.value().to_vec(),
                    u64::from(l.value_len),
                )
            })
            .collect();
        let want: Vec<(Vec<u8>, u64, Vec<u8>, u64)> = g
            .labels
            .list
            .iter()
            .map(|l| (l.key.clone(), l.key_len, l.value.clone(), l.value_len))
            .collect();
        assert_eq!(got, want, "{context}");
        let total = labels.as_ref().map_or(0, |r| u64::from(r.total));
        assert_eq!(total, g.labels.total, "{context}");
    }

    fn check_workers(what: &str, process: &LiveProcess, k: &Knowledge) -> usize {
        let pid = process.child.id();
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
        let reasons = wait_reasons(k.version.0, k.version.1).unwrap();
        let roomy = Limits {
            max_labels: 32,
            ..Limits::default()
        };
        let short_values = Limits {
            max_value_len: 64,
            ..roomy
        };
        let mut samples = 0;
        let mut workers: Vec<_> = process.workers.iter().collect();
        workers.sort();
        assert_eq!(workers.len(), 7, "{what}");
        for (name, &(goid, tid)) in workers {
            let want = expected_labels(name, k.version);
            // What the samples that did not count saw, and how often.
            let mut seen = BTreeMap::<String, usize>::new();
            let checked = (0..500).any(|_| {
                samples += 1;
                let ([state, defaults, short], core) = with_thread_stopped(tid, |fs_base| {
                    let reads = [roomy, Limits::default(), short_values].map(|limits| {
                        read_goroutine(&mem, fs_base, k.tls, &k.offsets, limits).unwrap()
                    });
                    (reads, read_with_core(&mem, fs_base, k.tls, &k.offsets))
                });
                // The BPF program's reader (profiler_common::golang) sees
                // exactly what this reference reader sees with the default limits.
                assert_core_agrees(&core, &defaults, &format!("{what} {name}"));
                let Some(g) = state.goroutine.as_ref() else {
                    *seen
                        .entry(format!("no user goroutine on g {:#x}", state.g))
                        .or_default() += 1;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    return false;
                };
                let context = format!("{what} {name}: {state:x?}");
                assert_eq!(g.goid, goid, "{context}");
                assert_eq!(sorted_pairs(&g.labels), want, "{context}");
                assert!(!g.labels.any_truncated(), "{context}");
                assert_eq!(g.labels.total, want.len() as u64, "{context}");
                if matches!(k.offsets.labels, LabelLayout::Slice(_)) {
                    assert!(
                        g.labels.list.windows(2).all(|w| w[0].key < w[1].key),
                        "{context}"
                    );
                }
                assert_eq!(
                    reasons.get(usize::from(g.wait_reason)),
                    Some(&"chan receive"),
                    "{context}"
                );
                // The default limits keep 16 of beta's 20 labels; for the
                // sorted slice, the first 16.
                let d = &defaults.goroutine.as_ref().unwrap().labels;
                assert_eq!(d.truncated, want.len() > 16, "{context}");
                assert_eq!(d.list.len(), want.len().min(16), "{context}");
                let kept = sorted_pairs(d);
                assert!(kept.iter().all(|p| want.contains(p)), "{context}");
                if matches!(k.offsets.labels, LabelLayout::Slice(_)) {
                    assert_eq!(kept, want[..want.len().min(16)], "{context}");
                }
                // 64-byte values cut gamma's 100-byte one.
                let s = &short.goroutine.as_ref().unwrap().labels;
                let long = s.list.iter().find(|l| l.key == b"long");
                assert_eq!(long.is_some(), name == "gamma", "{context}");
                if let Some(long) = long {
                    assert!(long.value_truncated() && s.any_truncated(), "{context}");
                    assert_eq!((long.value.len(), long.value_len), (64, 100), "{context}");
                    assert_eq!(
                        long.value,
                        "0123456789".repeat(10).as_bytes()[..64],
                        "{context}"
                    );
                }
                if let (LabelLayout::Map(m), "zeta") = (k.offsets.labels, name.as_str()) {
                    let label_map = read_u64(&mem, g.addr + u64::from(k.offsets.g_labels)).unwrap();
                    let hmap = read_u64(&mem, label_map).unwrap();
                    let old = read_u64(&mem, hmap + u64::from(m.hmap_oldbuckets)).unwrap();
                    assert_ne!(old, 0, "{context}: the map is not growing");
                }
                let status = k.offsets.status.classify(g.status);
                if state.system_stack {
                    // g0 or gsignal working for the goroutine: any status
                    // it can have while owning the thread.
                    assert!(
                        matches!(
                            status,
                            GStatus::Running | GStatus::Runnable | GStatus::Syscall
                        ),
                        "{context}"
                    );
                    *seen
                        .entry(format!("system stack, curg {status:?}"))
                        .or_default() += 1;
                    // Spread the tries over time: on a busy machine a CI run
                    // caught "delta" on its system stack in all of 500
                    // back-to-back stops (Go 1.27.3, PIE).
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    return false;
                }
                let expected = if name == "sys" {
                    GStatus::Syscall
                } else {
                    GStatus::Running
                };
                assert_eq!(status, expected, "{context}");
                true
            });
            assert!(
                checked,
                "{what} {name}: never seen on its goroutine: {seen:?}"
            );
        }
        samples
    }

    /// Functions of the symbol table: what `.gopclntab` gives for stripped
    /// binaries.
    fn function_finder(file: &object::File<'_>) -> impl Fn(&str) -> Option<(u64, u64)> + use<> {
        let functions: HashMap<String, (u64, u64)> = file
            .symbols()
            .filter(|s| s.kind() == object::SymbolKind::Text)
            .filter_map(|s| Some((s.name().ok()?.to_owned(), (s.address(), s.size()))))
            .collect();
        move |name| functions.get(name).copied()
    }

    /// For every toolchain and build mode (static, PIE, cgo, cgo + PIE,
    /// cgo linked internally, static cgo), reads the goroutine of each worker thread of a live
    /// fixture: with offsets from DWARF and the TLS offset from the symbol
    /// table, and, on a stripped copy, with the version table and the TLS
    /// offset found in the stripped file's code.
    #[test]
    fn goruntime_reads_live_goroutines() {
        if !cfg!(target_arch = "x86_64") {
            eprintln!("SKIPPED: the TLS slot of g is only known on x86-64");
            return;
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: reading other threads' registers needs root");
            return;
        }
        let dir = fixture_dir();
        let mut report = Vec::new();
        for (version, go) in go_toolchains() {
            let version_pair = version_of(&version);
            for (mode, cgo, flags) in BUILD_MODES {
                let src = LIVE_FIXTURE
                    .replace("CGO\n", if cgo { CGO_IMPORT } else { "" })
                    .replace("NOTE\n", if cgo { CGO_NOTE } else { NO_CGO_NOTE });
                let name = format!("live-{version}-{mode}");
                let bin = build_go(&go, &dir, &name, &src, flags);
                let stripped = dir.join(format!("{name}-stripped"));
                run(Command::new("objcopy")
                    .arg("--strip-all")
                    .arg(&bin)
                    .arg(&stripped));
                let data = std::fs::read(&bin).unwrap();
                let file = object::File::parse(&*data).unwrap();
                let find = function_finder(&file);
                let offsets = from_elf(&file).unwrap();
                assert_eq!(
                    Some(&offsets),
                    for_version(version_pair.0, version_pair.1),
                    "{name}"
                );
                let tls = g_tls_offset(&file, &find).unwrap();
                if !cgo {
                    assert_eq!(tls, -8, "{name}: internal linking puts g at -8(FS)");
                }
                let stripped_data = std::fs::read(&stripped).unwrap();
                let stripped_file = object::File::parse(&*stripped_data).unwrap();
                assert!(from_elf(&stripped_file).is_err(), "{name}: not stripped");
                assert!(function_finder(&stripped_file)("runtime.morestack.abi0").is_none());
                let stripped_tls = g_tls_offset(&stripped_file, &find).unwrap();
                assert_eq!(stripped_tls, tls, "{name}");

                let samples = check_workers(
                    &name,
                    &start(&bin),
                    &Knowledge {
                        version: version_pair,
                        offsets,
                        tls,
                    },
                );
                let stripped_samples = check_workers(
                    &format!("{name}-stripped"),
                    &start(&stripped),
                    &Knowledge {
                        version: version_pair,
                        offsets: *for_version(version_pair.0, version_pair.1).unwrap(),
                        tls: stripped_tls,
                    },
                );
                report.push(format!(
                    "{name}: TLS {tls}, {samples} + {stripped_samples} samples"
                ));
            }
        }
        eprintln!("{}", report.join("\n"));
    }
}
