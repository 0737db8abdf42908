//! The sending side of hand-over: one task per tail sampler takes what the
//! shard workers hand over, per destination, and sends it on that member's
//! OTLP/gRPC port ([`HANDOVER_PATH`]), in requests of at most
//! [`MAX_REQUEST_BYTES`], retrying for `retry_for`. Delivered spans,
//! traces and decisions are counted by reason; a request that cannot be
//! delivered is counted by why, and its traces go back to the shard they
//! came from, which takes them in again and decides them (never lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tonic::Code;
use tracegate_model::SpanBatch;
use tracegate_sampling::tail::{KnownDecision, TraceId};

use super::super::Clock;
use super::wire::{self, DECISION_BYTES, HANDOVER_PATH, TRACE_CLOCK_BYTES};
use super::{m, Arrival, Config, Import};
use crate::exporter::otlp_grpc::OtlpGrpcExporter;
use crate::exporter::ExportError;

/// The largest request sent (the OTLP/gRPC receiver takes 4 MiB by
/// default); a single trace larger than this goes alone.
const MAX_REQUEST_BYTES: usize = 3 << 20;
/// Hand-overs sent at once, over all destinations.
const MAX_IN_FLIGHT: usize = 16;
/// Clients kept; past this (members come and go) all are made afresh.
const MAX_CLIENTS: usize = 256;

/// Why spans are handed over: the `reason` of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    /// A change of members moved their pending trace to another owner.
    Membership,
    /// They arrived for a trace this gateway neither owns nor holds.
    NotOwner,
    /// Their trace was handed here by a gateway that believed this one
    /// owns it, and is handed on.
    Recheck,
    /// This gateway is stopping.
    Shutdown,
}

impl Reason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Reason::Membership => "membership_change",
            Reason::NotOwner => "not_owner",
            Reason::Recheck => "recheck",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// A trace on its way to its owner.
#[derive(Debug)]
pub(super) struct Moving {
    pub trace_id: TraceId,
    /// When its first span arrived, on this process's clock.
    pub first_seen: Duration,
    /// Hand-overs in a row without reaching its owner, this one included.
    pub hops: u8,
    pub spans: SpanBatch,
}

/// What one shard hands to one member.
pub(super) struct Outgoing {
    pub to: String,
    pub reason: Reason,
    pub traces: Vec<Moving>,
    pub decisions: Vec<KnownDecision>,
    /// Where traces that could not be handed over go back to.
    pub back: mpsc::UnboundedSender<Import>,
    /// Held until everything was sent or given back: the shard waits for
    /// its hand-overs at shutdown.
    pub in_flight: TaskTrackerToken,
}

impl Outgoing {
    /// Nothing of it could be sent: counted with `why`, its traces back to
    /// their shard.
    pub(super) fn fail(self, why: &'static str, message: &str, processor: &str) {
        give_back(
            processor,
            &self.to,
            why,
            message,
            self.traces,
            self.decisions.len(),
            &self.back,
        );
    }
}

/// Counts traces that could not be handed over and sends them back to
/// their shard with their clocks.
fn give_back(
    processor: &str,
    to: &str,
    why: &'static str,
    message: &str,
    traces: Vec<Moving>,
    decisions: usize,
    back: &mpsc::UnboundedSender<Import>,
) {
    let spans: usize = traces.iter().map(|t| t.spans.len()).sum();
    let label = |name: &'static str| metrics::counter!(name, "processor" => processor.to_string(), "reason" => why);
    if spans > 0 {
        label(m::HANDOVER_FAILED_SPANS).increment(spans as u64);
    }
    if decisions > 0 {
        label(m::HANDOVER_FAILED_DECISIONS).increment(decisions as u64);
    }
    tracing::warn!(
        processor,
        to,
        reason = why,
        error = message,
        traces = traces.len(),
        spans,
        decisions,
        "hand-over failed; its traces are decided here"
    );
    if traces.is_empty() {
        return;
    }
    let arrivals: HashMap<TraceId, Arrival> = traces
        .iter()
        .map(|t| {
            (
                t.trace_id,
                Arrival {
                    first_seen: t.first_seen,
                    hops: t.hops,
                },
            )
        })
        .collect();
    let parts: Vec<SpanBatch> = traces.into_iter().map(|t| t.spans).collect();
    let import = Import::Spans {
        batch: Arc::new(SpanBatch::concat(&parts)),
        spans: None,
        arrivals: Arc::new(arrivals),
        pin: None,
    };
    // The shard's receiver lives as long as its worker, which outlives
    // every hand-over it waits for.
    let _ = back.send(import);
}

