//! CPU accounting by cgroup. Each role of a run (the profiler under test,
//! the workload, the OTLP receiver, the harness itself) gets its own group
//! under `profiler-bench/`, so its CPU time is exact to the nanosecond and
//! includes every thread and child, even those that exited during the
//! window. Only CPU accounting is used (cgroup v1 `cpuacct`, else the v2
//! `cpu.stat`); memory cgroups are left alone, so BPF memory stays charged
//! where it always is.
//!
//! "Foreign" CPU is everything the machine ran outside these groups: other
//! users of the machine, which make a run untrustworthy.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

/// Which hierarchy the groups live in.
#[derive(Clone, Debug)]
enum Flavour {
    /// cgroup v1 `cpuacct`: `cpuacct.usage` in ns.
    V1(PathBuf),
    /// cgroup v2: `cpu.stat` `usage_usec`.
    V2(PathBuf),
}

/// One accounting group.
#[derive(Clone, Debug)]
pub struct Group {
    path: PathBuf,
    v1: bool,
}

/// The benchmark's groups.
pub struct Cgroups {
    flavour: Flavour,
    /// Where this process was before joining `harness`.
    original: PathBuf,
    pub tool: Group,
    pub workload: Group,
    pub sink: Group,
    pub harness: Group,
}

const PARENT: &str = "profiler-bench";

fn detect() -> Result<Flavour> {
    let v1 = Path::new("/sys/fs/cgroup/cpuacct");
    if v1.join("cpuacct.usage").is_file() {
        return Ok(Flavour::V1(v1.to_path_buf()));
    }
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if Path::new(root).join("cgroup.procs").is_file()
            && Path::new(root).join("cgroup.controllers").is_file()
        {
            return Ok(Flavour::V2(PathBuf::from(root)));
        }
    }
    bail!("no cgroup hierarchy with CPU accounting (cpuacct v1 or cgroup v2) is mounted")
}

fn read_usage_ns(dir: &Path, v1: bool) -> u64 {
    if v1 {
        std::fs::read_to_string(dir.join("cpuacct.usage"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    } else {
        std::fs::read_to_string(dir.join("cpu.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(0, |us| us * 1000)
    }
}

impl Group {
    fn create(parent: &Path, name: &'static str, v1: bool) -> Result<Self> {
        let path = parent.join(name);
        if path.exists() {
            let left = read_pids(&path);
            if !left.is_empty() {
                bail!(
                    "{} still holds processes {left:?} from an earlier run; stop them first",
                    path.display()
                );
            }
            std::fs::remove_dir(&path)
                .with_context(|| format!("cannot reset {}", path.display()))?;
        }
        std::fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { path, v1 })
    }

    /// CPU time used by every task that ever ran in the group, ns.
    pub fn usage_ns(&self) -> u64 {
        read_usage_ns(&self.path, self.v1)
    }

    /// Processes in the group now.
    pub fn pids(&self) -> Vec<u32> {
        read_pids(&self.path)
    }

    /// `cmd` wrapped so the process joins this group before it execs:
    /// `sh -c 'echo $$ > procs && exec "$@"' sh PROGRAM ARGS...`.
    pub fn wrap(&self, program: &Path, args: &[String]) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec \"$@\"",
                self.path.join("cgroup.procs").display()
            ))
            .arg("sh")
            .arg(program)
            .args(args);
        c
    }

    /// Moves the calling process into the group.
    pub fn enter(&self) -> Result<()> {
        std::fs::write(
            self.path.join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .with_context(|| format!("cannot join {}", self.path.display()))
    }
}

/// The group of this process in the hierarchy mounted at `root`.
fn own_group(root: &Path, v1: bool) -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let rel = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let wanted = if v1 {
            controllers.split(',').any(|c| c == "cpuacct")
        } else {
            controllers.is_empty()
        };
        wanted.then(|| path.trim_start_matches('/').to_owned())
    });
    root.join(rel.unwrap_or_default())
}

fn read_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

impl Cgroups {
    /// Creates fresh groups (failing if an earlier run left processes).
    pub fn create() -> Result<Self> {
        let flavour = detect()?;
        let (root, v1) = match &flavour {
            Flavour::V1(r) => (r.clone(), true),
            Flavour::V2(r) => (r.clone(), false),
        };
        let parent = root.join(PARENT);
        if !parent.exists() {
            std::fs::create_dir(&parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let original = own_group(&root, v1);
        Ok(Self {
            original,
            tool: Group::create(&parent, "tool", v1)?,
            workload: Group::create(&parent, "workload", v1)?,
            sink: Group::create(&parent, "sink", v1)?,
            harness: Group::create(&parent, "harness", v1)?,
            flavour,
        })
    }

    /// "cgroup v1 cpuacct at ..." for the report.
    pub fn describe(&self) -> String {
        match &self.flavour {
            Flavour::V1(r) => format!("cgroup v1 cpuacct ({})", r.display()),
            Flavour::V2(r) => format!("cgroup v2 cpu.stat ({})", r.display()),
        }
    }

    /// Fresh tool group (its counter starts at zero for each run).
    pub fn reset_tool(&mut self) -> Result<()> {
        let (parent, v1) = self.parent();
        self.tool = Group::create(&parent, "tool", v1)?;
        Ok(())
    }

    fn parent(&self) -> (PathBuf, bool) {
        match &self.flavour {
            Flavour::V1(r) => (r.join(PARENT), true),
            Flavour::V2(r) => (r.join(PARENT), false),
        }
    }

    /// CPU time of the whole machine, ns.
    pub fn machine_ns(&self) -> u64 {
        match &self.flavour {
            Flavour::V1(r) => read_usage_ns(r, true),
            Flavour::V2(r) => {
                let n = read_usage_ns(r, false);
                if n > 0 {
                    n
                } else {
                    // The v2 root may lack cpu.stat: fall back to /proc/stat.
                    super::host::CpuTicks::read().busy * 10_000_000
                }
            }
        }
    }

    /// CPU time of the benchmark's own groups, ns.
    pub fn ours_ns(&self) -> u64 {
        [&self.tool, &self.workload, &self.sink, &self.harness]
            .iter()
            .map(|g| g.usage_ns())
            .sum()
    }

    /// Machine CPU time outside the benchmark's groups, ns (a counter:
    /// only differences mean anything).
    pub fn foreign_ns(&self) -> u64 {
        self.machine_ns().saturating_sub(self.ours_ns())
    }

    /// Every pid in the benchmark's groups.
    pub fn all_pids(&self) -> Vec<u32> {
        [&self.tool, &self.workload, &self.sink, &self.harness]
            .iter()
            .flat_map(|g| g.pids())
            .collect()
    }

    /// Leaves the groups (moves this process back where it was) and
    /// removes the empty ones.
    pub fn remove(&self) {
        let (parent, _) = self.parent();
        let _ = std::fs::write(
            self.original.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        for g in [&self.tool, &self.workload, &self.sink, &self.harness] {
            let _ = std::fs::remove_dir(&g.path);
        }
        let _ = std::fs::remove_dir(parent);
    }
}
