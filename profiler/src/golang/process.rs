//! What the daemon knows about one Go binary: its version and build id,
//! the runtime offsets the BPF program uses (from the binary's DWARF when
//! present, else the checked-in table for its version), where `g` lives in
//! TLS, and the names of goroutine states and wait reasons.

use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSymbol};

use super::{
    buildinfo,
    pclntab::GoTable,
    runtime::{self, GStatus, StatusValues},
};
use crate::process::objects::Bytes;

/// Why a Go binary's goroutine state cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("Go build info: {0}")]
    BuildInfo(#[from] super::GoError),
    #[error("{version} has no DWARF and is newer than the offset table (Go 1.21-1.27)")]
    UnknownVersion { version: String },
    #[error("Go runtime: {0}")]
    Runtime(#[from] runtime::Error),
}

/// A Go binary's runtime facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBinary {
    /// e.g. `go1.22.10`.
    pub version: String,
    /// The Go build id (`.note.go.buildid`).
    pub build_id: Option<String>,
    /// Offsets as BPF takes them.
    pub offsets: profiler_common::golang::GoOffsets,
    pub status: StatusValues,
    /// Offset of the `g` pointer from the thread pointer.
    pub tls: i64,
    /// Wait reason strings by index.
    pub wait_reasons: Vec<Arc<str>>,
}

impl GoBinary {
    /// Reads what the daemon needs of the Go binary in `bytes`: `Ok(None)`
    /// when it is not Go. Offsets come from its DWARF when present, else
    /// from the checked-in table for its version; the TLS slot of `g` is
    /// decoded from the runtime's code, found by the symbol table or, when
    /// stripped, by `.gopclntab`.
    pub fn detect(bytes: &Arc<Bytes>) -> Result<Option<Self>, DetectError> {
        let file = object::File::parse(&***bytes).map_err(super::GoError::from)?;
        let Some(info) = buildinfo::read(&file)? else {
            return Ok(None);
        };
        let has_dwarf = file
            .section_by_name(".debug_info")
            .is_some_and(|s| s.size() > 0);
        let offsets = match (has_dwarf, runtime::for_version(info.major, info.minor)) {
            (true, _) => runtime::from_elf(&file)?,
            (false, Some(o)) => *o,
            (false, None) => {
                return Err(DetectError::UnknownVersion {
                    version: info.version,
                });
            }
        };
        let table = std::cell::OnceCell::new();
        let find = |name: &str| -> Option<(u64, u64)> {
            if let Some(sym) = file.symbols().find(|s| s.name() == Ok(name)) {
                return Some((sym.address(), sym.address() + sym.size()));
            }
            table
                .get_or_init(|| GoTable::parse(Arc::clone(bytes)).ok().flatten())
                .as_ref()?
                .function_entry(name)
        };
        let tls = runtime::g_tls_offset(&file, &find)?;
        let wait_reasons = match runtime::wait_reasons_from_elf(&file) {
            Ok(list) => list.iter().map(|s| Arc::from(s.as_str())).collect(),
            Err(_) => Self::table_wait_reasons(info.major, info.minor),
        };
        Ok(Some(Self {
            version: info.version,
            build_id: info.build_id,
            offsets: offsets.to_bpf()?,
            status: offsets.status,
            tls,
            wait_reasons,
        }))
    }

    /// The name of a goroutine status, as the profile shows it.
    pub fn status_name(&self, status: u32) -> &'static str {
        match self.status.classify(status) {
            GStatus::Idle => "idle",
            GStatus::Runnable => "runnable",
            GStatus::Running => "running",
            GStatus::Syscall => "syscall",
            GStatus::Waiting => "waiting",
            GStatus::Dead | GStatus::DeadExtra => "dead",
            GStatus::Copystack => "copystack",
            GStatus::Preempted => "preempted",
            GStatus::Leaked => "leaked",
            GStatus::Other(_) => "unknown",
        }
    }

    /// The wait reason of a waiting goroutine.
    pub fn wait_reason(&self, status: u32, reason: u8) -> Option<&Arc<str>> {
        if self.status.classify(status) != GStatus::Waiting {
            return None;
        }
        self.wait_reasons
            .get(usize::from(reason))
            .filter(|r| !r.is_empty())
    }

    /// Wait reasons of a version, from the checked-in table.
    pub fn table_wait_reasons(major: u32, minor: u32) -> Vec<Arc<str>> {
        runtime::wait_reasons(major, minor)
            .unwrap_or_default()
            .iter()
            .map(|s| Arc::from(*s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{build_go, go_toolchains};

    const HELLO: &str = "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hi\") }\n";

    #[test]
    fn detects_go_binaries_and_refuses_unknown_versions() {
        let Some((version, go)) = go_toolchains().pop() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let bin = build_go(&go, dir.path(), "hello", HELLO, &["-ldflags=-s -w"]);
        let bytes = std::fs::read(&bin).unwrap();
        let g = GoBinary::detect(&Arc::new(Bytes::Owned(bytes.clone())))
            .unwrap()
            .expect("a Go binary");
        assert_eq!(g.version, format!("go{version}"));
        assert!(g.build_id.is_some());
        assert_eq!(g.tls, -8);
        let (major, minor) = {
            let mut p = version.split('.').map(|x| x.parse::<u32>().unwrap());
            (p.next().unwrap(), p.next().unwrap())
        };
        let table = runtime::for_version(major, minor).unwrap();
        assert_eq!(g.offsets, table.to_bpf().unwrap());
        assert_eq!(g.status_name(2), "running");
        assert_eq!(g.status_name(4), "waiting");
        assert!(g.wait_reason(4, 1).is_some_and(|r| !r.is_empty()));
        assert!(
            g.wait_reason(2, 1).is_none(),
            "only waiting goroutines have a reason"
        );

        // The same binary claiming a Go release newer than the table: no
        // DWARF to fall back on, so it is refused (once, by the caller).
        let old = format!("go{version}");
        let new = format!("go1.99.{}", &version[version.rfind('.').unwrap() + 1..]);
        assert_eq!(old.len(), new.len());
        let mut patched = bytes.clone();
        let mut n = 0;
        let mut i = 0;
        while let Some(at) = patched[i..]
            .windows(old.len())
            .position(|w| w == old.as_bytes())
        {
            patched[i + at..i + at + new.len()].copy_from_slice(new.as_bytes());
            i += at + new.len();
            n += 1;
        }
        assert!(n > 0);
        let err = GoBinary::detect(&Arc::new(Bytes::Owned(patched))).unwrap_err();
        assert!(matches!(err, DetectError::UnknownVersion { .. }), "{err}");

        // Not Go at all.
        let me = std::fs::read("/proc/self/exe").unwrap();
        assert!(
            GoBinary::detect(&Arc::new(Bytes::Owned(me)))
                .unwrap()
                .is_none()
        );
    }
}
