//! Finds the separate debug file of an object, the way gdb and perf do:
//! by build id under `/usr/lib/debug/.build-id/xx/rest.debug`, then by
//! `.gnu_debuglink` next to the object, in its `.debug/` directory and under
//! `/usr/lib/debug/<dir>/`. Each place is tried inside the process's root
//! (its container) first, then on the host. A candidate is accepted when
//! its build id matches, or, when neither has one, when the debuglink CRC
//! matches.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use memmap2::Mmap;
use object::Object;

use crate::process::objects::{Bytes, hex};

/// What the object says about its debug file.
#[derive(Clone, Debug, Default)]
pub struct DebugRefs {
    pub build_id: Option<Vec<u8>>,
    /// `.gnu_debuglink` file name and CRC32.
    pub debuglink: Option<(String, u32)>,
}

impl DebugRefs {
    /// Reads the references from a parsed object.
    pub fn of(file: &object::File<'_>) -> Self {
        Self {
            build_id: file.build_id().ok().flatten().map(<[u8]>::to_vec),
            debuglink: file
                .gnu_debuglink()
                .ok()
                .flatten()
                .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc)),
        }
    }
}

/// Places to look, in order, for an object at `path` (as the process sees
/// it) whose root is `root`.
pub fn candidates(root: &Path, path: &str, refs: &DebugRefs) -> Vec<(PathBuf, Check)> {
    let mut rel: Vec<(PathBuf, Check)> = Vec::new();
    if let Some(id) = refs.build_id.as_deref().filter(|id| id.len() > 1) {
        let hex = hex(id);
        rel.push((
            PathBuf::from(format!(
                "usr/lib/debug/.build-id/{}/{}.debug",
                &hex[..2],
                &hex[2..]
            )),
            Check::BuildId,
        ));
    }
    if let Some((name, crc)) = &refs.debuglink {
        let dir = Path::new(path)
            .parent()
            .unwrap_or(Path::new("/"))
            .strip_prefix("/")
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let check = if refs.build_id.is_some() {
            Check::BuildId
        } else {
            Check::Crc(*crc)
        };
        rel.push((dir.join(name), check));
        rel.push((dir.join(".debug").join(name), check));
        rel.push((Path::new("usr/lib/debug").join(&dir).join(name), check));
    }
    let mut out = Vec::new();
    for base in [root, Path::new("/")] {
        for (p, check) in &rel {
            let full = base.join(p);
            if full.as_os_str() != Path::new(path).as_os_str()
                && !out.iter().any(|(q, _)| *q == full)
            {
                out.push((full, *check));
            }
        }
    }
    out
}

/// How a candidate debug file is matched to its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    BuildId,
    Crc(u32),
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// Maps `path` if it is a debug file for an object with `refs`.
pub fn open_matching(path: &Path, check: Check, refs: &DebugRefs) -> Option<Arc<Bytes>> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: read-only shared mapping of a regular file (see
    // `Bytes::release_pages` for what that allows).
    let map = unsafe { Mmap::map(&file) }.ok()?;
    let ok = match check {
        Check::BuildId => {
            let parsed = object::File::parse(&*map).ok()?;
            parsed.build_id().ok().flatten() == refs.build_id.as_deref()
        }
        Check::Crc(crc) => crc32(&map) == crc,
    };
    ok.then(|| Arc::new(Bytes::Mapped(map)))
}

/// The first matching debug file, if any.
pub fn find(root: &Path, path: &str, refs: &DebugRefs) -> Option<(PathBuf, Arc<Bytes>)> {
    candidates(root, path, refs)
        .into_iter()
        .find_map(|(p, check)| open_matching(&p, check, refs).map(|b| (p, b)))
}

