//! Altered copies of real Go binaries: the table without its section name,
//! `moduledata` pointers left for the dynamic linker to fill in, truncated
//! and corrupted tables. Parsing must fail with an error or keep answering;
//! it must never panic.

use std::{collections::HashSet, sync::Arc};

use object::{Object, ObjectSection, ObjectSymbol};

use crate::{
    golang::{GoError, pclntab::GoTable},
    process::objects::Bytes,
};

fn owned(bytes: Vec<u8>) -> Arc<Bytes> {
    Arc::new(Bytes::Owned(bytes))
}

/// Back to a plain buffer once every table built from it is dropped.
fn reclaim(bytes: Arc<Bytes>) -> Vec<u8> {
    match Arc::try_unwrap(bytes) {
        Ok(Bytes::Owned(v)) => v,
        _ => panic!("bytes still shared"),
    }
}

/// File range of section `name`.
fn section_range(data: &[u8], name: &str) -> Option<(usize, usize)> {
    let file = object::File::parse(data).ok()?;
    let (off, size) = file.section_by_name(name)?.file_range()?;
    Some((usize::try_from(off).ok()?, usize::try_from(size).ok()?))
}

fn assert_same_frames(table: &GoTable, expected: &GoTable, pcs: &[u64], what: &str) {
    for &pc in pcs {
        assert_eq!(table.frames(pc), expected.frames(pc), "{what} at {pc:#x}");
    }
}

/// With `.gopclntab` renamed, the table is found by its magic. False if the
/// build has no such section to begin with (then `parse` already did so).
pub(super) fn without_section_name(data: &[u8], expected: &GoTable, pcs: &[u64]) -> bool {
    if section_range(data, ".gopclntab").is_none() {
        return false;
    }
    let (off, size) = section_range(data, ".shstrtab").unwrap();
    let mut copy = data.to_vec();
    let names = &mut copy[off..off + size];
    let at = names
        .windows(11)
        .position(|w| w == b".gopclntab\0")
        .unwrap();
    names[at + 1] = b'x';
    assert!(section_range(&copy, ".gopclntab").is_none());
    let table = GoTable::parse(owned(copy)).unwrap().unwrap();
    assert_same_frames(&table, expected, pcs, "found by magic");
    true
}

/// With every relocated word of `runtime.firstmoduledata` zeroed (as lld
/// leaves RELA places), `moduledata` is found through the relocations.
/// False if the build has no relative relocations (not PIE).
pub(super) fn relocated_moduledata(data: &[u8], expected: &GoTable, pcs: &[u64]) -> bool {
    let file = object::File::parse(data).unwrap();
    let relative: HashSet<u64> = file
        .dynamic_relocations()
        .into_iter()
        .flatten()
        .filter(|(_, r)| {
            r.flags()
                == object::RelocationFlags::Elf {
                    r_type: object::elf::R_X86_64_RELATIVE,
                }
        })
        .map(|(place, _)| place)
        .collect();
    if relative.is_empty() {
        return false;
    }
    let md = file
        .symbols()
        .find(|s| s.name() == Ok("runtime.firstmoduledata"))
        .unwrap()
        .address();
    let section = file
        .sections()
        .find(|s| s.address() <= md && md < s.address() + s.size())
        .unwrap();
    let base = section.file_range().unwrap().0 + (md - section.address());
    let mut copy = data.to_vec();
    let mut zeroed = 0;
    for i in 0..48u64 {
        if relative.contains(&(md + 8 * i)) {
            let at = usize::try_from(base + 8 * i).unwrap();
            copy[at..at + 8].fill(0);
            zeroed += 1;
        }
    }
    // pcHeader, the slices' data pointers, text..., gofunc.
    assert!(zeroed > 20, "{zeroed} relocated words");
    let table = GoTable::parse(owned(copy)).unwrap().unwrap();
    assert_same_frames(&table, expected, pcs, "relocated moduledata");
    true
}

/// Header fields of the table at `off`: (nfunc, pclnOffset).
fn header(data: &[u8], off: usize) -> (usize, usize) {
    let word = |i: usize| {
        let at = off + 8 + 8 * i;
        usize::try_from(u64::from_le_bytes(data[at..at + 8].try_into().unwrap())).unwrap()
    };
    (word(0), word(7))
}

