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
        let headers = file_bytes(file, addr, count.saturating_mul(2 * ptr))
            .ok_or(Error::Read { addr, len: 0 })?;
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
        let Some(&[0x64, rex, op, modrm]) = code.get(i..i + 4) else {
            break;
        };
        if rex & 0xf8 != 0x48 || !matches!(op, 0x8b | 0x89) {
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
                let disp = le_u32(code, i + 5)? as i32;
                return valid(i64::from(disp));
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
/// exactly as the BPF program does:
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
                continue;
            }
            let key = m.bucket_keys as usize + slot * stride;
            let value = m.bucket_values as usize + slot * stride;
            labels
                .list
                .push(label_at(mem, &bucket, key, value, limits)?);
        }
        overflow = le_u64(&bucket, m.bucket_overflow as usize).unwrap_or(0);
    }
    if overflow != 0 || next_new < nbuckets || next_old < nold {
        labels.truncated = true;
    }
    Ok(labels)
}
