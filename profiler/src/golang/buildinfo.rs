//! Recognises Go binaries and reads which Go built them: the version and
//! main module from the build-info blob the linker writes (`.go.buildinfo`,
//! or found by its magic in writable data), and the Go build id from the
//! `.note.go.buildid` note.
//!
//! The blob starts with a 32-byte header: the magic `"\xff Go buildinf:"`,
//! the pointer size, and flags (bit 0: big-endian; bit 1: strings inline).
//! Go 1.18 and later write the version and module-info strings inline after
//! the header, each prefixed by its length as a varint. Older Go wrote two
//! pointers instead, at offsets 16 and 16+ptrSize, each to a Go string header
//! (data pointer, length) elsewhere in memory. Both are read here. Hand-written
//! for the reasons given in the parent module; `debug/buildinfo` in the Go
//! sources is the specification.

use object::{Object, ObjectSection};

use super::{GoError, Memory, uvarint};

/// What a Go binary says about its build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GoBuildInfo {
    /// The toolchain version, e.g. `go1.22.10`; empty if the file has a Go
    /// build id but no readable build-info blob.
    pub version: String,
    /// Numeric parts of `version` (`go1.22.10` → 1, 22, 10; missing → 0).
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The Go build id (`.note.go.buildid`), e.g. `actionID/contentID`.
    pub build_id: Option<String>,
    /// Path of the main module (the `mod` line of the module info).
    pub main_module: Option<String>,
}

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_SIZE: usize = 32;
const FLAG_BIG_ENDIAN: u8 = 0x1;
const FLAG_INLINE: u8 = 0x2;
/// Note type of the Go build id (`cmd/link`'s ELF_NOTE_GOBUILDID_TAG).
const NOTE_GO_BUILD_ID: u32 = 4;

/// Reads the build information of `file`: `Ok(None)` if it is not a Go
/// binary, an error if its Go data is malformed.
pub fn read(file: &object::File<'_>) -> Result<Option<GoBuildInfo>, GoError> {
    let build_id = read_build_id(file)?;
    let memory = Memory::new(file);
    let blob = match file.section_by_name(".go.buildinfo") {
        Some(section) => Some((section.address(), section.data()?)),
        None => find_blob(&memory),
    };
    let Some((_, blob)) = blob else {
        return Ok(build_id.map(|id| GoBuildInfo {
            build_id: Some(id),
            ..GoBuildInfo::default()
        }));
    };
    let (version, modinfo) = decode(blob, |addr, len| memory.read(addr, len))?;
    Ok(Some(GoBuildInfo::new(version, &modinfo, build_id)))
}

impl GoBuildInfo {
    fn new(version: String, modinfo: &str, build_id: Option<String>) -> Self {
        let [major, minor, patch] = parse_version(&version);
        let main_module = modinfo.lines().find_map(|line| {
            let mut fields = line.split('\t');
            (fields.next() == Some("mod"))
                .then(|| fields.next())
                .flatten()
                .map(str::to_owned)
        });
        Self {
            version,
            major,
            minor,
            patch,
            build_id,
            main_module,
        }
    }
}

/// `go1.22.10` → [1, 22, 10]; `go1.21rc2` → [1, 21, 0]; `devel go1.24-abc`
/// → [1, 24, 0]; anything else → zeros.
fn parse_version(version: &str) -> [u32; 3] {
    let mut out = [0; 3];
    let rest = version.trim_start_matches("devel ");
    let Some(rest) = rest.strip_prefix("go") else {
        return out;
    };
    for (slot, part) in out.iter_mut().zip(rest.split('.')) {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse() {
            Ok(n) => *slot = n,
            Err(_) => break,
        }
        if digits.len() != part.len() {
            break;
        }
    }
    out
}

/// The blob found by its 16-byte-aligned magic in writable data, as
/// `debug/buildinfo` does when there is no section of that name.
fn find_blob<'a>(memory: &Memory<'a>) -> Option<(u64, &'a [u8])> {
    memory.data_regions(true).find_map(|(vaddr, data)| {
        let skip = usize::try_from(vaddr.wrapping_neg() % 16).ok()?;
        let aligned = data.get(skip..)?;
        (0..aligned.len())
            .step_by(16)
            .find(|&i| aligned.get(i..).is_some_and(|d| d.starts_with(MAGIC)))
            .and_then(|i| {
                let addr = vaddr.checked_add(u64::try_from(skip + i).ok()?)?;
                Some((addr, aligned.get(i..)?))
            })
    })
}

