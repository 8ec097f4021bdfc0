//! A process's executable mappings (from `/proc/PID/maps`) and the
//! translation of a runtime address into an object-relative one.
//!
//! For a file-backed mapping `[start, end)` at file offset `off`, the address
//! `a` is at file offset `a - start + off`; inside the PT_LOAD segment that
//! holds that offset it is the link-time (ELF virtual) address
//! `a - start + off - seg.offset + seg.vaddr`. That address is what DWARF,
//! symbol tables and pprof's "normalized" addresses use, and it is the same
//! in every process that maps the file, so stacks from many processes of one
//! binary share locations.

use std::sync::Arc;

use procfs::process::{MMPermissions, MMapPath, MemoryMap};

use super::objects::{ObjectFile, ObjectKind};

/// What backs an executable mapping.
#[derive(Clone, Debug)]
pub enum Target {
    /// A file (or the vDSO): addresses translate to `addr - bias`.
    Object { object: Arc<ObjectFile>, bias: u64 },
    /// Anonymous executable memory: JIT code.
    Anonymous,
    /// A file we could not open: kept so frames name it.
    Unreadable { path: Arc<str> },
}

/// One executable mapping.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub target: Target,
}

impl Mapping {
    /// True if `addr` lies in `[start, end)`.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// A process's executable mappings, sorted by start address.
#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    mappings: Vec<Mapping>,
}

/// The link-time address bias of `object` mapped at `start` from file `offset`.
pub fn bias_for(object: &ObjectFile, start: u64, offset: u64) -> u64 {
    match (object.kind, object.segment_at_offset(offset)) {
        (ObjectKind::Elf | ObjectKind::Vdso, Some(seg)) => start
            .wrapping_sub(offset)
            .wrapping_add(seg.file_offset)
            .wrapping_sub(seg.vaddr),
        // No segment: translate to file offsets.
        _ => start.wrapping_sub(offset),
    }
}

/// How [`AddressSpace::build`] resolves a mapping's file.
pub trait Resolver {
    /// The object for a file-backed mapping, or the reason it is unreadable.
    fn file(&mut self, map: &MemoryMap, path: &std::path::Path) -> Result<Arc<ObjectFile>, String>;
    /// The vDSO object, if available.
    fn vdso(&mut self) -> Option<Arc<ObjectFile>>;
}

impl AddressSpace {
    /// Builds the executable mappings of `maps`.
    pub fn build(maps: &[MemoryMap], resolver: &mut impl Resolver) -> Self {
        let mut mappings: Vec<Mapping> = maps
            .iter()
            .filter(|m| m.perms.contains(MMPermissions::EXECUTE))
            .filter_map(|m| {
                let (start, end) = m.address;
                let target = match &m.pathname {
                    MMapPath::Path(path) => match resolver.file(m, path) {
                        Ok(object) => Target::Object {
                            bias: bias_for(&object, start, m.offset),
                            object,
                        },
                        Err(_) => Target::Unreadable {
                            path: Arc::from(path.to_string_lossy().as_ref()),
                        },
                    },
                    MMapPath::Vdso => {
                        let object = resolver.vdso()?;
                        Target::Object {
                            bias: bias_for(&object, start, 0),
                            object,
                        }
                    }
                    MMapPath::Anonymous | MMapPath::Other(_) => Target::Anonymous,
                    // [vsyscall] is a fixed legacy page; heap/stack are not code.
                    _ => return None,
                };
                Some(Mapping {
                    start,
                    end,
                    offset: m.offset,
                    target,
                })
            })
            .collect();
        mappings.sort_by_key(|m| m.start);
        Self { mappings }
    }

