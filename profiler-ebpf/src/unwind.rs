//! The unwind stage, tail-called for samples of processes that have a
//! mapping list in `UNWIND_PROCS`: walks the user stack with the shared
//! per-frame code (`profiler_common::unwind`'s `resolve_cached`, split in
//! its two halves, then `apply`: mapping, table, row, step; frame pointers
//! where a mapping has no table; the rule of a pc resolved before comes
//! from this CPU's `RULE_CACHE`),
//! [`UNWIND_FRAMES_PER_STAGE`] frames per call, and tail-calls itself until
//! the walk ends or [`MAX_USER_FRAMES`] frames are recorded. It then records
//! the outcome in the header, counts it, and hands the sample on like the
//! frame-pointer path does (Go stage or submit).
//!
//! Stack reads are served from a copy of the stack's top [`STACK_WINDOW`]
//! bytes, taken with one `bpf_probe_read_user` when the walk starts; only
//! reads outside it go to the helper. Each helper call costs ~90 ns here
//! (bpftrace's frame-pointer `ustack` of the 33-frame `cpu` bench workload:
//! 3.3 µs against 0.3 µs for a bare count), and a walk made one or two per
//! frame.
//!
//! The interrupted user registers come from the perf context when the
//! sample hit user mode, else from the task's saved user registers
//! (`bpf_task_pt_regs`, Linux 5.15+; only this stage calls it, so an older
//! kernel rejects this stage alone and user space keeps frame pointers).

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_probe_read_kernel,
        bpf_probe_read_user, bpf_task_pt_regs, generated,
    },
    programs::PerfEventContext,
};
use profiler_common::{
    Counter, MAX_KERNEL_FRAMES, MAX_USER_FRAMES, UNWIND_FRAMES_PER_STAGE, UserUnwinder, prog_slot,
    sample_flags,
    unwind::{
        Frame, Memory, Outcome, PageEntry, ProcMappings, Regs, Resolution, Row, RuleCache,
        RuleCacheSlot, TableIndex, TableInfo, TableSource, apply, cached_rule, resolve_and_keep,
    },
};

use crate::{
    maps::{
        DATA_WORDS, PROGS, RULE_CACHE, SCRATCH, STACK_WINDOW, SampleBuf, UNWIND_OUTCOMES,
        UNWIND_PAGES, UNWIND_PROCS, UNWIND_ROWS, UNWIND_STATE, UNWIND_TABLES, UnwindState, count,
        count_n,
    },
    sample,
};

/// The row, page and table arrays.
struct MapTables;

impl TableSource for MapTables {
    #[inline(always)]
    fn row(&self, index: u32) -> Option<Row> {
        UNWIND_ROWS.get(index).copied()
    }
    #[inline(always)]
    fn page(&self, index: u32) -> Option<PageEntry> {
        UNWIND_PAGES.get(index).copied()
    }
}

impl TableIndex for MapTables {
    #[inline(always)]
    fn table(&self, id: u32) -> Option<TableInfo> {
        UNWIND_TABLES.get(id).copied()
    }
}

/// This CPU's `RULE_CACHE`.
struct MapCache;

impl RuleCache for MapCache {
    #[inline(always)]
    fn slot(&self, index: u32) -> Option<RuleCacheSlot> {
        RULE_CACHE.get(index).copied()
    }
    #[inline(always)]
    fn keep(&mut self, index: u32, slot: RuleCacheSlot) {
        if let Some(s) = RULE_CACHE.get_ptr_mut(index) {
            // SAFETY: this CPU's slot; the program cannot be preempted on it.
            unsafe { *s = slot };
            count(Counter::RuleCacheMisses);
        }
    }
}

/// The sampled process's stack: the window copied when the walk started,
/// else `bpf_probe_read_user`.
struct UserStack<'a> {
    base: u64,
    len: u64,
    window: &'a [u8; STACK_WINDOW],
}

