//! Per-file state shared by every process that maps the file: its bytes
//! (memory-mapped once), identity (device, inode, size, mtime), GNU build id
//! and loadable segments. Symbol tables are built later, lazily, by
//! `symbolize`; this module only knows how to open and identify files.
//!
//! Files are opened through `/proc/PID/map_files/START-END` (the exact file
//! the process mapped, even if deleted or inside a container's mount
//! namespace), falling back to `/proc/PID/root/PATH`.

use hashbrown::HashMap;
use std::{
    fs::File,
    ops::Deref,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use memmap2::Mmap;
use object::{Object, ObjectSegment, SegmentFlags};
use tracing::warn;

use crate::golang::process::GoBinary;

/// Identity of a file's contents: a rebuilt binary at the same path, or a
/// file rewritten in place, gets a new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileKey {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// The key of the daemon's own executable, if it can be read.
pub fn own_executable() -> Option<FileKey> {
    static OWN: OnceLock<Option<FileKey>> = OnceLock::new();
    *OWN.get_or_init(|| {
        std::fs::metadata("/proc/self/exe")
            .ok()
            .map(|m| FileKey::of(&m))
    })
}

/// Registry-wide id of an object; stable for the object's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u32);

/// The bytes of an object: a file mapping, or a copy (the vDSO).
pub enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl Bytes {
    /// Drops this process's page-table entries for a file mapping, so
    /// pages read while symbolizing stop counting in the daemon's RSS. The
    /// mapping is read-only and shares the page cache: later reads fault
    /// the same bytes back in from the cache. No-op for owned bytes.
    pub fn release_pages(&self) {
        self.release_range(self);
    }

    /// [`Bytes::release_pages`] for the pages `part`, a slice of these
    /// bytes, lies on (whole pages, so the pages at its ends go too). No-op
    /// for owned bytes or a slice from elsewhere.
    pub fn release_range(&self, part: &[u8]) {
        let Bytes::Mapped(m) = self else { return };
        let base = m.as_ptr() as usize;
        let start = part.as_ptr() as usize;
        if start < base || start + part.len() > base + m.len() {
            return;
        }
        // SAFETY: DONTNEED on a read-only shared file mapping changes no
        // contents, only residency (see above); nothing holds pointers that
        // rely on residency. memmap2 widens the range to whole pages.
        if let Err(e) = unsafe {
            m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start - base, part.len())
        } {
            tracing::debug!("madvise(DONTNEED) of a file mapping failed: {e}");
        }
    }
}

/// What kind of object a mapping is backed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    /// An ELF file.
    Elf,
    /// The kernel's vDSO image.
    Vdso,
    /// A file that is not ELF (addresses stay file offsets).
    Opaque,
}

/// A loadable segment (PT_LOAD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub file_offset: u64,
    pub file_size: u64,
    pub vaddr: u64,
    pub mem_size: u64,
    pub executable: bool,
}

/// An opened object file.
pub struct ObjectFile {
    pub id: ObjectId,
    /// The path the process sees (from its maps), for display.
    pub path: String,
    /// `/proc/PID/root` of the process it was first opened for: where its
    /// separate debug files are looked for.
    pub root: PathBuf,
    pub kind: ObjectKind,
    pub build_id: Option<Vec<u8>>,
    pub segments: Vec<Segment>,
    pub key: Option<FileKey>,
    pub bytes: Arc<Bytes>,
    /// Go runtime facts, detected on first use.
    go: OnceLock<Option<Arc<GoBinary>>>,
    /// Registry window stamp of the last time a process mapped it.
    last_used: AtomicU64,
}

impl std::fmt::Debug for ObjectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectFile")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Reads a file's GNU build id, PT_LOAD segments and kind from its bytes.
pub fn parse_layout(bytes: &[u8]) -> (ObjectKind, Option<Vec<u8>>, Vec<Segment>) {
    let Ok(file) = object::File::parse(bytes) else {
        return (ObjectKind::Opaque, None, Vec::new());
    };
    let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
    let segments = file
        .segments()
        .map(|s| {
            let (file_offset, file_size) = s.file_range();
            let executable = match s.flags() {
                SegmentFlags::Elf { p_flags, .. } => p_flags.0 & object::elf::PF_X.0 != 0,
                _ => false,
            };
            Segment {
                file_offset,
                file_size,
                vaddr: s.address(),
                mem_size: s.size(),
                executable,
            }
        })
        .collect();
    (ObjectKind::Elf, build_id, segments)
}

