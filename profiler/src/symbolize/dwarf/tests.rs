//! Differential test: the lazy reader against `addr2line::Context` (the
//! code this module replaced, kept here as the reference) on real files.

use std::{borrow::Cow, path::Path, sync::Arc};

use super::*;
use crate::{
    process::objects::Bytes,
    symbolize::debuginfo::{self, DebugRefs},
    testutil::{compile_c, run},
};

/// What the previous `DwarfInfo::frames` returned, through addr2line.
/// Also returns each frame's DIE offset.
fn reference(
    ctx: &addr2line::Context<Reader>,
    addr: u64,
) -> (Vec<DwarfFrame>, Vec<Option<gimli::UnitOffset<usize>>>) {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    let Ok(mut iter) = ctx.find_frames(addr).skip_all_loads() else {
        return (out, offsets);
    };
    let unit = ctx.find_dwarf_and_unit(addr).skip_all_loads();
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
        offsets.push(frame.dw_die_offset);
        out.push(DwarfFrame {
            name,
            file,
            line,
            decl_line,
        });
    }
    (out, offsets)
}

fn read(path: &Path) -> Arc<Bytes> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Arc::new(Bytes::Owned(bytes))
}

impl DwarfInfo {
    /// Start (and last byte) of every function and inlined call in every
    /// `stride`-th unit of the index.
    fn boundaries(&self, stride: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut refs = Lru::new(REF_CACHE);
        for &offset in self.units.iter().step_by(stride) {
            let header = self
                .dwarf
                .unit_header(gimli::DebugInfoOffset(offset))
                .unwrap();
            let unit = self.dwarf.unit(header).unwrap();
            let unit_ref = gimli::UnitRef::new(&self.dwarf, &unit);
            let Ok(functions) = Functions::parse(unit_ref) else {
                continue;
            };
            let mut resolver = Resolver {
                dwarf: &self.dwarf,
                units: &self.units,
                sup_units: &self.sup_units,
                refs: &mut refs,
            };
            for a in &functions.addresses {
                out.extend([a.range.begin, a.range.end - 1]);
            }
            for f in &functions.functions {
                if let Ok(f) =
                    Function::parse(f.offset, DebugFile::Primary, unit_ref, &mut resolver)
                {
                    for a in &f.inlined_addresses {
                        out.extend([a.range.begin, a.range.end - 1]);
                    }
                }
            }
        }
        out
    }
}

#[derive(Default)]
struct Counts {
    addresses: usize,
    boundaries: usize,
    with_frames: usize,
    inlined: usize,
    /// Addresses where only `decl_line` differs because addr2line's
    /// `find_dwarf_and_unit` returns the first candidate unit even when a
    /// later one holds the function (overlapping units: dead code at 0).
    first_unit_decl_line: usize,
}

/// The (start, end) of `file`'s executable PT_LOAD segments.
fn executable_segments(file: &object::File<'_>) -> Vec<(u64, u64)> {
    use object::{ObjectSegment, SegmentFlags};
    file.segments()
        .filter(|s| {
            matches!(s.flags(), SegmentFlags::Elf { p_flags, .. } if p_flags.0 & object::elf::PF_X.0 != 0)
        })
        .map(|s| (s.address(), s.address() + s.size()))
        .collect()
}

