//! Delivery. A window is aggregated, symbolized and encoded once into a
//! [`Batch`]; every sink gets the same `Arc<Batch>` through its own bounded
//! queue and task, so a slow sink never holds up the others or the sampler.

pub mod file;
pub mod otlp;
pub mod spool;

use std::{future::Future, sync::Arc};

use bytes::Bytes;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::warn;

use crate::{
    metrics::{self, Metrics},
    profile::Profile,
};

/// One encoded window, in every format some sink wants.
#[derive(Debug)]
pub struct Batch {
    /// Window sequence number (0-based).
    pub seq: u64,
    pub profile: Arc<Profile>,
    /// The gzipped pprof encoding.
    pub pprof_gz: Option<Vec<u8>>,
    /// The OTLP export request (uncompressed protobuf).
    pub otlp: Option<Bytes>,
}

/// Which encodings the sinks need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub pprof: bool,
    pub otlp: bool,
}

/// A destination for batches: runs on its own task until the queue closes,
/// counting what it delivers and what it loses in [`Metrics`].
pub trait Sink: Send + 'static {
    /// Short name for logs.
    fn name(&self) -> String;
    /// Delivers batches from `batches` until it is closed and drained.
    fn run(self, batches: mpsc::Receiver<Arc<Batch>>) -> impl Future<Output = ()> + Send;
}

/// Windows a sink may have queued before new ones are dropped (and counted).
const QUEUE: usize = 8;

/// Every running sink.
pub struct FanOut {
    queues: Vec<(String, mpsc::Sender<Arc<Batch>>)>,
    tasks: Vec<JoinHandle<()>>,
    needs: Needs,
    metrics: Arc<Metrics>,
}

impl FanOut {
    /// No sinks yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            queues: Vec::new(),
            tasks: Vec::new(),
            needs: Needs::default(),
            metrics,
        }
    }

    /// Starts `sink`, which reads the encodings in `needs`, on its own task.
    pub fn add<S: Sink>(&mut self, sink: S, needs: Needs) {
        let (tx, rx) = mpsc::channel::<Arc<Batch>>(QUEUE);
        self.needs.pprof |= needs.pprof;
        self.needs.otlp |= needs.otlp;
        self.queues.push((sink.name(), tx));
        self.tasks.push(tokio::spawn(sink.run(rx)));
    }

    /// The encodings some sink needs.
    pub fn needs(&self) -> Needs {
        self.needs
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
    }
}
