//! Writes pprof files: one given path (`record`), or one file per window in
//! a directory with a sortable UTC timestamp name (`run`). Files appear
//! atomically (written to a temporary name, then renamed).

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tracing::warn;

use super::{Batch, Sink};
use crate::metrics::{self, Metrics};

/// Where the files go.
#[derive(Clone, Debug)]
pub enum FileTarget {
    /// Exactly this path (the last batch wins).
    Path(PathBuf),
    /// `DIR/cpu-YYYYMMDDTHHMMSS.mmmZ.pb.gz` per window.
    Directory(PathBuf),
}

/// The pprof file sink.
pub struct FileSink {
    target: FileTarget,
    metrics: Arc<Metrics>,
}

impl FileSink {
    /// A sink writing to `target`; a directory is created if missing.
    pub fn new(target: FileTarget, metrics: Arc<Metrics>) -> Result<Self> {
        if let FileTarget::Directory(dir) = &target {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        }
        Ok(Self { target, metrics })
    }

    /// Writes one batch's pprof file.
    pub async fn deliver(&self, batch: &Batch) -> Result<()> {
        let path = self.path_for(batch);
        let bytes = batch
            .pprof_gz
            .clone()
            .context("no pprof encoding in the batch")?;
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await?
    }

    /// The path `batch` goes to.
    pub fn path_for(&self, batch: &Batch) -> PathBuf {
        match &self.target {
            FileTarget::Path(p) => p.clone(),
            FileTarget::Directory(dir) => {
                dir.join(format!("cpu-{}.pb.gz", utc_stamp(batch.profile.start_ns)))
            }
        }
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("output path has no file name")?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

impl Sink for FileSink {
    fn name(&self) -> String {
        match &self.target {
            FileTarget::Path(p) => format!("file {}", p.display()),
            FileTarget::Directory(d) => format!("directory {}", d.display()),
        }
    }

    async fn run(self, mut batches: mpsc::Receiver<Arc<Batch>>) {
        while let Some(batch) = batches.recv().await {
            match self.deliver(&batch).await {
                Ok(()) => metrics::inc(&self.metrics.profiles_written),
                Err(e) => {
                    metrics::inc(&self.metrics.sink_errors);
                    warn!("{}: window {} not written: {e:#}", self.name(), batch.seq);
                }
            }
        }
    }
}

/// `YYYYMMDDTHHMMSS.mmmZ` for nanoseconds since the epoch (UTC). Written
/// here rather than pulling a date crate for one format: the civil-from-days
/// conversion is Howard Hinnant's public-domain algorithm.
pub fn utc_stamp(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let millis = (ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::profile::Profile;

    #[test]
    fn stamps_are_utc_and_sortable() {
        assert_eq!(utc_stamp(0), "19700101T000000.000Z");
        // 2026-11-25 14:53:54.123 UTC
        assert_eq!(utc_stamp(1_795_618_434_123_000_000), "20261125T145354.123Z");
        // 2000-02-29 (leap day)
        assert_eq!(utc_stamp(951_782_400_000_000_000), "20000229T000000.000Z");
        assert!(utc_stamp(1_000_000_000) < utc_stamp(2_000_000_000));
    }

    #[tokio::test]
    async fn writes_one_file_per_window() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::new(
            FileTarget::Directory(dir.path().join("out")),
            Arc::default(),
        )
        .unwrap();
        for (seq, start) in [(0, 1_000_000_000u64), (1, 11_000_000_000)] {
            let batch = Batch {
                seq,
                profile: Arc::new(Profile {
                    start_ns: start,
                    ..Profile::default()
                }),
                pprof_gz: Some(vec![seq as u8; 3]),
                otlp: None,
            };
            sink.deliver(&batch).await.unwrap();
        }
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cpu-19700101T000001.000Z.pb.gz",
                "cpu-19700101T000011.000Z.pb.gz"
            ]
        );
    }
}