/// Compares both readers on `file` at every function and inlined-call
/// boundary and at `random` addresses inside the units' ranges.
fn compare(
    what: &str,
    bytes: &Arc<Bytes>,
    sup: Option<&Arc<Bytes>>,
    random: usize,
    max_units: usize,
) -> Counts {
    let file = object::File::parse(&***bytes).unwrap();
    let sup_file = sup.map(|b| object::File::parse(&***b).unwrap());
    let ours = DwarfInfo::load(&file, bytes, sup_file.as_ref().zip(sup)).unwrap();
    let mut dwarf = load_dwarf(&file, bytes).unwrap();
    if let (Some(f), Some(b)) = (&sup_file, sup) {
        dwarf.set_sup(load_dwarf(f, b).unwrap());
    }
    let ctx = addr2line::Context::from_dwarf(dwarf).unwrap();
    assert!(!ours.ranges.is_empty(), "{what}: no unit ranges");

    // Every function of an evenly spread subset of the units, to bound the
    // debug-build test time.
    let mut boundaries = ours.boundaries(ours.units.len().div_ceil(max_units));
    boundaries.sort_unstable();
    boundaries.dedup();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut addrs = boundaries.clone();
    for _ in 0..random {
        let r = &ours.ranges[rng.usize(..ours.ranges.len())];
        addrs.push(rng.u64(r.begin..r.end));
    }
    // Code the linker discarded keeps its DWARF with addresses from 0,
    // outside every executable segment: no sample can land there, and where
    // several units' dead code overlaps, the two readers pick different
    // units (addr2line mixing one unit's names with another's lines).
    let text = executable_segments(&file);
    assert!(!text.is_empty(), "{what}: no executable segment");
    addrs.retain(|&a| text.iter().any(|&(start, end)| start <= a && a < end));
    // Shuffle so that the unit cache misses as well as hits.
    rng.shuffle(&mut addrs);
    let mut counts = Counts {
        addresses: addrs.len(),
        boundaries: boundaries.len(),
        ..Counts::default()
    };
    for &addr in &addrs {
        let got = ours.frames(addr);
        let (want, offsets) = reference(&ctx, addr);
        if got != want && first_unit_decl_line(&ours, addr, &got, &want, &offsets) {
            counts.first_unit_decl_line += 1;
        } else {
            assert_eq!(got, want, "{what}: frames at {addr:#x}");
        }
        counts.with_frames += usize::from(!got.is_empty());
        counts.inlined += usize::from(got.len() > 1);
    }
    eprintln!(
        "{what}: {} addresses equal ({} function/inline boundaries, {} with frames, \
         {} inlined; {} only decl_line differs: addr2line's first-unit bug), {} units",
        counts.addresses,
        counts.boundaries,
        counts.with_frames,
        counts.inlined,
        counts.first_unit_decl_line,
        ours.units.len()
    );
    assert!(
        counts.with_frames > counts.addresses / 2,
        "{what}: too few frames"
    );
    assert!(counts.boundaries > 0, "{what}: no function boundaries");
    counts
}

/// True if `got` and `want` differ only in `decl_line`, `addr` is in more
/// than one unit, and each of our `decl_line`s is what the reference's DIE
/// offset gives in one of those units.
fn first_unit_decl_line(
    ours: &DwarfInfo,
    addr: u64,
    got: &[DwarfFrame],
    want: &[DwarfFrame],
    offsets: &[Option<gimli::UnitOffset<usize>>],
) -> bool {
    let mut units: Vec<u32> = ours.find(addr).collect();
    units.sort_unstable();
    units.dedup();
    if units.len() < 2 || got.len() != want.len() {
        return false;
    }
    let parsed: Vec<_> = units
        .iter()
        .map(|&id| {
            let offset = gimli::DebugInfoOffset(ours.units[id as usize]);
            ours.dwarf
                .unit(ours.dwarf.unit_header(offset).unwrap())
                .unwrap()
        })
        .collect();
    got.iter().zip(want).zip(offsets).all(|((g, w), off)| {
        let same_but_decl = DwarfFrame {
            decl_line: w.decl_line,
            ..g.clone()
        } == *w;
        same_but_decl
            && (g.decl_line == w.decl_line
                || off.is_some_and(|off| {
                    parsed
                        .iter()
                        .any(|u| decl_line(gimli::UnitRef::new(&ours.dwarf, u), off) == g.decl_line)
                }))
    })
}

const INLINE_H: &str = r#"
static inline __attribute__((always_inline)) int leaf(int x) {
    return x * 3 + 1;
}
static inline __attribute__((always_inline)) int middle(int x) {
    int s = 0;
    for (int i = 0; i < x; i++)
        s += leaf(i) ^ x;
    return s;
}
"#;

const INLINE_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include "inline.h"
static inline __attribute__((always_inline)) int outer(int x) {
    return middle(x) + leaf(x * 2);
}
__attribute__((noinline)) int work(int x) {
    return outer(x) + outer(x + 1);
}
struct S { int v; };
static int cmp(const void *a, const void *b) {
    return ((const struct S *)a)->v - ((const struct S *)b)->v;
}
int main(int argc, char **argv) {
    struct S s[4] = {{3}, {1}, {2}, {argc}};
    qsort(s, 4, sizeof s[0], cmp);
    printf("%d\n", work(atoi(argc > 1 ? argv[1] : "5")) + s[0].v);
    return 0;
}
"#;