impl Memory for UserStack<'_> {
    // A BPF function of its own: inlined, the verifier followed both ways
    // of every read through the rest of the walk (224,000 instructions
    // processed instead of 50,000, ~140 ms more start-up).
    #[inline(never)]
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let off = addr.wrapping_sub(self.base);
        if self.len >= 8 && off <= self.len - 8 {
            let off = off as usize & (STACK_WINDOW - 1);
            if off <= STACK_WINDOW - 8 {
                // SAFETY: `off + 8 <= STACK_WINDOW`; any alignment.
                return Some(unsafe {
                    core::ptr::read_unaligned(self.window.as_ptr().add(off).cast::<u64>())
                });
            }
        }
        // SAFETY: the helper checks the user address.
        unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
    }
}

/// Copies the stack's top from `sp` into `state`: a whole window, or, when
/// the stack ends less than a window above `sp`, the rest of `sp`'s page.
#[inline(always)]
fn copy_stack(state: &mut UnwindState, sp: u64) {
    let base = sp & !7;
    state.stack_base = base;
    state.stack_len = 0;
    let dst = state.stack.as_mut_ptr().cast();
    // SAFETY: `dst` has STACK_WINDOW writable bytes; the helper checks the
    // user address.
    if unsafe { generated::bpf_probe_read_user(dst, STACK_WINDOW as u32, base as *const _) } == 0 {
        state.stack_len = STACK_WINDOW as u64;
        return;
    }
    let rest = (4096 - (base & 4095)) as u32;
    if rest == 0 || rest > STACK_WINDOW as u32 {
        return;
    }
    // SAFETY: as above, `rest <= STACK_WINDOW`.
    if unsafe { generated::bpf_probe_read_user(dst, rest, base as *const _) } == 0 {
        state.stack_len = u64::from(rest);
    }
}

/// From the sampler: hands the sample to the unwind stage if `pid` has a
/// mapping list. Returns only if it has none or the tail call failed.
#[inline(always)]
pub fn begin(ctx: &PerfEventContext, pid: u32) {
    if UNWIND_PROCS.get_ptr(pid).is_none() {
        return;
    }
    let Some(state) = UNWIND_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; the stages of one sample run on one CPU
    // without preemption.
    unsafe {
        (*state).frames = 0;
        (*state).started = 0;
        (*state).cache_hits = 0;
    }
    // SAFETY: the context is this program's; on success this does not
    // return.
    unsafe { PROGS.tail_call(ctx, prog_slot::UNWIND) };
    count(Counter::TailCallFailed);
}

/// One call of the stage.
#[inline(always)]
pub fn stage(ctx: &PerfEventContext) {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let (Some(state), Some(buf)) = (UNWIND_STATE.get_ptr_mut(0), SCRATCH.get_ptr_mut(0)) else {
        return;
    };
    // SAFETY: this CPU's slots, filled by the sampler and earlier calls.
    let (state, buf): (&mut UnwindState, &mut SampleBuf) = unsafe { (&mut *state, &mut *buf) };
    let Some(list) = UNWIND_PROCS.get_ptr(pid) else {
        // The process's list went away since the sampler looked.
        sample::frame_pointer_user_stack(ctx, buf);
        sample::after_user_stack(ctx, pid);
        return;
    };
    // SAFETY: a map value, valid for this program's run.
    let list: &ProcMappings = unsafe { &*list };
    if state.started == 0 {
        let Some(regs) = user_regs(ctx) else {
            return finish(ctx, pid, state, buf, Outcome::BadRead);
        };
        state.frame = Frame::first(regs);
        state.frames = 0;
        state.started = 1;
        copy_stack(state, regs.sp);
    }
    let stack = UserStack {
        base: state.stack_base,
        len: state.stack_len,
        window: &state.stack,
    };
    let kernel = usize::from(buf.header.kernel_frames).min(MAX_KERNEL_FRAMES);
    for _ in 0..UNWIND_FRAMES_PER_STAGE {
        let n = state.frames as usize;
        if n >= MAX_USER_FRAMES {
            return finish(ctx, pid, state, buf, Outcome::Continue);
        }
        let Some(slot) = buf.data.get_mut(kernel + n) else {
            return finish(ctx, pid, state, buf, Outcome::Continue);
        };
        *slot = state.frame.regs.pc;
        state.frames += 1;
        let pc = state.frame.lookup_pc();
        // Once per frame, before the entries (see `resolve_and_keep`).
        let generation = list.generation_now();
        let how = match cached_rule(&MapCache, pid, generation, pc) {
            Some(rule) => {
                state.cache_hits += 1;
                Resolution::Table(rule)
            }
            None => match resolve_miss(list, pid, generation, pc) {
                Ok(how) => how,
                Err(outcome) => return finish(ctx, pid, state, buf, outcome),
            },
        };
        match apply(how, &state.frame, &stack) {
            Ok((caller, _)) => state.frame = caller,
            Err(outcome) => return finish(ctx, pid, state, buf, outcome),
        }
    }
    if state.frames as usize >= MAX_USER_FRAMES {
        return finish(ctx, pid, state, buf, Outcome::Continue);
    }
    // SAFETY: the context is this program's; on success this does not
    // return.
    unsafe { PROGS.tail_call(ctx, prog_slot::UNWIND) };
    count(Counter::TailCallFailed);
    finish(ctx, pid, state, buf, Outcome::Continue);
}

