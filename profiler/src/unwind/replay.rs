//! Host harness: unwinds a captured user stack (registers, the stack bytes
//! from the stack pointer up, the process's executable mappings) with the
//! compiled table of each mapped file and the shared lookup and step code,
//! exactly as the BPF program will: object-relative pcs, the page index,
//! `find_rule`, `step`, at most [`MAX_USER_FRAMES`] frames.
//!
//! Tests capture live processes with gdb and compare against gdb's own
//! backtrace (gdb unwinds with its independent DWARF CFI implementation).
//!
//! [`Replayer`] walks by the tables alone (frame pointers only if asked),
//! which is the strict test of the tables; [`BpfReplayer`] walks exactly as
//! the BPF stage does, with the daemon's own pieces: the capture's mappings
//! go through the table manager into a store laid out like the BPF maps,
//! and each frame is one `resolve_cached` (rule cache, else mapping search,
//! table, row) and one `apply` (step, frame-pointer fallback), with a rule
//! cache that lives as long as the replayer.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use std::sync::Arc;

use profiler_common::{
    MAX_USER_FRAMES,
    unwind::{
        Cfa, Frame, Memory, Outcome, RULE_CACHE_SLOTS, Regs, Rule, RuleCacheSlot, apply, find_rule,
        resolve_cached, step, step_by_table,
    },
};

use super::{
    CompiledTable, TableId, TableSet,
    manager::{Code, MappingSpec, MemStore, StoreCapacity, TableKey, TableManager},
};
use crate::process::{
    maps::bias_for,
    objects::{Bytes, ObjectFile, ObjectId, ObjectKind},
};

/// An executable file mapping of the captured process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    /// Where to read the file from (for the vDSO: a dump of it).
    pub path: PathBuf,
    pub start: u64,
    pub end: u64,
    /// File offset mapped at `start`.
    pub offset: u64,
}

/// A stack as the BPF program would see it.
#[derive(Clone, Debug, Default)]
pub struct Capture {
    /// The interrupted registers.
    pub regs: Regs,
    /// Address of `stack[0]`: `regs.sp`, or a little below it (gdb's
    /// captures keep 256 bytes under sp, which BPF can read too).
    pub stack_addr: u64,
    /// Stack memory up to the top of the stack mapping.
    pub stack: Vec<u8>,
    /// Executable mappings.
    pub mappings: Vec<MappedFile>,
}

impl Memory for Capture {
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.stack_addr)?).ok()?;
        let bytes = self.stack.get(off..off.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// How one step found the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The object's table.
    Table(Rule),
    /// No row: the frame-pointer rule.
    FramePointer,
}

/// An unwound stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// Frame pcs, innermost first: the interrupted pc, then return
    /// addresses (and the exact pcs of frames a signal interrupted).
    pub pcs: Vec<u64>,
    /// How each caller was found (`via[i]` produced `pcs[i + 1]`).
    pub via: Vec<Via>,
    /// Why the walk stopped (`Continue`: the frame limit).
    pub outcome: Outcome,
}

struct Loaded {
    id: TableId,
    base: u64,
    /// For the mapping-to-link-time translation the daemon uses.
    object: ObjectFile,
}

/// Compiles and caches the tables of the files stacks run through.
#[derive(Default)]
pub struct Replayer {
    set: TableSet,
    objects: HashMap<PathBuf, Option<Loaded>>,
    /// Apply the frame-pointer rule where no row covers a pc.
    pub fp_fallback: bool,
}

impl Replayer {
    /// A replayer without frame-pointer fallback.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tables loaded so far, as the BPF maps would hold them.
    pub fn tables(&self) -> &TableSet {
        &self.set
    }

    fn load(&mut self, path: &Path) -> Option<&Loaded> {
        if !self.objects.contains_key(path) {
            let loaded = std::fs::read(path).ok().and_then(|bytes| {
                let table = CompiledTable::from_bytes(&bytes).ok()?;
                let id = self.set.add(&table).ok()?;
                let object = ObjectFile::from_bytes(
                    ObjectId(id.0),
                    path.display().to_string(),
                    ObjectKind::Elf,
                    Bytes::Owned(bytes),
                );
                Some(Loaded {
                    id,
                    base: table.base,
                    object,
                })
            });
            self.objects.insert(path.to_path_buf(), loaded);
        }
        self.objects.get(path)?.as_ref()
    }

