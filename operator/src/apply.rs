//! Turns a [`Plan`] into API requests, writing only what differs from the reflector stores.
//!
//! Every write is idempotent (server-side apply under the field manager `toa-operator`, deletes
//! guarded by uid), so a store that lags behind our own writes costs at most a repeated no-op
//! request, never a wrong one.

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};
use toa_crds::{ToaNodeState, ToaPolicy, ToaPolicyStatus, AGENT_LABEL, AGENT_LABEL_VALUE};

use crate::error::Error;
use crate::metrics::Metrics;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::plan::{DesiredNodeState, NodeMeta, Plan};

/// Field manager of every operator write (the CRD contract's name).
pub const FIELD_MANAGER: &str = toa_crds::OPERATOR_FIELD_MANAGER;
/// Label on each ToaNodeState naming its policy (`kubectl get toans -l toa.dev/policy=NAME`).
pub const POLICY_LABEL: &str = "toa.dev/policy";

/// `fieldManager=toa-operator&force=true`: the operator is the only writer of what it applies
/// and takes those fields back from anyone who edited them by hand.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The ToaNodeState the operator applies for `node`. The ownerReference to the Node makes the
/// garbage collector delete it with its Node. `controller: false`: the Node is the lifetime
/// owner, not a controller of the object (the operator is), and `blockOwnerDeletion` is left
/// unset because it would need `update` on nodes/finalizers, which the operator does not have.
pub fn node_state_object(node: &str, desired: &DesiredNodeState) -> Result<Value, Error> {
    let spec = serde_json::to_value(&desired.spec).map_err(|source| Error::Encode {
        kind: "ToaNodeState",
        name: node.to_string(),
        source,
    })?;
    let mut metadata = json!({ "name": node });
    if is_label_value(&desired.spec.policy) {
        metadata["labels"] = json!({ POLICY_LABEL: desired.spec.policy });
    }
    // A Node without a uid cannot be referenced; the object then lives until the plan deletes
    // it (never reached with a real API server, which always sets uids).
    if !desired.node_uid.is_empty() {
        metadata["ownerReferences"] = json!([{
            "apiVersion": "v1",
            "kind": "Node",
            "name": node,
            "uid": desired.node_uid,
            "controller": false,
        }]);
    }
    Ok(json!({
        "apiVersion": toa_crds::API_VERSION,
        "kind": "ToaNodeState",
        "metadata": metadata,
        "spec": spec,
    }))
}

/// Label values: at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends.
fn is_label_value(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && v.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Whether the live ToaNodeState differs from what we would apply. `live` is a stored state,
/// as `controller::slim_node_state` left it (its `metadata.labels` is `None` when the policy
/// label matches its spec).
pub fn node_state_needs_apply(live: Option<&ToaNodeState>, desired: &DesiredNodeState) -> bool {
    let Some(live) = live else { return true };
    if live.spec != desired.spec {
        return true;
    }
    let owned = desired.node_uid.is_empty()
        || live
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.kind == "Node" && o.uid == desired.node_uid);
    // `None`: stored by `controller::slim_node_state`, which drops the labels exactly when
    // the policy label names the spec's policy.
    let labelled = !is_label_value(&desired.spec.policy)
        || live
            .metadata
            .labels
            .as_ref()
            .is_none_or(|l| l.get(POLICY_LABEL) == Some(&desired.spec.policy));
    !(owned && labelled)
}

/// What one pass of [`sync_cluster`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub node_states_applied: usize,
    pub node_states_deleted: usize,
    pub nodes_labelled: usize,
    pub nodes_unlabelled: usize,
    pub daemonset_applied: bool,
}

/// Whom a failed cluster-wide write holds back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocks {
    /// The policy whose node the write was for.
    Policy(String),
    /// Every policy (the agent DaemonSet serves them all).
    Every,
    /// No policy (a node leaving every policy: its label could not be removed).
    Nobody,
}

