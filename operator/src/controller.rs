//! The ToaPolicy controller: watches policies, Nodes, ToaNodeStates and the agent DaemonSet,
//! and on each reconcile snapshots the reflector stores, asks [`plan`] what the cluster should
//! look like, and applies the difference.
//!
//! Assignment of nodes to policies is global (a node belongs to the best-ranked policy that
//! selects it), so every reconcile plans the whole cluster. Cluster-wide writes (node states,
//! labels, deletions, DaemonSet) are diffed against the stores and serialized by a lock, so
//! reconciles of several policies never race each other's writes; the per-policy part (status,
//! finalizer, events) is written by that policy's reconcile. A housekeeping pass runs the
//! cluster-wide part on a timer as well, because with no ToaPolicy left there is no reconcile
//! to clean up after the last one (or to repair a deleted DaemonSet).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use toa_crds::conditions::{
    new_condition, set_condition, status as cond_status, types, PolicyReason,
};
use toa_crds::{KernelInfo, ToaNodeState, ToaPolicy, ToaPolicyStatus};
use tokio::sync::watch;

use crate::agents::{self, NodeAgent};
use crate::apply::{self, ClusterTarget, WriteFailure};
use crate::error::{Backoff, Error};
use crate::lease::Fence;
use crate::metrics::Metrics;
use crate::plan::stale::{stale_nodes, NODE_LEASE_NAMESPACE};
use crate::plan::{
    first_names, plan, sort_conditions, ClusterSnapshot, FinalizerRelease, NodeMeta, Plan,
};
use crate::server::Liveness;

/// Reconcile `kind` label of the per-policy reconcile.
pub const KIND_POLICY: &str = "ToaPolicy";
/// Reconcile `kind` label of the housekeeping pass.
pub const KIND_CLUSTER: &str = "Cluster";
/// How often the housekeeping pass runs without being asked.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);
/// A leader that finished no reconcile pass for this long is stuck and fails `/healthz`
/// (three housekeeping intervals: two missed passes are tolerated, e.g. a slow API server).
/// The `--stall-timeout` flag overrides it.
pub const STALL_LIMIT: Duration = Duration::from_secs(3 * HOUSEKEEPING_INTERVAL.as_secs());
/// Requeue of a healthy policy: a safety net, since watches drive everything else.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Objects per page of the initial (and any later) list of Nodes and ToaNodeStates: the
/// memory of a list is bounded by one page instead of growing with the cluster.
pub const LIST_PAGE_SIZE: u32 = 500;

/// The reflector stores a reconcile plans from.
#[derive(Clone)]
pub struct Stores {
    pub policies: Store<ToaPolicy>,
    pub nodes: Store<NodeMeta>,
    pub node_states: Store<ToaNodeState>,
    pub daemonsets: Store<DaemonSet>,
    /// The agent DaemonSet's pods (slimmed to what [`crate::agents`] reads).
    pub agent_pods: Store<Pod>,
    /// Events about the agent DaemonSet (the DaemonSet controller's FailedCreate).
    pub agent_events: Store<CoreEvent>,
    /// The kubelets' node Leases and the grace period after which a node is stale; `None`
    /// when stale nodes are not looked for (`--node-lease-grace-seconds 0`).
    pub node_leases: Option<NodeLeases>,
}

/// Node Leases (kube-node-lease) and how old one may get before its node is stale.
#[derive(Clone)]
pub struct NodeLeases {
    pub store: Store<Lease>,
    pub grace: Duration,
}

impl Stores {
    /// True once every store holds a complete initial list. Planning from a partial view would
    /// be dangerous (an empty node store reads as "every ToaNodeState is an orphan").
    pub fn ready(&self) -> bool {
        fn ready<K>(s: &Store<K>) -> bool
        where
            K: Resource + Clone + 'static,
            K::DynamicType: Eq + Hash + Clone,
        {
            matches!(s.wait_until_ready().now_or_never(), Some(Ok(())))
        }
        ready(&self.policies)
            && ready(&self.nodes)
            && ready(&self.node_states)
            && ready(&self.daemonsets)
            && ready(&self.agent_pods)
            && ready(&self.agent_events)
        // Node Leases are left out on purpose: until their store is complete (or when the
        // Lease watch fails, e.g. without RBAC on kube-node-lease) no node is stale, which is
        // safe; it must not stop everything else.
    }

    pub fn snapshot(&self) -> ClusterSnapshot {
        ClusterSnapshot {
            policies: self.policies.state(),
            nodes: self.nodes.state(),
            node_states: self.node_states.state(),
            node_leases: self
                .node_leases
                .as_ref()
                .map(|l| l.store.state())
                .unwrap_or_default(),
            node_lease_grace: self.node_leases.as_ref().map(|l| l.grace),
        }
    }
}