    /// The mapping containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        let m = self.mappings.get(i.checked_sub(1)?)?;
        m.contains(addr).then_some(m)
    }

    /// Every mapping, by start address.
    pub fn mappings(&self) -> &[Mapping] {
        &self.mappings
    }

    /// Number of executable mappings.
    pub fn len(&self) -> usize {
        self.mappings.len()
    }

    /// True when the process has no executable mapping (kernel threads).
    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use procfs::FromBufRead;

    use super::*;
    use crate::process::objects::{Bytes, ObjectId};

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1311 /usr/bin/app
55d0c0a01000-55d0c0a05000 r-xp 00001000 08:01 1311 /usr/bin/app
55d0c0a05000-55d0c0a06000 r--p 00005000 08:01 1311 /usr/bin/app
55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]
7f1e2a000000-7f1e2a028000 r--p 00000000 08:01 2222                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2a028000-7f1e2a1bd000 r-xp 00028000 08:01 2222                       /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2b000000-7f1e2b100000 rwxp 00000000 00:00 0\x20
7f1e2c000000-7f1e2c001000 r-xp 00000000 08:01 9999                       /opt/gone.so (deleted)
7ffd1a5f2000-7ffd1a5f4000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    /// A fake object with one executable PT_LOAD at file offset 0x1000,
    /// vaddr 0x401000 (non-PIE style) or 0x1000 (PIE style).
    fn object(id: u32, path: &str, vaddr: u64) -> Arc<ObjectFile> {
        let mut obj = ObjectFile::from_bytes(
            ObjectId(id),
            path.into(),
            ObjectKind::Elf,
            Bytes::Owned(Vec::new()),
        );
        obj.kind = ObjectKind::Elf;
        obj.segments = vec![crate::process::objects::Segment {
            file_offset: 0x1000,
            file_size: 0x4000,
            vaddr,
            mem_size: 0x4000,
            executable: true,
        }];
        Arc::new(obj)
    }

    struct Fake;
    impl Resolver for Fake {
        fn file(
            &mut self,
            _: &MemoryMap,
            path: &std::path::Path,
        ) -> Result<Arc<ObjectFile>, String> {
            match path.to_str().unwrap() {
                "/usr/bin/app" => Ok(object(1, "/usr/bin/app", 0x401000)),
                "/usr/lib/x86_64-linux-gnu/libc.so.6" => Ok(object(2, "libc", 0x1000)),
                p => Err(format!("cannot open {p}")),
            }
        }
        fn vdso(&mut self) -> Option<Arc<ObjectFile>> {
            None
        }
    }

    fn space() -> AddressSpace {
        let maps = procfs::process::MemoryMaps::from_buf_read(MAPS.as_bytes()).unwrap();
        AddressSpace::build(&maps.0, &mut Fake)
    }

    #[test]
    fn keeps_only_executable_mappings() {
        let s = space();
        // app text, libc text, anonymous rwx, deleted file ([vdso] without a vdso object, [vsyscall] dropped)
        assert_eq!(s.len(), 4);
        assert!(s.find(0x55d0c0a00500).is_none(), "r--p mapping kept");
        assert!(s.find(0x55d0c1000010).is_none(), "heap kept");
    }

    #[test]
    fn translates_non_pie_and_shared_library_addresses() {
        let s = space();
        let m = s.find(0x55d0c0a01234).unwrap();
        let Target::Object { object, bias } = &m.target else {
            panic!("not an object")
        };
        assert_eq!(object.path, "/usr/bin/app");
        // file offset 0x1234 → vaddr 0x401234
        assert_eq!(0x55d0c0a01234u64.wrapping_sub(*bias), 0x401234);

        let m = s.find(0x7f1e2a028010).unwrap();
        let Target::Object { bias, .. } = &m.target else {
            panic!("not an object")
        };
        // file offset 0x28010; segment at offset 0x1000 with vaddr 0x1000
        assert_eq!(0x7f1e2a028010u64.wrapping_sub(*bias), 0x28010);
    }

    #[test]
    fn anonymous_and_unreadable_mappings_are_kept() {
        let s = space();
        assert!(matches!(
            s.find(0x7f1e2b000100).unwrap().target,
            Target::Anonymous
        ));
        match &s.find(0x7f1e2c000010).unwrap().target {
            Target::Unreadable { path } => assert_eq!(&**path, "/opt/gone.so (deleted)"),
            t => panic!("unexpected {t:?}"),
        }
    }

    #[test]
    fn translates_lld_layouts_with_unaligned_segments() {
        // lld: text at file offset 0x169c0, vaddr 0x179c0, mapped from the
        // page-aligned offset 0x16000.
        let mut obj = ObjectFile::from_bytes(
            ObjectId(3),
            "rust_bin".into(),
            ObjectKind::Elf,
            Bytes::Owned(Vec::new()),
        );
        obj.kind = ObjectKind::Elf;
        obj.segments = vec![
            crate::process::objects::Segment {
                file_offset: 0,
                file_size: 0x169b4,
                vaddr: 0,
                mem_size: 0x169b4,
                executable: false,
            },
            crate::process::objects::Segment {
                file_offset: 0x169c0,
                file_size: 0x3f040,
                vaddr: 0x179c0,
                mem_size: 0x3f040,
                executable: true,
            },
        ];
        let start = 0x5600_0001_7000u64;
        let bias = bias_for(&obj, start, 0x16000);
        // file offset 0x16000 + 0x1000 = 0x17000 → vaddr 0x18000
        assert_eq!((start + 0x1000).wrapping_sub(bias), 0x18000);
    }

    #[test]
    fn lookups_at_boundaries() {
        let s = space();
        assert!(s.find(0x55d0c0a01000).is_some());
        assert!(s.find(0x55d0c0a05000).is_none());
        assert!(s.find(0).is_none());
        assert!(s.find(u64::MAX).is_none());
    }
}
