//! Fixtures shared by the criterion benches: a large real binary to
//! symbolize, addresses inside its functions, and realistic windows built
//! from them (30-frame user stacks under a few kernel frames, many
//! processes and threads), all made with the profiler library's own types.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use object::{Object, ObjectSymbol, SymbolKind};
use profiler::{
    aggregate::{Instant2, Observation, Window},
    process::{
        FrameKey, ObjectFile, ObjectId, ProcId, ProcessMeta,
        objects::{Bytes, ObjectKind},
    },
};
use profiler_common::{RecordKind, SampleHeader};

/// Frames per user stack (the workload the overhead targets are set for).
pub const USER_FRAMES: usize = 30;
/// Kernel frames under each stack.
pub const KERNEL_FRAMES: usize = 6;

/// The binary the symbolizer benches load: `$PROFILER_BENCH_BINARY`, else the
/// workspace's release daemon (`target/release/profiler`, ~75 MB with line
/// tables), else this bench executable.
pub fn big_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("PROFILER_BENCH_BINARY") {
        return PathBuf::from(p);
    }
    let daemon = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/profiler");
    if daemon.is_file() {
        return daemon;
    }
    std::env::current_exe().expect("own executable")
}

/// `path` as an object file (read into memory, as the vDSO is).
pub fn object(id: u32, path: &Path) -> Arc<ObjectFile> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Arc::new(ObjectFile::from_bytes(
        ObjectId(id),
        path.to_string_lossy().into_owned(),
        ObjectKind::Elf,
        Bytes::Owned(bytes),
    ))
}

/// `n` link-time addresses inside distinct functions of `obj`, spread over
/// its whole text (each one a few bytes into a sized function symbol).
pub fn text_addresses(obj: &ObjectFile, n: usize) -> Vec<u64> {
    let file = object::File::parse(&**obj.bytes).expect("an ELF file");
    let mut funcs: Vec<(u64, u64)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.size() >= 8)
        .map(|s| (s.address(), s.size()))
        .collect();
    funcs.sort_unstable();
    funcs.dedup_by_key(|f| f.0);
    assert!(funcs.len() >= n, "{} functions, {n} wanted", funcs.len());
    let step = funcs.len() / n;
    (0..n)
        .map(|i| {
            let (addr, size) = funcs[i * step];
            addr + size / 2
        })
        .collect()
}

/// Process metadata of a fake process.
pub fn meta(id: u32, pid: u32) -> Arc<ProcessMeta> {
    Arc::new(ProcessMeta {
        id: ProcId(id),
        pid,
        ns_pid: pid,
        exe_name: format!("app{id}").into(),
        exe_path: format!("/usr/bin/app{id}").into(),
        start_time: 1000 + u64::from(id),
        container_id: None,
        go: None,
    })
}

/// A NUL-padded thread name.
pub fn comm(s: &str) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..s.len()].copy_from_slice(s.as_bytes());
    c
}

/// The shape of a synthetic window.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub processes: u32,
    pub threads_per_process: u32,
    pub stacks_per_process: usize,
    pub samples: usize,
}

/// A 10 s window of two CPUs at 999 Hz: 19,980 samples from 20 processes of
/// 4 threads, 25 distinct stacks each (500 stacks).
pub const WINDOW_999HZ: Shape = Shape {
    processes: 20,
    threads_per_process: 4,
    stacks_per_process: 25,
    samples: 19_980,
};

/// Pre-made samples: everything `Window::add` takes, so only it is timed.
pub struct Samples {
    pub processes: Vec<Arc<ProcessMeta>>,
    pub comms: Vec<[u8; 16]>,
    pub stacks: Vec<Vec<FrameKey>>,
    /// (process index, tid, comm index, cpu, stack index, time) per sample.
    pub picks: Vec<(usize, u32, usize, u32, usize, u64)>,
}