/// Everything a reconcile needs.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    /// The agent DaemonSet as rendered from the agent config.
    pub agent: DaemonSet,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub backoff: Backoff,
    /// Serializes cluster-wide writes between concurrent reconciles and housekeeping.
    pub sync_lock: tokio::sync::Mutex<()>,
    /// Wall clock handed to `plan` (a parameter so tests control time).
    pub clock: fn() -> Timestamp,
    /// Writes happen only while the leader lease is fresh (see [`Fence`]).
    pub fence: Fence,
    /// Told about every finished pass (for `/healthz`).
    pub liveness: Arc<Liveness>,
    /// How long a node may lack a running agent pod before its policy says so.
    pub agent_start_timeout: Duration,
}

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        agent: DaemonSet,
        metrics: Arc<Metrics>,
        reporter: Reporter,
    ) -> Self {
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            stores,
            agent,
            metrics,
            backoff: Backoff::default(),
            sync_lock: tokio::sync::Mutex::new(()),
            clock: Timestamp::now,
            fence: Fence::always_open(),
            liveness: Arc::new(Liveness::new(STALL_LIMIT)),
            agent_start_timeout: agents::DEFAULT_START_TIMEOUT,
        }
    }

    /// See [`Context::agent_start_timeout`].
    pub fn with_agent_start_timeout(mut self, timeout: Duration) -> Self {
        self.agent_start_timeout = timeout;
        self
    }

    /// Reports finished passes to `liveness` (the HTTP server's).
    pub fn with_liveness(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = liveness;
        self
    }

    /// Writes only while `fence` holds (the election's; the default is always open).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    /// Fails when the lease is not fresh: called right before each batch of writes.
    fn fenced(&self) -> Result<(), Error> {
        if self.fence.holds() {
            Ok(())
        } else {
            Err(self.count(Error::LeaseNotHeld))
        }
    }

    fn count(&self, e: Error) -> Error {
        self.metrics.error(e.kind(), &e.reason());
        e
    }
}

/// Plans the whole cluster and applies its cluster-wide part. Returns the plan for the caller's
/// per-policy part, with the writes that failed (each naming the policy it holds back): a
/// refused write never stops the per-policy part, of this policy or of any other. The only
/// error is a lease that is not held (nothing may be written then). `finalized` names a policy
/// whose finalizer was just added (the store may not show it yet).
///
/// Node states of policies that still lack the `toa.dev/unload` finalizer are not written: a
/// policy must never load a module it could not unload on deletion. Their own reconcile adds
/// the finalizer first and writes them right after.
pub async fn sync(
    ctx: &Context,
    finalized: Option<&str>,
) -> Result<(Synced, Vec<WriteFailure>), Error> {
    let _guard = ctx.sync_lock.lock().await;
    let snapshot = ctx.stores.snapshot();
    let mut planned = plan(&snapshot, (ctx.clock)());
    // The writes below change most stored objects; each replaced object the snapshot still
    // held would stay alive beside its successor until the pass ends (at 20,000 nodes, up to a
    // second copy of the ToaNodeState store). The writes read the stores, not the snapshot.
    drop(snapshot);
    let unprotected: BTreeSet<String> = planned
        .finalizers_to_add
        .iter()
        .filter(|p| Some(p.as_str()) != finalized)
        .cloned()
        .collect();
    if !unprotected.is_empty() {
        planned
            .node_states
            .retain(|_, d| !unprotected.contains(&d.spec.policy));
    }
    ctx.metrics
        .set_nodes(planned.node_phases.iter().flat_map(|(policy, phases)| {
            phases
                .iter()
                .map(move |(phase, n)| ((policy.as_str(), phase.as_str()), i64::from(*n)))
        }));
    ctx.fenced()?;
    let target = ClusterTarget {
        client: &ctx.client,
        node_states: &ctx.stores.node_states,
        daemonsets: &ctx.stores.daemonsets,
        agent: &ctx.agent,
        metrics: &ctx.metrics,
    };
    let outcome = apply::sync_cluster(&target, &planned).await;
    ctx.liveness.pass_finished(Instant::now());
    if outcome.report != apply::SyncReport::default() {
        tracing::info!(report = ?outcome.report, "applied cluster changes");
    }
    Ok((Synced::from(planned), outcome.failures))
}

/// What a reconcile reads of a finished [`sync`] pass: the plan without its desired node
/// states, which are written by then. Only each node's policy is kept (for the
/// AgentsAvailable condition), so a reconcile that still holds its result while the next pass
/// plans does not hold a second set of desired states (about 350 bytes per node).
#[derive(Debug, Default)]
pub struct Synced {
    /// Node name → the policy it was planned for.
    pub node_policies: BTreeMap<String, String>,
    pub policy_status: BTreeMap<String, ToaPolicyStatus>,
    pub finalizer_releases: BTreeMap<String, FinalizerRelease>,
    pub requeue_after: Option<Duration>,
}

impl From<Plan> for Synced {
    fn from(plan: Plan) -> Self {
        Synced {
            node_policies: plan
                .node_states
                .into_iter()
                .map(|(node, desired)| (node, desired.spec.policy))
                .collect(),
            policy_status: plan.policy_status,
            finalizer_releases: plan.finalizer_releases,
            requeue_after: plan.requeue_after,
        }
    }
}

/// The Synced condition of a policy from the writes that failed for it.
pub fn synced_condition(
    failures: &[WriteFailure],
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    if failures.is_empty() {
        return new_condition(
            types::SYNCED,
            true,
            PolicyReason::WritesApplied,
            "every write for this policy's nodes and the agent DaemonSet was accepted",
            generation,
            now,
        );
    }
    let parts = first_names(failures.iter().map(|f| f.error.summary()));
    new_condition(
        types::SYNCED,
        false,
        PolicyReason::WriteFailed,
        format!(
            "{} write(s) for this policy failed (retried with backoff): {}",
            failures.len(),
            parts.join("; ")
        ),
        generation,
        now,
    )
}

/// Sets `extra` on `status` (keeping transition times of unchanged statuses) in the fixed order.
pub fn overlay_conditions(status: &mut ToaPolicyStatus, extra: Vec<Condition>) {
    for c in extra {
        set_condition(&mut status.conditions, c);
    }
    sort_conditions(&mut status.conditions);
}

