//! Reads the profiler's own output: the gzipped pprof files `profiler run`
//! writes, decoded just far enough (gunzip by `gzip -dc`, then the protobuf
//! fields needed) to count the samples each covers and when.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// What one profile file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Sum of the first sample value (`samples/count`).
    pub samples: u64,
    pub time_nanos: u64,
    pub duration_nanos: u64,
}

/// Decodes one `.pb.gz` file.
pub fn read(path: &Path) -> Result<Summary> {
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(path)
        .output()
        .context("cannot run gzip")?;
    if !out.status.success() {
        bail!("gzip -dc {} failed", path.display());
    }
    summarize(&out.stdout)
}

fn varint(b: &[u8], i: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = b.get(*i) else {
            bail!("truncated varint");
        };
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("varint too long")
}

/// Calls `f(field, wire type, varint value or 0, bytes of a LEN field)`.
fn fields(b: &[u8], mut f: impl FnMut(u64, u64, u64, &[u8]) -> Result<()>) -> Result<()> {
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = varint(b, &mut i)?;
                f(field, wire, v, &[])?;
            }
            1 => i += 8,
            5 => i += 4,
            2 => {
                let len = varint(b, &mut i)? as usize;
                let Some(body) = b.get(i..i + len) else {
                    bail!("truncated field {field}");
                };
                i += len;
                f(field, wire, 0, body)?;
            }
            w => bail!("unsupported wire type {w}"),
        }
    }
    Ok(())
}

/// Summarizes a decompressed `profile.proto`.
pub fn summarize(raw: &[u8]) -> Result<Summary> {
    let mut s = Summary::default();
    fields(raw, |field, _, v, body| {
        match field {
            // Sample: its value (field 2), packed or not; the first is the count.
            2 => {
                let mut first = None;
                fields(body, |f, wire, v, body| {
                    if f == 2 && first.is_none() {
                        first = Some(if wire == 2 {
                            let mut i = 0;
                            varint(body, &mut i)?
                        } else {
                            v
                        });
                    }
                    Ok(())
                })?;
                s.samples += first.unwrap_or(0);
            }
            9 => s.time_nanos = v,
            10 => s.duration_nanos = v,
            _ => {}
        }
        Ok(())
    })?;
    Ok(s)
}

/// Samples of the files in `dir` that fall in the wall-clock window
/// `[from_ns, to_ns)`. A file that straddles an edge counts in proportion
/// to its overlap (samples are spread evenly over a 10 s file); returns
/// (samples, files read, whole-run samples).
pub fn samples_in(dir: &Path, from_ns: u64, to_ns: u64) -> Result<(f64, usize, u64)> {
    let mut total = 0.0;
    let mut files = 0;
    let mut all = 0;
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if !p.to_string_lossy().ends_with(".pb.gz") {
            continue;
        }
        let s = read(&p)?;
        files += 1;
        all += s.samples;
        let (a, b) = (s.time_nanos, s.time_nanos + s.duration_nanos.max(1));
        let overlap = b.min(to_ns).saturating_sub(a.max(from_ns));
        total += s.samples as f64 * overlap as f64 / (b - a) as f64;
    }
    Ok((total, files, all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_packed_and_unpacked_values() {
        // Sample{location_id: [1], value: [3, 300] packed}, Sample{value: 2, value: 200},
        // time_nanos = 5, duration_nanos = 7.
        let raw = [
            0x12, 0x07, 0x08, 0x01, 0x12, 0x03, 0x03, 0xac, 0x02, //
            0x12, 0x05, 0x10, 0x02, 0x10, 0xc8, 0x01, //
            0x48, 0x05, 0x50, 0x07,
        ];
        let s = summarize(&raw).unwrap();
        assert_eq!(
            s,
            Summary {
                samples: 5,
                time_nanos: 5,
                duration_nanos: 7
            }
        );
    }
}
