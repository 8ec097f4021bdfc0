//! Knowledge of Go binaries and of the Go runtime that the profiler needs to
//! symbolize Go code and attribute samples of Go processes to goroutines:
//!
//! - which Go built a file ([`buildinfo`]) and the runtime's own function
//!   table, `.gopclntab`, which maps any code address to its function, file,
//!   line and inline chain even in stripped binaries ([`pclntab`]);
//! - runtime struct offsets and the TLS slot of `g` ([`runtime`]), and the
//!   per-binary facts the daemon keeps ([`process`]);
//! - the Go part of samples in user space ([`samples`]).
//!
//! Both formats are hand-written here. Crates that read them do exist, and
//! were checked (crates.io/docs.rs): `smda` recovers function names and
//! entries only; `gobin` 0.5 and `unstrip` 1.2 also decode
//! `FUNCDATA_InlTree`. Both are reverse-engineering libraries: they borrow a
//! byte slice for the life of the analysis, parse the container with their own
//! ELF reader (`gobin` pulls in `goblin` next to the `object` used here), and
//! enumerate functions or whole inline trees rather than answer "which frames
//! are at this pc" from a shared file mapping, decoding only what that pc
//! needs. `unstrip` documents Go 1.18 through 1.25/1.26; neither documents
//! Go 1.27, whose `moduledata` moved `gofunc` (where inline trees live). The
//! formats are small and specified by the Go sources (`runtime/symtab.go`,
//! `runtime/symtabinl.go`, `debug/buildinfo`); the tests check every
//! installed toolchain against DWARF.
//!
//! Shared here: the error type and [`Memory`], a view of a file's loadable
//! bytes by virtual address.

use std::collections::HashMap;

use object::{Object, ObjectSection, ObjectSegment, SectionKind, SegmentFlags};

pub mod buildinfo;
pub mod pclntab;
pub mod process;
pub mod runtime;
pub mod samples;
#[cfg(test)]
mod tests;

/// Why a Go structure could not be read. Data that is absent (not a Go
/// binary) is `Ok(None)`, never an error.
#[derive(Debug, thiserror::Error)]
pub enum GoError {
    #[error("cannot parse the object file: {0}")]
    Object(#[from] object::Error),
    #[error("{0} is truncated")]
    Truncated(&'static str),
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("unsupported pclntab magic {0:#010x}")]
    UnsupportedMagic(u32),
}

/// One file-backed range of the address space.
#[derive(Clone, Copy, Debug)]
struct Region<'a> {
    vaddr: u64,
    data: &'a [u8],
    writable: bool,
    executable: bool,
}

/// The loadable bytes of an object by virtual address: its PT_LOAD
/// segments (their file-backed part), or its allocated sections when it has
/// no segments. Pointers that the dynamic linker fills in (R_*_RELATIVE
/// relocations) can be resolved too, for linkers that leave the place zero.
pub(crate) struct Memory<'a> {
    regions: Vec<Region<'a>>,
    /// Place → addend of relative relocations; built on first use.
    relative: Option<HashMap<u64, u64>>,
}

impl<'a> Memory<'a> {
    pub(crate) fn new(file: &object::File<'a>) -> Self {
        let mut regions: Vec<Region<'a>> = file
            .segments()
            .filter_map(|s| {
                let data = s.data().ok()?;
                let (writable, executable) = match s.flags() {
                    SegmentFlags::Elf { p_flags, .. } => (
                        p_flags.0 & object::elf::PF_W.0 != 0,
                        p_flags.0 & object::elf::PF_X.0 != 0,
                    ),
                    _ => (false, false),
                };
                (!data.is_empty()).then_some(Region {
                    vaddr: s.address(),
                    data,
                    writable,
                    executable,
                })
            })
            .collect();
        if regions.is_empty() {
            regions = file
                .sections()
                .filter(|s| s.address() != 0)
                .filter_map(|s| {
                    let data = s.data().ok()?;
                    let kind = s.kind();
                    (!data.is_empty()).then_some(Region {
                        vaddr: s.address(),
                        data,
                        writable: matches!(kind, SectionKind::Data),
                        executable: matches!(kind, SectionKind::Text),
                    })
                })
                .collect();
        }
        Self {
            regions,
            relative: None,
        }
    }

    /// The bytes from `vaddr` to the end of the region holding it.
    pub(crate) fn tail(&self, vaddr: u64) -> Option<&'a [u8]> {
        self.regions.iter().find_map(|r| {
            let off = usize::try_from(vaddr.checked_sub(r.vaddr)?).ok()?;
            r.data.get(off..).filter(|d| !d.is_empty())
        })
    }

    /// `len` bytes at `vaddr`, if all are file-backed in one region.
    pub(crate) fn read(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        self.tail(vaddr)?.get(..usize::try_from(len).ok()?)
    }

    /// Writable and read-only data regions (not code), in address order of
    /// the file: where the Go linker puts its tables.
    pub(crate) fn data_regions(&self, writable: bool) -> impl Iterator<Item = (u64, &'a [u8])> {
        self.regions
            .iter()
            .filter(move |r| !r.executable && r.writable == writable)
            .map(|r| (r.vaddr, r.data))
    }

    /// Loads the relative relocations (place → addend) of `file`.
    pub(crate) fn load_relocations(&mut self, file: &object::File<'_>) {
        let mut map = HashMap::new();
        for (place, reloc) in file.dynamic_relocations().into_iter().flatten() {
            if let object::RelocationFlags::Elf { r_type } = reloc.flags()
                && (r_type == object::elf::R_X86_64_RELATIVE
                    || r_type == object::elf::R_AARCH64_RELATIVE)
                && let Ok(addend) = u64::try_from(reloc.addend())
            {
                map.insert(place, addend);
            }
        }
        self.relative = Some(map);
    }

    /// Places of relative relocations whose target is `target`.
    pub(crate) fn relocated_to(&self, target: u64) -> Vec<u64> {
        let mut places: Vec<u64> = self
            .relative
            .iter()
            .flatten()
            .filter(|&(_, &t)| t == target)
            .map(|(&p, _)| p)
            .collect();
        places.sort_unstable();
        places
    }

    /// The pointer-sized little-endian word at `vaddr`, taking a relative
    /// relocation's addend when the place itself holds zero.
    pub(crate) fn word(&self, vaddr: u64, ptr_size: u8) -> Option<u64> {
        let bytes = self.read(vaddr, u64::from(ptr_size))?;
        let value = le_word(bytes, 0, ptr_size)?;
        if value == 0
            && let Some(addend) = self.relative.as_ref().and_then(|m| m.get(&vaddr))
        {
            return Some(*addend);
        }
        Some(value)
    }
}

/// Little-endian unsigned word of `size` (4 or 8) bytes at `off`.
pub(crate) fn le_word(data: &[u8], off: usize, size: u8) -> Option<u64> {
    match size {
        4 => le_u32(data, off).map(u64::from),
        8 => {
            let b = data.get(off..off.checked_add(8)?)?;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        }
        _ => None,
    }
}

/// Little-endian `u32` at `off`.
pub(crate) fn le_u32(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// Unsigned LEB128 varint (Go's `encoding/binary.Uvarint`) at the start
/// of `data`: (value, bytes read).
pub(crate) fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