/// Reconciles one ToaPolicy (see the module docs for what is global and what is per policy).
pub async fn reconcile(policy: Arc<ToaPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_policy(&policy, &ctx).await;
    ctx.metrics
        .reconciled(KIND_POLICY, result.is_ok(), started.elapsed());
    if result.is_ok() {
        ctx.backoff.reset(&policy.name_any());
    }
    result
}

async fn reconcile_policy(policy: &ToaPolicy, ctx: &Context) -> Result<Action, Error> {
    if !ctx.stores.ready() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let name = policy.name_any();
    let deleting = policy.metadata.deletion_timestamp.is_some();

    if !deleting {
        ctx.fenced()?;
        // Before any node is touched: a policy must never load modules it could not unload.
        apply::add_finalizer(&ctx.client, policy)
            .await
            .map_err(|e| ctx.count(e))?;
    }

    let (planned, mut mine) = sync(ctx, (!deleting).then_some(name.as_str())).await?;
    // Other policies' failures are theirs: their own reconciles report them.
    mine.retain(|f| f.blocks(&name));

    let old = policy.status.clone().unwrap_or_default();
    let mut recheck_agents = None;
    if let Some(planned_status) = planned.policy_status.get(&name) {
        let mut new = planned_status.clone();
        let (agents_available, recheck) = agents_condition(ctx, &name, &planned, policy);
        recheck_agents = recheck;
        overlay_conditions(
            &mut new,
            vec![
                synced_condition(&mine, policy.metadata.generation, (ctx.clock)()),
                agents_available,
            ],
        );
        if new != old {
            ctx.fenced()?;
            apply::apply_policy_status(&ctx.client, &name, &new)
                .await
                .map_err(|e| ctx.count(e))?;
            publish_transitions(ctx, policy, &old.conditions, &new.conditions).await;
        }
    }

    if deleting {
        if let Some(release) = planned.finalizer_releases.get(&name) {
            ctx.fenced()?;
            if apply::remove_finalizer(&ctx.client, policy)
                .await
                .map_err(|e| ctx.count(e))?
            {
                let (kind, text) = describe_release(release);
                publish(
                    ctx,
                    policy,
                    Event {
                        type_: kind,
                        reason: "FinalizerReleased".to_string(),
                        note: Some(text),
                        action: "Delete".to_string(),
                        secondary: None,
                    },
                )
                .await;
            }
            return Ok(Action::await_change());
        }
    }

    // Status, finalizer and events are done: now retry this policy's failed writes with
    // backoff (its condition already says what failed).
    apply::first_error(mine)?;

    let requeue = [planned.requeue_after, recheck_agents]
        .into_iter()
        .flatten()
        .fold(RESYNC_INTERVAL, Duration::min);
    Ok(Action::requeue(requeue))
}