/// One write of [`sync_cluster`] that the API server did not accept.
#[derive(Debug)]
pub struct WriteFailure {
    pub blocks: Blocks,
    pub error: Error,
}

impl WriteFailure {
    /// Whether this failure holds back `policy`.
    pub fn blocks(&self, policy: &str) -> bool {
        match &self.blocks {
            Blocks::Policy(p) => p == policy,
            Blocks::Every => true,
            Blocks::Nobody => false,
        }
    }
}

/// What [`sync_cluster`] did: the writes that went through and those that failed.
#[derive(Debug, Default)]
pub struct SyncOutcome {
    pub report: SyncReport,
    pub failures: Vec<WriteFailure>,
}

impl SyncOutcome {
    /// The report, or the first failure.
    pub fn into_result(self) -> Result<SyncReport, Error> {
        first_error(self.failures).map(|()| self.report)
    }
}

/// The first of `failures` as an error (each was logged and counted when it happened).
pub fn first_error(failures: impl IntoIterator<Item = WriteFailure>) -> Result<(), Error> {
    failures.into_iter().next().map_or(Ok(()), |f| Err(f.error))
}

/// The parts of the context the cluster-wide sync needs.
pub struct ClusterTarget<'a> {
    pub client: &'a Client,
    pub node_states: &'a Store<ToaNodeState>,
    pub daemonsets: &'a Store<DaemonSet>,
    pub agent: &'a DaemonSet,
    pub metrics: &'a Metrics,
}

/// Applies the cluster-wide part of `plan`: the agent DaemonSet, every ToaNodeState spec,
/// deletions and node labels. Keeps going after a failed request (one broken node must not
/// starve the others), counts and logs each failure, and returns every failure with the
/// policy it holds back, so that each policy's reconcile can still write its status (and say
/// what failed) instead of stopping at someone else's refused write.
pub async fn sync_cluster(t: &ClusterTarget<'_>, plan: &Plan) -> SyncOutcome {
    let mut out = SyncOutcome::default();
    let mut fail = |blocks: Blocks, e: Error| {
        t.metrics.error(e.kind(), &e.reason());
        tracing::warn!(error = %e, ?blocks, "write failed");
        out.failures.push(WriteFailure { blocks, error: e });
    };
    // The policy a node's write serves: the one its desired state names, else the one its
    // live state names (a deletion), else none.
    let owner_of = |node: &str| -> Blocks {
        plan.node_states
            .get(node)
            .map(|d| d.spec.policy.clone())
            .or_else(|| {
                t.node_states
                    .get(&ObjectRef::new(node))
                    .map(|s| s.spec.policy.clone())
            })
            .map_or(Blocks::Nobody, Blocks::Policy)
    };
    let mut report = SyncReport::default();

    match ensure_daemonset(t).await {
        Ok(applied) => report.daemonset_applied = applied,
        Err(e) => fail(Blocks::Every, e),
    }

    let states_api: Api<ToaNodeState> = Api::all(t.client.clone());
    // Node writes decode the reply as NodeMeta: the kubelet's status is skipped, not built.
    let nodes_api: Api<NodeMeta> = Api::all(t.client.clone());

    // Each write's body is built when its request is about to start and dropped when it
    // ends: at most WRITE_CONCURRENCY bodies and replies exist at once, however many nodes
    // change (building them all first held every body of a 20,000-node rollout at once).
    let applies = plan.node_states.iter().filter(|(node, desired)| {
        let live = t.node_states.get(&ObjectRef::new(node));
        node_state_needs_apply(live.as_deref(), desired)
    });
    let mut results = writes(applies, |(node, desired)| {
        let body = node_state_object(node, desired);
        let api = states_api.clone();
        let node = node.clone();
        async move {
            let r = match body {
                Ok(body) => api
                    .patch(&node, &apply_params(), &Patch::Apply(&body))
                    .await
                    .map(|_| ())
                    .map_err(Error::api("ToaNodeState", "apply", &node)),
                Err(e) => Err(e),
            };
            (node, r)
        }
    });
    while let Some((node, r)) = results.next().await {
        match r {
            Ok(()) => report.node_states_applied += 1,
            Err(e) => fail(owner_of(&node), e),
        }
    }
    drop(results);

    let deletes = plan.deletions.iter().filter_map(|name| {
        let live = t.node_states.get(&ObjectRef::new(name))?;
        Some((name.clone(), live.uid()))
    });
    let mut results = writes(deletes, |(name, uid)| {
        let api = states_api.clone();
        async move {
            let r = delete_node_state(&api, &name, uid).await;
            (name, r)
        }
    });
    while let Some((node, r)) = results.next().await {
        match r {
            Ok(()) => report.node_states_deleted += 1,
            Err(e) => fail(owner_of(&node), e),
        }
    }
    drop(results);

    let mut results = writes(plan.label_nodes.iter().cloned(), |node| {
        let api = nodes_api.clone();
        async move {
            let r = label_node(&api, &node).await;
            (node, r)
        }
    });
    while let Some((node, r)) = results.next().await {
        match r {
            Ok(()) => report.nodes_labelled += 1,
            Err(e) => fail(owner_of(&node), e),
        }
    }
    drop(results);

    let mut results = writes(plan.unlabel_nodes.iter().cloned(), |node| {
        let api = nodes_api.clone();
        async move {
            let r = unlabel_node(&api, &node).await;
            (node, r)
        }
    });
    while let Some((node, r)) = results.next().await {
        match r {
            Ok(()) => report.nodes_unlabelled += 1,
            Err(e) => fail(owner_of(&node), e),
        }
    }
    drop(results);

    out.report = report;
    out
}