#[test]
fn matches_addr2line_on_gcc_inlined_c_dwarf4_and_5() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inline.h"), INLINE_H).unwrap();
    for version in ["-gdwarf-4", "-gdwarf-5"] {
        let name = format!("inl{}", &version[7..]);
        let bin = compile_c(dir.path(), &name, INLINE_C, &["-O2", version]);
        let counts = compare(&name, &read(&bin), None, 2000, usize::MAX);
        assert!(counts.inlined > 0, "{name}: no inlined frames compared");
    }
}

#[test]
fn matches_addr2line_on_rust_test_binary() {
    let exe = std::env::current_exe().unwrap();
    let counts = compare("test binary", &read(&exe), None, 3000, 60);
    assert!(counts.inlined > 0, "no inlined frames compared");
}

/// The path and mapped bytes of this system libc's separate debug file.
fn libc_debug_file() -> (std::path::PathBuf, Arc<Bytes>) {
    const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";
    let bytes = read(Path::new(LIBC));
    let refs = DebugRefs::of(&object::File::parse(&**bytes).unwrap());
    debuginfo::find(Path::new("/"), LIBC, &refs)
        .expect("libc's debug file (package libc6-dbg) is not installed")
}

#[test]
fn matches_addr2line_on_libc_debug_file_with_dwz() {
    let (debug_path, debug) = libc_debug_file();
    let debug_file = object::File::parse(&**debug).unwrap();
    let sup = debuginfo::find_alt(Path::new("/"), &debug_path, &debug_file);
    if debug_file.gnu_debugaltlink().ok().flatten().is_some() {
        assert!(
            sup.is_some(),
            "{}: dwz supplementary file not found",
            debug_path.display()
        );
    }
    let counts = compare("libc debug", &debug, sup.as_ref(), 5000, usize::MAX);
    assert!(counts.inlined > 0, "no inlined frames compared");
}

/// Loading keeps no parsed unit; lookups keep at most `UNIT_CACHE`.
#[test]
fn unit_cache_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let bin = compile_c(dir.path(), "d", crate::testutil::ANSWER_C, &["-O1", "-g"]);
    let bytes = read(&bin);
    let file = object::File::parse(&**bytes).unwrap();
    let info = DwarfInfo::load(&file, &bytes, None).unwrap();
    assert!(info.cache.lock().unwrap().units.entries.is_empty());
    let exe = read(&std::env::current_exe().unwrap());
    let file = object::File::parse(&**exe).unwrap();
    let info = DwarfInfo::load(&file, &exe, None).unwrap();
    for r in info.ranges.iter().step_by(info.ranges.len().div_ceil(50)) {
        info.frames(r.begin);
    }
    let cached = info.cache.lock().unwrap().units.entries.len();
    assert!(cached > 0 && cached <= UNIT_CACHE, "{cached} units cached");
    let _ = run;
}