/// Deterministic samples of `shape` whose user frames are addresses of
/// `object` (taken from `addrs`) and kernel frames synthetic kernel addresses.
pub fn samples(shape: Shape, object: ObjectId, addrs: &[u64]) -> Samples {
    let mut rng = fastrand::Rng::with_seed(7);
    let processes: Vec<_> = (0..shape.processes)
        .map(|i| meta(i, 10_000 + i * 10))
        .collect();
    let comms: Vec<_> = ["main", "worker-1", "worker-2", "io", "gc", "timer"]
        .iter()
        .map(|s| comm(s))
        .collect();
    let stacks: Vec<Vec<FrameKey>> = (0..shape.processes as usize * shape.stacks_per_process)
        .map(|_| {
            // Stacks of one program share their outer frames, as real ones do.
            let shared = rng.usize(10..20);
            let mut frames: Vec<FrameKey> = (0..KERNEL_FRAMES)
                .map(|k| {
                    FrameKey::Kernel(0xffff_ffff_8100_0000 + (rng.u64(0..4096) << 8) + k as u64)
                })
                .collect();
            frames.extend((0..USER_FRAMES).map(|depth| {
                let a = if depth >= USER_FRAMES - shared {
                    addrs[depth % addrs.len()]
                } else {
                    addrs[rng.usize(..addrs.len())]
                };
                FrameKey::Object { object, addr: a }
            }));
            frames
        })
        .collect();
    let mut time = 1_000_000_000u64;
    let picks = (0..shape.samples)
        .map(|_| {
            let p = rng.usize(..shape.processes as usize);
            let t = rng.u32(..shape.threads_per_process);
            let stack = p * shape.stacks_per_process + rng.usize(..shape.stacks_per_process);
            time += 500_000;
            (
                p,
                processes[p].pid + t,
                t as usize % comms.len(),
                rng.u32(..2),
                stack,
                time,
            )
        })
        .collect();
    Samples {
        processes,
        comms,
        stacks,
        picks,
    }
}

/// Adds every sample of `s` to `window`.
pub fn fill(window: &mut Window, s: &Samples) {
    for &(p, tid, c, cpu, stack, time_ns) in &s.picks {
        let obs = Observation {
            tid,
            cpu,
            comm: &s.comms[c],
            time_ns,
            go: None,
        };
        window.add(&s.processes[p], &obs, &s.stacks[stack]);
    }
}

/// A window start both clocks agree on.
pub fn start() -> Instant2 {
    Instant2 {
        wall_ns: 1_700_000_000_000_000_000,
        mono_ns: 0,
    }
}

/// Serializes a sample record exactly as `SampleHeader` lays it out.
pub fn record(pid: u32, tid: u32, cpu: u32, time: u64, kernel: &[u64], user: &[u64]) -> Vec<u8> {
    assert_eq!(
        std::mem::size_of::<SampleHeader>(),
        56,
        "header layout changed"
    );
    let mut b = Vec::with_capacity(56 + 8 * (kernel.len() + user.len()));
    b.extend((RecordKind::Sample as u32).to_ne_bytes());
    b.extend(0u32.to_ne_bytes()); // flags
    b.extend(time.to_ne_bytes());
    b.extend(pid.to_ne_bytes());
    b.extend(tid.to_ne_bytes());
    b.extend(cpu.to_ne_bytes());
    b.extend((kernel.len() as u16).to_ne_bytes());
    b.extend((user.len() as u16).to_ne_bytes());
    b.extend([0u8, 0u8]); // unwinder, outcome
    b.extend(0u16.to_ne_bytes()); // ext_len
    b.extend(0u32.to_ne_bytes()); // reserved
    b.extend(comm("bench-worker"));
    for a in kernel.iter().chain(user) {
        b.extend(a.to_ne_bytes());
    }
    b
}

/// Addresses inside this process's own executable text.
pub fn own_text(n: usize) -> Vec<u64> {
    let exe = std::fs::read_link("/proc/self/exe").expect("own executable");
    let maps = std::fs::read_to_string("/proc/self/maps").expect("own maps");
    let (start, end) = maps
        .lines()
        .filter(|l| l.ends_with(&*exe.to_string_lossy()))
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let (s, e) = range.split_once('-')?;
            perms.contains('x').then(|| {
                (
                    u64::from_str_radix(s, 16).unwrap(),
                    u64::from_str_radix(e, 16).unwrap(),
                )
            })
        })
        .expect("an executable mapping of the bench binary");
    let step = (end - start) / (n as u64 + 1);
    (1..=n as u64).map(|i| start + i * step).collect()
}

/// `count` distinct sample records of this process, each 30 user frames
/// (random functions of its own executable) under 6 kernel frames, spread
/// over 4 threads and 2 CPUs.
pub fn own_records(count: u64, seed: u64) -> Vec<Vec<u8>> {
    let pid = std::process::id();
    let user = own_text(300);
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count)
        .map(|i| {
            let kernel: Vec<u64> = (0..KERNEL_FRAMES as u64)
                .map(|k| 0xffff_ffff_8100_0000 + (rng.u64(0..4096) << 8) + k)
                .collect();
            let stack: Vec<u64> = (0..USER_FRAMES)
                .map(|_| user[rng.usize(..user.len())])
                .collect();
            record(
                pid,
                pid + (i % 4) as u32,
                (i % 2) as u32,
                1_000 + i,
                &kernel,
                &stack,
            )
        })
        .collect()
}