/// The AgentsAvailable condition of `name` from the agent pods, the DaemonSet and its Events.
fn agents_condition(
    ctx: &Context,
    name: &str,
    planned: &Synced,
    policy: &ToaPolicy,
) -> (Condition, Option<Duration>) {
    let states: Vec<(&str, Option<Arc<ToaNodeState>>)> = planned
        .node_policies
        .iter()
        .filter(|(_, p)| p.as_str() == name)
        .map(|(n, _)| (n.as_str(), ctx.stores.node_states.get(&ObjectRef::new(n))))
        .collect();
    let nodes: Vec<NodeAgent<'_>> = states
        .iter()
        .map(|(node, state)| NodeAgent {
            node,
            state: state.as_deref(),
        })
        .collect();
    // Only a node whose agent has not reported yet is judged by its pod and the DaemonSet's
    // Events: in the steady state (every agent reported) neither store is scanned.
    let awaiting = nodes
        .iter()
        .any(|n| n.state.is_some_and(|s| s.status.is_none()));
    let (pods, events) = if awaiting {
        (
            ctx.stores.agent_pods.state(),
            ctx.stores.agent_events.state(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let by_node = agents::pods_by_node(pods.iter().map(|p| p.as_ref()));
    let events: Vec<&CoreEvent> = events.iter().map(|e| e.as_ref()).collect();
    let ds = ctx.stores.daemonsets.get(
        &ObjectRef::new(&ctx.agent.name_any()).within(&ctx.agent.namespace().unwrap_or_default()),
    );
    let refusal = agents::create_refusal(ds.as_deref(), &events);
    agents::agents_condition(
        &nodes,
        &by_node,
        refusal.as_deref(),
        ctx.agent_start_timeout,
        policy.metadata.generation,
        (ctx.clock)(),
    )
}

/// Event type and text for a finalizer release.
pub fn describe_release(release: &FinalizerRelease) -> (EventType, String) {
    let f = toa_crds::POLICY_FINALIZER;
    match release {
        FinalizerRelease::Kept => (
            EventType::Normal,
            format!("released {f}: lifecycle.onDelete is Keep, modules stay loaded"),
        ),
        FinalizerRelease::AllUnloaded => (
            EventType::Normal,
            format!("released {f}: every node of the policy unloaded the module"),
        ),
        FinalizerRelease::TimedOut { remaining, nodes } => (
            EventType::Warning,
            format!(
                "released {f} after lifecycle.unloadTimeoutSeconds with {remaining} node(s) not unloaded: {}",
                nodes.join(", ")
            ),
        ),
    }
}

/// Retries a failed reconcile after a jittered exponential backoff.
pub fn error_policy(policy: Arc<ToaPolicy>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.next_delay(&policy.name_any());
    tracing::warn!(policy = %policy.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Events for the conditions whose status changed.
pub fn transition_events(old: &[Condition], new: &[Condition]) -> Vec<Event> {
    new.iter()
        .filter(|c| {
            !old.iter()
                .any(|o| o.type_ == c.type_ && o.status == c.status)
        })
        .map(|c| {
            let bad = match c.type_.as_str() {
                types::READY | types::SYNCED | types::AGENTS_AVAILABLE => {
                    c.status == cond_status::FALSE
                }
                types::DEGRADED | types::CONFLICT => c.status == cond_status::TRUE,
                _ => false,
            };
            Event {
                type_: if bad {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: if c.reason.is_empty() {
                    c.type_.clone()
                } else {
                    c.reason.clone()
                },
                note: Some(format!("{}={}: {}", c.type_, c.status, c.message)),
                action: "Reconcile".to_string(),
                secondary: None,
            }
        })
        .collect()
}

async fn publish_transitions(
    ctx: &Context,
    policy: &ToaPolicy,
    old: &[Condition],
    new: &[Condition],
) {
    for ev in transition_events(old, new) {
        publish(ctx, policy, ev).await;
    }
}

/// Events are best effort: a failure is logged and counted, never fails the reconcile. Like
/// every write, only while the lease is held.
async fn publish(ctx: &Context, policy: &ToaPolicy, mut ev: Event) {
    if !ctx.fence.holds() {
        return;
    }
    ev.note = ev.note.map(|n| truncate_note(&n));
    let reference = policy.object_ref(&());
    if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
        let e = ctx.count(Error::api("Event", "publish", &policy.name_any())(e));
        tracing::warn!(error = %e, "could not publish event");
    }
}

/// The API server refuses an Event whose note is longer than 1024 bytes: a long admission
/// message (Pod Security lists every violation) is cut, the condition keeps it whole.
pub const MAX_NOTE_BYTES: usize = 1024;

/// `note` cut to at most [`MAX_NOTE_BYTES`] on a character boundary, marked with an ellipsis.
pub fn truncate_note(note: &str) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note.to_string();
    }
    const MORE: &str = "…";
    let mut end = MAX_NOTE_BYTES - MORE.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MORE}", &note[..end])
}

/// One housekeeping pass (cluster-wide part only), counted like a reconcile.
pub async fn housekeeping_pass(ctx: &Context) -> Result<(), Error> {
    if !ctx.stores.ready() {
        return Ok(());
    }
    let started = Instant::now();
    // Failures were logged and counted; the policies they block say so in their status.
    let result = sync(ctx, None)
        .await
        .and_then(|(_, failures)| apply::first_error(failures));
    ctx.metrics
        .reconciled(KIND_CLUSTER, result.is_ok(), started.elapsed());
    result
}

/// Policies trigger a re-plan of every policy only when what decides node ownership may have
/// changed: a new object (uid), its spec (`metadata.generation`, bumped by the apiserver on
/// every spec change) or the start of its deletion. Status writes (each reconcile's own)
/// trigger nothing, or every pass would wake every other policy.
fn policy_trigger_hash(policy: &PartialObjectMeta<ToaPolicy>) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    policy.metadata.uid.hash(&mut h);
    policy.metadata.generation.hash(&mut h);
    policy.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// Nodes trigger reconciles only when what planning reads changes (identity, labels, taint
/// keys), not on every kubelet status update.
fn node_trigger_hash(node: &NodeMeta) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.metadata.uid.hash(&mut h);
    node.metadata.labels.hash(&mut h);
    // Taint keys: the virtual-kubelet taint excludes a node.
    for t in node.spec.iter().flat_map(|s| s.taints.iter().flatten()) {
        t.key.hash(&mut h);
    }
    Some(h.finish())
}

/// Drops what planning and the write diff never read from a ToaNodeState before it is stored:
/// managed fields, annotations, and the agent's module, build (with its log tail), self-test,
/// version and heartbeat. Kept: the spec, owner references and uid (the diff and guarded
/// deletes), generation, and of the status the phase, reason, message, observed generation,
/// reload request and kernel release.
///
/// Labels: the write diff only asks whether the `toa.dev/policy` label names the spec's
/// policy, and nearly always it does. Such a state is stored with `metadata.labels: None`
/// (a label map costs about 560 bytes per object even with one entry: 11 MiB at 20,000
/// nodes); any other state keeps its labels as `Some` (an empty map when it had none, which
/// allocates nothing). [`apply::node_state_needs_apply`] reads `None` as "labelled".
pub fn slim_node_state(state: &mut ToaNodeState) {
    state.metadata.managed_fields = None;
    state.metadata.annotations = None;
    let labels = state.metadata.labels.take().unwrap_or_default();
    if labels.get(apply::POLICY_LABEL) != Some(&state.spec.policy) {
        state.metadata.labels = Some(labels);
    }
    if let Some(status) = state.status.as_mut() {
        status.module = None;
        status.build = None;
        status.self_test = None;
        status.agent_version = None;
        status.last_heartbeat_time = None;
        if let Some(kernel) = status.kernel.as_mut() {
            *kernel = KernelInfo {
                release: std::mem::take(&mut kernel.release),
                ..KernelInfo::default()
            };
        }
    }
}

/// Keeps of an agent pod what [`agents`] reads: name, times, node, phase and conditions.
fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: spec.node_name,
            affinity: spec.affinity,
            ..Default::default()
        });
    }
}

