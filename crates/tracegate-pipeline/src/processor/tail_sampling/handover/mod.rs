//! Hand-over of traces in flight between the gateways of a fleet
//! (docs/architecture.md, "Hand-over of traces in flight").
//!
//! A gateway learns the fleet's members from the same resolver the agents'
//! `loadbalancing` exporter uses (`handover.resolver`), and which member it
//! is from `handover.advertised_endpoint`. A trace's owner is the member the
//! agents route it to: the rendezvous hash of its trace id over the members
//! (`crate::membership::hash`, as `routing_key: traceID` computes it).
//!
//! When the members change, each shard worker hands the pending traces it
//! no longer owns to their new owner, with their clocks, and the decisions
//! it remembers for trace ids that moved away from it; spans of a trace it
//! neither owns nor holds anything of (from a sender that has not seen the
//! change yet) are passed on to the owner as they come. What cannot be
//! handed over comes back into the local buffer, counted, and is decided
//! here.
//!
//! - `wire.rs`: the carrier, a tracegate gRPC method on the OTLP/gRPC port;
//! - `forward.rs`: the sending side, with retries;
//! - `shard.rs`: what a shard worker does on a change, an import, a
//!   diversion, and at shutdown;
//! - this file: the settings, the view of the members, and the inbox the
//!   OTLP/gRPC receiver hands requests to.

mod forward;
mod shard;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracegate_model::trace_state::Threshold;
use tracegate_model::SpanBatch;
use tracegate_sampling::tail::adaptive::FleetSize;
use tracegate_sampling::tail::{shard_of, KnownDecision, Pin, TraceId};

use super::journal::{self, Journal};
use super::metrics_names as m;
use super::Clock;
use crate::config::{error, ComponentError};
use crate::exporter::loadbalancing::Protocol;
use crate::exporter::otlp_grpc;
use crate::membership::hash::{trace_id_key, Rendezvous};
use crate::membership::same_member;
use crate::membership::{with_default_port, Members, ResolverConfig};
use crate::receiver::split_host_port;

pub(super) use forward::Forwarder;
pub(super) use shard::{Event, ShardHandover};
pub use wire::HANDOVER_PATH;

/// `processors: tail_sampling: handover:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the fleet's members come from: the agents'
    /// `loadbalancing.resolver`, key for key. Required.
    #[serde(default)]
    pub resolver: Option<ResolverConfig>,
    /// This gateway as the resolver lists it, `host:port` (with the k8s
    /// resolver: the pod IP and the OTLP/gRPC port, e.g.
    /// `${env:POD_IP}:4317`). Required.
    #[serde(default)]
    pub advertised_endpoint: String,
    /// Take hand-overs only from a member whose address (when the member
    /// is an IP address) is the connection's source, and send from our
    /// own advertised address. Default true.
    #[serde(default = "default_true")]
    pub verify_sender_address: bool,
    /// How hand-overs reach the other gateways' OTLP/gRPC port: the
    /// agents' `loadbalancing.protocol`, key for key (`tls`, `compression`,
    /// `headers`, `timeout` per attempt, `keepalive`); its `endpoint`,
    /// `sending_queue` and `retry_on_failure` are not used.
    #[serde(default)]
    pub protocol: Protocol,
    /// How long a hand-over is retried before its traces come back into
    /// this gateway's buffer (counted). Default `5s`.
    #[serde(
        default = "default_retry_for",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub retry_for: Duration,
}

fn default_true() -> bool {
    true
}
fn default_retry_for() -> Duration {
    Duration::from_secs(5)
}

impl Config {
    /// The advertised endpoint as members are written (`:4317` added when
    /// it names no port).
    fn me(&self) -> String {
        with_default_port(&self.advertised_endpoint)
    }

    /// The settings of the client towards `endpoint`.
    fn client(&self, endpoint: &str) -> otlp_grpc::Config {
        let mut otlp = self.protocol.otlp.clone();
        otlp.endpoint = endpoint.to_string();
        otlp.local_address = self.source_address();
        otlp
    }

