//! BPF-side figures through bpftool: per-program run time and run count
//! (with `kernel.bpf_stats_enabled`, switched on for the benchmark and
//! restored afterwards), map memory (`bytes_memlock`), and the sum of a
//! counting map's values (how bpftrace and bcc count samples).

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::json::{self, Value};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Keeps `kernel.bpf_stats_enabled` at 1 while alive; restores the previous
/// value when dropped.
pub struct StatsGuard {
    previous: String,
}

impl StatsGuard {
    pub fn enable() -> Result<Self> {
        let previous = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("cannot read {STATS_SYSCTL}"))?
            .trim()
            .to_owned();
        std::fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("cannot write {STATS_SYSCTL}"))?;
        Ok(Self { previous })
    }

    pub fn previous(&self) -> &str {
        &self.previous
    }
}

impl Drop for StatsGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(STATS_SYSCTL, &self.previous) {
            eprintln!(
                "bench: WARNING: could not restore kernel.bpf_stats_enabled={}: {e}",
                self.previous
            );
        }
    }
}

/// One loaded program.
#[derive(Clone, Debug, Default)]
pub struct Prog {
    pub id: u32,
    pub prog_type: String,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub map_ids: Vec<u32>,
}

/// One map.
#[derive(Clone, Debug, Default)]
pub struct Map {
    pub name: String,
    pub bytes_memlock: u64,
}

fn bpftool(args: &[&str]) -> Result<Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .context("cannot run bpftool")?;
    if !out.status.success() {
        bail!(
            "bpftool {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    json::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Every loaded program, by id.
pub fn progs() -> Result<BTreeMap<u32, Prog>> {
    let v = bpftool(&["prog", "show"])?;
    let mut out = BTreeMap::new();
    for p in v.as_array() {
        let num = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
        let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let id = num("id") as u32;
        out.insert(
            id,
            Prog {
                id,
                prog_type: text("type"),
                name: text("name"),
                run_time_ns: num("run_time_ns"),
                run_cnt: num("run_cnt"),
                map_ids: p
                    .get("map_ids")
                    .map(|m| {
                        m.as_array()
                            .iter()
                            .filter_map(|x| x.as_u64().map(|x| x as u32))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
        );
    }
    Ok(out)
}

/// Every map, by id.
pub fn maps() -> Result<BTreeMap<u32, Map>> {
    let v = bpftool(&["map", "show"])?;
    let mut out = BTreeMap::new();
    for m in v.as_array() {
        let num = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
        let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        out.insert(
            num("id") as u32,
            Map {
                name: text("name"),
                bytes_memlock: num("bytes_memlock"),
            },
        );
    }
    Ok(out)
}

/// Run time and count summed over `ids`, and the part from perf_event
/// programs (the samplers).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunTotals {
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub sampler_run_cnt: u64,
    pub sampler_run_time_ns: u64,
}

pub fn totals(all: &BTreeMap<u32, Prog>, ids: &BTreeSet<u32>) -> RunTotals {
    let mut t = RunTotals::default();
    for p in ids.iter().filter_map(|id| all.get(id)) {
        t.run_time_ns += p.run_time_ns;
        t.run_cnt += p.run_cnt;
        if p.prog_type == "perf_event" {
            t.sampler_run_cnt += p.run_cnt;
            t.sampler_run_time_ns += p.run_time_ns;
        }
    }
    t
}

/// Little-endian u64 of the first 8 of bpftool's "0x.." byte strings.
fn le_u64(bytes: &[Value]) -> u64 {
    bytes
        .iter()
        .take(8)
        .enumerate()
        .map(|(i, b)| {
            let v = b
                .as_str()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0);
            v << (8 * i)
        })
        .sum()
}

fn formatted_sum(v: &Value) -> u64 {
    match v {
        Value::Num(n) => *n as u64,
        Value::Obj(_) => v.get("values").map_or(0, |vals| {
            vals.as_array()
                .iter()
                .map(|x| x.get("value").map_or(0, formatted_sum))
                .sum()
        }),
        _ => 0,
    }
}

/// Sum of the (u64) values of map `id`, per-CPU values included, and the
/// number of entries.
pub fn map_value_sum(id: u32) -> Result<(u64, u64)> {
    let v = bpftool(&["map", "dump", "id", &id.to_string()])?;
    let mut sum = 0;
    let mut entries = 0;
    for e in v.as_array() {
        entries += 1;
        if let Some(f) = e.get("formatted") {
            sum += f
                .get("value")
                .or_else(|| f.get("values").map(|_| f))
                .map_or(0, formatted_sum);
        } else if let Some(vals) = e.get("values") {
            sum += vals
                .as_array()
                .iter()
                .map(|x| x.get("value").map_or(0, |b| le_u64(b.as_array())))
                .sum::<u64>();
        } else if let Some(val) = e.get("value") {
            sum += le_u64(val.as_array());
        }
    }
    Ok((sum, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_raw_and_percpu_dumps() {
        let raw =
            json::parse(r#"{"value": ["0x05","0x01","0x00","0x00","0x00","0x00","0x00","0x00"]}"#)
                .unwrap();
        assert_eq!(le_u64(raw.get("value").unwrap().as_array()), 261);
        let f =
            json::parse(r#"{"values": [{"cpu": 0, "value": 3}, {"cpu": 1, "value": 4}]}"#).unwrap();
        assert_eq!(formatted_sum(&f), 7);
    }
}