/// Yields once each time the set of stale nodes changes: checked on a timer (a Lease that is
/// no longer renewed sends no event), and at once when a node that was stale renews its Lease.
/// Drives the Lease watch (`events`: names of touched Leases; the stream ending ends this one).
/// `clock` is the wall clock the Leases are compared with (a parameter for tests).
pub fn stale_changes(
    events: futures::stream::BoxStream<'static, Option<String>>,
    leases: NodeLeases,
    clock: fn() -> Timestamp,
) -> impl futures::Stream<Item = ()> + Send {
    let tick = (leases.grace / 4).clamp(Duration::from_secs(1), Duration::from_secs(10));
    // One interval for the stream's life: the renewals of healthy nodes (one every few
    // seconds per node) arrive far more often than the tick, and must not restart it.
    let mut timer = tokio::time::interval(tick);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold(
        (events, BTreeSet::<String>::new(), timer),
        move |(mut events, mut last, mut timer)| {
            let leases = leases.clone();
            async move {
                loop {
                    tokio::select! {
                        ev = events.next() => match ev {
                            None => return None,
                            // Only a renewal of a node seen stale can change the set now.
                            Some(Some(name)) if last.contains(&name) => {}
                            Some(_) => continue,
                        },
                        _ = timer.tick() => {}
                    }
                    let now = stale_nodes(&leases.store.state(), Some(leases.grace), clock());
                    if now != last {
                        tracing::info!(stale = ?now, "stale nodes changed (node Leases in kube-node-lease)");
                        last = now;
                        return Some(((), (events, last, timer)));
                    }
                }
            }
        },
    )
}

/// A reflector over `api`: the store it fills (each object trimmed by `slim` first) and the
/// stream of touched objects that drives it, with the default backoff.
fn mirror<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: fn(&mut K),
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher(api, config).modify(slim))
        .default_backoff()
        .touched_objects();
    (store, stream)
}

/// How the Node and ToaNodeState watches list: in pages of [`LIST_PAGE_SIZE`], from the most
/// recent state. No `resourceVersion=0` ("any" semantic): the apiserver answers such a list
/// from its watch cache in one piece and ignores `limit`, so the operator would hold every
/// object of the cluster at once while decoding.
pub fn paged_list() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE_SIZE)
}

fn all_policies(store: &Store<ToaPolicy>) -> Vec<ObjectRef<ToaPolicy>> {
    store
        .state()
        .iter()
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Where the agent DaemonSet lives.
#[derive(Clone)]
pub struct AgentTarget {
    pub desired: DaemonSet,
    pub name: String,
    pub namespace: String,
    /// See [`Context::agent_start_timeout`].
    pub start_timeout: Duration,
}

/// Runs the controller and the housekeeping loop until `shutdown` turns true. `synced` turns
/// true once all stores are populated (for /readyz). `node_lease_grace`: see [`NodeLeases`].
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: Client,
    agent: AgentTarget,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    fence: Fence,
    liveness: Arc<Liveness>,
    node_lease_grace: Option<Duration>,
    shutdown: watch::Receiver<bool>,
    synced: watch::Sender<bool>,
) {
    let policies_api: Api<ToaPolicy> = Api::all(client.clone());
    let controller = Controller::new(policies_api, watcher::Config::default().any_semantic());
    let policy_store = controller.store();

    // A policy created, changed or being deleted can move nodes to or from every other policy
    // (priority and selectors decide together): all of them re-plan, so a policy that loses a
    // node to a higher-priority one shows Conflict at once, not at its next resync. Metadata
    // only: the generation and deletion timestamp are all the trigger reads.
    let policy_changes = watcher(
        Api::<PartialObjectMeta<ToaPolicy>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(policy_trigger_hash, Default::default());

    let any = || watcher::Config::default().any_semantic();
    // Nodes decoded into NodeMeta: name, uid, resourceVersion, labels and taints. The status
    // (images, nodeInfo, conditions: 10-30 KB per Node) is skipped while decoding, never built.
    let (nodes, node_stream) = mirror(Api::<NodeMeta>::all(client.clone()), paged_list(), |_| {});
    let node_stream = node_stream.predicate_filter(node_trigger_hash, Default::default());
    let (node_states, states_stream) = mirror(
        Api::<ToaNodeState>::all(client.clone()),
        paged_list(),
        slim_node_state,
    );
    // Unfiltered: a generation predicate would also swallow the deletion we must repair; the
    // status churn of a rollout is absorbed by the controller's debounce.
    let (daemonsets, ds_stream) = mirror(
        Api::<DaemonSet>::namespaced(client.clone(), &agent.namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", agent.name)),
        |_| {},
    );

    // The agent pods (only read, on each reconcile: their churn triggers nothing) and the
    // Events about the DaemonSet (a FailedCreate reaches every policy at once).
    let selector = crate::daemonset::selector_labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let (agent_pods, pods_stream) = mirror(
        Api::<Pod>::namespaced(client.clone(), &agent.namespace),
        any().labels(&selector),
        slim_pod,
    );
    let (agent_events, events_stream) = mirror(
        Api::<CoreEvent>::namespaced(client.clone(), &agent.namespace),
        watcher::Config::default().fields(&format!(
            "involvedObject.kind=DaemonSet,involvedObject.name={}",
            agent.name
        )),
        |_| {},
    );
    // Node Leases: the store alone (a renewal every 10 s per node must not reconcile
    // anything); `stale_changes` triggers a reconcile of every policy when the set of stale
    // nodes changes.
    let lease_watch = node_lease_grace.map(|grace| {
        let (store, stream) = mirror(
            Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            any(),
            |l| l.metadata.managed_fields = None,
        );
        let renewed = stream
            .map(|r| match r {
                Ok(l) => l.metadata.name,
                Err(e) => {
                    tracing::warn!(error = %e, "node Lease watch failed (is list/watch on leases in kube-node-lease granted?): stale nodes are not reported meanwhile");
                    None
                }
            })
            .boxed();
        (NodeLeases { store, grace }, renewed)
    });

    let stores = Stores {
        policies: policy_store.clone(),
        nodes,
        node_states,
        daemonsets,
        agent_pods,
        agent_events,
        node_leases: lease_watch.as_ref().map(|(leases, _)| leases.clone()),
    };
    let ctx = Arc::new(
        Context::new(client, stores.clone(), agent.desired, metrics, reporter)
            .with_fence(fence)
            .with_liveness(liveness)
            .with_agent_start_timeout(agent.start_timeout),
    );

    let by_policy = policy_store.clone();
    let by_node = policy_store.clone();
    let by_state = policy_store.clone();
    let by_ds = policy_store.clone();
    let by_event = policy_store;
    let mut stop = shutdown.clone();
    let controller = controller
        .with_config(ControllerConfig::default().debounce(Duration::from_secs(1)))
        .watches_stream(policy_changes, move |_policy| all_policies(&by_policy))
        .watches_stream(node_stream, move |_node| all_policies(&by_node))
        .watches_stream(states_stream, move |state: ToaNodeState| {
            // Its policy's status depends on it; if that policy is gone, any policy's pass
            // may clean it up.
            let own = ObjectRef::<ToaPolicy>::new(&state.spec.policy);
            if by_state.get(&own).is_some() {
                vec![own]
            } else {
                all_policies(&by_state)
            }
        })
        .watches_stream(ds_stream, move |_ds| all_policies(&by_ds))
        .watches_stream(events_stream, move |_ev| all_policies(&by_event))
        .watches_stream(pods_stream, |_pod| Vec::<ObjectRef<ToaPolicy>>::new())
        .reconcile_all_on(match lease_watch {
            Some((leases, renewed)) => stale_changes(renewed, leases, Timestamp::now).boxed(),
            None => futures::stream::pending().boxed(),
        })
        .graceful_shutdown_on(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(policy = %obj.name, "reconciled"),
                // A failing list/watch (RBAC, missing CRD, API down) keeps the stores unready:
                // say so loudly, it is the reason nothing happens.
                Err(kube::runtime::controller::Error::QueueError(e)) => {
                    tracing::warn!(error = %e, "watch failed (are the toa.dev CRDs installed and RBAC granted?)")
                }
                Err(e) => tracing::debug!(error = %e, "reconcile skipped"),
            }
        });

    let housekeeping = housekeeping_loop(ctx, stores, shutdown, synced);
    futures::join!(controller, housekeeping);
}