impl ObjectFile {
    /// An object from bytes already in memory (the vDSO, tests).
    pub fn from_bytes(id: ObjectId, path: String, kind: ObjectKind, bytes: Bytes) -> Self {
        let (parsed_kind, build_id, segments) = parse_layout(&bytes);
        let kind = if parsed_kind == ObjectKind::Opaque {
            ObjectKind::Opaque
        } else {
            kind
        };
        Self {
            id,
            path,
            root: PathBuf::from("/"),
            kind,
            build_id,
            segments,
            key: None,
            bytes: Arc::new(bytes),
            go: OnceLock::new(),
            last_used: AtomicU64::new(0),
        }
    }

    /// The Go runtime facts of this file, if it is a Go binary whose
    /// goroutine state can be read (detected once; a failure is logged once).
    pub fn go_binary(&self) -> Option<Arc<GoBinary>> {
        self.go
            .get_or_init(|| {
                if self.kind != ObjectKind::Elf {
                    return None;
                }
                match GoBinary::detect(&self.bytes) {
                    Ok(go) => go.map(Arc::new),
                    Err(e) => {
                        warn!("{}: no goroutine state for this Go binary: {e}", self.path);
                        None
                    }
                }
            })
            .clone()
    }

    /// The segment a mapping at (page-aligned) file offset `offset` maps,
    /// executable ones first. Linkers such as lld start segments at offsets
    /// that are not page-aligned, so a mapping's offset is the segment's
    /// offset rounded down to the page.
    pub fn segment_at_offset(&self, offset: u64) -> Option<&Segment> {
        const PAGE: u64 = 4096;
        let contains = |s: &&Segment| {
            offset >= s.file_offset & !(PAGE - 1) && offset < s.file_offset + s.file_size.max(1)
        };
        self.segments
            .iter()
            .filter(contains)
            .find(|s| s.executable)
            .or_else(|| self.segments.iter().find(contains))
    }

