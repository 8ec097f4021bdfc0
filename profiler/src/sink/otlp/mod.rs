//! The OTLP sink: delivers each window's encoded request to a collector,
//! in order, without losing what it can keep.
//!
//! Batches wait in memory (bounded; the oldest is dropped and counted past
//! the bound) or, with a spool, on disk: with a spool, a batch goes to disk
//! as soon as its first attempt fails or older batches are waiting, and the
//! spool is drained oldest first, also after a restart. Failures back off
//! exponentially with jitter, honouring the server's hint, and the breaker
//! in [`retry`] keeps a dead collector to one probe per period. Permanent
//! refusals and partial successes are logged and counted.

pub mod retry;
pub mod transport;

use std::{collections::VecDeque, sync::Arc};

use anyhow::Result;
use bytes::Bytes;
use tokio::{sync::mpsc, time::Instant};
use tracing::{debug, info, warn};

use self::{
    retry::RetryPolicy,
    transport::{Outcome, Transport},
};
use super::{Batch, Sink, spool::Spool};
use crate::{
    config::otlp::OtlpSettings,
    metrics::{self, Metrics},
};

/// Where the batch being attempted came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Memory,
    Spool,
}

/// The OTLP exporter.
pub struct OtlpSink {
    endpoint: String,
    transport: Transport,
    spool: Option<Spool>,
    memory: VecDeque<Bytes>,
    queue_batches: usize,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl OtlpSink {
    /// A sink for `s`; opens the spool (taking over what a previous run left).
    pub fn new(s: &OtlpSettings, metrics: Arc<Metrics>) -> Result<Self> {
        let spool = match &s.spool_dir {
            Some(dir) => {
                let spool = Spool::open(dir, s.spool_max_bytes)?;
                if !spool.is_empty() {
                    info!(
                        "OTLP spool {}: {} batches ({} bytes) from an earlier run will be sent first",
                        dir.display(),
                        spool.len(),
                        spool.bytes()
                    );
                }
                Some(spool)
            }
            None => None,
        };
        Ok(Self {
            endpoint: s.endpoint.clone(),
            transport: Transport::new(s)?,
            spool,
            memory: VecDeque::new(),
            queue_batches: s.queue_batches,
            retry: RetryPolicy::default(),
            metrics,
        })
    }

    fn pending(&self) -> bool {
        !self.memory.is_empty() || self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    fn spool_push(&mut self, body: &[u8]) {
        let Some(spool) = &mut self.spool else {
            return;
        };
        match spool.push(body) {
            Ok(evicted) => {
                metrics::inc(&self.metrics.otlp_spooled);
                if evicted > 0 {
                    metrics::add(&self.metrics.otlp_dropped, evicted);
                    warn!("OTLP spool full: dropped the {evicted} oldest batch(es)");
                }
            }
            Err(e) => {
                metrics::inc(&self.metrics.otlp_dropped);
                warn!("OTLP batch dropped: cannot spool it: {e:#}");
            }
        }
    }

    /// Takes a new batch from the pipeline.
    fn accept(&mut self, batch: &Batch) {
        let Some(body) = batch.otlp.clone() else {
            return;
        };
        let spool_waiting = self.spool.as_ref().is_some_and(|s| !s.is_empty());
        if spool_waiting {
            // Older batches are on disk: keep the order.
            self.spool_push(&body);
            return;
        }
        self.memory.push_back(body);
        while self.memory.len() > self.queue_batches {
            if let Some(old) = self.memory.pop_front() {
                if self.spool.is_some() {
                    self.spool_push(&old);
                } else {
                    metrics::inc(&self.metrics.otlp_dropped);
                    warn!(
                        "OTLP queue full ({} batches): dropped the oldest",
                        self.queue_batches
                    );
                }
            }
        }
    }

    /// The oldest waiting batch (unreadable spool files are dropped, counted).
    fn next(&mut self) -> Option<(Source, Bytes)> {
        while let Some(spool) = &mut self.spool {
            match spool.front() {
                None => break,
                Some(Ok(b)) => return Some((Source::Spool, Bytes::from(b))),
                Some(Err(e)) => {
                    metrics::inc(&self.metrics.otlp_dropped);
                    warn!("OTLP spooled batch dropped: {e:#}");
                    if spool.pop_front().is_err() {
                        break;
                    }
                }
            }
        }
        self.memory.front().cloned().map(|b| (Source::Memory, b))
    }

    fn remove(&mut self, source: Source) {
        match source {
            Source::Memory => {
                self.memory.pop_front();
            }
            Source::Spool => {
                if let Some(spool) = &mut self.spool
                    && let Err(e) = spool.pop_front()
                {
                    warn!("OTLP spool: {e:#}");
                }
            }
        }
    }

    /// One attempt at the oldest batch; returns when to try next.
    async fn attempt(&mut self) -> Instant {
        let Some((source, body)) = self.next() else {
            return Instant::now();
        };
        let started = Instant::now();
        match self.transport.send(body.clone()).await {
            Outcome::Delivered { rejected, message } => {
                self.remove(source);
                metrics::inc(&self.metrics.otlp_sent);
                let ended = self.retry.success();
                if ended > 0 {
                    info!(
                        "OTLP collector {} reachable again after {ended} failed attempts",
                        self.endpoint
                    );
                }
                if rejected > 0 {
                    metrics::add(
                        &self.metrics.otlp_rejected,
                        u64::try_from(rejected).unwrap_or(0),
                    );
                    warn!("OTLP partial success: {rejected} profiles rejected: {message}");
                } else if !message.is_empty() {
                    warn!("OTLP collector says: {message}");
                }
                debug!(
                    "OTLP batch of {} bytes delivered in {:?}",
                    body.len(),
                    started.elapsed()
                );
                Instant::now()
            }
            Outcome::Retry { after, reason } => {
                metrics::inc(&self.metrics.otlp_retries);
                let f = self.retry.failure(after);
                if f.opened {
                    metrics::inc(&self.metrics.otlp_breaker_opened);
                    warn!(
                        "OTLP collector {} unavailable ({reason}); holding batches and probing with backoff",
                        self.endpoint
                    );
                } else {
                    debug!("OTLP attempt failed ({reason}); retrying in {:?}", f.delay);
                }
                if source == Source::Memory && self.spool.is_some() {
                    // It failed once: make it survive a restart.
                    self.memory.pop_front();
                    self.spool_push(&body);
                }
                Instant::now() + f.delay
            }
            Outcome::Permanent { reason } => {
                self.remove(source);
                metrics::inc(&self.metrics.otlp_dropped);
                warn!(
                    "OTLP batch refused by {} and dropped: {reason}",
                    self.endpoint
                );
                Instant::now()
            }
        }
    }

    /// At shutdown: one more try for what waits, while the collector takes
    /// it; then memory goes to the spool or is counted as dropped.
    async fn finish(&mut self) {
        while self.pending() && !self.retry.is_open() {
            let before = self.retry.failures();
            self.attempt().await;
            if self.retry.failures() > before {
                break;
            }
        }
        let left: Vec<Bytes> = self.memory.drain(..).collect();
        for body in left {
            if self.spool.is_some() {
                self.spool_push(&body);
            } else {
                metrics::inc(&self.metrics.otlp_dropped);
            }
        }
        if let Some(spool) = &self.spool
            && !spool.is_empty()
        {
            info!(
                "OTLP: {} batches stay in the spool for the next run",
                spool.len()
            );
        }
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> String {
        format!("otlp {}", self.endpoint)
    }

    async fn run(mut self, mut batches: mpsc::Receiver<Arc<Batch>>) {
        let mut next_try = Instant::now();
        loop {
            let pending = self.pending();
            tokio::select! {
                biased;
                batch = batches.recv() => match batch {
                    Some(b) => self.accept(&b),
                    None => break,
                },
                _ = tokio::time::sleep_until(next_try), if pending => {
                    next_try = self.attempt().await;
                }
            }
        }
        self.finish().await;
    }
}