/// The section size recorded in `.gopclntab`'s header is cut short: every
/// cut inside the header or function table is an error; longer cuts may
/// parse (the records past them are decoded on demand) but never panic.
/// Returns (cuts, errors).
pub(super) fn truncated(data: &[u8], pcs: &[u64]) -> (usize, usize) {
    let Some((off, size)) = section_range(data, ".gopclntab") else {
        return (0, 0);
    };
    let (nfunc, pcln) = header(data, off);
    let functab_end = pcln + 8 * nfunc + 4;
    let file = object::File::parse(data).unwrap();
    let index = file.section_by_name(".gopclntab").unwrap().index().0;
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap());
    let shentsize = u16::from_le_bytes(data[0x3a..0x3c].try_into().unwrap());
    let size_at = usize::try_from(shoff).unwrap() + index * usize::from(shentsize) + 32;
    let cuts: Vec<usize> = (0..80)
        .chain((0..300).map(|k| k * size / 300))
        .chain(functab_end - 4..functab_end + 4)
        .chain(size - 8..=size)
        .collect();
    let mut buf = data.to_vec();
    let mut errors = 0;
    for &cut in &cuts {
        buf[size_at..size_at + 8].copy_from_slice(&(cut as u64).to_le_bytes());
        let bytes = owned(buf);
        match GoTable::parse(bytes.clone()) {
            Ok(Some(table)) => {
                assert!(cut >= functab_end, "cut at {cut} of {size} parsed");
                for &pc in pcs {
                    let _ = table.frames(pc);
                }
            }
            Ok(None) => panic!("cut at {cut}: table not found"),
            Err(_) => errors += 1,
        }
        buf = reclaim(bytes);
    }
    assert!(GoTable::parse(owned(data.to_vec())).unwrap().is_some());
    (cuts.len(), errors)
}

/// Single-byte corruptions all over the table (and the inline trees after
/// `go:func.*`), then targeted header corruptions that must be errors.
/// Returns (corruptions, errors).
pub(super) fn corrupted(data: &[u8], pcs: &[u64]) -> (usize, usize) {
    let Some((off, size)) = section_range(data, ".gopclntab") else {
        return (0, 0);
    };
    let file = object::File::parse(data).unwrap();
    let mut positions: Vec<usize> = (off..off + 96)
        .chain((0..1500).map(|k| off + k * size / 1500))
        .collect();
    if let Some(gofunc) = file.symbols().find(|s| s.name() == Ok("go:func.*")) {
        let section = file
            .section_by_index(gofunc.section_index().unwrap())
            .unwrap();
        let at = section.file_range().unwrap().0 + (gofunc.address() - section.address());
        let at = usize::try_from(at).unwrap();
        positions.extend((0..500).map(|k| at + k * 7).filter(|&p| p < data.len()));
    }
    let mut buf = data.to_vec();
    let mut errors = 0;
    for &p in &positions {
        let old = buf[p];
        for new in [old ^ 0xff, 0x7f] {
            buf[p] = new;
            let bytes = owned(buf);
            match GoTable::parse(bytes.clone()) {
                Ok(Some(table)) => {
                    for &pc in pcs {
                        assert!(table.frames(pc).len() <= 101);
                    }
                    let _ = table.function_entry("main.main");
                }
                Ok(None) => {}
                Err(_) => errors += 1,
            }
            buf = reclaim(bytes);
        }
        buf[p] = old;
    }

    let (nfunc, pcln) = header(data, off);
    let word_at = |i: usize| off + 8 + 8 * i;
    let put = |buf: &mut Vec<u8>, at: usize, value: &[u8]| {
        buf[at..at + value.len()].copy_from_slice(value)
    };
    let functab = off + pcln;
    let second = u32::from_le_bytes(data[functab + 8..functab + 12].try_into().unwrap());
    let cases: [(&str, usize, Vec<u8>); 6] = [
        ("magic", off, vec![0xfb]),
        ("pointer size", off + 7, vec![3]),
        ("instruction size", off + 6, vec![3]),
        ("nfunc", word_at(0), (1u64 << 40).to_le_bytes().to_vec()),
        (
            "section order",
            word_at(3),
            (pcln as u64 + 1).to_le_bytes().to_vec(),
        ),
        (
            "function order",
            functab + 16,
            (second - 1).to_le_bytes().to_vec(),
        ),
    ];
    for (what, at, value) in cases {
        let mut copy = data.to_vec();
        put(&mut copy, at, &value);
        let err = GoTable::parse(owned(copy)).unwrap_err();
        let expected = match what {
            "magic" => matches!(err, GoError::UnsupportedMagic(_)),
            "nfunc" => matches!(err, GoError::Truncated(_)),
            _ => matches!(err, GoError::Malformed(_)),
        };
        assert!(expected, "{what}: {err}");
    }
    assert!(nfunc > 2);
    (positions.len() * 2, errors)
}