    /// The address hand-overs are sent from: our advertised one, when it is
    /// an IP address and senders are verified.
    fn source_address(&self) -> Option<IpAddr> {
        if !self.verify_sender_address {
            return None;
        }
        let me = self.me();
        let (host, _) = split_host_port(&me).ok()?;
        host.parse::<IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified())
    }

    /// Pure checks; paths are relative to `handover`.
    pub fn validate(&self) -> Result<Vec<String>, ComponentError> {
        let resolver = self.resolver.as_ref().ok_or_else(|| {
            error(
                "resolver",
                "no resolver given; set the agents' loadbalancing resolver (static, dns or k8s)",
            )
        })?;
        resolver.validate()?;
        if self.advertised_endpoint.trim().is_empty() {
            return Err(error(
                "advertised_endpoint",
                "required: this gateway as the resolver lists it, host:port (e.g. ${env:POD_IP}:4317)",
            ));
        }
        let me = self.me();
        let (host, _) =
            split_host_port(&me).map_err(|e| error("advertised_endpoint", e.to_string()))?;
        if host.is_empty() || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()) {
            return Err(error(
                "advertised_endpoint",
                format!(
                    "{me:?} is not an address other gateways can reach: name this gateway as the \
                     resolver lists it (e.g. ${{env:POD_IP}}:4317)"
                ),
            ));
        }
        if self.retry_for.is_zero() {
            return Err(error("retry_for", "must be more than 0"));
        }
        let mut warnings = self
            .client(&me)
            .validate()
            .map_err(|e| error(&format!("protocol.otlp.{}", e.path), e.message))?;
        if !self.protocol.otlp.endpoint.trim().is_empty() {
            warnings.push(
                "handover.protocol.otlp.endpoint is ignored: hand-overs go to the members the \
                 resolver finds"
                    .to_string(),
            );
        }
        Ok(warnings)
    }
}

/// The members as a gateway sees them, and which one it is.
#[derive(Debug, Clone)]
pub(super) struct View {
    /// `None`: no members known (before the resolver's first list, or an
    /// empty one): every trace stays where it is.
    ring: Option<Rendezvous>,
    /// This gateway's index among the members, if it is one.
    me: Option<usize>,
}

impl View {
    pub(super) fn inactive() -> View {
        View {
            ring: None,
            me: None,
        }
    }

    fn new(members: Members, me: &str) -> View {
        if members.is_empty() {
            return View::inactive();
        }
        let me = members.iter().position(|m| same_member(m, me));
        View {
            ring: Some(Rendezvous::new(members)),
            me,
        }
    }

    pub(super) fn is_active(&self) -> bool {
        self.ring.is_some()
    }

    pub(super) fn is_member(&self) -> bool {
        self.me.is_some()
    }

    /// The member that owns `id` when it is not this gateway; `None` when
    /// the trace belongs here (this gateway owns it, or no members are
    /// known).
    pub(super) fn elsewhere(&self, id: &TraceId) -> Option<&str> {
        let ring = self.ring.as_ref()?;
        let owner = ring.owner(trace_id_key(id))?;
        if Some(owner) == self.me {
            None
        } else {
            Some(&ring.members()[owner])
        }
    }

    pub(super) fn owns(&self, id: &TraceId) -> bool {
        self.elsewhere(id).is_none()
    }

    /// Who owns what once this gateway has left: the members without it.
    pub(super) fn without_me(&self) -> View {
        let (Some(ring), Some(me)) = (&self.ring, self.me) else {
            return self.clone();
        };
        let rest: Vec<String> = ring
            .members()
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me)
            .map(|(_, m)| m.clone())
            .collect();
        if rest.is_empty() {
            return View::inactive();
        }
        View {
            ring: Some(Rendezvous::new(rest.into())),
            me: None,
        }
    }

    fn members(&self) -> &[String] {
        self.ring.as_ref().map_or(&[], |r| &r.members()[..])
    }
}

/// How long a member that left may still hand traces over: it does so
/// after it has left the list, for as long as senders that have not seen
/// that yet (or drain their queues to it) send it spans.
const DEPARTED_GRACE: Duration = Duration::from_secs(300);