    /// The build id as lowercase hex.
    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id.as_deref().map(hex)
    }

    /// The address range of the loadable segments (link-time addresses).
    pub fn vaddr_range(&self) -> (u64, u64) {
        let lo = self.segments.iter().map(|s| s.vaddr).min().unwrap_or(0);
        let hi = self
            .segments
            .iter()
            .map(|s| s.vaddr + s.mem_size)
            .max()
            .unwrap_or(self.bytes.len() as u64);
        (lo, hi)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Why an object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Every opened object, keyed by file identity and by build id (two files
/// with one build id, e.g. the same library in two container images, are
/// parsed once).
#[derive(Default)]
pub struct ObjectRegistry {
    objects: HashMap<ObjectId, Arc<ObjectFile>>,
    by_key: HashMap<FileKey, ObjectId>,
    by_build_id: HashMap<Vec<u8>, ObjectId>,
    next_id: u32,
    window: u64,
}

/// How long (in windows) an object nobody maps stays cached.
const KEEP_UNUSED_WINDOWS: u64 = 6;

impl ObjectRegistry {
    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// A fresh id (for objects not opened from files, such as the vDSO).
    pub fn allocate_id(&mut self) -> ObjectId {
        let id = ObjectId(self.next_id);
        self.next_id += 1;
        id
    }

    /// The cached object with id `id`.
    pub fn get(&self, id: ObjectId) -> Option<Arc<ObjectFile>> {
        self.objects.get(&id).cloned()
    }

    fn touch(&self, id: ObjectId) -> Option<Arc<ObjectFile>> {
        let obj = self.objects.get(&id)?;
        obj.last_used.store(self.window, Ordering::Relaxed);
        Some(Arc::clone(obj))
    }

    /// The object for the file mapped at `start..end` by `pid` as `path`,
    /// opening and parsing it on first sight.
    pub fn open_mapped(
        &mut self,
        pid: u32,
        start: u64,
        end: u64,
        path: &Path,
    ) -> Result<Arc<ObjectFile>, OpenError> {
        let map_file = PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"));
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let rooted = root.join(path.strip_prefix("/").unwrap_or(path));
        let display = path.to_string_lossy().into_owned();
        // The metadata identifies the file without opening it.
        let (open_path, meta) = match std::fs::metadata(&map_file) {
            Ok(m) => (map_file, m),
            Err(_) => match std::fs::metadata(&rooted) {
                Ok(m) => (rooted, m),
                Err(source) => {
                    return Err(OpenError::Io {
                        path: display,
                        source,
                    });
                }
            },
        };
        let key = FileKey::of(&meta);
        if let Some(obj) = self.by_key.get(&key).and_then(|&id| self.touch(id)) {
            return Ok(obj);
        }
        let io = |source| OpenError::Io {
            path: display.clone(),
            source,
        };
        let file = File::open(&open_path).map_err(io)?;
        // SAFETY: the mapping is read-only and private; a file truncated
        // underneath would fault, which is why only regular files reached
        // through the process's own mapping are opened.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let id = self.allocate_id();
        let mut obj = ObjectFile::from_bytes(id, display, ObjectKind::Elf, Bytes::Mapped(map));
        if let Some(build_id) = &obj.build_id
            && let Some(existing) = self
                .by_build_id
                .get(build_id)
                .and_then(|&id| self.touch(id))
        {
            self.by_key.insert(key, existing.id);
            return Ok(existing);
        }
        obj.root = root;
        obj.key = Some(key);
        obj.last_used.store(self.window, Ordering::Relaxed);
        let obj = Arc::new(obj);
        self.by_key.insert(key, id);
        if let Some(build_id) = &obj.build_id {
            self.by_build_id.insert(build_id.clone(), id);
        }
        self.objects.insert(id, Arc::clone(&obj));
        Ok(obj)
    }

    /// Starts a new window and forgets objects no process has mapped for a
    /// while and nothing else holds.
    pub fn collect_garbage(&mut self) {
        self.window += 1;
        let window = self.window;
        self.objects.retain(|_, obj| {
            Arc::strong_count(obj) > 1
                || obj.last_used.load(Ordering::Relaxed) + KEEP_UNUSED_WINDOWS > window
        });
        let objects = &self.objects;
        self.by_key.retain(|_, id| objects.contains_key(id));
        self.by_build_id.retain(|_, id| objects.contains_key(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_layout_of_a_real_binary() {
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let (kind, build_id, segments) = parse_layout(&bytes);
        assert_eq!(kind, ObjectKind::Elf);
        assert!(build_id.is_some_and(|b| !b.is_empty()));
        assert!(segments.iter().any(|s| s.executable));
    }

    #[test]
    fn non_elf_is_opaque() {
        let (kind, build_id, segments) = parse_layout(b"#!/bin/sh\necho hi\n");
        assert_eq!(kind, ObjectKind::Opaque);
        assert!(build_id.is_none() && segments.is_empty());
    }

    #[test]
    fn same_file_opens_once() {
        let mut reg = ObjectRegistry::default();
        let pid = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.ends_with(exe.to_str().unwrap()))
            .unwrap();
        let range = line.split_whitespace().next().unwrap();
        let (s, e) = range.split_once('-').unwrap();
        let (s, e) = (
            u64::from_str_radix(s, 16).unwrap(),
            u64::from_str_radix(e, 16).unwrap(),
        );
        let a = reg.open_mapped(pid, s, e, &exe).unwrap();
        let b = reg.open_mapped(pid, s, e, &exe).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(reg.len(), 1);
        drop((a, b));
        for _ in 0..=KEEP_UNUSED_WINDOWS {
            reg.collect_garbage();
        }
        assert!(reg.is_empty());
    }

    #[test]
    fn missing_file_is_an_error() {
        let mut reg = ObjectRegistry::default();
        let err = reg
            .open_mapped(std::process::id(), 1, 2, Path::new("/nonexistent/lib.so"))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/lib.so"));
    }
}