/// The `.gnu_debugaltlink` (dwz) supplementary file of a debug file.
pub fn find_alt(root: &Path, debug_path: &Path, file: &object::File<'_>) -> Option<Arc<Bytes>> {
    let (name, build_id) = file.gnu_debugaltlink().ok().flatten()?;
    let name = Path::new(std::str::from_utf8(name).ok()?);
    let refs = DebugRefs {
        build_id: Some(build_id.to_vec()),
        debuglink: None,
    };
    let mut tries = Vec::new();
    if name.is_absolute() {
        tries.push(root.join(name.strip_prefix("/").ok()?));
        tries.push(name.to_path_buf());
    } else if let Some(dir) = debug_path.parent() {
        tries.push(dir.join(name));
    }
    tries.extend(candidates(root, "", &refs).into_iter().map(|(p, _)| p));
    tries
        .into_iter()
        .find_map(|p| open_matching(&p, Check::BuildId, &refs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::stripped_pair;

    #[test]
    fn build_id_and_debuglink_candidates_in_order() {
        let refs = DebugRefs {
            build_id: Some(vec![0xab, 0xcd, 0xef]),
            debuglink: Some(("libfoo.so.debug".into(), 7)),
        };
        let c = candidates(Path::new("/proc/9/root"), "/usr/lib/libfoo.so", &refs);
        let paths: Vec<_> = c.iter().map(|(p, _)| p.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/proc/9/root/usr/lib/debug/.build-id/ab/cdef.debug",
                "/proc/9/root/usr/lib/libfoo.so.debug",
                "/proc/9/root/usr/lib/.debug/libfoo.so.debug",
                "/proc/9/root/usr/lib/debug/usr/lib/libfoo.so.debug",
                "/usr/lib/debug/.build-id/ab/cdef.debug",
                "/usr/lib/libfoo.so.debug",
                "/usr/lib/.debug/libfoo.so.debug",
                "/usr/lib/debug/usr/lib/libfoo.so.debug",
            ]
        );
        assert!(c.iter().all(|(_, check)| *check == Check::BuildId));
    }

    fn refs_of(path: &Path) -> DebugRefs {
        let bytes = std::fs::read(path).unwrap();
        DebugRefs::of(&object::File::parse(&*bytes).unwrap())
    }

    #[test]
    fn finds_debug_file_by_debuglink_next_to_the_binary() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, debug) = stripped_pair(dir.path());
        let refs = refs_of(&bin);
        assert_eq!(refs.debuglink.as_ref().unwrap().0, "d.debug");
        // The object's path as the process sees it, inside a "root".
        let (found, _) = find(Path::new("/nonexistent-root"), bin.to_str().unwrap(), &refs)
            .expect("debuglink next to the binary");
        assert_eq!(found, debug);
    }

    #[test]
    fn finds_debug_file_by_build_id_under_the_process_root() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, debug) = stripped_pair(dir.path());
        let mut refs = refs_of(&bin);
        refs.debuglink = None;
        let hex = hex(refs.build_id.as_deref().unwrap());
        let root = dir.path().join("root");
        let target = root.join(format!(
            "usr/lib/debug/.build-id/{}/{}.debug",
            &hex[..2],
            &hex[2..]
        ));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::rename(&debug, &target).unwrap();
        let (found, bytes) = find(&root, "/usr/bin/d", &refs).expect("build-id path");
        assert_eq!(found, target);
        let parsed = object::File::parse(&**bytes).unwrap();
        assert!(crate::symbolize::dwarf::has_debug_info(&parsed));
    }

    #[test]
    fn rejects_a_debug_file_of_another_build() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, _) = stripped_pair(dir.path());
        let mut refs = refs_of(&bin);
        // A different build id: the file next to it must not be taken.
        refs.build_id = Some(vec![1, 2, 3, 4]);
        assert!(find(Path::new("/nonexistent-root"), bin.to_str().unwrap(), &refs).is_none());
    }

    #[test]
    fn crc_check_without_build_id() {
        let refs = DebugRefs {
            build_id: None,
            debuglink: Some(("x.debug".into(), 1)),
        };
        let c = candidates(Path::new("/"), "/bin/x", &refs);
        assert!(c.iter().all(|(_, check)| *check == Check::Crc(1)));
        assert_eq!(crc32(b"123456789"), 0xcbf43926);
    }
}