async fn housekeeping_loop(
    ctx: Arc<Context>,
    stores: Stores,
    mut shutdown: watch::Receiver<bool>,
    synced: watch::Sender<bool>,
) {
    // Wait for complete stores (the controller's streams fill them).
    loop {
        if *shutdown.borrow() {
            return;
        }
        if stores.ready() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!("caches synced");
    synced.send_replace(true);
    let mut seen_orphans = BTreeSet::new();
    loop {
        if let Err(e) = housekeeping_pass(&ctx).await {
            tracing::warn!(error = %e, "housekeeping pass failed");
        }
        report_orphans(&stores, &mut seen_orphans);
        tokio::select! {
            _ = tokio::time::sleep(HOUSEKEEPING_INTERVAL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Logs (once each) ToaNodeStates whose Node does not exist: the plan deletes them; this makes
/// the anomaly visible in the operator log as well.
fn report_orphans(stores: &Stores, seen: &mut BTreeSet<String>) {
    for state in stores.node_states.state() {
        let name = state.name_any();
        if stores.nodes.get(&ObjectRef::new(&name)).is_none() && seen.insert(name.clone()) {
            tracing::warn!(node_state = %name, "ToaNodeState without a Node");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testutil::{node_lease, ts};
    use serde_json::json;

    fn at_1000() -> Timestamp {
        ts(1_000)
    }

    /// A dead node is reported although healthy nodes renew their Leases far more often than
    /// the stale check's tick (each renewal is an event on the same stream), and cleared when
    /// it renews again.
    #[tokio::test(start_paused = true)]
    async fn stale_changes_fire_while_healthy_nodes_keep_renewing() {
        let (store, mut writer) = reflector::store::<Lease>();
        writer.apply_watcher_event(&watcher::Event::Apply(node_lease("healthy", Some(1_000))));
        writer.apply_watcher_event(&watcher::Event::Apply(node_lease("dead", Some(900))));
        // A renewal of "healthy" every 500 ms, forever.
        let renewals = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some((Some("healthy".to_string()), ()))
        })
        .boxed();
        let leases = NodeLeases {
            store,
            grace: Duration::from_secs(40),
        };
        let mut changes = stale_changes(renewals, leases, at_1000).boxed();
        tokio::time::timeout(Duration::from_secs(30), changes.next())
            .await
            .expect("the dead node is reported within a tick, renewals or not")
            .expect("stream open");
        writer.apply_watcher_event(&watcher::Event::Apply(node_lease("dead", Some(1_000))));
        tokio::time::timeout(Duration::from_secs(30), changes.next())
            .await
            .expect("the report clears once the node renews")
            .expect("stream open");
    }

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        serde_json::from_value(json!({
            "type": type_, "status": status, "reason": reason, "message": "m",
            "lastTransitionTime": "2026-11-26T00:00:00Z",
        }))
        .expect("condition")
    }

    #[test]
    fn events_only_for_changed_conditions() {
        let old = vec![
            cond("Ready", "False", "Progressing"),
            cond("Degraded", "False", "AsExpected"),
        ];
        let new = vec![
            cond("Ready", "True", "AllLoaded"),
            cond("Degraded", "False", "AsExpected"),
        ];
        let evs = transition_events(&old, &new);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].reason, "AllLoaded");
        assert_eq!(evs[0].type_, EventType::Normal);
        assert_eq!(evs[0].note.as_deref(), Some("Ready=True: m"));
        let evs = transition_events(&new, &[cond("Degraded", "True", "NodesFailed")]);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].type_, EventType::Warning);
        assert!(transition_events(&new, &new).is_empty());
    }

    #[test]
    fn long_notes_are_cut_to_what_the_api_server_accepts() {
        assert_eq!(truncate_note("short"), "short");
        let long = "é".repeat(700); // 1400 bytes
        let cut = truncate_note(&long);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…') && cut.starts_with("éé"));
    }

    #[test]
    fn timed_out_release_is_a_warning_naming_the_nodes() {
        let (t, text) = describe_release(&FinalizerRelease::TimedOut {
            remaining: 2,
            nodes: vec!["n1".into(), "n2".into()],
        });
        assert_eq!(t, EventType::Warning);
        assert!(
            text.contains("2 node(s)") && text.contains("n1, n2"),
            "{text}"
        );
        assert_eq!(
            describe_release(&FinalizerRelease::Kept).0,
            EventType::Normal
        );
        assert_eq!(
            describe_release(&FinalizerRelease::AllUnloaded).0,
            EventType::Normal
        );
    }

    /// A Node as a kubelet writes it (status with images and nodeInfo, managed fields).
    fn kubelet_node() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "uid": "u1", "resourceVersion": "7",
                         "labels": {"a": "b", "kubernetes.io/os": "windows"},
                         "managedFields": [{"manager": "kubelet"}], "annotations": {"x": "y"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"images": [{"names": ["i"], "sizeBytes": 1}],
                       "nodeInfo": {"kernelVersion": "6.1", "architecture": "amd64",
                                    "bootID": "b", "containerRuntimeVersion": "c",
                                    "kubeProxyVersion": "", "kubeletVersion": "v1.33.0",
                                    "machineID": "m", "operatingSystem": "linux",
                                    "osImage": "Debian", "systemUUID": "s"}},
        })
    }

    #[test]
    fn nodes_are_stored_slim_and_trigger_on_labels_and_taints() {
        // What the Node watch decodes from a kubelet's object: metadata the planner reads and
        // the taints; no managed fields, annotations, status (nodeInfo, images) or other spec.
        // The policy status takes kernel releases from the agents' ToaNodeStates.
        let mut n: NodeMeta = serde_json::from_value(kubelet_node()).expect("node");
        let kept = serde_json::to_value(&n).expect("encode");
        assert_eq!(
            kept,
            json!({"metadata": {"name": "n1", "uid": "u1", "resourceVersion": "7",
                                "labels": {"a": "b", "kubernetes.io/os": "windows"}},
                   "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
            "only name, uid, resourceVersion, labels and taints are stored"
        );
        let h = node_trigger_hash(&n);
        // The OS label still decides: a Windows node is nobody's.
        let policy: ToaPolicy = serde_json::from_value(json!({
            "apiVersion": "toa.dev/v1alpha1", "kind": "ToaPolicy",
            "metadata": {"name": "p", "uid": "pu", "finalizers": [toa_crds::POLICY_FINALIZER]},
            "spec": {"nodeSelector": {}},
        }))
        .expect("policy");
        let mut linux = n.clone();
        linux.metadata.name = Some("n2".into());
        linux.metadata.uid = Some("u2".into());
        linux
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(toa_crds::OS_LABEL.into(), "linux".into());
        let planned = plan(
            &ClusterSnapshot {
                policies: vec![Arc::new(policy)],
                nodes: vec![Arc::new(n.clone()), Arc::new(linux)],
                node_states: vec![],
                ..ClusterSnapshot::default()
            },
            Timestamp::now(),
        );
        assert_eq!(
            planned.node_states.keys().collect::<Vec<_>>(),
            vec!["n2"],
            "the Windows node is not selected"
        );
        n.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("toa.dev/agent".into(), "true".into());
        let labelled = node_trigger_hash(&n);
        assert_ne!(labelled, h);
        n.spec = Some(crate::plan::NodeTaints {
            taints: Some(vec![k8s_openapi::api::core::v1::Taint {
                key: "virtual-kubelet.io/provider".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
        });
        assert_ne!(node_trigger_hash(&n), labelled, "a taint key triggers");
    }

    #[test]
    fn policy_trigger_fires_on_new_spec_and_deletion_not_on_status() {
        let meta = |generation: i64, rv: &str, deleting: bool| -> PartialObjectMeta<ToaPolicy> {
            serde_json::from_value(json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": "edge", "uid": "u-edge", "generation": generation,
                             "resourceVersion": rv,
                             "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z")},
            }))
            .expect("valid PartialObjectMetadata")
        };
        let first = policy_trigger_hash(&meta(1, "10", false));
        assert_eq!(
            policy_trigger_hash(&meta(1, "11", false)),
            first,
            "a status write (new resourceVersion, same generation) wakes no other policy"
        );
        assert_ne!(
            policy_trigger_hash(&meta(2, "12", false)),
            first,
            "spec change"
        );
        assert_ne!(
            policy_trigger_hash(&meta(1, "13", true)),
            first,
            "deletion starts"
        );
    }

    fn reported_state() -> ToaNodeState {
        serde_json::from_value(json!({
            "apiVersion": "toa.dev/v1alpha1", "kind": "ToaNodeState",
            "metadata": {"name": "n1", "uid": "s1", "generation": 3,
                         "labels": {"toa.dev/policy": "p"}, "annotations": {"x": "y"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1",
                                              "uid": "u1", "controller": false}],
                         "managedFields": [{"manager": "toa-operator"}, {"manager": "toa-node-agent"}]},
            "spec": {"nodeName": "n1", "policy": "p", "desiredState": "Loaded",
                     "reloadAllowed": true},
            "status": {"observedGeneration": 3, "phase": "Failed", "reason": "BuildFailed",
                       "message": "make failed", "reloadPending": true,
                       "kernel": {"release": "6.1.0-56-amd64", "version": "#1 SMP",
                                  "bootId": "b", "osImage": "Debian 12", "lockdown": "none",
                                  "secureBoot": false},
                       "module": {"srcversion": "SV", "parameters": {"kind": "254"}},
                       "build": {"durationSeconds": 3.5, "logTail": "x".repeat(4096)},
                       "selfTest": {"result": "Passed", "message": "ok", "srcversion": "SV"},
                       "agentVersion": "0.1.0", "lastHeartbeatTime": "2026-11-26T00:00:00Z"},
        }))
        .expect("state")
    }

    #[test]
    fn node_states_keep_only_what_the_plan_and_the_diff_read() {
        let full = reported_state();
        let mut slim = full.clone();
        slim_node_state(&mut slim);
        let encoded = serde_json::to_string(&slim).expect("encode");
        assert!(
            encoded.len() * 4 < serde_json::to_string(&full).expect("encode").len(),
            "{encoded}"
        );
        assert!(slim.metadata.managed_fields.is_none() && slim.metadata.annotations.is_none());
        let status = slim.status.as_ref().expect("status");
        assert!(status.module.is_none() && status.build.is_none() && status.self_test.is_none());
        assert_eq!(
            status.kernel.as_ref().map(|k| k.release.as_str()),
            Some("6.1.0-56-amd64")
        );
        // Same decisions from the slim object as from the full one.
        let policy: ToaPolicy = serde_json::from_value(json!({
            "apiVersion": "toa.dev/v1alpha1", "kind": "ToaPolicy",
            "metadata": {"name": "p", "uid": "pu", "finalizers": [toa_crds::POLICY_FINALIZER],
                         "creationTimestamp": "2026-11-26T00:00:00Z"},
            "spec": {"nodeSelector": {}},
        }))
        .expect("policy");
        let node: NodeMeta = serde_json::from_value(kubelet_node()).expect("node");
        let mut node = node;
        node.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(toa_crds::OS_LABEL.into(), "linux".into());
        let now: Timestamp = "2026-11-26T01:00:00Z".parse().expect("time");
        let snapshot = |state: ToaNodeState| ClusterSnapshot {
            policies: vec![Arc::new(policy.clone())],
            nodes: vec![Arc::new(node.clone())],
            node_states: vec![Arc::new(state)],
            ..ClusterSnapshot::default()
        };
        let from_full = plan(&snapshot(full.clone()), now);
        let from_slim = plan(&snapshot(slim.clone()), now);
        assert_eq!(from_full, from_slim);
        assert_eq!(
            from_slim.policy_status["p"].failed_nodes, 1,
            "{from_slim:?}"
        );
        for (node, desired) in &from_full.node_states {
            assert_eq!(
                apply::node_state_needs_apply(Some(&full), desired),
                apply::node_state_needs_apply(Some(&slim), desired),
                "{node}"
            );
        }
    }

    #[test]
    fn slim_node_states_keep_the_label_decision() {
        let desired = crate::plan::DesiredNodeState {
            spec: reported_state().spec,
            node_uid: String::new(),
        };
        let labels = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let policy = desired.spec.policy.clone();
        let cases = [
            (labels(&[(apply::POLICY_LABEL, &policy)]), false),
            (
                labels(&[(apply::POLICY_LABEL, &policy), ("team", "a")]),
                false,
            ),
            (None, true),
            (labels(&[]), true),
            (labels(&[(apply::POLICY_LABEL, "other")]), true),
            (labels(&[("team", "a")]), true),
        ];
        for (live_labels, relabel) in cases {
            let mut full = reported_state();
            full.metadata.labels = live_labels.clone();
            let mut slim = full.clone();
            slim_node_state(&mut slim);
            assert_eq!(
                apply::node_state_needs_apply(Some(&slim), &desired),
                relabel,
                "{live_labels:?} stored as {:?}",
                slim.metadata.labels
            );
            // The map is dropped only when it says what the spec says.
            assert_eq!(slim.metadata.labels.is_none(), !relabel, "{live_labels:?}");
        }
    }
}