/// Decodes a blob (starting at its magic) into (version, module info);
/// `read(addr, len)` reads memory for the pointer format.
fn decode<'a>(
    blob: &'a [u8],
    read: impl Fn(u64, u64) -> Option<&'a [u8]>,
) -> Result<(String, String), GoError> {
    let header = blob
        .get(..HEADER_SIZE)
        .ok_or(GoError::Truncated("Go build info header"))?;
    if !header.starts_with(MAGIC) {
        return Err(GoError::Malformed("Go build info magic"));
    }
    let Some(&[ptr_size, flags]) = header.get(14..16) else {
        return Err(GoError::Truncated("Go build info header"));
    };
    let (version, modinfo) = if flags & FLAG_INLINE != 0 {
        let rest = blob.get(HEADER_SIZE..).unwrap_or_default();
        let (version, used) = inline_string(rest)?;
        let (modinfo, _) = inline_string(rest.get(used..).unwrap_or_default())?;
        (version.to_vec(), modinfo.to_vec())
    } else {
        let big = flags & FLAG_BIG_ENDIAN != 0;
        let word = |bytes: &[u8], at: usize| -> Option<u64> {
            let b = bytes.get(at..at + usize::from(ptr_size))?;
            Some(match (ptr_size, big) {
                (4, false) => u64::from(u32::from_le_bytes(b.try_into().ok()?)),
                (4, true) => u64::from(u32::from_be_bytes(b.try_into().ok()?)),
                (8, false) => u64::from_le_bytes(b.try_into().ok()?),
                (8, true) => u64::from_be_bytes(b.try_into().ok()?),
                _ => return None,
            })
        };
        let go_string = |ptr: u64| -> Option<Vec<u8>> {
            let hdr = read(ptr, 2 * u64::from(ptr_size))?;
            read(word(hdr, 0)?, word(hdr, usize::from(ptr_size))?).map(<[u8]>::to_vec)
        };
        if ptr_size != 4 && ptr_size != 8 {
            return Err(GoError::Malformed("Go build info pointer size"));
        }
        let version = word(header, 16)
            .and_then(go_string)
            .ok_or(GoError::Truncated("Go build info version string"))?;
        // Module info is optional (GOPATH builds have none).
        let modinfo = word(header, 16 + usize::from(ptr_size))
            .and_then(go_string)
            .unwrap_or_default();
        (version, modinfo)
    };
    if version.is_empty() {
        return Err(GoError::Malformed("Go build info version"));
    }
    let version = String::from_utf8_lossy(&version).into_owned();
    Ok((version, strip_sentinels(&modinfo)))
}

/// A varint-length-prefixed string: (bytes, bytes used).
fn inline_string(data: &[u8]) -> Result<(&[u8], usize), GoError> {
    let (len, used) = uvarint(data).ok_or(GoError::Truncated("Go build info string length"))?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| used.checked_add(len))
        .ok_or(GoError::Truncated("Go build info string"))?;
    let bytes = data
        .get(used..end)
        .ok_or(GoError::Truncated("Go build info string"))?;
    Ok((bytes, end))
}

/// Module info is framed by two 16-byte sentinels (cmd/go's infoStart and
/// infoEnd); anything not framed so is not module info.
fn strip_sentinels(bytes: &[u8]) -> String {
    if bytes.len() >= 33 && bytes.get(bytes.len() - 17) == Some(&b'\n') {
        let framed = bytes.get(16..bytes.len() - 16).unwrap_or_default();
        String::from_utf8_lossy(framed).into_owned()
    } else {
        String::new()
    }
}

