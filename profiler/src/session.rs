//! Wires the stages together for `record` and `run`: checks, BPF loading,
//! the ring-buffer drain loop, window flushes into the symbolize → encode →
//! sinks pipeline, signals, progress and the final summary.

use std::{
    io::{IsTerminal, Write},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, RingBuf};
use bytes::Bytes;
use profiler_common::Counter;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::{MissedTickBehavior, interval, sleep},
};
use tracing::{debug, info, warn};

use crate::{
    aggregate::Instant2,
    bpf::{Loaded, maps::KernelCounters, preflight},
    config::{self, Mode, Settings},
    encode,
    encode::otlp::ResourceSettings,
    ingest::{Flushed, Ingest},
    metrics::{self, Metrics},
    profile::{self, BuildInput},
    sink::{
        Batch, FanOut, Needs,
        file::{FileSink, FileTarget},
        otlp::OtlpSink,
    },
    symbolize::Symbolizer,
};

/// How often the ring buffer is drained even without a wakeup.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// Runs a whole session as `settings` says.
pub fn run(settings: Settings) -> Result<()> {
    preflight::check(&settings.sampling.btf)?;
    config::check_pids_exist(&settings.sampling.pids)?;
    if let Mode::Record { output, .. } = &settings.mode {
        check_output_dir(output)?;
    }
    tune_allocator();
    // One thread drives the ring buffer, the timers and the sinks; the heavy
    // work (symbolizing and encoding a window) runs on the blocking pool.
    // A multi-threaded scheduler cost ~0.3% of a CPU in cross-thread
    // wake-ups alone at 19 Hz.
    let rt = tokio::runtime::Builder::new_current_thread()
        .thread_name("profiler")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(session(settings))
}

fn check_output_dir(output: &std::path::Path) -> Result<()> {
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !dir.is_dir() {
        bail!(
            "cannot write {}: directory {} does not exist",
            output.display(),
            dir.display()
        );
    }
    Ok(())
}

fn comments(settings: &Settings, cpus: usize) -> Vec<String> {
    vec![
        format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        format!(
            "cpu-clock sampling at {} Hz on {cpus} CPUs",
            settings.sampling.frequency
        ),
    ]
}

/// What the pipeline encodes each window with.
#[derive(Clone)]
struct Encoding {
    period_ns: u64,
    /// pprof comments.
    comments: Vec<String>,
    /// OTLP resource settings, when an OTLP sink exists.
    resource: Option<ResourceSettings>,
    needs: Needs,
}

/// Symbolizes and encodes each flushed window once, then fans it out.
async fn pipeline(
    mut windows: mpsc::Receiver<Flushed>,
    fanout: FanOut,
    encoding: Encoding,
    metrics: Arc<Metrics>,
) {
    let mut symbolizer = Some(Symbolizer::new());
    let mut seq = 0u64;
    while let Some(flushed) = windows.recv().await {
        let mut sym = symbolizer.take().expect("returned by the previous window");
        let encoding = encoding.clone();
        let job = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let input = BuildInput {
                window: &flushed.window,
                end: flushed.end,
                period_ns: encoding.period_ns,
                objects: &flushed.objects,
            };
            let profile = profile::build(&input, &mut sym);
            let live = (0..profile.processes.len())
                .map(|i| profile.processes[i].id)
                .collect();
            sym.end_window(&live);
            let pprof_gz = encoding
                .needs
                .pprof
                .then(|| encode::pprof::encode(&profile, &encoding.comments));
            // A window without samples is not exported: collectors drop
            // empty profiles anyway.
            let otlp = match (&encoding.resource, encoding.needs.otlp) {
                (Some(res), true) if !profile.samples.is_empty() => {
                    Some(Bytes::from(encode::otlp::encode(&profile, res)))
                }
                _ => None,
            };
            debug!(
                "window {seq}: {} samples, {} locations, {} functions, pprof {:?} bytes, otlp {:?} bytes, in {:?}",
                profile.sample_count(),
                profile.locations.len(),
                profile.functions.len(),
                pprof_gz.as_ref().map(Vec::len),
                otlp.as_ref().map(Bytes::len),
                started.elapsed()
            );
            return_free_memory();
            (
                sym,
                Batch {
                    seq,
                    profile: Arc::new(profile),
                    pprof_gz,
                    otlp,
                },
            )
        });
        match job.await {
            Ok((sym, batch)) => {
                symbolizer = Some(sym);
                metrics::inc(&metrics.windows);
                fanout.send(Arc::new(batch));
            }
            Err(e) => {
                warn!("window {seq} could not be built: {e}");
                metrics::inc(&metrics.windows_dropped);
                symbolizer = Some(Symbolizer::new());
            }
        }
        seq += 1;
    }
    fanout.close().await;
}