/// Requests in flight at once per kind of write: a first rollout over thousands of nodes must
/// not take one round trip per node in sequence, nor flood the API server.
pub const WRITE_CONCURRENCY: usize = 16;

/// Runs `write` for each of `items` with at most [`WRITE_CONCURRENCY`] in flight, results in
/// the order they finish. Lazy: an item is taken, and its request built, only when one of the
/// requests in flight ends. A plain function returning a boxed stream: built inline in the
/// async fn, the closures' borrows hit the compiler's higher-ranked lifetime limits for Send.
fn writes<'a, I, F, Fut>(items: I, write: F) -> BoxStream<'a, (String, Result<(), Error>)>
where
    I: Iterator + Send + 'a,
    F: FnMut(I::Item) -> Fut + Send + 'a,
    Fut: std::future::Future<Output = (String, Result<(), Error>)> + Send + 'a,
{
    futures::stream::iter(items)
        .map(write)
        .buffer_unordered(WRITE_CONCURRENCY)
        .boxed()
}

/// Applies the agent DaemonSet when it is missing or someone changed what we set.
async fn ensure_daemonset(t: &ClusterTarget<'_>) -> Result<bool, Error> {
    let name = t.agent.name_any();
    let ns = t.agent.namespace().unwrap_or_default();
    let live = t.daemonsets.get(&ObjectRef::new(&name).within(&ns));
    if !crate::daemonset::drifted(live.as_deref(), t.agent) {
        return Ok(false);
    }
    if live.is_none() {
        tracing::info!(daemonset = %name, namespace = %ns, "agent DaemonSet missing: creating it");
    } else {
        tracing::info!(daemonset = %name, namespace = %ns, "agent DaemonSet drifted: re-applying it");
    }
    let api: Api<DaemonSet> = Api::namespaced(t.client.clone(), &ns);
    // k8s-openapi serializes apiVersion and kind, which an apply body must carry.
    let body = serde_json::to_value(t.agent).map_err(|source| Error::Encode {
        kind: "DaemonSet",
        name: name.clone(),
        source,
    })?;
    api.patch(&name, &apply_params(), &Patch::Apply(&body))
        .await
        .map_err(Error::api("DaemonSet", "apply", &name))?;
    Ok(true)
}