    /// The rule for `frame`, or why there is none.
    fn rule_for(&mut self, cap: &Capture, frame: &Frame) -> Result<Rule, Outcome> {
        let pc = frame.lookup_pc();
        let mapping = cap
            .mappings
            .iter()
            .find(|m| m.start <= pc && pc < m.end)
            .ok_or(Outcome::NoRow)?;
        let loaded = self.load(&mapping.path).ok_or(Outcome::NoRow)?;
        // runtime = link-time + bias
        let bias = bias_for(&loaded.object, mapping.start, mapping.offset);
        let rel = pc.wrapping_sub(bias).wrapping_sub(loaded.base);
        let id = loaded.id;
        let info = *self.set.info(id).ok_or(Outcome::BadTable)?;
        find_rule(&self.set.source(), &info, rel)
    }

    /// Where a pc is: the mapped file, the object-relative pc and its rule
    /// (for failure messages).
    pub fn explain(&mut self, cap: &Capture, pc: u64, exact: bool) -> String {
        let frame = Frame {
            regs: Regs { pc, sp: 0, fp: 0 },
            exact_pc: u8::from(exact),
        };
        let lookup = frame.lookup_pc();
        let Some(m) = cap
            .mappings
            .iter()
            .find(|m| m.start <= lookup && lookup < m.end)
        else {
            return format!("{lookup:#x}: in no executable mapping");
        };
        let rule = self.rule_for(cap, &frame);
        format!(
            "{lookup:#x}: {} + {:#x}: {rule:?}",
            m.path.display(),
            lookup - m.start + m.offset
        )
    }

    /// Unwinds `cap`.
    pub fn unwind(&mut self, cap: &Capture) -> Replay {
        let mut frame = Frame::first(cap.regs);
        let mut out = Replay {
            pcs: vec![frame.regs.pc],
            via: Vec::new(),
            outcome: Outcome::Continue,
        };
        while out.pcs.len() < MAX_USER_FRAMES {
            let (rule, via) = match self.rule_for(cap, &frame) {
                Ok(rule) if rule.cfa() != Cfa::NoInfo || !self.fp_fallback => {
                    (rule, Via::Table(rule))
                }
                Ok(_) | Err(Outcome::NoRow) if self.fp_fallback => {
                    (Rule::FRAME_POINTER, Via::FramePointer)
                }
                Ok(rule) => (rule, Via::Table(rule)),
                Err(outcome) => {
                    out.outcome = outcome;
                    return out;
                }
            };
            let stepped = match via {
                Via::Table(_) => step_by_table(rule, &frame, cap),
                Via::FramePointer => step(rule, &frame, cap),
            };
            match stepped {
                Ok(caller) => {
                    frame = caller;
                    out.pcs.push(frame.regs.pc);
                    out.via.push(via);
                }
                Err(outcome) => {
                    out.outcome = outcome;
                    return out;
                }
            }
        }
        out
    }
}

/// Unwinds captures as the BPF stage does (see the module docs).
pub struct BpfReplayer {
    manager: TableManager<MemStore>,
    objects: HashMap<PathBuf, Option<Arc<ObjectFile>>>,
    /// One CPU's rule cache, kept across replays as the kernel keeps it
    /// across samples.
    cache: Vec<RuleCacheSlot>,
}

impl Default for BpfReplayer {
    fn default() -> Self {
        Self::new()
    }
}

impl BpfReplayer {
    /// Room for 4 Mi rows, as the daemon's default budget gives.
    pub fn new() -> Self {
        let store = MemStore::new(StoreCapacity {
            rows: 4 << 20,
            pages: 1 << 18,
            tables: 64,
        });
        Self {
            manager: TableManager::new(store, Arc::default()),
            objects: HashMap::new(),
            cache: vec![RuleCacheSlot::default(); RULE_CACHE_SLOTS as usize],
        }
    }