/// Streamed inflating, with the compressed pages released as it goes, gives
/// what one-shot inflating gives for every compressed section of libc's
/// debug file (read through its mapping), and rejects damaged input.
#[test]
fn inflating_releasing_pages_matches_one_shot_and_rejects_damage() {
    let (_, debug) = libc_debug_file();
    assert!(matches!(*debug, Bytes::Mapped(_)));
    let file = object::File::parse(&**debug).unwrap();
    let mut compressed = 0;
    for section in file.sections() {
        let data = section.compressed_data().unwrap();
        if data.format != CompressionFormat::Zlib {
            continue;
        }
        compressed += 1;
        // One-shot inflating leaves the compressed pages resident ...
        debug.release_pages();
        let want = section.uncompressed_data().unwrap();
        let one_shot = resident_kib(&debug);
        // ... streaming releases them as it goes, and at the end.
        debug.release_pages();
        let got = inflate_releasing(&debug, &data).unwrap();
        let streamed = resident_kib(&debug);
        assert!(got == *want, "{:?} differs", section.name());
        // The kernel's fault-around maps up to 64 KiB of neighbours with
        // each page, so pages past either end of the section stay.
        if data.data.len() > 4 * INFLATE_CHUNK {
            assert!(
                one_shot > data.data.len() as u64 / 1024 / 2 && streamed <= 2 * 64 + 8,
                "{:?} ({} KiB compressed): {one_shot} KiB resident after inflating in one go, {streamed} KiB streamed",
                section.name(),
                data.data.len() / 1024
            );
        }
        assert!(SectionBytes::of_section(&debug, &section).is_some_and(|b| *b == *want));

        let owned = Bytes::Owned(data.data.to_vec());
        let mut damaged = data.data.to_vec();
        damaged.truncate(damaged.len() / 2);
        let cut = object::CompressedData {
            data: &damaged,
            ..data
        };
        assert!(inflate_releasing(&owned, &cut).is_none(), "truncated");
        let longer = object::CompressedData {
            uncompressed_size: data.uncompressed_size + 1,
            ..data
        };
        assert!(
            inflate_releasing(&owned, &longer).is_none(),
            "size above the stream's"
        );
        let shorter = object::CompressedData {
            uncompressed_size: data.uncompressed_size - 1,
            ..data
        };
        assert!(
            inflate_releasing(&owned, &shorter).is_none(),
            "size below the stream's"
        );
        let mut garbage = data.data.to_vec();
        garbage[2..].fill(0xff);
        let bad = object::CompressedData {
            data: &garbage,
            ..data
        };
        assert!(inflate_releasing(&owned, &bad).is_none(), "corrupt");
        let huge = object::CompressedData {
            uncompressed_size: u64::MAX,
            ..data
        };
        assert!(
            inflate_releasing(&owned, &huge).is_none(),
            "impossible size"
        );
    }
    assert!(
        compressed >= 4,
        "only {compressed} zlib sections in libc's debug file"
    );
}

/// KiB of `bytes`' mapping resident in this process (`Rss` of its VMA in
/// `/proc/self/smaps`).
fn resident_kib(bytes: &Bytes) -> u64 {
    let addr = bytes.as_ptr() as u64;
    let maps = procfs::process::Process::myself().unwrap().smaps().unwrap();
    let vma = maps
        .iter()
        .find(|m| (m.address.0..m.address.1).contains(&addr))
        .unwrap_or_else(|| panic!("no mapping at {addr:#x} in /proc/self/smaps"));
    vma.extension.map["Rss"] / 1024
}

/// Indexing calls its page-release callback every `RELEASE_EVERY_UNITS`
/// units; on a file whose DWARF is stored uncompressed (this test binary)
/// that keeps most of the pages it read out of RSS, and the index is the
/// same as without releasing.
#[test]
fn indexing_releases_pages_every_few_units() {
    let exe = std::fs::File::open("/proc/self/exe").unwrap();
    // SAFETY: read-only shared mapping of this test's own executable.
    let owner = Arc::new(Bytes::Mapped(unsafe { memmap2::Mmap::map(&exe) }.unwrap()));
    let file = object::File::parse(&**owner).unwrap();
    assert!(
        file.section_by_name(".debug_info").is_some_and(|s| s
            .compressed_file_range()
            .unwrap()
            .format
            == CompressionFormat::None),
        "this test binary has no uncompressed .debug_info"
    );
    let dwarf = load_dwarf(&file, &owner).unwrap();
    let all_units = {
        let mut n = 0;
        let mut iter = dwarf.units();
        while iter.next().unwrap().is_some() {
            n += 1;
        }
        n
    };
    assert!(all_units > 4 * RELEASE_EVERY_UNITS, "{all_units} units");

    owner.release_pages();
    let kept = index_units(&dwarf, &|| {}).unwrap();
    let without = resident_kib(&owner);
    owner.release_pages();
    let calls = std::cell::Cell::new(0);
    let released = index_units(&dwarf, &|| {
        owner.release_pages();
        calls.set(calls.get() + 1);
    })
    .unwrap();
    let with = resident_kib(&owner);
    assert_eq!(calls.get(), all_units / RELEASE_EVERY_UNITS);
    assert!(
        with < without / 2,
        "{with} KiB resident after indexing with releases, {without} KiB without"
    );
    assert_eq!(kept.0, released.0);
    assert!(
        kept.1.len() == released.1.len()
            && kept
                .1
                .iter()
                .zip(released.1.iter())
                .all(|(a, b)| (a.begin, a.end, a.unit) == (b.begin, b.end, b.unit))
    );
}