/// Who may hand traces to this gateway: the current members, and those
/// that left within [`DEPARTED_GRACE`].
#[derive(Debug, Default)]
struct KnownSenders {
    current: HashSet<String>,
    departed: HashMap<String, Instant>,
}

impl KnownSenders {
    fn update(&mut self, members: &[String]) {
        let now = Instant::now();
        let new: HashSet<String> = members.iter().cloned().collect();
        for gone in self.current.difference(&new) {
            self.departed.insert(gone.clone(), now);
        }
        self.departed
            .retain(|m, at| !new.contains(m) && now.duration_since(*at) < DEPARTED_GRACE);
        self.current = new;
    }

    fn knows(&self, sender: &str) -> bool {
        let now = Instant::now();
        let known = |m: &String| same_member(m, sender);
        self.current.iter().any(known)
            || self
                .departed
                .iter()
                .any(|(m, at)| known(m) && now.duration_since(*at) < DEPARTED_GRACE)
    }
}

/// A trace handed in: when its first span arrived (on this process's
/// clock) and how many hand-overs in a row it has had without reaching
/// its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Arrival {
    pub first_seen: Duration,
    pub hops: u8,
}

/// What comes into a shard worker from elsewhere.
#[derive(Debug)]
pub(super) enum Import {
    /// Spans of handed-over traces (or handed back, when a hand-over
    /// failed), with their traces' clocks.
    Spans {
        batch: Arc<SpanBatch>,
        /// The shard's spans of `batch`; `None`: all.
        spans: Option<Vec<u32>>,
        arrivals: Arc<HashMap<TraceId, Arrival>>,
        /// With `tail_storage`: the journal record the inbox wrote them
        /// to; `None` for spans taken back (journaled by the worker).
        pin: Option<Pin>,
    },
    Decisions(Vec<KnownDecision>),
}

/// How many hand-overs in a row a trace may have without reaching its
/// owner before the gateway holding it keeps it. Gateways that disagree on
/// the members for a moment pass a trace between them; this bounds it.
const MAX_HOPS: u8 = 4;

/// The tail samplers of this process that take hand-overs, by component
/// id: each registers as it starts, and the OTLP/gRPC receiver hands them
/// what arrives on [`HANDOVER_PATH`]. One per process, shared through the
/// `BuildContext`.
#[derive(Clone, Default)]
pub struct HandoverExchange(Arc<Mutex<HashMap<String, Weak<Inbox>>>>);

impl std::fmt::Debug for HandoverExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_tuple("HandoverExchange").field(&ids).finish()
    }
}

impl HandoverExchange {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Inbox>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self, inbox: &Arc<Inbox>) -> Result<(), String> {
        let mut map = self.lock();
        if map
            .get(&inbox.processor)
            .is_some_and(|w| w.strong_count() > 0)
        {
            return Err(format!(
                "handover: processor {} with handover is in two pipelines; give each its own \
                 name (tail_sampling/<name>)",
                inbox.processor
            ));
        }
        map.insert(inbox.processor.clone(), Arc::downgrade(inbox));
        Ok(())
    }

    /// Serves one request of [`HANDOVER_PATH`] that came from `peer`.
    pub(crate) async fn deliver(
        &self,
        message: Bytes,
        peer: Option<SocketAddr>,
    ) -> Result<(), Status> {
        let request = wire::HandoverRequest::decode(message)
            .map_err(|e| Status::invalid_argument(format!("malformed HandoverRequest: {e}")))?;
        let inbox = self.lock().get(&request.processor).and_then(Weak::upgrade);
        let Some(inbox) = inbox else {
            return Err(Status::unimplemented(format!(
                "no tail_sampling processor {:?} with handover here",
                request.processor
            )));
        };
        inbox.deliver(request, peer).await
    }
}

/// Where hand-overs to one tail sampler arrive.
pub(super) struct Inbox {
    processor: String,
    /// Per shard; `None` once the processor is shutting down.
    shards: Mutex<Option<Vec<mpsc::Sender<Import>>>>,
    known: Arc<Mutex<KnownSenders>>,
    view: watch::Receiver<Arc<View>>,
    verify_sender_address: bool,
    clock: Clock,
    /// With `tail_storage`: spans handed over are journaled before the
    /// sender is answered, as any arrival.
    journal: Option<Arc<Journal>>,
}

