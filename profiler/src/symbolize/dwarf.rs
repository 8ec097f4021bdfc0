//! DWARF line and inline information through `addr2line`, read straight
//! from the memory-mapped file.
//!
//! `addr2line::Loader` would open files itself by path; here objects are
//! already mapped (through /proc/PID/map_files), so this module builds the
//! `gimli::Dwarf` from those mappings with a reader type, [`SectionBytes`],
//! that keeps its mapping alive (compressed sections are inflated once into
//! owned buffers). It also reads each function's `DW_AT_decl_line`, which
//! `addr2line` does not expose, for pprof's `Function.start_line`.

use std::{borrow::Cow, ops::Deref, sync::Arc};

use gimli::{AttributeValue, RunTimeEndian};
use object::{Object, ObjectSection};

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
            Cow::Owned(vec) => {
                let owned: Arc<[u8]> = Arc::from(vec);
                Self {
                    ptr: owned.as_ptr(),
                    len: owned.len(),
                    _owner: Arc::new(owned) as Arc<dyn Send + Sync>,
                }
            }
        }
    }
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
pub struct DwarfInfo {
    ctx: addr2line::Context<Reader>,
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
        let bytes = file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .map(|data| SectionBytes::from_cow(owner, data))
            .unwrap_or_else(SectionBytes::empty);
        Ok(gimli::EndianReader::new(bytes, endian))
    })
}

/// True if `file` carries DWARF debug info.
pub fn has_debug_info(file: &object::File<'_>) -> bool {
    file.section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0)
}

impl DwarfInfo {
    /// Builds the context from `file` (whose bytes are `owner`) and an
    /// optional dwz supplementary file.
    pub fn load(
        file: &object::File<'_>,
        owner: &Arc<Bytes>,
        sup: Option<(&object::File<'_>, &Arc<Bytes>)>,
    ) -> Result<Self, gimli::Error> {
        let mut dwarf = load_dwarf(file, owner)?;
        if let Some((sup_file, sup_owner)) = sup {
            dwarf.set_sup(load_dwarf(sup_file, sup_owner)?);
        }
        Ok(Self {
            ctx: addr2line::Context::from_dwarf(dwarf)?,
        })
    }

    /// The inline chain at `addr`, innermost first; empty if no unit covers it.
    pub fn frames(&self, addr: u64) -> Vec<DwarfFrame> {
        let mut out = Vec::new();
        let Ok(mut iter) = self.ctx.find_frames(addr).skip_all_loads() else {
            return out;
        };
        let unit = self.ctx.find_dwarf_and_unit(addr).skip_all_loads();
        while let Ok(Some(frame)) = iter.next() {
            let name = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok().map(Cow::into_owned));
            let (file, line) = match &frame.location {
                Some(loc) => (loc.file.map(str::to_owned), loc.line.unwrap_or(0)),
                None => (None, 0),
            };
            let decl_line = match (unit, frame.dw_die_offset) {
                (Some(u), Some(off)) => decl_line(u, off),
                _ => 0,
            };
            out.push(DwarfFrame {
                name,
                file,
                line,
                decl_line,
            });
        }
        out
    }
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
