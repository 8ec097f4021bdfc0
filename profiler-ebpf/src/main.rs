//! Attach points of the kernel side. Each entry point only calls into the
//! module that does the work and turns the outcome into a return code.
#![no_std]
#![no_main]

mod filter;
mod go;
mod maps;
mod process;
mod sample;
mod unwind;

use aya_ebpf::{
    macros::{perf_event, raw_tracepoint},
    programs::{PerfEventContext, RawTracePointContext},
};
use profiler_common::RecordKind;

/// Runs on every CPU-clock perf event: records one stack sample.
#[perf_event]
pub fn sample_cpu(ctx: PerfEventContext) -> u32 {
    sample::record(&ctx);
    0
}

/// Tail-called for Go processes: goroutine state, then submit.
#[perf_event]
pub fn sample_go(ctx: PerfEventContext) -> u32 {
    go::record(&ctx);
    0
}

/// Tail-called for processes with unwind tables: walks the user stack a
/// few frames per call, then the Go stage or submit.
#[perf_event]
pub fn sample_unwind(ctx: PerfEventContext) -> u32 {
    unwind::stage(&ctx);
    0
}

/// `sched_process_exec`: the process's mappings were replaced.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn on_exec(_ctx: RawTracePointContext) -> i32 {
    process::emit(RecordKind::Exec);
    0
}

/// `sched_process_exit`: a thread exited; reported for thread-group leaders.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn on_exit(_ctx: RawTracePointContext) -> i32 {
    process::emit(RecordKind::Exit);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
