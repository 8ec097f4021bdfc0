//! A bounded, ordered on-disk queue of encoded batches: what the collector
//! could not take yet survives outages and daemon restarts, and is sent
//! oldest first. Each batch is one file `<seq>.otlp` (20-digit sequence, so
//! names sort in order), written to a temporary name and renamed; a lock
//! file keeps two daemons from sharing a spool. When a new batch would pass
//! the byte bound, the oldest batches are evicted and counted.

use std::{
    collections::VecDeque,
    fs::File,
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

#[derive(Debug)]
struct Entry {
    seq: u64,
    path: PathBuf,
    len: u64,
}

/// The spool directory's contents, oldest first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    total: u64,
    next_seq: u64,
    _lock: File,
}

const SUFFIX: &str = ".otlp";

impl Spool {
    /// Opens (creating) the spool in `dir` and takes over what a previous
    /// run left there.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create spool directory {}", dir.display()))?;
        let lock_path = dir.join(".lock");
        let lock = File::create(&lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!(
                "spool directory {} is in use by another profiler",
                dir.display()
            );
        }
        let mut entries = Vec::new();
        for e in std::fs::read_dir(dir)
            .with_context(|| format!("cannot read spool directory {}", dir.display()))?
        {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A write interrupted by a crash: never renamed, never acknowledged.
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let Some(seq) = name
                .strip_suffix(SUFFIX)
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            entries.push(Entry {
                seq,
                path: e.path(),
                len: e.metadata()?.len(),
            });
        }
        entries.sort_by_key(|e| e.seq);
        let total = entries.iter().map(|e| e.len).sum();
        let next_seq = entries.last().map_or(0, |e| e.seq + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            entries: entries.into(),
            total,
            next_seq,
            _lock: lock,
        })
    }

    /// Appends a batch; returns how many old batches were evicted for room.
    pub fn push(&mut self, body: &[u8]) -> Result<u64> {
        let len = body.len() as u64;
        let mut evicted = 0;
        while !self.entries.is_empty() && self.total + len > self.max_bytes {
            self.pop_front()?;
            evicted += 1;
        }
        if len > self.max_bytes {
            bail!(
                "a batch of {len} bytes is larger than the whole spool ({} bytes)",
                self.max_bytes
            );
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.dir.join(format!("{seq:020}{SUFFIX}"));
        let tmp = self.dir.join(format!("{seq:020}.tmp"));
        let mut f =
            File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(body)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot rename {}", tmp.display()))?;
        self.total += len;
        self.entries.push_back(Entry { seq, path, len });
        Ok(evicted)
    }

    /// The oldest batch's bytes.
    pub fn front(&self) -> Option<Result<Vec<u8>>> {
        let e = self.entries.front()?;
        Some(std::fs::read(&e.path).with_context(|| format!("cannot read {}", e.path.display())))
    }

    /// Deletes the oldest batch.
    pub fn pop_front(&mut self) -> Result<()> {
        if let Some(e) = self.entries.pop_front() {
            self.total -= e.len;
            std::fs::remove_file(&e.path)
                .or_else(|err| {
                    if err.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(err)
                    }
                })
                .with_context(|| format!("cannot delete {}", e.path.display()))?;
        }
        Ok(())
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_reopen_and_evicts_oldest() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(dir.path(), 100).unwrap();
            assert_eq!(s.push(&[1; 40]).unwrap(), 0);
            assert_eq!(s.push(&[2; 40]).unwrap(), 0);
            assert_eq!(s.len(), 2);
            // A second daemon cannot take the same spool.
            assert!(
                Spool::open(dir.path(), 100)
                    .unwrap_err()
                    .to_string()
                    .contains("in use")
            );
        }
        // A stale temporary file from a crash is removed.
        std::fs::write(dir.path().join("00000000000000000009.tmp"), b"x").unwrap();
        let mut s = Spool::open(dir.path(), 100).unwrap();
        assert_eq!((s.len(), s.bytes()), (2, 80));
        // 80 + 40 > 100: the oldest goes.
        assert_eq!(s.push(&[3; 40]).unwrap(), 1);
        assert_eq!(s.front().unwrap().unwrap(), vec![2; 40]);
        s.pop_front().unwrap();
        assert_eq!(s.front().unwrap().unwrap(), vec![3; 40]);
        s.pop_front().unwrap();
        assert!(s.is_empty() && s.front().is_none());
        // Sequence numbers keep growing after a reopen.
        s.push(&[4; 1]).unwrap();
        drop(s);
        let s = Spool::open(dir.path(), 100).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".otlp"))
            .collect();
        assert_eq!(names, ["00000000000000000003.otlp"]);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn oversized_batch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 10).unwrap();
        assert!(s.push(&[0; 11]).is_err());
    }
}