/// Stops glibc from giving memory back by itself: by default it returns the
/// top of a heap as soon as 128 KiB or more of it are free, and serves
/// blocks above a (growing) threshold with their own mmap, so every window
/// faulted its tables and buffers in afresh. [`return_free_memory`] decides
/// instead, once per window.
///
/// It also keeps one arena for all threads. By default each thread that
/// allocates gets its own (up to 8 per CPU), and what one thread frees
/// cannot serve another: start-up's BTF parse stayed free in the main heap
/// while the symbolizing thread grew its own arena for the first window.
/// With one arena the 19 Hz high-water mark went from 35 to 30 MiB. The
/// threads rarely allocate at the same time (no allocation per sample), so
/// they seldom wait on its lock.
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        // glibc's largest mmap threshold (the dynamic one's ceiling).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the allocator's free pages to the kernel.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives the allocator's free pages back to the kernel after a window that
/// left more memory free than the windows before it. glibc keeps what a
/// thread freed in that thread's arena (64 MiB reservations), and with
/// [`tune_allocator`] it no longer trims even the top of a heap by itself,
/// so memory freed after a burst (a large binary's DWARF, a first window's
/// tables) would otherwise stay in the daemon's RSS. Trimming after every
/// window made the next window fault its working set in again: at 999 Hz,
/// where a window's tables free ~30 MiB, the kernel zeroing those pages was
/// ~10% of the daemon's CPU. So a window trims only when the free memory
/// grew by half over the previous window's (a burst) and is above
/// [`TRIM_ABOVE_FREE`]; in a steady state each window reuses the pages the
/// previous one freed.
fn return_free_memory() {
    #[cfg(target_env = "gnu")]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static PREVIOUS_FREE: AtomicUsize = AtomicUsize::new(0);
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        let previous = PREVIOUS_FREE.swap(free, Ordering::Relaxed);
        let trim = free > TRIM_ABOVE_FREE && free > previous + previous / 2;
        if trim {
            trim_heap();
        }
        debug!(
            "heap: {} KiB free after the window ({} KiB after the previous), trimmed: {trim}",
            free >> 10,
            previous >> 10
        );
    }
}

/// Free heap bytes below which a window never trims.
#[cfg(target_env = "gnu")]
const TRIM_ABOVE_FREE: usize = 8 << 20;

fn drain(ring: &mut RingBuf<MapData>, ingest: &mut Ingest) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        ingest.record(&item);
        n += 1;
    }
    n
}

/// True once none of `pids` is a live (non-zombie) process.
fn all_exited(pids: &[u32]) -> bool {
    pids.iter().all(|pid| {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| matches!(state, 'Z' | 'X')),
            Err(_) => true,
        }
    })
}

struct Progress {
    enabled: bool,
    tty: bool,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    fn show(&mut self, total: Option<Duration>, metrics: &Metrics, lost: u64) {
        if !self.enabled {
            return;
        }
        let s = metrics.snapshot();
        let elapsed = self.started.elapsed().as_secs_f64();
        let time = match total {
            Some(t) => format!("{elapsed:.0}/{:.0} s", t.as_secs_f64()),
            None => format!("{elapsed:.0} s"),
        };
        let line = format!(
            "profiling {time}: {} samples, {} processes, {lost} lost",
            s.samples, s.processes
        );
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
        } else if self.last_line.elapsed() >= Duration::from_secs(5) {
            self.last_line = Instant::now();
            let _ = writeln!(err, "{line}");
        }
    }

    fn finish(&self) {
        if self.enabled && self.tty {
            eprintln!();
        }
    }
}