    fn object(&mut self, path: &Path) -> Option<Arc<ObjectFile>> {
        let next = self.objects.len() as u32;
        self.objects
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                let bytes = std::fs::read(path).ok()?;
                Some(Arc::new(ObjectFile::from_bytes(
                    ObjectId(next),
                    path.display().to_string(),
                    ObjectKind::Elf,
                    Bytes::Owned(bytes),
                )))
            })
            .clone()
    }

    /// Unwinds `cap` (its mappings become process 1's list).
    pub fn unwind(&mut self, cap: &Capture) -> Replay {
        let specs: Vec<MappingSpec> = cap
            .mappings
            .iter()
            .map(|m| {
                let code = match self.object(&m.path) {
                    Some(object) => Code::Object {
                        key: TableKey::of(&object),
                        bias: bias_for(&object, m.start, m.offset),
                        object,
                    },
                    None => Code::FramePointer,
                };
                MappingSpec {
                    start: m.start,
                    end: m.end,
                    code,
                }
            })
            .collect();
        self.manager.set_process(1, &specs);
        let store = self.manager.store();
        let mut frame = Frame::first(cap.regs);
        let mut out = Replay {
            pcs: vec![frame.regs.pc],
            via: Vec::new(),
            outcome: Outcome::Continue,
        };
        let Some(list) = store.procs.get(&1) else {
            out.outcome = Outcome::NoRow;
            return out;
        };
        let src = store.source();
        while out.pcs.len() < MAX_USER_FRAMES {
            let pc = frame.lookup_pc();
            let how = resolve_cached(&src, &store.tables[..], &mut self.cache[..], list, 1, pc);
            match how.and_then(|how| apply(how, &frame, cap)) {
                Ok((caller, _)) => {
                    frame = caller;
                    out.pcs.push(frame.regs.pc);
                }
                Err(outcome) => {
                    out.outcome = outcome;
                    return out;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::{
        process::{Child, Command, Stdio},
        time::Duration,
    };

    use super::*;
    use crate::unwind::fixtures;

    /// Synthetic capture: a fake object is not needed for these, the
    /// mappings are empty and every pc has no row.
    #[test]
    fn unwind_replay_without_tables_stops_or_follows_frame_pointers() {
        // Stack: [fp0] -> saved fp, return address.
        let stack_addr = 0x7000_0000u64;
        let mut stack = vec![0u8; 64];
        let fp0 = stack_addr + 16;
        stack[16..24].copy_from_slice(&(stack_addr + 48).to_le_bytes()); // saved fp
        stack[24..32].copy_from_slice(&0x4010u64.to_le_bytes()); // return address
        stack[48..56].copy_from_slice(&0u64.to_le_bytes());
        stack[56..64].copy_from_slice(&0u64.to_le_bytes()); // end: zero return address
        let cap = Capture {
            regs: Regs {
                pc: 0x4000,
                sp: stack_addr,
                fp: fp0,
            },
            stack_addr,
            stack,
            mappings: Vec::new(),
        };
        let mut r = Replayer::new();
        let out = r.unwind(&cap);
        assert_eq!(out.pcs, [0x4000]);
        assert_eq!(out.outcome, Outcome::NoRow);
        r.fp_fallback = true;
        let out = r.unwind(&cap);
        assert_eq!(out.pcs, [0x4000, 0x4010]);
        assert_eq!(out.via, [Via::FramePointer]);
        assert_eq!(out.outcome, Outcome::EndOfStack);
        // Reads past the captured stack fail.
        assert_eq!(cap.read_u64(stack_addr + 57), None);
        assert_eq!(cap.read_u64(stack_addr - 8), None);
    }

    // ---- a capture of this test's own stack (no root needed) --------------

    /// This thread's registers at the call site and its stack from there
    /// up, with this process's executable file mappings.
    #[inline(always)]
    fn capture_self() -> Capture {
        let (pc, sp, fp): (u64, u64, u64);
        // SAFETY: reads rip, rsp and rbp; no memory is touched.
        unsafe {
            std::arch::asm!(
                "lea {pc}, [rip]",
                "mov {sp}, rsp",
                "mov {fp}, rbp",
                pc = out(reg) pc,
                sp = out(reg) sp,
                fp = out(reg) fp,
                options(nomem, nostack, preserves_flags),
            );
        }
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mut stack_top = 0;
        let mut mappings = Vec::new();
        for line in maps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (lo, hi) = f[0].split_once('-').unwrap();
            let (lo, hi) = (
                u64::from_str_radix(lo, 16).unwrap(),
                u64::from_str_radix(hi, 16).unwrap(),
            );
            if lo <= sp && sp < hi {
                stack_top = hi;
            }
            if f[1].contains('x') && f.len() > 5 && f[5].starts_with('/') {
                mappings.push(MappedFile {
                    path: PathBuf::from(f[5]),
                    start: lo,
                    end: hi,
                    offset: u64::from_str_radix(f[2], 16).unwrap(),
                });
            }
        }
        // SAFETY: [sp, top of the stack mapping) is this thread's own,
        // mapped stack; the frames above sp are not written while copying
        // (callees use the stack below sp).
        let stack =
            unsafe { std::slice::from_raw_parts(sp as *const u8, (stack_top - sp) as usize) }
                .to_vec();
        Capture {
            regs: Regs { pc, sp, fp },
            stack_addr: sp,
            stack,
            mappings,
        }
    }

    #[inline(never)]
    fn level3(out: &mut Option<Capture>) {
        *out = Some(capture_self());
        std::hint::black_box(out);
    }

    #[inline(never)]
    fn level2(out: &mut Option<Capture>) {
        level3(out);
        std::hint::black_box(out);
    }

    #[inline(never)]
    fn level1(out: &mut Option<Capture>) {
        level2(out);
        std::hint::black_box(out);
    }

    /// The function of this test binary containing the runtime `pc`.
    fn function_at(pc: u64) -> Option<String> {
        use object::{Object, ObjectSymbol};
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let file = object::File::parse(&*exe).unwrap();
        // Runtime minus link-time address: from this function's symbol.
        let own = function_at as *const () as u64;
        let sym_addr = |needle: &str| {
            file.symbols()
                .find(|s| s.name().is_ok_and(|n| n.contains(needle)))
                .map(|s| s.address())
        };
        // The function itself (`…11function_at17h<hash>E`), not a closure
        // inside it (`…11function_at28_$u7b$$u7b$closure…`), which some
        // builds list first.
        let bias = own - sym_addr("replay5tests11function_at17h")?;
        let link = pc.wrapping_sub(bias);
        file.symbols()
            .filter(|s| s.address() <= link && link < s.address() + s.size().max(1))
            .find_map(|s| s.name().ok().map(str::to_owned))
    }

    #[test]
    fn unwind_replay_own_stack_like_bpf_without_root() {
        let mut cap = None;
        level1(&mut cap);
        let cap = cap.unwrap();
        let tables = Replayer::new().unwind(&cap);
        let like_bpf = BpfReplayer::new().unwind(&cap);
        let names: Vec<String> = like_bpf
            .pcs
            .iter()
            .enumerate()
            .map(|(i, &pc)| function_at(if i == 0 { pc } else { pc - 1 }).unwrap_or_default())
            .collect();
        let chain = [
            "level3",
            "level2",
            "level1",
            "unwind_replay_own_stack_like_bpf",
        ];
        for (i, want) in chain.iter().enumerate() {
            assert!(
                names.get(i).is_some_and(|n| n.contains(want)),
                "frame {i} is not {want}: {names:#?}"
            );
        }
        // Through the test harness and std to the thread's start.
        assert_eq!(like_bpf.outcome, Outcome::EndOfStack, "{names:#?}");
        assert_eq!(
            (&like_bpf.pcs, like_bpf.outcome),
            (&tables.pcs, tables.outcome)
        );
        assert!(like_bpf.pcs.len() > chain.len() + 3, "{names:#?}");
    }

    // ---- live captures with gdb -------------------------------------------

    /// gdb's view of one frame.
    #[derive(Clone, Debug)]
    struct GdbFrame {
        pc: u64,
        kind: i32,
        name: String,
    }

    const GDB_SCRIPT: &str = r#"
import gdb, os
# Bytes below the stack pointer captured too: just after an epilogue's
# `pop %rbp` some CFI (libgcc_s's) still says rbp is saved at CFA - 16,
# i.e. just below sp, which the BPF program reads like any user memory.
BELOW_SP = 256
out = os.environ["UNWIND_CAPTURE_DIR"]
gdb.execute("set backtrace past-main on")
gdb.execute("set backtrace past-entry on")
gdb.execute("set backtrace limit 300")
gdb.execute("thread %s" % os.environ.get("UNWIND_CAPTURE_THREAD", "1"), to_string=True)
inf = gdb.selected_inferior()
frame = gdb.newest_frame()
def reg(name):
    return int(frame.read_register(name)) & 0xffffffffffffffff
rip, rsp, rbp = reg("rip"), reg("rsp"), reg("rbp")
maps = open("/proc/%d/maps" % inf.pid).read()
open(out + "/maps", "w").write(maps)
top = None
for line in maps.splitlines():
    f = line.split()
    lo, hi = [int(x, 16) for x in f[0].split("-")]
    if lo <= rsp < hi:
        top, base = hi, max(lo, rsp - BELOW_SP)
    if len(f) > 5 and f[5] == "[vdso]":
        open(out + "/vdso.so", "wb").write(bytes(inf.read_memory(lo, hi - lo)))
open(out + "/stack.bin", "wb").write(bytes(inf.read_memory(base, top - base)))
lines = ["%x %x %x %x" % (rip, rsp, rbp, base)]
f = frame
while f is not None:
    if f.type() != gdb.INLINE_FRAME:
        lines.append("%x %d %s" % (f.pc(), f.type(), f.name() or "??"))
    try:
        f = f.older()
    except gdb.error:
        break
open(out + "/frames", "w").write("\n".join(lines) + "\n")
"#;

    /// gdb's `TAILCALL_FRAME` frame type.
    const GDB_TAILCALL_FRAME: i32 = 3;
    /// gdb's `SIGTRAMP_FRAME` frame type.
    const GDB_SIGTRAMP_FRAME: i32 = 4;

    /// A scratch directory, kept (and printed) if `UNWIND_KEEP_CAPTURES` is
    /// set, for looking at a failing capture.
    fn scratch() -> (Option<tempfile::TempDir>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os("UNWIND_KEEP_CAPTURES").is_some() {
            let path = dir.keep();
            eprintln!("keeping captures in {}", path.display());
            (None, path)
        } else {
            let path = dir.path().to_path_buf();
            (Some(dir), path)
        }
    }

    /// Why live captures cannot run here, if they cannot.
    fn capture_unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root (attaching gdb needs ptrace rights)".into());
        }
        let gdb = Command::new("gdb")
            .args(["-nx", "-batch", "-ex", "python print(1)"])
            .output();
        match gdb {
            Ok(o) if o.status.success() => None,
            _ => Some("gdb with Python is not installed".into()),
        }
    }

    /// Attaches gdb to `pid`, selects gdb thread `thread` and captures it.
    fn capture(pid: u32, thread: u32, dir: &Path) -> (Capture, Vec<GdbFrame>) {
        std::fs::create_dir_all(dir).unwrap();
        let script = dir.join("capture.py");
        std::fs::write(&script, GDB_SCRIPT).unwrap();
        let out = Command::new("gdb")
            .args(["-nx", "-batch", "-iex", "set debuginfod enabled off", "-p"])
            .arg(pid.to_string())
            .arg("-x")
            .arg(&script)
            .env("UNWIND_CAPTURE_DIR", dir)
            .env("UNWIND_CAPTURE_THREAD", thread.to_string())
            .env_remove("DEBUGINFOD_URLS")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let frames = std::fs::read_to_string(dir.join("frames")).unwrap_or_else(|_| {
            panic!(
                "gdb captured nothing: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mut lines = frames.lines();
        let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
        let regs: Vec<u64> = lines.next().unwrap().split(' ').map(hex).collect();
        let gdb_frames = lines
            .map(|l| {
                let mut f = l.splitn(3, ' ');
                GdbFrame {
                    pc: hex(f.next().unwrap()),
                    kind: f.next().unwrap().parse().unwrap(),
                    name: f.next().unwrap_or("??").to_owned(),
                }
            })
            .collect();
        let maps = std::fs::read_to_string(dir.join("maps")).unwrap();
        let mappings = maps
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 6 || !f[1].contains('x') {
                    return None;
                }
                let (lo, hi) = f[0].split_once('-')?;
                let path = match f[5] {
                    "[vdso]" => dir.join("vdso.so"),
                    p if p.starts_with('/') => PathBuf::from(p),
                    _ => return None,
                };
                Some(MappedFile {
                    path,
                    start: hex(lo),
                    end: hex(hi),
                    offset: hex(f[2]),
                })
            })
            .collect();
        let cap = Capture {
            regs: Regs {
                pc: regs[0],
                sp: regs[1],
                fp: regs[2],
            },
            stack_addr: regs[3],
            stack: std::fs::read(dir.join("stack.bin")).unwrap(),
            mappings,
        };
        (cap, gdb_frames)
    }

    /// Kills the fixture when the test ends, pass or fail.
    struct Running(Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Stats over a fixture's captures.
    #[derive(Default)]
    struct Tally {
        captures: usize,
        frames: usize,
        signal_frames: usize,
        /// Captures inside libgcc's unwinder, where neither gdb nor the
        /// replay can reach the stack's start.
        inconclusive: usize,
        names: std::collections::BTreeSet<String>,
    }

    /// Runs `bin args`, captures gdb thread `thread` `n` times, replays each
    /// capture and compares with gdb's backtrace.
    fn replay_live(
        bin: &Path,
        args: &[&str],
        thread: u32,
        n: usize,
        dir: &Path,
        tally: &mut Tally,
    ) {
        let child = Command::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let child = Running(child);
        std::thread::sleep(Duration::from_millis(300));
        let mut replayer = Replayer::new();
        let mut bpf = BpfReplayer::new();
        for i in 0..n {
            std::thread::sleep(Duration::from_millis(37 + 61 * (i as u64 % 5)));
            let capdir = dir.join(format!(
                "{}-{}-{i}",
                bin.file_name().unwrap().to_string_lossy(),
                args.join("")
            ));
            let (cap, gdb) = capture(child.0.id(), thread, &capdir);
            let got = replayer.unwind(&cap);
            // Tail-call frames are gdb's reconstruction from DWARF call-site
            // information: nothing on the stack says they exist.
            let gdb: Vec<GdbFrame> = gdb
                .into_iter()
                .filter(|f| f.kind != GDB_TAILCALL_FRAME)
                .collect();
            let want: Vec<u64> = gdb.iter().map(|f| f.pc).collect();
            // libgcc's unwinder overwrites its own frame's saved registers
            // while it installs a landing pad's context: from inside it no
            // unwinder can go further (gdb follows the same overwritten
            // slots as we do, and stops where we stop or goes on by its
            // prologue guesses, through "return addresses" in no executable
            // mapping: once 0x7b6 and a stack address). Such a capture says
            // nothing either way.
            let mapped = |pc: u64| cap.mappings.iter().any(|m| m.start <= pc && pc < m.end);
            let gdb_invented =
                want.starts_with(&got.pcs) && want[got.pcs.len()..].iter().any(|&pc| !mapped(pc));
            if (got.pcs == want || gdb_invented)
                && got.outcome != Outcome::EndOfStack
                && gdb.iter().any(|f| f.name.starts_with("_Unwind_"))
            {
                tally.inconclusive += 1;
                assert!(
                    tally.inconclusive <= n / 4,
                    "{}: {} captures inside libgcc's unwinder",
                    bin.display(),
                    tally.inconclusive
                );
                continue;
            }
            let mut listing = || {
                let mut s = String::new();
                for (i, f) in gdb.iter().enumerate() {
                    let ours = got.pcs.get(i).map_or("-".into(), |p| format!("{p:#x}"));
                    let via = got
                        .via
                        .get(i.wrapping_sub(1))
                        .map_or(String::new(), |v| format!("{v:?}"));
                    s += &format!(
                        "\n  #{i:<3} gdb {:#014x} ours {ours:>14} {:<40} (via {via})",
                        f.pc, f.name
                    );
                }
                for p in got.pcs.iter().skip(gdb.len()) {
                    s += &format!("\n  extra ours {p:#x}");
                }
                if let Some(&last) = got.pcs.last() {
                    let exact = got.pcs.len() == 1
                        || got
                            .via
                            .last()
                            .is_some_and(|v| *v == Via::Table(Rule::SIGNAL));
                    s += &format!("\n  stopped at {}", replayer.explain(&cap, last, exact));
                }
                s
            };
            assert_eq!(
                got.pcs,
                want,
                "{}: replay differs from gdb (outcome {:?}, capture in {}):{}",
                bin.display(),
                got.outcome,
                capdir.display(),
                listing()
            );
            assert_eq!(
                got.outcome,
                Outcome::EndOfStack,
                "{}: walk did not reach the end of the stack:{}",
                bin.display(),
                listing()
            );
            // The BPF stage's walk finds the same frames.
            let like_bpf = bpf.unwind(&cap);
            assert_eq!(
                (&like_bpf.pcs, like_bpf.outcome),
                (&got.pcs, got.outcome),
                "{}: the BPF path differs from the tables' walk:{}",
                bin.display(),
                listing()
            );
            let last = gdb.last().map(|f| f.name.as_str()).unwrap_or_default();
            assert!(
                matches!(last, "_start" | "clone3" | "clone"),
                "{}: gdb's backtrace ends in {last}, not at the stack's start:{}",
                bin.display(),
                listing()
            );
            assert!(
                gdb.iter()
                    .any(|f| f.name == "main" || f.name == "start_thread")
            );
            tally.captures += 1;
            tally.frames += gdb.len();
            tally.signal_frames += gdb.iter().filter(|f| f.kind == GDB_SIGTRAMP_FRAME).count();
            tally.names.extend(gdb.iter().map(|f| f.name.clone()));
        }
        drop(child);
    }

    fn report(name: &str, t: &Tally) {
        eprintln!(
            "replay {name}: {} captures, {} frames equal to gdb's, {} signal frames, {} inconclusive; functions seen: {}",
            t.captures,
            t.frames,
            t.signal_frames,
            t.inconclusive,
            t.names.iter().cloned().collect::<Vec<_>>().join(" ")
        );
    }

    #[test]
    fn unwind_replay_c_fixture_against_gdb() {
        if let Some(why) = capture_unavailable() {
            eprintln!("SKIPPED: {why}");
            return;
        }
        let (_keep, dir) = scratch();
        let bin = fixtures::c_fixture(&dir);
        let mut main = Tally::default();
        replay_live(&bin, &[], 1, 12, &dir, &mut main);
        report("C main thread", &main);
        let mut signal = Tally::default();
        replay_live(&bin, &["s"], 1, 4, &dir, &mut signal);
        report("C in a signal handler", &signal);
        assert!(
            signal.signal_frames > 0,
            "no capture went through a signal frame"
        );
        let mut worker = Tally::default();
        replay_live(&bin, &["t"], 2, 4, &dir, &mut worker);
        report("C worker thread", &worker);
        assert!(worker.names.contains("start_thread"));
        assert!(
            main.names.contains("qsort")
                || main.names.contains("msort_with_tmp")
                || main.names.iter().any(|n| n.contains("msort")),
            "no capture inside qsort"
        );
    }

    #[test]
    fn unwind_replay_cxx_fixture_against_gdb() {
        if let Some(why) = capture_unavailable() {
            eprintln!("SKIPPED: {why}");
            return;
        }
        let (_keep, dir) = scratch();
        let bin = fixtures::cxx_fixture(&dir);
        let mut t = Tally::default();
        replay_live(&bin, &[], 1, 12, &dir, &mut t);
        report("C++", &t);
    }

    #[test]
    fn unwind_replay_rust_fixture_against_gdb() {
        if let Some(why) = capture_unavailable() {
            eprintln!("SKIPPED: {why}");
            return;
        }
        let (_keep, dir) = scratch();
        let bin = fixtures::rust_fixture(&dir);
        let mut t = Tally::default();
        replay_live(&bin, &[], 1, 12, &dir, &mut t);
        report("Rust", &t);
    }
}
