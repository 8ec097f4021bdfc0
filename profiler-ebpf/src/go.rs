//! The Go stage, tail-called for samples of Go processes: reads the running
//! goroutine's id, status, wait reason and label set (with the shared
//! reader in `profiler_common::golang`), sends a label set the first time
//! it is seen, appends the state to the sample and submits it.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_loop, bpf_probe_read_kernel,
        bpf_probe_read_user_buf,
    },
    programs::PerfEventContext,
};
use profiler_common::{
    Counter, LabelsKey, MAX_KERNEL_FRAMES, MAX_USER_FRAMES, RecordKind,
    golang::{
        GoMemory, GoOffsets, GoSampleExt, MAX_GO_LABELS, MAX_LABEL_STEPS, ReadError, Step,
        go_flags, labels_begin, labels_record_len, labels_step, read_state,
    },
};

use crate::{
    maps::{
        CONFIG, EVENTS, GO_LABELS_SEEN, GO_OFFSETS, LABELS_SCRATCH, PROCS, SCRATCH, SampleBuf,
        count, wakeup_flags,
    },
    sample,
};

/// The traced process's memory, through `bpf_probe_read_user`.
struct UserMemory;

impl GoMemory for UserMemory {
    #[inline(always)]
    fn read(&self, addr: u64, dst: &mut [u8]) -> bool {
        // SAFETY: the helper checks the user address; `dst` is ours.
        unsafe { bpf_probe_read_user_buf(addr as *const u8, dst) }.is_ok()
    }
}

/// Reads the goroutine state into this CPU's sample and submits it.
#[inline(always)]
pub fn record(_ctx: &PerfEventContext) {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(buf) = SCRATCH.get_ptr_mut(0) {
        // SAFETY: the per-CPU slot the sample stage filled for this sample.
        let buf: &mut SampleBuf = unsafe { &mut *buf };
        append_state(pid, buf);
    }
    sample::submit();
}

#[inline(always)]
fn append_state(pid: u32, buf: &mut SampleBuf) -> Option<()> {
    // SAFETY: a map value, valid for this program's run.
    let info = unsafe { *PROCS.get_ptr(pid)? };
    let offsets: &GoOffsets = GO_OFFSETS.get(info.go_offsets)?;
    // SAFETY: no arguments; returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    let fsbase_at = task.wrapping_add(u64::from(CONFIG.load().task_fsbase));
    // SAFETY: a kernel read through the helper, which checks the address.
    let fsbase: u64 = unsafe { bpf_probe_read_kernel(fsbase_at as *const u64) }.ok()?;
    let g = UserMemory
        .u64_at(fsbase.wrapping_add(info.go_tls as i64 as u64))
        .unwrap_or(0);

    let frames = usize::from(buf.header.kernel_frames).min(MAX_KERNEL_FRAMES)
        + usize::from(buf.header.user_frames).min(MAX_USER_FRAMES);
    let slot = buf.data.get_mut(frames..frames + 4)?;
    // SAFETY: four u64 words are exactly one GoSampleExt (32 bytes, align 8).
    let ext: &mut GoSampleExt = unsafe { &mut *slot.as_mut_ptr().cast::<GoSampleExt>() };
    read_state(&UserMemory, g, offsets, ext);
    count(Counter::GoState);
    if ext.flags & go_flags::READ_ERROR != 0 {
        count(Counter::GoReadError);
    }
    if ext.labels != 0 {
        send_labels(pid, ext, offsets);
    }
    buf.header.ext_len = core::mem::size_of::<GoSampleExt>() as u16;
    Some(())
}

/// Sends the goroutine's label set unless it was sent already.
#[inline(always)]
fn send_labels(pid: u32, ext: &mut GoSampleExt, offsets: &GoOffsets) -> Option<()> {
    let key = LabelsKey {
        pid,
        reserved: 0,
        labels: ext.labels,
    };
    // SAFETY: a map value read by copy.
    if let Some(seen) = unsafe { GO_LABELS_SEEN.get(&key) }
        && *seen == ext.labels_fingerprint
    {
        return Some(());
    }
    // SAFETY: this CPU's scratch slot.
    let scratch = unsafe { &mut *LABELS_SCRATCH.get_ptr_mut(0)? };
    let rec = &mut scratch.record;
    rec.kind = RecordKind::GoLabels as u32;
    rec.pid = pid;
    rec.labels = ext.labels;
    rec.fingerprint = ext.labels_fingerprint;
    match labels_begin(&UserMemory, ext.labels, offsets, rec) {
        Err(ReadError) => {
            count(Counter::GoReadError);
            return None;
        }
        Ok(None) => {}
        Ok(Some(cursor)) => {
            scratch.cursor = cursor;
            scratch.offsets = *offsets;
            scratch.failed = 0;
            // One label slot per callback: the verifier checks the step
            // once instead of every iteration of the nested bucket loops.
            // SAFETY: `label_step` has the callback signature bpf_loop wants.
            unsafe {
                bpf_loop(
                    MAX_LABEL_STEPS,
                    label_step as *mut c_void,
                    core::ptr::null_mut(),
                    0,
                )
            };
            if scratch.failed != 0 {
                count(Counter::GoReadError);
                return None;
            }
        }
    }
    let n = (rec.count as usize).min(MAX_GO_LABELS);
    let len = labels_record_len(n);
    // SAFETY: `len` is at most the record's size.
    let bytes = unsafe { core::slice::from_raw_parts(rec as *const _ as *const u8, len) };
    match EVENTS.output::<[u8]>(bytes, wakeup_flags(len as u64)) {
        Ok(()) => {
            count(Counter::GoLabelsSent);
            ext.flags |= go_flags::LABELS_SENT;
            let _ = GO_LABELS_SEEN.insert(&key, &ext.labels_fingerprint, 0);
        }
        Err(_) => count(Counter::GoLabelsLost),
    }
    Some(())
}

/// One `bpf_loop` iteration of reading a label set: returns 1 to stop.
#[inline(never)]
extern "C" fn label_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(scratch) = LABELS_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot, filled by `send_labels`.
    let s = unsafe { &mut *scratch };
    match labels_step(
        &UserMemory,
        &s.offsets,
        &mut s.cursor,
        &mut s.record,
        &mut s.bucket,
    ) {
        Step::Continue => 0,
        Step::Done => 1,
        Step::Error => {
            s.failed = 1;
            1
        }
    }
}