async fn session(settings: Settings) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let started = Instant::now();
    let mut loaded = Loaded::load(&settings.sampling)?;
    let counters = loaded.maps().take_counters()?;
    let mut procs = loaded.maps().take_proc_table()?;
    procs.set_go_state(settings.sampling.go_state);
    let unwind_outcomes = start_unwinding(&mut loaded, &mut procs, &metrics)?;
    let ring = loaded.maps().take_ring_buffer()?;
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd
    // owns the ring buffer, and `as_raw_fd` always returns that fd.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the BPF ring buffer: {e}"))?;
    let mut ingest = Ingest::new(Arc::clone(&metrics), Instant2::now(), Some(Box::new(procs)));
    ingest.set_table_unwinding(unwind_outcomes.is_some());
    // Targets are read before sampling starts, so their first samples
    // already carry what BPF needs to know about them (Go state).
    ingest.prime(&settings.sampling.pids);
    // Give back what start-up used and freed: aya's `EbpfLoader::new` parses
    // the whole kernel BTF (19 MiB of heap at its peak, measured with
    // heaptrack) before the loader is told to use none, and with
    // `tune_allocator` glibc would keep those pages until the first window.
    trim_heap();
    loaded.attach()?;
    let cpus = loaded.cpus.len();
    info!(
        "sampling {} CPUs at {} Hz (ring buffer {} KiB, exec/exit events: {}) after {:?}",
        cpus,
        settings.sampling.frequency,
        settings.sampling.ring_buffer_size / 1024,
        loaded.process_events,
        started.elapsed()
    );

    let mut fanout = FanOut::new(Arc::clone(&metrics));
    let pprof = Needs {
        pprof: true,
        otlp: false,
    };
    let mut resource = None;
    let (record_target, flush_every, duration) = match &settings.mode {
        Mode::Record { output, duration } => {
            let target = FileTarget::Path(output.clone());
            fanout.add(FileSink::new(target, Arc::clone(&metrics))?, pprof);
            (Some(output.clone()), None, *duration)
        }
        Mode::Run {
            interval,
            output_dir,
            otlp,
        } => {
            if let Some(dir) = output_dir {
                let target = FileTarget::Directory(dir.clone());
                fanout.add(FileSink::new(target, Arc::clone(&metrics))?, pprof);
            }
            if let Some(o) = otlp {
                let needs = Needs {
                    pprof: false,
                    otlp: true,
                };
                fanout.add(OtlpSink::new(o, Arc::clone(&metrics))?, needs);
                resource = Some(o.resource.clone());
                info!(
                    "exporting OTLP profiles to {} ({:?}, gzip: {}, spool: {:?})",
                    o.endpoint, o.protocol, o.gzip, o.spool_dir
                );
            }
            (None, Some(*interval), None)
        }
    };
    let encoding = Encoding {
        period_ns: settings.sampling.period_ns(),
        comments: comments(&settings, cpus),
        resource,
        needs: fanout.needs(),
    };
    let (windows_tx, windows_rx) = mpsc::channel::<Flushed>(4);
    let pipeline = tokio::spawn(pipeline(windows_rx, fanout, encoding, Arc::clone(&metrics)));

    let mut drain_tick = interval(DRAIN_EVERY);
    drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut flush_tick = interval(flush_every.unwrap_or(Duration::from_secs(3600)));
    flush_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    flush_tick.tick().await;
    let mut progress_tick = interval(Duration::from_millis(500));
    let deadline = sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut progress = Progress {
        enabled: settings.progress && record_target.is_some(),
        tty: std::io::stderr().is_terminal(),
        started: Instant::now(),
        last_line: Instant::now(),
    };
    // The half-second tick is for the progress line and for noticing that
    // every target of `record --pid` exited; the daemon needs neither.
    let watch_progress =
        progress.enabled || (record_target.is_some() && !settings.sampling.pids.is_empty());
    let baseline = counters.read()?;
    let lost = |k: &KernelCounters, m: &Metrics| {
        k.since(&baseline).get(Counter::RingBufFull) + m.snapshot().records_malformed
    };

    let stop_reason = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer")?;
                drain(guard.get_inner_mut(), &mut ingest);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => {
                drain(ring.get_mut(), &mut ingest);
            }
            _ = flush_tick.tick(), if flush_every.is_some() => {
                drain(ring.get_mut(), &mut ingest);
                let flushed = ingest.flush(Instant2::now());
                report_window(&flushed, &counters, &baseline, &metrics);
                if windows_tx.try_send(flushed).is_err() {
                    metrics::inc(&metrics.windows_dropped);
                    warn!("symbolization is behind: a window was dropped");
                }
            }
            _ = &mut deadline => break "duration reached",
            _ = sigint.recv() => break "interrupted",
            _ = sigterm.recv() => break "terminated",
            _ = progress_tick.tick(), if watch_progress => {
                let k = counters.read().unwrap_or_default();
                progress.show(duration, &metrics, lost(&k, &metrics));
                if record_target.is_some()
                    && !settings.sampling.pids.is_empty()
                    && all_exited(&settings.sampling.pids)
                {
                    break "every target process exited";
                }
            }
        }
    };
    progress.finish();
    info!("stopping: {stop_reason}");
    // Detach first so the last drain sees every sample taken.
    drop(loaded);
    drain(ring.get_mut(), &mut ingest);
    let flushed = ingest.flush(Instant2::now());
    let final_samples = flushed.window.total();
    let final_processes = flushed.window.process_count();
    windows_tx
        .send(flushed)
        .await
        .context("the pipeline stopped early")?;
    drop(windows_tx);
    pipeline.await.context("the pipeline failed")?;

    let kernel = counters.read()?.since(&baseline);
    let m = metrics.snapshot();
    debug!("metrics: {:?}", m.pairs());
    debug!(
        "kernel counters: {:?}",
        Counter::ALL.map(|c| (c.name(), kernel.get(c)))
    );
    let elapsed = progress.started.elapsed().as_secs_f64();
    let lost_total = kernel.get(Counter::RingBufFull) + m.records_malformed;
    if m.sink_errors > 0 {
        bail!(
            "{} profile(s) could not be written (see the warnings above)",
            m.sink_errors
        );
    }
    if settings.progress {
        let what = match &record_target {
            Some(path) => format!(
                "wrote {}: {final_samples} samples from {final_processes} processes",
                path.display()
            ),
            None => format!(
                "{} profiles written, {} samples",
                m.profiles_written, m.samples
            ),
        };
        eprintln!(
            "{what} in {elapsed:.1} s at {} Hz on {cpus} CPUs ({stop_reason})",
            settings.sampling.frequency
        );
        eprintln!(
            "lost samples: {lost_total} (ring buffer full: {}, malformed: {}); \
             stack read errors: kernel {}, user {}; events lost: {}",
            kernel.get(Counter::RingBufFull),
            m.records_malformed,
            kernel.get(Counter::KernelStackError),
            kernel.get(Counter::UserStackError),
            kernel.get(Counter::EventsLost),
        );
        let walks = unwind_outcomes
            .as_ref()
            .and_then(|o| o.read().ok())
            .map(|o| crate::unwind::service::KernelWalks {
                walks: o.total(),
                rule_cache_hits: kernel.get(Counter::RuleCacheHits),
                rule_cache_misses: kernel.get(Counter::RuleCacheMisses),
            });
        eprintln!("{}", crate::unwind::service::summary(&m, walks));
        if let Mode::Run { otlp: Some(_), .. } = &settings.mode {
            eprintln!(
                "otlp: {} batches sent, {} retries, {} dropped, {} spooled, {} profiles rejected",
                m.otlp_sent, m.otlp_retries, m.otlp_dropped, m.otlp_spooled, m.otlp_rejected
            );
        }
    }
    Ok(())
}