/// Deletes a ToaNodeState, only if it is still the object we saw (uid precondition): a
/// recreated object of the same name is left alone.
async fn delete_node_state(
    api: &Api<ToaNodeState>,
    name: &str,
    uid: Option<String>,
) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        // Already gone, or replaced by a new object: nothing to do.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(Error::api("ToaNodeState", "delete", name)(e)),
    }
}

fn node_label_body(node: &str, labelled: bool) -> Value {
    let mut metadata = json!({ "name": node });
    if labelled {
        metadata["labels"] = json!({ AGENT_LABEL: AGENT_LABEL_VALUE });
    }
    json!({ "apiVersion": "v1", "kind": "Node", "metadata": metadata })
}

/// Sets `toa.dev/agent=true` with SSA: the body holds only that label, so the operator owns
/// nothing else on the Node.
async fn label_node(api: &Api<NodeMeta>, node: &str) -> Result<(), Error> {
    api.patch(
        node,
        &apply_params(),
        &Patch::Apply(&node_label_body(node, true)),
    )
    .await
    .map(|_| ())
    .or_else(|e| match e {
        // The Node was deleted since the store saw it: nothing to label (its ToaNodeState goes
        // with it).
        kube::Error::Api(s) if s.code == 404 => Ok(()),
        e => Err(Error::api("Node", "label", node)(e)),
    })
}

/// Removes `toa.dev/agent`. Applying a body without the label gives up our ownership, which
/// deletes the label when we were its only owner; if someone else also set it (kubectl label),
/// it survives that, and a merge patch removes it: the agent must go from nodes that need none.
async fn unlabel_node(api: &Api<NodeMeta>, node: &str) -> Result<(), Error> {
    let body = node_label_body(node, false);
    let after = match api.patch(node, &apply_params(), &Patch::Apply(&body)).await {
        Ok(after) => after,
        // Deleted since the store saw it: no label left to remove.
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(Error::api("Node", "unlabel", node)(e)),
    };
    if after.labels().contains_key(AGENT_LABEL) {
        let remove = json!({ "metadata": { "labels": { AGENT_LABEL: null } } });
        api.patch(node, &PatchParams::default(), &Patch::Merge(&remove))
            .await
            .map_err(Error::api("Node", "unlabel", node))?;
    }
    Ok(())
}

/// Writes `status` on the policy's status subresource with SSA.
pub async fn apply_policy_status(
    client: &Client,
    policy: &str,
    status: &ToaPolicyStatus,
) -> Result<(), Error> {
    let api: Api<ToaPolicy> = Api::all(client.clone());
    let body = json!({
        "apiVersion": toa_crds::API_VERSION,
        "kind": "ToaPolicy",
        "status": status,
    });
    api.patch_status(policy, &apply_params(), &Patch::Apply(&body))
        .await
        .map(|_| ())
        .map_err(Error::api("ToaPolicy", "apply status", policy))
}

/// JSON patch adding the finalizer, guarded by a `test` of the list we saw so that a concurrent
/// change of the finalizers fails (and is retried) instead of being overwritten.
pub fn add_finalizer_patch(
    current: Option<&[String]>,
    finalizer: &str,
) -> Result<json_patch::Patch, serde_json::Error> {
    let ops = match current {
        None => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [finalizer] },
        ]),
        Some(list) => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": list },
            { "op": "add", "path": "/metadata/finalizers/-", "value": finalizer },
        ]),
    };
    serde_json::from_value(ops)
}

