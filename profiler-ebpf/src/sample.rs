//! Builds one sample record: ids, comm, timestamp, the kernel stack (none
//! when the sample interrupted user mode) and the user stack, handed to the
//! unwind stage for processes with unwind tables and otherwise walked here
//! by the kernel's frame-pointer walk; hands it to
//! the Go stage for Go processes; and copies it to the ring buffer with only
//! the frames and extension bytes it holds.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack,
        bpf_ktime_get_ns,
    },
    programs::PerfEventContext,
};
use profiler_common::{
    Counter, MAX_EXT_BYTES, MAX_KERNEL_FRAMES, MAX_USER_FRAMES, RecordKind, SampleHeader,
    UserUnwinder, proc_flags, prog_slot, sample_flags,
};

use crate::{
    filter,
    maps::{CONFIG, EVENTS, PROCS, PROGS, SCRATCH, SampleBuf, count, wakeup_flags},
    unwind,
};

const HEADER_BYTES: usize = core::mem::size_of::<SampleHeader>();

/// Records the sample `ctx` fired for, unless it is the idle task or filtered.
#[inline(always)]
pub fn record(ctx: &PerfEventContext) {
    count(Counter::Samples);
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if pid == 0 {
        count(Counter::Idle);
        return;
    }
    if !filter::wanted(pid) {
        count(Counter::Filtered);
        return;
    }
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot is ours for the length of this program.
    let buf: &mut SampleBuf = unsafe { &mut *buf };
    let mut flags = 0u32;

    // A sample that interrupted user mode has no kernel frames: skip the
    // helper (~0.1 µs a sample, the kernel's callchain set-up).
    let kernel = if interrupted_user_mode(ctx) {
        flags |= sample_flags::USER_MODE;
        Some(0)
    } else {
        read_stack(ctx, buf.data.as_mut_ptr(), MAX_KERNEL_FRAMES, 0)
    };
    let kernel = match kernel {
        Some(n) => n,
        None => {
            count(Counter::KernelStackError);
            flags |= sample_flags::KERNEL_STACK_ERROR;
            0
        }
    };
    if kernel == MAX_KERNEL_FRAMES {
        flags |= sample_flags::KERNEL_TRUNCATED;
    }

    buf.header = SampleHeader {
        kind: RecordKind::Sample as u32,
        flags,
        // SAFETY: no arguments, no memory access.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        pid,
        tid: pid_tgid as u32,
        // SAFETY: no arguments, no memory access.
        cpu: unsafe { bpf_get_smp_processor_id() },
        kernel_frames: kernel as u16,
        user_frames: 0,
        user_unwinder: UserUnwinder::FramePointer as u8,
        unwind_outcome: 0,
        ext_len: 0,
        reserved: 0,
        comm: bpf_get_current_comm().unwrap_or_default(),
    };

    // Processes with unwind tables: the unwind stage takes over (and does
    // not come back) unless the tail call fails.
    unwind::begin(ctx, pid);
    frame_pointer_user_stack(ctx, buf);
    after_user_stack(ctx, pid);
}

/// True if the sample interrupted user mode (the perf context's saved code
/// segment is a ring-3 one); [`record`] then flags it `USER_MODE`.
#[inline(always)]
pub fn interrupted_user_mode(ctx: &PerfEventContext) -> bool {
    // SAFETY: the perf context's register block is readable.
    unsafe { (*ctx.ctx).regs.cs & 3 == 3 }
}

/// Fills the user part of `buf` with the kernel's frame-pointer walk.
#[inline(always)]
pub fn frame_pointer_user_stack(ctx: &PerfEventContext, buf: &mut SampleBuf) {
    let kernel = usize::from(buf.header.kernel_frames).min(MAX_KERNEL_FRAMES);
    // SAFETY: `kernel <= MAX_KERNEL_FRAMES`, so MAX_USER_FRAMES slots follow.
    let user_ptr = unsafe { buf.data.as_mut_ptr().add(kernel) };
    let user = match read_stack(ctx, user_ptr, MAX_USER_FRAMES, u64::from(BPF_F_USER_STACK)) {
        Some(n) => n,
        None => {
            count(Counter::UserStackError);
            buf.header.flags |= sample_flags::USER_STACK_ERROR;
            0
        }
    };
    if user == MAX_USER_FRAMES {
        buf.header.flags |= sample_flags::USER_TRUNCATED;
    }
    buf.header.user_frames = user as u16;
    buf.header.user_unwinder = UserUnwinder::FramePointer as u8;
}

/// The stages after the user stack: Go state for Go processes (a tail call
/// that submits), else the ring buffer directly.
#[inline(always)]
pub fn after_user_stack(ctx: &PerfEventContext, pid: u32) {
    if let Some(info) = PROCS.get_ptr(pid) {
        // SAFETY: a map value, valid for this program's run.
        let flags = unsafe { (*info).flags };
        if flags & proc_flags::GO != 0 && CONFIG.load().task_fsbase != 0 {
            // SAFETY: the context is this program's; on success this does
            // not return.
            unsafe { PROGS.tail_call(ctx, prog_slot::GO) };
            count(Counter::TailCallFailed);
        }
    }
    submit();
}

/// Copies this CPU's assembled sample (header, frames, extension) to the
/// ring buffer.
#[inline(always)]
pub fn submit() {
    let Some(buf) = SCRATCH.get_ptr(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot this sample was built in.
    let buf: &SampleBuf = unsafe { &*buf };
    let frames = usize::from(buf.header.kernel_frames).min(MAX_KERNEL_FRAMES)
        + usize::from(buf.header.user_frames).min(MAX_USER_FRAMES);
    let ext = usize::from(buf.header.ext_len).min(MAX_EXT_BYTES);
    let len = HEADER_BYTES + 8 * frames + ext;
    // SAFETY: `len` is at most the size of `SampleBuf` (every part is bounded).
    let record =
        unsafe { core::slice::from_raw_parts((buf as *const SampleBuf).cast::<u8>(), len) };
    let submit = wakeup_flags(len as u64);
    match EVENTS.output::<[u8]>(record, submit) {
        Ok(()) => count(Counter::Submitted),
        Err(_) => count(Counter::RingBufFull),
    }
}

/// Reads up to `max` frames into `dst`; the number read, or `None` on error.
#[inline(always)]
fn read_stack(ctx: &PerfEventContext, dst: *mut u64, max: usize, flags: u64) -> Option<usize> {
    // SAFETY: `dst` points at `max` writable u64 slots of the scratch map.
    let ret = unsafe { bpf_get_stack(ctx.as_ptr(), dst.cast(), (max * 8) as u32, flags) };
    if ret < 0 {
        return None;
    }
    // Bound it for the verifier even though the helper never returns more.
    let n = (ret as usize) / 8;
    Some(if n > max { max } else { n })
}