impl Inbox {
    fn refuse(&self, reason: &'static str, status: Status) -> Status {
        metrics::counter!(m::HANDOVER_REFUSED_REQUESTS, "processor" => self.processor.clone(), "reason" => reason)
            .increment(1);
        tracing::debug!(processor = %self.processor, reason, message = %status.message(), "refused a hand-over");
        status
    }

    /// Whether `sender`, connected from `peer`, may hand traces over.
    fn check_sender(&self, sender: &str, peer: Option<SocketAddr>) -> Result<(), Status> {
        if !self.view.borrow().is_active() {
            return Err(self.refuse(
                "not_ready",
                Status::unavailable("this gateway does not know the members yet"),
            ));
        }
        let known = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .knows(sender);
        if !known {
            return Err(self.refuse(
                "unknown_sender",
                Status::permission_denied(format!("{sender:?} is not a member of the fleet")),
            ));
        }
        if self.verify_sender_address {
            let claimed = split_host_port(sender)
                .ok()
                .and_then(|(host, _)| host.parse::<IpAddr>().ok());
            if let (Some(claimed), Some(peer)) = (claimed, peer) {
                if claimed.to_canonical() != peer.ip().to_canonical() {
                    return Err(self.refuse(
                        "sender_address",
                        Status::permission_denied(format!(
                            "{sender:?} connected from {}",
                            peer.ip()
                        )),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn deliver(
        &self,
        request: wire::HandoverRequest,
        peer: Option<SocketAddr>,
    ) -> Result<(), Status> {
        self.check_sender(&request.sender, peer)?;
        let Some(shards) = self
            .shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return Err(self.refuse(
                "shutting_down",
                Status::failed_precondition("this gateway is shutting down"),
            ));
        };
        let n = shards.len();
        let batch = if request.spans.is_empty() {
            None
        } else {
            let batch = SpanBatch::scan(request.spans).map_err(|e| {
                self.refuse(
                    "malformed",
                    Status::invalid_argument(format!("malformed spans: {e}")),
                )
            })?;
            Some(batch)
        };
        let now = self.clock.now();
        let mut arrivals = HashMap::with_capacity(request.traces.len());
        for clock in &request.traces {
            let Ok(id) = TraceId::try_from(clock.trace_id.as_slice()) else {
                return Err(self.refuse(
                    "malformed",
                    Status::invalid_argument("a trace id is not 16 bytes"),
                ));
            };
            let age = Duration::from_micros(clock.age_micros);
            arrivals.insert(
                id,
                Arrival {
                    first_seen: now.saturating_sub(age),
                    hops: clock.hops.min(u32::from(u8::MAX)) as u8,
                },
            );
        }
        let mut decisions: Vec<Vec<KnownDecision>> = vec![Vec::new(); n];
        for d in &request.decisions {
            let Ok(id) = TraceId::try_from(d.trace_id.as_slice()) else {
                return Err(self.refuse(
                    "malformed",
                    Status::invalid_argument("a trace id is not 16 bytes"),
                ));
            };
            decisions[shard_of(&id, n)].push(KnownDecision {
                trace_id: id,
                sampled: d.sampled,
                policy: d.policy.map(|p| p as usize),
                // A threshold out of range is the sender's bug: the late
                // spans then keep the one they came with.
                tail: d.tail_threshold.and_then(Threshold::from_unsigned),
            });
        }
        let closed = || {
            self.refuse(
                "shutting_down",
                Status::failed_precondition("this gateway is shutting down"),
            )
        };
        let decided = request.decisions.len() as u64;
        let mut spans = 0;
        let mut imports: Vec<(usize, Import)> = Vec::new();
        if let Some(batch) = batch {
            spans = batch.len() as u64;
            let pin = self.journal_batch(&batch, now, &arrivals).await?;
            let batch = Arc::new(batch);
            let arrivals = Arc::new(arrivals);
            let mut routes: Vec<Vec<u32>> = vec![Vec::new(); n];
            for (i, span) in batch.spans().iter().enumerate() {
                routes[shard_of(&span.trace_id, n)].push(i as u32);
            }
            let whole = routes.iter().filter(|r| !r.is_empty()).count() == 1;
            for (shard, route) in routes.into_iter().enumerate() {
                if route.is_empty() {
                    continue;
                }
                let import = Import::Spans {
                    batch: batch.clone(),
                    spans: (!whole).then_some(route),
                    arrivals: arrivals.clone(),
                    pin: pin.clone(),
                };
                imports.push((shard, import));
            }
        }
        for (shard, decisions) in decisions.into_iter().enumerate() {
            if !decisions.is_empty() {
                imports.push((shard, Import::Decisions(decisions)));
            }
        }
        // All or nothing: a request is taken whole, or refused whole and
        // its sender keeps it.
        let mut permits = Vec::with_capacity(imports.len());
        for (shard, _) in &imports {
            permits.push(shards[*shard].reserve().await.map_err(|_| closed())?);
        }
        for (permit, (_, import)) in permits.into_iter().zip(imports) {
            permit.send(import);
        }
        if spans > 0 {
            metrics::counter!(m::HANDOVER_RECEIVED_SPANS, "processor" => self.processor.clone())
                .increment(spans);
        }
        if decided > 0 {
            metrics::counter!(m::HANDOVER_RECEIVED_DECISIONS, "processor" => self.processor.clone())
                .increment(decided);
        }
        Ok(())
    }

    /// With `tail_storage`: writes handed-over spans to the journal, with
    /// their traces' clocks. A storage that refuses refuses the hand-over
    /// (its sender keeps the traces).
    async fn journal_batch(
        &self,
        batch: &SpanBatch,
        now: Duration,
        arrivals: &HashMap<TraceId, Arrival>,
    ) -> Result<Option<Pin>, Status> {
        let Some(journal) = &self.journal else {
            return Ok(None);
        };
        journal_handed_over(journal, batch, now, arrivals)
            .await
            .map(Some)
            .map_err(|e| self.refuse("storage", Status::unavailable(e)))
    }

    /// Stops taking hand-overs (they are refused from now on).
    pub(super) fn close(&self) {
        self.shards.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Writes spans handed over (or taken back from a failed hand-over) to
/// `journal`, arriving `now`, with their traces' clocks from `arrivals`.
pub(super) async fn journal_handed_over(
    journal: &Arc<Journal>,
    batch: &SpanBatch,
    now: Duration,
    arrivals: &HashMap<TraceId, Arrival>,
) -> Result<Pin, String> {
    let clocks: Vec<(TraceId, Duration)> =
        arrivals.iter().map(|(id, a)| (*id, a.first_seen)).collect();
    let record = batch.clone();
    let written = journal::write_off_thread(journal, move |j| {
        j.append_handed_over(&record, now, &clocks)
    })
    .await;
    match written {
        Ok(Ok(pin)) => Ok(pin as Pin),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e),
    }
}

/// Hand-over as one tail sampler runs it: the view its workers follow,
/// the inbox, the forwarder.
pub(super) struct Handover {
    config: Config,
    /// The live member count, for the adaptive policies' goals.
    fleet: FleetSize,
    processor: String,
    view: Arc<watch::Sender<Arc<View>>>,
    known: Arc<Mutex<KnownSenders>>,
    pub(super) inbox: Arc<Inbox>,
    pub(super) forwarder: Forwarder,
}

/// The pieces each shard worker gets.
pub(super) struct ShardParts {
    pub imports: mpsc::Receiver<Import>,
}

impl Handover {
    /// Sets up hand-over for processor `processor` with `shards` workers and
    /// registers its inbox with `exchange`. Nothing is handed over until
    /// [`Self::follow`] has the members.
    pub(super) fn new(
        processor: &str,
        config: &Config,
        shards: usize,
        clock: Clock,
        exchange: &HandoverExchange,
        journal: Option<Arc<Journal>>,
        fleet: &FleetSize,
    ) -> Result<(Handover, Vec<ShardParts>), ComponentError> {
        let (view_tx, view_rx) = watch::channel(Arc::new(View::inactive()));
        let known = Arc::new(Mutex::new(KnownSenders::default()));
        let mut senders = Vec::with_capacity(shards);
        let mut parts = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel(super::SHARD_QUEUE);
            senders.push(tx);
            parts.push(ShardParts { imports: rx });
        }
        let inbox = Arc::new(Inbox {
            processor: processor.to_string(),
            shards: Mutex::new(Some(senders)),
            known: known.clone(),
            view: view_rx,
            verify_sender_address: config.verify_sender_address,
            clock,
            journal,
        });
        exchange
            .register(&inbox)
            .map_err(|message| error("handover", message))?;
        let forwarder = Forwarder::start(processor, config, clock);
        Ok((
            Handover {
                config: config.clone(),
                fleet: fleet.clone(),
                processor: processor.to_string(),
                view: Arc::new(view_tx),
                known,
                inbox,
                forwarder,
            },
            parts,
        ))
    }

    /// Shard worker `parts`' side of hand-over.
    pub(super) fn shard(&self, parts: ShardParts) -> ShardHandover {
        ShardHandover::new(
            &self.processor,
            self.view.subscribe(),
            parts.imports,
            self.forwarder.sender(),
            self.shutdown_within(),
        )
    }

    /// How long the hand-over at shutdown may take: a request's retries,
    /// its last attempt, and a little.
    pub(super) fn shutdown_within(&self) -> Duration {
        self.config.retry_for + self.config.protocol.otlp.timeout + Duration::from_secs(1)
    }

    /// Starts the resolver and follows its members until `shutdown`.
    /// Returns once the first list is in (an error when the resolver
    /// cannot start).
    pub(super) async fn follow(&self, shutdown: CancellationToken) -> Result<(), String> {
        let resolver = self
            .config
            .resolver
            .clone()
            .ok_or("handover: no resolver given")?;
        let mut members = resolver
            .start(shutdown.clone())
            .await
            .map_err(|e| format!("handover: {e}"))?;
        let follower = Follower {
            processor: self.processor.clone(),
            me: self.config.me(),
            view: self.view.clone(),
            known: self.known.clone(),
            fleet: self.fleet.clone(),
            members_gauge: metrics::gauge!(m::HANDOVER_MEMBERS, "processor" => self.processor.clone()),
            member_gauge: metrics::gauge!(m::HANDOVER_IS_MEMBER, "processor" => self.processor.clone()),
        };
        follower.apply(members.borrow_and_update().clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = members.changed() => if changed.is_err() {
                        // The resolver stopped: keep the last members.
                        return;
                    },
                }
                follower.apply(members.borrow_and_update().clone());
            }
        });
        Ok(())
    }

    /// Sets the members directly (tests).
    #[cfg(test)]
    pub(super) fn set_members(&self, members: &[&str]) {
        let members = crate::membership::members(members.iter().map(|m| m.to_string()));
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(&members);
        self.fleet.set(members.len());
        self.view
            .send_replace(Arc::new(View::new(members, &self.config.me())));
    }
}

/// Turns member lists into views.
struct Follower {
    processor: String,
    me: String,
    view: Arc<watch::Sender<Arc<View>>>,
    known: Arc<Mutex<KnownSenders>>,
    fleet: FleetSize,
    members_gauge: metrics::Gauge,
    member_gauge: metrics::Gauge,
}

impl Follower {
    fn apply(&self, members: Members) {
        if self.view.borrow().members() == &members[..] {
            return;
        }
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(&members);
        let view = View::new(members.clone(), &self.me);
        self.members_gauge.set(members.len() as f64);
        // No members known counts as one gateway: this one.
        self.fleet.set(members.len());
        self.member_gauge
            .set(if view.is_member() { 1.0 } else { 0.0 });
        if view.is_member() || members.is_empty() {
            tracing::info!(
                processor = %self.processor, members = ?&members[..], member = view.is_member(),
                "hand-over: the members changed"
            );
        } else {
            tracing::warn!(
                processor = %self.processor, me = %self.me, members = ?&members[..],
                "hand-over: this gateway's advertised_endpoint is not among the members; it hands \
                 every trace to the others (expected while it leaves the fleet)"
            );
        }
        self.view.send_replace(Arc::new(view));
    }
}