/// JSON patch removing the finalizer at `index`, guarded by a `test` of that entry.
pub fn remove_finalizer_patch(
    index: usize,
    finalizer: &str,
) -> Result<json_patch::Patch, serde_json::Error> {
    let ops = json!([
        { "op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer },
        { "op": "remove", "path": format!("/metadata/finalizers/{index}") },
    ]);
    serde_json::from_value(ops)
}

/// Adds the `toa.dev/unload` finalizer to `policy` if it lacks it.
pub async fn add_finalizer(client: &Client, policy: &ToaPolicy) -> Result<bool, Error> {
    let finalizers = policy.metadata.finalizers.as_deref();
    if finalizers.is_some_and(|f| f.iter().any(|x| x == toa_crds::POLICY_FINALIZER)) {
        return Ok(false);
    }
    let name = policy.name_any();
    let api: Api<ToaPolicy> = Api::all(client.clone());
    let patch = add_finalizer_patch(finalizers, toa_crds::POLICY_FINALIZER).map_err(|source| {
        Error::Encode {
            kind: "ToaPolicy",
            name: name.clone(),
            source,
        }
    })?;
    api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(Error::api("ToaPolicy", "add finalizer", &name))?;
    Ok(true)
}

/// Removes the `toa.dev/unload` finalizer from `policy` if it has it.
pub async fn remove_finalizer(client: &Client, policy: &ToaPolicy) -> Result<bool, Error> {
    let Some(index) = policy
        .metadata
        .finalizers
        .iter()
        .flatten()
        .position(|f| f == toa_crds::POLICY_FINALIZER)
    else {
        return Ok(false);
    };
    let name = policy.name_any();
    let api: Api<ToaPolicy> = Api::all(client.clone());
    let patch = remove_finalizer_patch(index, toa_crds::POLICY_FINALIZER).map_err(|source| {
        Error::Encode {
            kind: "ToaPolicy",
            name: name.clone(),
            source,
        }
    })?;
    match api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => Ok(true),
        // Deleted meanwhile: the finalizer is gone with it.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(Error::api("ToaPolicy", "remove finalizer", &name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_build_requests_only_as_slots_free_up() {
        // 1,000 writes whose requests never finish: only WRITE_CONCURRENCY of them may have
        // been built (a body each); the rest wait in the iterator, not in memory.
        use std::sync::atomic::{AtomicUsize, Ordering};
        let built = std::sync::Arc::new(AtomicUsize::new(0));
        let (release, wait) = tokio::sync::watch::channel(false);
        let counter = built.clone();
        let mut stream = writes((0..1000).map(|i| format!("n{i}")), move |node| {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = vec![0u8; 10_000];
            let mut wait = wait.clone();
            async move {
                let _ = wait.wait_for(|go| *go).await;
                drop(body);
                (node, Ok(()))
            }
        });
        let polled = futures::poll!(stream.next());
        assert!(polled.is_pending());
        assert_eq!(built.load(Ordering::SeqCst), WRITE_CONCURRENCY);
        release.send(true).expect("release");
        let mut done = 0;
        while let Some((_, r)) = stream.next().await {
            assert!(r.is_ok());
            done += 1;
        }
        assert_eq!((done, built.load(Ordering::SeqCst)), (1000, 1000));
    }

    #[test]
    fn finalizer_patches_are_guarded() {
        let p = serde_json::to_value(add_finalizer_patch(None, "toa.dev/unload").expect("patch"))
            .expect("json");
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["toa.dev/unload"]},
            ])
        );
        let existing = vec!["other".to_string()];
        let p = serde_json::to_value(
            add_finalizer_patch(Some(&existing), "toa.dev/unload").expect("patch"),
        )
        .expect("json");
        assert_eq!(p[0]["value"], json!(["other"]));
        assert_eq!(
            p[1],
            json!({"op": "add", "path": "/metadata/finalizers/-", "value": "toa.dev/unload"})
        );
        let p = serde_json::to_value(remove_finalizer_patch(1, "toa.dev/unload").expect("patch"))
            .expect("json");
        assert_eq!(
            p,
            json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": "toa.dev/unload"},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ])
        );
    }

    #[test]
    fn label_values() {
        assert!(is_label_value("edge-pool.v1"));
        assert!(!is_label_value(""));
        assert!(!is_label_value("-a"));
        assert!(!is_label_value(&"a".repeat(64)));
    }

    #[test]
    fn node_label_bodies_touch_only_the_label() {
        assert_eq!(
            node_label_body("n1", true),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"toa.dev/agent": "true"}}})
        );
        assert_eq!(
            node_label_body("n1", false),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
        );
    }
}