const _: () = assert!(MAX_KERNEL_FRAMES + MAX_USER_FRAMES <= DATA_WORDS);

/// A cache miss: `resolve_and_keep` through the maps. A BPF function of its
/// own, like `UserStack::read_u64`, so that the verifier does not follow
/// both ways of the cache check through the rest of the walk (inlined:
/// 216,538 instructions processed for this stage; as a function: 121,822).
#[inline(never)]
fn resolve_miss(
    list: &ProcMappings,
    pid: u32,
    generation: u32,
    pc: u64,
) -> Result<Resolution, Outcome> {
    resolve_and_keep(
        &MapTables,
        &MapTables,
        &mut MapCache,
        list,
        pid,
        generation,
        pc,
    )
}

/// Records the walk's result in the header, counts it and hands the sample
/// on.
#[inline(always)]
fn finish(
    ctx: &PerfEventContext,
    pid: u32,
    state: &UnwindState,
    buf: &mut SampleBuf,
    outcome: Outcome,
) {
    let frames = (state.frames as usize).min(MAX_USER_FRAMES);
    buf.header.user_frames = frames as u16;
    buf.header.user_unwinder = UserUnwinder::Table as u8;
    buf.header.unwind_outcome = outcome as u8;
    if outcome == Outcome::Continue {
        buf.header.flags |= sample_flags::USER_TRUNCATED;
    }
    count_n(Counter::RuleCacheHits, state.cache_hits);
    if let Some(slot) = UNWIND_OUTCOMES.get_ptr_mut(outcome as u32) {
        // SAFETY: a per-CPU slot; this program cannot be preempted on it.
        unsafe { *slot += 1 };
    }
    sample::after_user_stack(ctx, pid);
}

/// The interrupted user registers: the perf context's if the sample hit
/// user mode, else the ones the task saved on entering the kernel.
#[inline(always)]
fn user_regs(ctx: &PerfEventContext) -> Option<Regs> {
    if sample::interrupted_user_mode(ctx) {
        // SAFETY: the perf context's register block is readable.
        let regs = unsafe { &(*ctx.ctx).regs };
        return Some(Regs {
            pc: regs.rip,
            sp: regs.rsp,
            fp: regs.rbp,
        });
    }
    // SAFETY: no arguments; the current task as a BTF pointer.
    let task = unsafe { bpf_get_current_task_btf() };
    // SAFETY: `task` is the BTF task pointer the helper wants.
    let saved = unsafe { bpf_task_pt_regs(task) } as *const pt_regs;
    if saved.is_null() {
        return None;
    }
    // SAFETY: kernel reads through the helper, which checks the address.
    let read = |field: *const u64| unsafe { bpf_probe_read_kernel(field) }.ok();
    // SAFETY: field addresses inside the saved register block (not read here).
    let (ip, sp, bp) = unsafe {
        (
            core::ptr::addr_of!((*saved).rip),
            core::ptr::addr_of!((*saved).rsp),
            core::ptr::addr_of!((*saved).rbp),
        )
    };
    Some(Regs {
        pc: read(ip)?,
        sp: read(sp)?,
        fp: read(bp)?,
    })
}