/// Starts the unwind thread with the unwind maps when the unwind stage
/// loaded; returns the outcome counters to report.
fn start_unwinding(
    loaded: &mut Loaded,
    procs: &mut crate::bpf::maps::ProcTable,
    metrics: &Arc<Metrics>,
) -> Result<Option<crate::bpf::unwind_maps::OutcomeMap>> {
    let Some(capacity) = loaded.unwind else {
        return Ok(None);
    };
    let store = loaded.maps().take_unwind_maps()?;
    let handle = crate::unwind::service::start(store, Arc::clone(metrics))
        .context("cannot start the unwind thread")?;
    procs.set_unwinder(handle);
    info!(
        "unwinding user stacks with tables ({} MiB: {} rows, {} page entries)",
        capacity.bytes() >> 20,
        capacity.rows,
        capacity.pages
    );
    Ok(Some(loaded.maps().take_unwind_outcomes()?))
}

fn report_window(
    flushed: &Flushed,
    counters: &crate::bpf::maps::CounterMap,
    baseline: &KernelCounters,
    metrics: &Metrics,
) {
    let k = counters.read().unwrap_or_default().since(baseline);
    let m = metrics.snapshot();
    info!(
        "window: {} samples, {} processes; totals: {} samples, {} lost, {} windows dropped, \
         {} sink errors; otlp: {} sent, {} retries, {} dropped, {} spooled",
        flushed.window.total(),
        flushed.window.process_count(),
        m.samples,
        k.get(Counter::RingBufFull) + m.records_malformed,
        m.windows_dropped,
        m.sink_errors,
        m.otlp_sent,
        m.otlp_retries,
        m.otlp_dropped,
        m.otlp_spooled
    );
    if k.get(Counter::RingBufFull) > 0 {
        warn!(
            "{} samples lost to a full ring buffer so far: raise --ring-buffer-size",
            k.get(Counter::RingBufFull)
        );
    }
}