/// What every delivery needs.
struct Context {
    processor: String,
    /// Our advertised endpoint, as the receivers know us.
    sender: String,
    config: Config,
    clock: Clock,
}

/// The forwarding task of one tail sampler.
pub(in crate::processor::tail_sampling) struct Forwarder {
    tx: Mutex<Option<mpsc::UnboundedSender<Outgoing>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Forwarder {
    pub(super) fn start(processor: &str, config: &Config, clock: Clock) -> Forwarder {
        let (tx, rx) = mpsc::unbounded_channel();
        let context = Arc::new(Context {
            processor: processor.to_string(),
            sender: config.me(),
            config: config.clone(),
            clock,
        });
        Forwarder {
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(tokio::spawn(run(rx, context)))),
        }
    }

    /// A way in for one shard worker.
    pub(super) fn sender(&self) -> mpsc::UnboundedSender<Outgoing> {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .expect("the forwarder is open until the processor is flushed")
    }

    /// After the workers have stopped: waits (at most `within`) for what
    /// is still being sent.
    pub(in crate::processor::tail_sampling) async fn finish(&self, within: Duration) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            if tokio::time::timeout(within, task).await.is_err() {
                tracing::warn!("hand-overs were still being sent when the processor stopped");
            }
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Outgoing>, context: Arc<Context>) {
    let tasks = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut clients: HashMap<String, Arc<OtlpGrpcExporter>> = HashMap::new();
    while let Some(outgoing) = rx.recv().await {
        let client = match clients.get(&outgoing.to) {
            Some(client) => client.clone(),
            None => match OtlpGrpcExporter::new(&context.config.client(&outgoing.to)) {
                Ok(client) => {
                    if clients.len() >= MAX_CLIENTS {
                        clients.clear();
                    }
                    let client = Arc::new(client);
                    clients.insert(outgoing.to.clone(), client.clone());
                    client
                }
                Err(e) => {
                    outgoing.fail("client", &e, &context.processor);
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let context = context.clone();
        tasks.spawn(async move {
            deliver(outgoing, &client, &context).await;
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Part of an [`Outgoing`] that fits one request.
#[derive(Default)]
struct Chunk {
    traces: Vec<Moving>,
    decisions: Vec<KnownDecision>,
}

impl Chunk {
    fn is_empty(&self) -> bool {
        self.traces.is_empty() && self.decisions.is_empty()
    }
}

/// Splits what goes to one member into requests of at most
/// [`MAX_REQUEST_BYTES`] (a larger trace goes alone).
fn chunks(traces: Vec<Moving>, decisions: Vec<KnownDecision>) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut current = Chunk::default();
    let mut size = 0usize;
    let room = |cost: usize, current: &mut Chunk, size: &mut usize, out: &mut Vec<Chunk>| {
        if *size + cost > MAX_REQUEST_BYTES && !current.is_empty() {
            out.push(std::mem::take(current));
            *size = 0;
        }
        *size += cost;
    };
    for t in traces {
        room(
            t.spans.encoded_len() + TRACE_CLOCK_BYTES,
            &mut current,
            &mut size,
            &mut out,
        );
        current.traces.push(t);
    }
    for d in decisions {
        room(DECISION_BYTES, &mut current, &mut size, &mut out);
        current.decisions.push(d);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The request of one chunk, its traces' ages as of `now`.
fn encode(chunk: &Chunk, context: &Context, now: Duration) -> Bytes {
    let spans = if chunk.traces.is_empty() {
        Bytes::new()
    } else {
        let parts: Vec<SpanBatch> = chunk.traces.iter().map(|t| t.spans.clone()).collect();
        SpanBatch::concat(&parts).bytes().clone()
    };
    let request = wire::HandoverRequest {
        sender: context.sender.clone(),
        processor: context.processor.clone(),
        spans,
        traces: chunk
            .traces
            .iter()
            .map(|t| wire::TraceClock {
                trace_id: t.trace_id.to_vec(),
                age_micros: u64::try_from(now.saturating_sub(t.first_seen).as_micros())
                    .unwrap_or(u64::MAX),
                hops: u32::from(t.hops),
            })
            .collect(),
        decisions: chunk
            .decisions
            .iter()
            .map(|d| wire::Decision {
                trace_id: d.trace_id.to_vec(),
                sampled: d.sampled,
                policy: d.policy.and_then(|p| u32::try_from(p).ok()),
                tail_threshold: d.tail.map(|t| t.unsigned()),
            })
            .collect(),
    };
    Bytes::from(request.encode_to_vec())
}

async fn deliver(outgoing: Outgoing, client: &OtlpGrpcExporter, context: &Context) {
    let Outgoing {
        to,
        reason,
        traces,
        decisions,
        back,
        in_flight,
    } = outgoing;
    for chunk in chunks(traces, decisions) {
        let body = encode(&chunk, context, context.clock.now());
        match send(client, body, context.config.retry_for).await {
            Ok(()) => {
                let spans: usize = chunk.traces.iter().map(|t| t.spans.len()).sum();
                let by_reason = |name: &'static str| metrics::counter!(name, "processor" => context.processor.clone(), "reason" => reason.as_str());
                if !chunk.traces.is_empty() {
                    by_reason(m::HANDOVER_SPANS).increment(spans as u64);
                    by_reason(m::HANDOVER_TRACES).increment(chunk.traces.len() as u64);
                }
                if !chunk.decisions.is_empty() {
                    by_reason(m::HANDOVER_DECISIONS).increment(chunk.decisions.len() as u64);
                }
                tracing::debug!(
                    processor = %context.processor, %to, reason = reason.as_str(),
                    traces = chunk.traces.len(), spans, decisions = chunk.decisions.len(),
                    "handed over"
                );
            }
            Err((why, message)) => give_back(
                &context.processor,
                &to,
                why,
                &message,
                chunk.traces,
                chunk.decisions.len(),
                &back,
            ),
        }
    }
    drop(in_flight);
}

/// One request, retried while the member may yet take it (unreachable,
/// or not knowing us yet) for at most `retry_for`. `Err` says why not,
/// for the metrics, and what the member said.
async fn send(
    client: &OtlpGrpcExporter,
    body: Bytes,
    retry_for: Duration,
) -> Result<(), (&'static str, String)> {
    let deadline = Instant::now() + retry_for;
    let mut delay = Duration::from_millis(50);
    loop {
        let (retry, why, message) = match client.unary(HANDOVER_PATH, body.clone()).await {
            Ok(_) => return Ok(()),
            Err(ExportError::Retryable { message, .. }) => (true, "unreachable", message),
            // The member has not seen us join yet.
            Err(ExportError::Rejected {
                code: Code::PermissionDenied,
                message,
            }) => (true, "refused", message),
            Err(ExportError::Rejected {
                code: Code::Unimplemented,
                message,
            }) => (false, "unsupported", message),
            Err(e) => (false, "refused", e.to_string()),
        };
        if !retry || Instant::now() + delay >= deadline {
            return Err((why, message));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}
