//! What /proc says about the processes of a group: resident memory, and the
//! BPF objects and perf events their file descriptors hold (programs with
//! their run counters, maps with their memlock bytes, links with the program
//! they attach). Reading fdinfo is cheap enough to poll every few
//! milliseconds while a tool starts.

use std::collections::{BTreeMap, BTreeSet};

/// Resident memory of processes, KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`.
    pub rss: u64,
    /// `VmHWM`: the peak of `VmRSS`.
    pub hwm: u64,
    /// `RssAnon`: heap, stacks, anonymous maps.
    pub anon: u64,
    /// `RssFile`: mapped file pages (the profiled binaries it reads, its own text).
    pub file: u64,
}

/// The memory of `pid`.
pub fn memory(pid: u32) -> Memory {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// The memory of `pids`, summed.
pub fn memory_sum(pids: &[u32]) -> Memory {
    pids.iter()
        .map(|&p| memory(p))
        .fold(Memory::default(), |a, m| Memory {
            rss: a.rss + m.rss,
            hwm: a.hwm + m.hwm,
            anon: a.anon + m.anon,
            file: a.file + m.file,
        })
}

/// A BPF program seen through an fd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgFd {
    pub prog_type: u32,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// BPF program type of perf_event programs (the samplers).
pub const BPF_PROG_TYPE_PERF_EVENT: u32 = 7;

/// The BPF objects and perf events held by a set of processes.
#[derive(Clone, Debug, Default)]
pub struct Fds {
    /// Program id → what its fdinfo says.
    pub progs: BTreeMap<u32, ProgFd>,
    /// Map ids.
    pub maps: BTreeSet<u32>,
    /// Programs reachable only through BPF links.
    pub linked_progs: BTreeSet<u32>,
    /// perf_event fds.
    pub perf_events: usize,
}

impl Fds {
    /// Every program id reachable (own fds and links).
    pub fn prog_ids(&self) -> BTreeSet<u32> {
        self.progs
            .keys()
            .copied()
            .chain(self.linked_progs.iter().copied())
            .collect()
    }

    /// Samples taken so far by the perf_event programs held through fds.
    pub fn sampler_runs(&self) -> u64 {
        self.progs
            .values()
            .filter(|p| p.prog_type == BPF_PROG_TYPE_PERF_EVENT)
            .map(|p| p.run_cnt)
            .sum()
    }
}

fn fdinfo_fields(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Scans the fds of `pids`.
pub fn scan_fds(pids: &[u32]) -> Fds {
    let mut out = Fds::default();
    for &pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let kind = match &*target {
                "anon_inode:bpf-prog" => 'p',
                "anon_inode:bpf-map" => 'm',
                "anon_inode:bpf_link" => 'l',
                "anon_inode:[perf_event]" => {
                    out.perf_events += 1;
                    continue;
                }
                _ => continue,
            };
            let info = format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy());
            let Ok(text) = std::fs::read_to_string(info) else {
                continue;
            };
            let f = fdinfo_fields(&text);
            let get = |k: &str| f.get(k).copied().unwrap_or(0);
            match kind {
                'p' => {
                    out.progs.insert(
                        get("prog_id") as u32,
                        ProgFd {
                            prog_type: get("prog_type") as u32,
                            run_cnt: get("run_cnt"),
                            run_time_ns: get("run_time_ns"),
                        },
                    );
                }
                'm' => {
                    out.maps.insert(get("map_id") as u32);
                }
                _ => {
                    if let Some(&id) = f.get("prog_id") {
                        out.linked_progs.insert(id as u32);
                    }
                }
            }
        }
    }
    out
}
