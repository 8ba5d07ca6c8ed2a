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

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use toa_crds::{KernelInfo, ToaNodeState, ToaPolicy};
use tokio::sync::watch;

use crate::apply::{self, ClusterTarget};
use crate::error::{Backoff, Error};
use crate::lease::Fence;
use crate::metrics::Metrics;
use crate::plan::{plan, ClusterSnapshot, FinalizerRelease, NodeMeta, Plan};

/// Reconcile `kind` label of the per-policy reconcile.
pub const KIND_POLICY: &str = "ToaPolicy";
/// Reconcile `kind` label of the housekeeping pass.
pub const KIND_CLUSTER: &str = "Cluster";
/// How often the housekeeping pass runs without being asked.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(30);
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
    }

    pub fn snapshot(&self) -> ClusterSnapshot {
        ClusterSnapshot {
            policies: self.policies.state(),
            nodes: self.nodes.state(),
            node_states: self.node_states.state(),
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
        }
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
/// per-policy part. `finalized` names a policy whose finalizer was just added (the store may
/// not show it yet).
///
/// Node states of policies that still lack the `toa.dev/unload` finalizer are not written: a
/// policy must never load a module it could not unload on deletion. Their own reconcile adds
/// the finalizer first and writes them right after.
pub async fn sync(ctx: &Context, finalized: Option<&str>) -> Result<Plan, Error> {
    let _guard = ctx.sync_lock.lock().await;
    let snapshot = ctx.stores.snapshot();
    let mut planned = plan(&snapshot, (ctx.clock)());
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
    let report = apply::sync_cluster(&target, &planned).await?;
    if report != apply::SyncReport::default() {
        tracing::info!(?report, "applied cluster changes");
    }
    Ok(planned)
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

    let planned = sync(ctx, (!deleting).then_some(name.as_str())).await?;

    let old = policy.status.clone().unwrap_or_default();
    if let Some(new) = planned.policy_status.get(&name) {
        if *new != old {
            ctx.fenced()?;
            apply::apply_policy_status(&ctx.client, &name, new)
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

    let requeue = planned
        .requeue_after
        .map_or(RESYNC_INTERVAL, |d| d.min(RESYNC_INTERVAL));
    Ok(Action::requeue(requeue))
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
                "Ready" => c.status == "False",
                "Degraded" | "Conflict" => c.status == "True",
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

/// Events are best effort: a failure is logged and counted, never fails the reconcile.
async fn publish(ctx: &Context, policy: &ToaPolicy, ev: Event) {
    let reference = policy.object_ref(&());
    if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
        let e = ctx.count(Error::api("Event", "publish", &policy.name_any())(e));
        tracing::warn!(error = %e, "could not publish event");
    }
}

/// One housekeeping pass (cluster-wide part only), counted like a reconcile.
pub async fn housekeeping_pass(ctx: &Context) -> Result<(), Error> {
    if !ctx.stores.ready() {
        return Ok(());
    }
    let started = Instant::now();
    let result = sync(ctx, None).await.map(|_| ());
    ctx.metrics
        .reconciled(KIND_CLUSTER, result.is_ok(), started.elapsed());
    result
}

/// Nodes trigger reconciles only when what planning reads changes (identity and labels), not
/// on every kubelet status update.
fn node_trigger_hash(node: &NodeMeta) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.metadata.uid.hash(&mut h);
    node.metadata.labels.hash(&mut h);
    Some(h.finish())
}

/// Drops what planning never reads from a Node's metadata before it is stored: the kubelet's
/// managed fields (a few KB per Node) and annotations. The watch itself asks for metadata
/// only, so the status (images, nodeInfo, conditions) never reaches the operator; the kernel
/// release that the policy status counts comes from each agent's ToaNodeState.
fn slim_node(node: &mut NodeMeta) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
}

/// Drops what planning and the write diff never read from a ToaNodeState before it is stored:
/// managed fields, annotations, and the agent's module, build (with its log tail), self-test,
/// version and heartbeat. Kept: the spec, the labels, owner references and uid (the diff and
/// guarded deletes), generation, and of the status the phase, reason, message, observed
/// generation, reload request and kernel release.
pub fn slim_node_state(state: &mut ToaNodeState) {
    state.metadata.managed_fields = None;
    state.metadata.annotations = None;
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
pub struct AgentTarget {
    pub desired: DaemonSet,
    pub name: String,
    pub namespace: String,
}

/// Runs the controller and the housekeeping loop until `shutdown` turns true. `synced` turns
/// true once all stores are populated (for /readyz).
pub async fn run(
    client: Client,
    agent: AgentTarget,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    fence: Fence,
    shutdown: watch::Receiver<bool>,
    synced: watch::Sender<bool>,
) {
    let policies_api: Api<ToaPolicy> = Api::all(client.clone());
    let controller = Controller::new(policies_api, watcher::Config::default().any_semantic());
    let policy_store = controller.store();

    // Node metadata only: the planner reads names, uids and labels.
    let (nodes, nodes_writer) = reflector::store::<NodeMeta>();
    let node_stream = reflector::reflector(
        nodes_writer,
        // An Api of PartialObjectMeta makes metadata-only requests (Accept:
        // as=PartialObjectMetadataList): the apiserver sends no spec or status.
        watcher(Api::<NodeMeta>::all(client.clone()), paged_list()).modify(slim_node),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(node_trigger_hash, Default::default());

    let (node_states, states_writer) = reflector::store::<ToaNodeState>();
    let states_stream = reflector::reflector(
        states_writer,
        watcher(Api::<ToaNodeState>::all(client.clone()), paged_list()).modify(slim_node_state),
    )
    .default_backoff()
    .touched_objects();

    let (daemonsets, ds_writer) = reflector::store::<DaemonSet>();
    let ds_stream = reflector::reflector(
        ds_writer,
        watcher(
            Api::<DaemonSet>::namespaced(client.clone(), &agent.namespace),
            watcher::Config::default().fields(&format!("metadata.name={}", agent.name)),
        ),
    )
    .default_backoff()
    // Unfiltered: a generation predicate would also swallow the deletion we must repair; the
    // status churn of a rollout is absorbed by the controller's debounce.
    .touched_objects();

    let stores = Stores {
        policies: policy_store.clone(),
        nodes,
        node_states,
        daemonsets,
    };
    let ctx = Arc::new(
        Context::new(client, stores.clone(), agent.desired, metrics, reporter).with_fence(fence),
    );

    let by_node = policy_store.clone();
    let by_state = policy_store.clone();
    let by_ds = policy_store;
    let mut stop = shutdown.clone();
    let controller = controller
        .with_config(ControllerConfig::default().debounce(Duration::from_secs(1)))
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
    use serde_json::json;

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
    fn nodes_are_stored_as_slim_metadata_and_trigger_on_labels() {
        // What the metadata watch decodes, even from a full object: metadata and nothing else.
        // nodeInfo (kernel version) is not kept: the policy status takes kernel releases from
        // the agents' ToaNodeStates, and nothing else read it.
        let mut n: NodeMeta = serde_json::from_value(kubelet_node()).expect("node");
        let h = node_trigger_hash(&n);
        slim_node(&mut n);
        assert!(n.metadata.managed_fields.is_none() && n.metadata.annotations.is_none());
        let kept = serde_json::to_value(&n.metadata).expect("encode");
        assert_eq!(
            kept,
            json!({"name": "n1", "uid": "u1", "resourceVersion": "7",
                   "labels": {"a": "b", "kubernetes.io/os": "windows"}}),
            "only name, uid, resourceVersion and labels are stored"
        );
        assert_eq!(
            node_trigger_hash(&n),
            h,
            "stripping does not change the trigger"
        );
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
        assert_ne!(node_trigger_hash(&n), h);
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
}
