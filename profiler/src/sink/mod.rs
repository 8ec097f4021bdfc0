//! Delivery. A window is aggregated, symbolized and encoded once into a
//! [`Batch`]; every sink gets the same `Arc<Batch>` through its own bounded
//! queue and task, so a slow sink never holds up the others or the sampler.

pub mod file;

use std::{future::Future, sync::Arc};

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    metrics::{self, Metrics},
    profile::Profile,
};

/// One encoded window.
#[derive(Debug)]
pub struct Batch {
    /// Window sequence number (0-based).
    pub seq: u64,
    pub profile: Arc<Profile>,
    /// The gzipped pprof encoding.
    pub pprof_gz: Vec<u8>,
}

/// A destination for batches.
pub trait Sink: Send + 'static {
    /// Short name for logs.
    fn name(&self) -> String;
    /// Delivers one batch; an error is logged and counted by the caller.
    fn deliver(&mut self, batch: &Batch) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Windows a sink may have queued before new ones are dropped (and counted).
const QUEUE: usize = 8;

/// Every running sink.
pub struct FanOut {
    queues: Vec<(String, mpsc::Sender<Arc<Batch>>)>,
    tasks: Vec<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

impl FanOut {
    /// No sinks yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            queues: Vec::new(),
            tasks: Vec::new(),
            metrics,
        }
    }

    /// Starts `sink` on its own task.
    pub fn add<S: Sink>(&mut self, mut sink: S) {
        let (tx, mut rx) = mpsc::channel::<Arc<Batch>>(QUEUE);
        let metrics = Arc::clone(&self.metrics);
        let name = sink.name();
        self.queues.push((name.clone(), tx));
        self.tasks.push(tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                match sink.deliver(&batch).await {
                    Ok(()) => metrics::inc(&metrics.profiles_written),
                    Err(e) => {
                        metrics::inc(&metrics.sink_errors);
                        warn!("{name}: window {} not delivered: {e:#}", batch.seq);
                    }
                }
            }
        }));
    }

    /// Hands `batch` to every sink; a full queue drops it for that sink.
    pub fn send(&self, batch: Arc<Batch>) {
        for (name, tx) in &self.queues {
            if tx.try_send(Arc::clone(&batch)).is_err() {
                metrics::inc(&self.metrics.windows_dropped);
                warn!("{name} is behind: window {} dropped for it", batch.seq);
            }
        }
    }

    /// Closes the queues and waits for every sink to finish what it has.
    pub async fn close(self) {
        drop(self.queues);
        for t in self.tasks {
            if let Err(e) = t.await {
                warn!("a sink task failed: {e}");
            }
        }
        info!("sinks closed");
    }
}