/// The string of the `Go` note of type 4 in `.note.go.buildid`.
fn read_build_id(file: &object::File<'_>) -> Result<Option<String>, GoError> {
    let Some(section) = file.section_by_name(".note.go.buildid") else {
        return Ok(None);
    };
    let data = section.data()?;
    let field = |at: usize| super::le_u32(data, at).map(|v| v as usize);
    let truncated = GoError::Truncated("Go build id note");
    let (namesz, descsz, kind) = match (field(0), field(4), field(8)) {
        (Some(n), Some(d), Some(k)) => (n, d, k),
        _ => return Err(truncated),
    };
    let desc_start = 12usize
        .checked_add(namesz.next_multiple_of(4))
        .ok_or(GoError::Malformed("Go build id note"))?;
    let name = data.get(12..12 + namesz.min(data.len())).ok_or(truncated)?;
    let name_end = name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if name.get(..name_end) != Some(b"Go".as_slice()) || kind != NOTE_GO_BUILD_ID as usize {
        return Err(GoError::Malformed("Go build id note"));
    }
    let desc = desc_start
        .checked_add(descsz)
        .and_then(|end| data.get(desc_start..end))
        .ok_or(GoError::Truncated("Go build id note"))?;
    let id = String::from_utf8_lossy(desc)
        .trim_end_matches('\0')
        .to_owned();
    Ok((!id.is_empty()).then_some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("go1.22.10"), [1, 22, 10]);
        assert_eq!(parse_version("go1.21rc2"), [1, 21, 0]);
        assert_eq!(parse_version("devel go1.24-abcdef Tue"), [1, 24, 0]);
        assert_eq!(parse_version("go1.25.5 X:nodwarf5"), [1, 25, 5]);
        assert_eq!(parse_version("weird"), [0, 0, 0]);
    }

    /// A blob in the pre-1.18 pointer format (no toolchain here writes it):
    /// header pointers → Go string headers → bytes, at made-up addresses.
    fn pointer_blob(ptr_size: u8, big: bool, modinfo: &[u8]) -> Vec<u8> {
        let base = 0x1000u64;
        let put = |buf: &mut Vec<u8>, at: usize, v: u64| {
            let bytes = match (ptr_size, big) {
                (4, false) => (v as u32).to_le_bytes().to_vec(),
                (4, true) => (v as u32).to_be_bytes().to_vec(),
                (_, false) => v.to_le_bytes().to_vec(),
                (_, true) => v.to_be_bytes().to_vec(),
            };
            buf[at..at + bytes.len()].copy_from_slice(&bytes);
        };
        let ps = usize::from(ptr_size);
        let version = b"go1.16.15";
        let mut buf = vec![0u8; 128 + version.len() + modinfo.len()];
        buf[..14].copy_from_slice(MAGIC);
        buf[14] = ptr_size;
        buf[15] = if big { FLAG_BIG_ENDIAN } else { 0 };
        put(&mut buf, 16, base + 64);
        put(&mut buf, 16 + ps, base + 96);
        put(&mut buf, 64, base + 128);
        put(&mut buf, 64 + ps, version.len() as u64);
        put(&mut buf, 96, base + 128 + version.len() as u64);
        put(&mut buf, 96 + ps, modinfo.len() as u64);
        buf[128..128 + version.len()].copy_from_slice(version);
        buf[128 + version.len()..].copy_from_slice(modinfo);
        buf
    }

    #[test]
    fn pointer_format_is_read() {
        let mut modinfo = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        modinfo.extend_from_slice(b"path\tex/cmd\nmod\tex\t(devel)\t\n");
        modinfo.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
        for (ptr_size, big) in [(8, false), (4, false), (8, true), (4, true)] {
            let buf = pointer_blob(ptr_size, big, &modinfo);
            let read = |addr: u64, len: u64| {
                let start = usize::try_from(addr.checked_sub(0x1000)?).ok()?;
                buf.get(start..start.checked_add(usize::try_from(len).ok()?)?)
            };
            let (version, m) = decode(&buf, read).unwrap();
            let info = GoBuildInfo::new(version, &m, None);
            assert_eq!(info.version, "go1.16.15");
            assert_eq!([info.major, info.minor, info.patch], [1, 16, 15]);
            assert_eq!(info.main_module.as_deref(), Some("ex"), "{ptr_size} {big}");
        }
        // A dangling version pointer is an error, not a panic.
        let buf = pointer_blob(8, false, b"");
        let err = decode(&buf, |_, _| None).unwrap_err();
        assert!(matches!(err, GoError::Truncated(_)), "{err}");
    }

    #[test]
    fn malformed_blobs_are_errors() {
        let mut inline = MAGIC.to_vec();
        inline.extend_from_slice(&[8, FLAG_INLINE]);
        inline.resize(HEADER_SIZE, 0);
        inline.extend_from_slice(&[9]);
        inline.extend_from_slice(b"go1.22.10");
        inline.push(0);
        assert_eq!(decode(&inline, |_, _| None).unwrap().0, "go1.22.10");
        for cut in 0..inline.len() - 1 {
            assert!(decode(&inline[..cut], |_, _| None).is_err(), "{cut}");
        }
        let mut bad = inline.clone();
        bad[1] = b'X';
        assert!(decode(&bad, |_, _| None).is_err());
        let mut huge = inline.clone();
        huge[HEADER_SIZE] = 0xff;
        assert!(decode(&huge, |_, _| None).is_err());
        let mut ptr = inline;
        ptr[14] = 3;
        ptr[15] = 0;
        assert!(decode(&ptr, |_, _| None).is_err());
    }

    #[test]
    fn non_go_files_are_none() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let file = object::File::parse(&*exe).unwrap();
        assert_eq!(read(&file).unwrap(), None);
    }
}
