//! The reconcile I/O layer against the HTTP-level fake: the exact requests and objects the
//! operator writes (SSA of ToaNodeState / DaemonSet / node labels / policy status, finalizer
//! JSON patches, guarded deletes), and what it does with unexpected objects.

mod support;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{json, Value};
use support::{fake_client, status, success, Reply, Request};
use toa_crds::{DesiredState, ToaNodeState, ToaNodeStateSpec, ToaPolicy};
use toa_operator::apply::{self, ClusterTarget};
use toa_operator::config::AgentConfig;
use toa_operator::controller::{self, Context, Stores};
use toa_operator::metrics::Metrics;
use toa_operator::plan::{DesiredNodeState, Plan};

const NS: &str = "toa-system";
const DS_PATH: &str = "/apis/apps/v1/namespaces/toa-system/daemonsets/toa-node-agent";
const STATES: &str = "/apis/toa.dev/v1alpha1/toanodestates";
const POLICIES: &str = "/apis/toa.dev/v1alpha1/toapolicies";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

// ---------------------------------------------------------------- fixtures

fn agent() -> DaemonSet {
    let cfg = AgentConfig::parse(
        "image: reg.example/toa-node-agent:0.1.0\n",
        "test.yaml".as_ref(),
    )
    .expect("agent config");
    toa_operator::daemonset::build(&cfg, "toa-node-agent", NS)
}

/// A Linux node (as a kubelet registers it: `kubernetes.io/os=linux`) with `labels` added.
fn node(name: &str, mut labels: Value) -> Node {
    if let Some(m) = labels.as_object_mut() {
        m.entry("kubernetes.io/os").or_insert(json!("linux"));
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": labels,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
    }))
    .expect("node")
}

fn bare_node(name: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("uid-{name}")},
    }))
    .expect("node")
}

fn policy(name: &str, extra_meta: Value, spec: Value) -> ToaPolicy {
    let mut meta = json!({
        "name": name, "uid": format!("uid-{name}"), "generation": 1,
        "resourceVersion": "10", "creationTimestamp": "2026-01-01T00:00:00Z",
    });
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "toa.dev/v1alpha1", "kind": "ToaPolicy", "metadata": meta, "spec": spec,
    }))
    .expect("policy")
}

fn spec(node: &str, policy: &str, desired: DesiredState) -> ToaNodeStateSpec {
    ToaNodeStateSpec {
        node_name: node.to_string(),
        policy: policy.to_string(),
        desired_state: desired,
        ..ToaNodeStateSpec::default()
    }
}

fn node_state(
    name: &str,
    spec: &ToaNodeStateSpec,
    owner_uid: Option<&str>,
    status: Value,
) -> ToaNodeState {
    let mut meta = json!({"name": name, "uid": format!("state-uid-{name}"),
                          "labels": {"toa.dev/policy": spec.policy}});
    if let Some(uid) = owner_uid {
        meta["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid, "controller": false}]);
    }
    serde_json::from_value(json!({
        "apiVersion": "toa.dev/v1alpha1", "kind": "ToaNodeState", "metadata": meta,
        "spec": spec, "status": status,
    }))
    .expect("node state")
}

fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(o));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

struct World {
    policies: Vec<ToaPolicy>,
    nodes: Vec<Node>,
    states: Vec<ToaNodeState>,
    daemonsets: Vec<DaemonSet>,
}

impl World {
    fn stores(self) -> Stores {
        Stores {
            policies: store(self.policies),
            // The operator decodes Nodes into its slim NodeMeta (metadata and taints).
            nodes: store(
                self.nodes
                    .into_iter()
                    .map(|n| {
                        serde_json::from_value(serde_json::to_value(n).expect("encode"))
                            .expect("decode as NodeMeta")
                    })
                    .collect(),
            ),
            // ... and slims each ToaNodeState before storing it.
            node_states: store(
                self.states
                    .into_iter()
                    .map(|mut s| {
                        toa_operator::controller::slim_node_state(&mut s);
                        s
                    })
                    .collect(),
            ),
            daemonsets: store(self.daemonsets),
            agent_pods: store(vec![]),
            agent_events: store(vec![]),
            node_leases: None,
        }
    }
}

fn context(client: Client, stores: Stores) -> Arc<Context> {
    let reporter = Reporter {
        controller: "toa-operator".into(),
        instance: Some("test".into()),
    };
    let mut ctx = Context::new(client, stores, agent(), Arc::new(Metrics::new()), reporter);
    ctx.clock = || "2026-11-26T01:00:00Z".parse().expect("time");
    Arc::new(ctx)
}

/// The live DaemonSet as the API server would return it (what we applied, plus defaults).
fn live_agent() -> DaemonSet {
    let mut v = serde_json::to_value(agent()).expect("json");
    v["metadata"]["uid"] = json!("ds-uid");
    v["spec"]["revisionHistoryLimit"] = json!(10);
    v["status"] = json!({"numberReady": 1, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                         "numberMisscheduled": 0});
    serde_json::from_value(v).expect("ds")
}

/// Answers like an API server that accepts every write: applies and patches echo the object
/// (policy patches return the policy), deletes succeed.
fn accepting(policy_obj: Option<ToaPolicy>) -> impl FnMut(&Request) -> Reply + Send + 'static {
    move |r| match r.method.as_str() {
        "PATCH" if r.path.starts_with(POLICIES) => {
            let mut p = serde_json::to_value(&policy_obj).unwrap_or(Value::Null);
            if r.path.ends_with("/status") {
                p["status"] = r.body["status"].clone();
            }
            (200, p)
        }
        "PATCH" | "POST" | "PUT" => (200, r.body.clone()),
        "DELETE" => success(),
        _ => status(404, "NotFound", "not in the fake"),
    }
}

fn ssa_query(r: &Request) {
    assert_eq!(
        r.query.get("fieldManager").map(String::as_str),
        Some("toa-operator"),
        "{r:?}"
    );
    assert_eq!(
        r.query.get("force").map(String::as_str),
        Some("true"),
        "{r:?}"
    );
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/apply-patch+yaml"),
        "{r:?}"
    );
}

fn find<'a>(log: &'a [Request], method: &str, path: &str) -> Vec<&'a Request> {
    log.iter()
        .filter(|r| r.method == method && r.path == path)
        .collect()
}

fn target<'a>(
    client: &'a Client,
    stores: &'a Stores,
    agent: &'a DaemonSet,
    metrics: &'a Metrics,
) -> ClusterTarget<'a> {
    ClusterTarget {
        client,
        node_states: &stores.node_states,
        daemonsets: &stores.daemonsets,
        agent,
        metrics,
    }
}

// ---------------------------------------------------------------- apply layer, hand-made plans

#[tokio::test]
async fn node_state_is_applied_with_ssa_owner_reference_and_labels() {
    let (client, log) = fake_client(accepting(None));
    let stores = World {
        policies: vec![],
        nodes: vec![],
        states: vec![],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let desired = agent();
    let metrics = Metrics::new();
    let mut plan = Plan::default();
    let s = spec("n1", "edge", DesiredState::Loaded);
    plan.node_states.insert(
        "n1".into(),
        DesiredNodeState {
            spec: s.clone(),
            node_uid: "uid-n1".into(),
        },
    );

    let report = apply::sync_cluster(&target(&client, &stores, &desired, &metrics), &plan)
        .await
        .into_result()
        .expect("sync");
    assert_eq!(report.node_states_applied, 1);
    assert!(
        !report.daemonset_applied,
        "in-sync DaemonSet must not be re-applied"
    );

    let reqs = log.all();
    assert_eq!(log.lines(), [format!("PATCH {STATES}/n1")]);
    ssa_query(&reqs[0]);
    assert_eq!(
        reqs[0].body,
        json!({
            "apiVersion": "toa.dev/v1alpha1",
            "kind": "ToaNodeState",
            "metadata": {
                "name": "n1",
                "labels": {"toa.dev/policy": "edge"},
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "uid-n1", "controller": false,
                }],
            },
            "spec": serde_json::to_value(&s).expect("spec"),
        })
    );
    assert_eq!(reqs[0].body["spec"]["desiredState"], "Loaded");
    assert_eq!(reqs[0].body["spec"]["nodeName"], "n1");
}

#[tokio::test]
async fn up_to_date_objects_are_not_rewritten() {
    let (client, log) = fake_client(accepting(None));
    let s = spec("n1", "edge", DesiredState::Loaded);
    let stores = World {
        policies: vec![],
        nodes: vec![],
        states: vec![node_state("n1", &s, Some("uid-n1"), Value::Null)],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let desired = agent();
    let metrics = Metrics::new();
    let mut plan = Plan::default();
    plan.node_states.insert(
        "n1".into(),
        DesiredNodeState {
            spec: s.clone(),
            node_uid: "uid-n1".into(),
        },
    );
    apply::sync_cluster(&target(&client, &stores, &desired, &metrics), &plan)
        .await
        .into_result()
        .expect("sync");
    assert!(log.all().is_empty(), "{:?}", log.lines());

    // A changed spec, a missing owner or a changed policy label is re-applied.
    for (live, why) in [
        (
            node_state(
                "n1",
                &spec("n1", "edge", DesiredState::Unloaded),
                Some("uid-n1"),
                Value::Null,
            ),
            "spec",
        ),
        (node_state("n1", &s, None, Value::Null), "owner"),
        (
            node_state("n1", &s, Some("uid-old-node"), Value::Null),
            "owner uid",
        ),
        (
            {
                let mut unlabelled = node_state("n1", &s, Some("uid-n1"), Value::Null);
                unlabelled.metadata.labels = None;
                unlabelled
            },
            "policy label",
        ),
    ] {
        let (client, log) = fake_client(accepting(None));
        let stores = World {
            policies: vec![],
            nodes: vec![],
            states: vec![live],
            daemonsets: vec![live_agent()],
        }
        .stores();
        apply::sync_cluster(&target(&client, &stores, &desired, &metrics), &plan)
            .await
            .into_result()
            .expect("sync");
        assert_eq!(log.lines(), [format!("PATCH {STATES}/n1")], "{why}");
    }
}

#[tokio::test]
async fn deletes_are_guarded_by_uid_and_tolerate_gone_objects() {
    let (client, log) = fake_client(|r| {
        if r.path.ends_with("/gone") {
            status(404, "NotFound", "gone")
        } else {
            success()
        }
    });
    let s = spec("orphan", "edge", DesiredState::Unloaded);
    let stores = World {
        policies: vec![],
        nodes: vec![],
        states: vec![
            node_state(
                "orphan",
                &s,
                Some("uid-orphan"),
                json!({"phase": "Unloaded"}),
            ),
            node_state(
                "gone",
                &spec("gone", "edge", DesiredState::Unloaded),
                None,
                Value::Null,
            ),
        ],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let desired = agent();
    let metrics = Metrics::new();
    let mut plan = Plan::default();
    plan.deletions.extend([
        "orphan".to_string(),
        "gone".to_string(),
        "never-existed".to_string(),
    ]);
    let report = apply::sync_cluster(&target(&client, &stores, &desired, &metrics), &plan)
        .await
        .into_result()
        .expect("404 on delete is success");
    assert_eq!(report.node_states_deleted, 2);
    let reqs = log.all();
    // Only objects the store knows are deleted ("never-existed" is not requested).
    let mut lines = log.lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("DELETE {STATES}/gone"),
            format!("DELETE {STATES}/orphan")
        ]
    );
    let orphan = find(&reqs, "DELETE", &format!("{STATES}/orphan"));
    assert_eq!(orphan[0].body["preconditions"]["uid"], "state-uid-orphan");
}

/// The cluster sync of a plan that only labels `label` and unlabels `unlabel` (the DaemonSet
/// is up to date: only Node writes are made).
async fn sync_labels(
    client: &Client,
    label: &[&str],
    unlabel: &[&str],
) -> Result<apply::SyncReport, toa_operator::error::Error> {
    let stores = World {
        policies: vec![],
        nodes: vec![],
        states: vec![],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let desired = agent();
    let metrics = Metrics::new();
    let mut plan = Plan::default();
    plan.label_nodes.extend(label.iter().map(|n| n.to_string()));
    plan.unlabel_nodes
        .extend(unlabel.iter().map(|n| n.to_string()));
    apply::sync_cluster(&target(client, &stores, &desired, &metrics), &plan)
        .await
        .into_result()
}

#[tokio::test]
async fn node_labels_are_set_and_removed_with_ssa() {
    // n2's label was also set by someone else: SSA drops only our ownership, so the fake returns
    // it still labelled and the operator follows up with a merge patch.
    let (client, log) = fake_client(|r| match (r.method.as_str(), r.path.as_str()) {
        ("PATCH", "/api/v1/nodes/n2")
            if r.content_type.as_deref() == Some("application/apply-patch+yaml") =>
        {
            (
                200,
                json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": "n2", "labels": {"toa.dev/agent": "true"}}}),
            )
        }
        ("PATCH", "/api/v1/nodes/n2") => (
            200,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2", "labels": {}}}),
        ),
        ("PATCH", "/api/v1/nodes/n3") => (
            200,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n3", "labels": {"other": "x"}}}),
        ),
        _ => (200, r.body.clone()),
    });
    let report = sync_labels(&client, &["n1"], &["n2", "n3"])
        .await
        .expect("sync");
    assert_eq!((report.nodes_labelled, report.nodes_unlabelled), (1, 2));
    let reqs = log.all();
    // Writes run concurrently: order is only guaranteed per node.
    let n1 = find(&reqs, "PATCH", "/api/v1/nodes/n1");
    let n2 = find(&reqs, "PATCH", "/api/v1/nodes/n2");
    let n3 = find(&reqs, "PATCH", "/api/v1/nodes/n3");
    assert_eq!(
        (n1.len(), n2.len(), n3.len(), reqs.len()),
        (1, 2, 1, 4),
        "{:?}",
        log.lines()
    );
    ssa_query(n1[0]);
    assert_eq!(
        n1[0].body,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"toa.dev/agent": "true"}}})
    );
    ssa_query(n2[0]);
    assert_eq!(
        n2[0].body,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}})
    );
    assert_eq!(
        n2[1].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        n2[1].body,
        json!({"metadata": {"labels": {"toa.dev/agent": null}}})
    );
    // n3 lost the label with the SSA alone: no merge patch.
    ssa_query(n3[0]);
    assert_eq!(
        n3[0].body,
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n3"}})
    );
}

/// A Node deleted since the store saw it (404 on the label write) needs no label and no
/// removal: neither write is a failure, and no merge patch follows the refused SSA.
#[tokio::test]
async fn label_writes_to_deleted_nodes_are_not_failures() {
    let (client, log) = fake_client(|_| status(404, "NotFound", "nodes not found"));
    let report = sync_labels(&client, &["gone1"], &["gone2"])
        .await
        .expect("404 on a label write is success");
    assert_eq!((report.nodes_labelled, report.nodes_unlabelled), (1, 1));
    let mut lines = log.lines();
    lines.sort();
    assert_eq!(
        lines,
        ["PATCH /api/v1/nodes/gone1", "PATCH /api/v1/nodes/gone2"]
    );
}

#[tokio::test]
async fn missing_or_drifted_daemonset_is_repaired() {
    let desired = agent();
    let metrics = Metrics::new();
    let plan = Plan::default();

    // Missing: applied.
    let (client, log) = fake_client(accepting(None));
    let stores = World {
        policies: vec![],
        nodes: vec![],
        states: vec![],
        daemonsets: vec![],
    }
    .stores();
    let report = apply::sync_cluster(&target(&client, &stores, &desired, &metrics), &plan)
        .await
        .into_result()
        .expect("sync");
    assert!(report.daemonset_applied);
    let reqs = log.all();
    assert_eq!(log.lines(), [format!("PATCH {DS_PATH}")]);
    ssa_query(&reqs[0]);
    let body = &reqs[0].body;
    assert_eq!(body["apiVersion"], "apps/v1");
    assert_eq!(body["kind"], "DaemonSet");
    assert_eq!(body["metadata"]["namespace"], NS);
    let pod = &body["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        "reg.example/toa-node-agent:0.1.0"
    );
    assert_eq!(pod["containers"][0]["securityContext"]["privileged"], true);
    assert_eq!(
        pod["nodeSelector"],
        json!({"kubernetes.io/os": "linux", "toa.dev/agent": "true"})
    );
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(body["spec"]["updateStrategy"]["type"], "RollingUpdate");

    // Drifted (image edited by hand): applied again with our image.
    let mut edited = serde_json::to_value(live_agent()).expect("json");
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil:latest");
    let edited: DaemonSet = serde_json::from_value(edited).expect("ds");
    let (client, log) = fake_client(accepting(None));
    let stores = World {
        policies: vec![],
        nodes: vec![],
        states: vec![],
        daemonsets: vec![edited],
    }
    .stores();
    apply::sync_cluster(&target(&client, &stores, &desired, &metrics), &plan)
        .await
        .into_result()
        .expect("sync");
    let reqs = log.all();
    assert_eq!(log.lines(), [format!("PATCH {DS_PATH}")]);
    assert_eq!(
        reqs[0].body["spec"]["template"]["spec"]["containers"][0]["image"],
        "reg.example/toa-node-agent:0.1.0"
    );
}

#[tokio::test]
async fn one_failing_write_does_not_starve_the_others_and_is_counted() {
    let (client, log) = fake_client(|r| {
        if r.path.ends_with("/n1") {
            status(500, "InternalError", "etcd timeout")
        } else {
            (200, r.body.clone())
        }
    });
    let stores = World {
        policies: vec![],
        nodes: vec![],
        states: vec![],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let desired = agent();
    let metrics = Metrics::new();
    let mut plan = Plan::default();
    for n in ["n1", "n2", "n3"] {
        plan.node_states.insert(
            n.into(),
            DesiredNodeState {
                spec: spec(n, "edge", DesiredState::Loaded),
                node_uid: format!("uid-{n}"),
            },
        );
    }
    let err = apply::sync_cluster(&target(&client, &stores, &desired, &metrics), &plan)
        .await
        .into_result()
        .expect_err("n1 failed");
    assert_eq!(err.kind(), "ToaNodeState");
    assert_eq!(err.reason(), "InternalError");
    assert_eq!(
        log.all().len(),
        3,
        "n2 and n3 still written: {:?}",
        log.lines()
    );
    let text = metrics.encode().expect("metrics");
    assert!(
        text.contains(
            r#"toa_operator_reconcile_errors_total{kind="ToaNodeState",reason="InternalError"} 1"#
        ),
        "{text}"
    );
}

// ---------------------------------------------------------------- full reconcile (real plan)

fn all_nodes_policy(extra_meta: Value) -> ToaPolicy {
    policy("edge", extra_meta, json!({"nodeSelector": {}}))
}

#[tokio::test]
async fn new_policy_gets_finalizer_node_states_labels_and_status() {
    let p = all_nodes_policy(json!({}));
    let (client, log) = fake_client(accepting(Some(p.clone())));
    let stores = World {
        policies: vec![p.clone()],
        // n2 has no labels at all: the agent DaemonSet requires kubernetes.io/os=linux, so it
        // could never get an agent; it is excluded (and counted), not selected.
        nodes: vec![
            node("n1", json!({"kubernetes.io/os": "linux"})),
            bare_node("n2"),
        ],
        states: vec![],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let ctx = context(client, stores);
    let action = controller::reconcile(Arc::new(p), ctx.clone())
        .await
        .expect("reconcile");
    assert!(format!("{action:?}").contains("requeue"), "{action:?}");

    let reqs = log.all();
    // 1. Finalizer first (JSON patch, guarded by a test of the absent list).
    let fin = find(&reqs, "PATCH", &format!("{POLICIES}/edge"));
    assert_eq!(fin.len(), 1, "{:?}", log.lines());
    assert_eq!(
        fin[0].content_type.as_deref(),
        Some("application/json-patch+json")
    );
    assert_eq!(
        fin[0].body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["toa.dev/unload"]},
        ])
    );
    assert_eq!(
        reqs[0].line(),
        format!("PATCH {POLICIES}/edge"),
        "finalizer before any node write"
    );
    // n2 is left alone.
    assert!(
        !log.lines().iter().any(|l| l.ends_with("/n2")),
        "{:?}",
        log.lines()
    );
    // 2. One ToaNodeState per node, desired Loaded, owned by its Node.
    {
        let n = "n1";
        let w = find(&reqs, "PATCH", &format!("{STATES}/{n}"));
        assert_eq!(w.len(), 1, "{n}: {:?}", log.lines());
        ssa_query(w[0]);
        assert_eq!(w[0].body["spec"]["policy"], "edge");
        assert_eq!(w[0].body["spec"]["desiredState"], "Loaded");
        assert_eq!(w[0].body["spec"]["nodeName"], n);
        assert_eq!(
            w[0].body["metadata"]["ownerReferences"][0]["uid"],
            format!("uid-{n}")
        );
        // 3. The node gets the agent label.
        let l = find(&reqs, "PATCH", &format!("/api/v1/nodes/{n}"));
        assert_eq!(l.len(), 1, "{n}: {:?}", log.lines());
        assert_eq!(
            l[0].body["metadata"]["labels"],
            json!({"toa.dev/agent": "true"})
        );
    }
    // 4. Status via SSA on the status subresource.
    let st = find(&reqs, "PATCH", &format!("{POLICIES}/edge/status"));
    assert_eq!(st.len(), 1, "{:?}", log.lines());
    ssa_query(st[0]);
    assert_eq!(st[0].body["apiVersion"], "toa.dev/v1alpha1");
    assert_eq!(st[0].body["kind"], "ToaPolicy");
    assert_eq!(st[0].body["status"]["selectedNodes"], 1);
    assert_eq!(st[0].body["status"]["excludedNodes"], 1);
    assert_eq!(st[0].body["status"]["loadedNodes"], 0);
    assert_eq!(st[0].body["status"]["observedGeneration"], 1);
    // 5. Events for the new conditions, on the policy.
    let ev = find(&reqs, "POST", EVENTS);
    assert!(!ev.is_empty(), "{:?}", log.lines());
    assert_eq!(ev[0].body["regarding"]["kind"], "ToaPolicy");
    assert_eq!(ev[0].body["regarding"]["name"], "edge");
    assert_eq!(ev[0].body["reportingController"], "toa-operator");
    // The DaemonSet in the store is in sync: untouched.
    assert!(find(&reqs, "PATCH", DS_PATH).is_empty());

    let metrics = ctx.metrics.encode().expect("metrics");
    assert!(
        metrics.contains(r#"toa_operator_reconciles_total{kind="ToaPolicy",result="ok"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn housekeeping_never_loads_for_a_policy_without_its_finalizer() {
    // A brand-new policy (no finalizer yet): housekeeping must leave its nodes alone; the
    // policy's own reconcile adds the finalizer first.
    let p = all_nodes_policy(json!({}));
    let (client, log) = fake_client(accepting(Some(p.clone())));
    let stores = World {
        policies: vec![p],
        nodes: vec![bare_node("n1")],
        states: vec![],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let ctx = context(client, stores);
    controller::housekeeping_pass(&ctx)
        .await
        .expect("housekeeping");
    let reqs = log.all();
    assert!(
        find(&reqs, "PATCH", &format!("{STATES}/n1")).is_empty(),
        "{:?}",
        log.lines()
    );
}

#[tokio::test]
async fn converged_cluster_needs_no_writes() {
    let p = all_nodes_policy(json!({"finalizers": ["toa.dev/unload"]}));
    // First pass computes what the plan wants; feed it back as the live state.
    let (client, log) = fake_client(accepting(Some(p.clone())));
    let nodes = vec![node("n1", json!({"toa.dev/agent": "true"}))];
    let stores = World {
        policies: vec![p.clone()],
        nodes: nodes.clone(),
        states: vec![],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let ctx = context(client, stores);
    controller::reconcile(Arc::new(p.clone()), ctx)
        .await
        .expect("first pass");
    let reqs = log.all();
    let state_body = find(&reqs, "PATCH", &format!("{STATES}/n1"))[0]
        .body
        .clone();
    let status_body =
        find(&reqs, "PATCH", &format!("{POLICIES}/edge/status"))[0].body["status"].clone();
    let live_state: ToaNodeState = serde_json::from_value(state_body).expect("state");
    let mut live_policy = serde_json::to_value(&p).expect("json");
    live_policy["status"] = status_body;
    let live_policy: ToaPolicy = serde_json::from_value(live_policy).expect("policy");

    let (client, log) = fake_client(accepting(Some(live_policy.clone())));
    let stores = World {
        policies: vec![live_policy.clone()],
        nodes,
        states: vec![live_state],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let ctx = context(client, stores);
    controller::reconcile(Arc::new(live_policy), ctx)
        .await
        .expect("second pass");
    assert!(
        log.all().is_empty(),
        "converged state rewritten: {:?}",
        log.lines()
    );
}

#[tokio::test]
async fn deleted_keep_policy_releases_its_finalizer() {
    let p = policy(
        "edge",
        json!({"finalizers": ["other.io/x", "toa.dev/unload"], "deletionTimestamp": "2026-11-26T00:59:00Z"}),
        json!({"nodeSelector": {}, "lifecycle": {"onDelete": "Keep"}}),
    );
    let (client, log) = fake_client(accepting(Some(p.clone())));
    let s = spec("n1", "edge", DesiredState::Loaded);
    let stores = World {
        policies: vec![p.clone()],
        nodes: vec![node("n1", json!({"toa.dev/agent": "true"}))],
        states: vec![node_state(
            "n1",
            &s,
            Some("uid-n1"),
            json!({"phase": "Loaded"}),
        )],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let ctx = context(client, stores);
    controller::reconcile(Arc::new(p), ctx)
        .await
        .expect("reconcile");
    let reqs = log.all();
    let fin: Vec<&Request> = find(&reqs, "PATCH", &format!("{POLICIES}/edge"))
        .into_iter()
        .filter(|r| r.content_type.as_deref() == Some("application/json-patch+json"))
        .collect();
    assert_eq!(fin.len(), 1, "{:?}", log.lines());
    assert_eq!(
        fin[0].body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/1", "value": "toa.dev/unload"},
            {"op": "remove", "path": "/metadata/finalizers/1"},
        ])
    );
    let released = find(&reqs, "POST", EVENTS)
        .into_iter()
        .any(|e| e.body["reason"] == "FinalizerReleased");
    assert!(released, "{:?}", log.lines());
}

#[tokio::test]
async fn deleted_unload_policy_keeps_its_finalizer_while_nodes_unload() {
    let p = policy(
        "edge",
        json!({"finalizers": ["toa.dev/unload"], "deletionTimestamp": "2026-11-26T00:59:00Z"}),
        json!({"nodeSelector": {}, "lifecycle": {"onDelete": "Unload", "unloadTimeoutSeconds": 600}}),
    );
    let (client, log) = fake_client(accepting(Some(p.clone())));
    let s = spec("n1", "edge", DesiredState::Loaded);
    let stores = World {
        policies: vec![p.clone()],
        nodes: vec![node("n1", json!({"toa.dev/agent": "true"}))],
        states: vec![node_state(
            "n1",
            &s,
            Some("uid-n1"),
            json!({"phase": "Loaded"}),
        )],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let ctx = context(client, stores);
    let action = controller::reconcile(Arc::new(p), ctx)
        .await
        .expect("reconcile");
    let reqs = log.all();
    // The node is told to unload; the finalizer stays.
    let w = find(&reqs, "PATCH", &format!("{STATES}/n1"));
    assert_eq!(w.len(), 1, "{:?}", log.lines());
    assert_eq!(w[0].body["spec"]["desiredState"], "Unloaded");
    assert!(
        !reqs
            .iter()
            .any(|r| r.content_type.as_deref() == Some("application/json-patch+json")),
        "finalizer touched: {:?}",
        log.lines()
    );
    // Requeued before the unload deadline.
    let text = format!("{action:?}");
    assert!(text.contains("requeue"), "{text}");
}

#[tokio::test]
async fn orphan_node_state_is_cleaned_up_without_panicking() {
    // A ToaNodeState whose Node does not exist, and no policy at all: housekeeping handles it.
    let s = spec("ghost", "gone-policy", DesiredState::Loaded);
    let (client, log) = fake_client(accepting(None));
    let stores = World {
        policies: vec![],
        nodes: vec![],
        states: vec![node_state("ghost", &s, Some("uid-ghost"), Value::Null)],
        daemonsets: vec![],
    }
    .stores();
    let ctx = context(client, stores);
    controller::housekeeping_pass(&ctx)
        .await
        .expect("housekeeping");
    let reqs = log.all();
    // The missing DaemonSet is created; the orphan is deleted (guarded by its uid), never
    // given a new spec.
    assert_eq!(find(&reqs, "PATCH", DS_PATH).len(), 1, "{:?}", log.lines());
    assert!(
        find(&reqs, "PATCH", &format!("{STATES}/ghost")).is_empty(),
        "{:?}",
        log.lines()
    );
    let del = find(&reqs, "DELETE", &format!("{STATES}/ghost"));
    assert_eq!(del.len(), 1, "{:?}", log.lines());
    assert_eq!(del[0].body["preconditions"]["uid"], "state-uid-ghost");
    let metrics = ctx.metrics.encode().expect("metrics");
    assert!(
        metrics.contains(r#"toa_operator_reconciles_total{kind="Cluster",result="ok"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn unready_stores_make_no_writes() {
    let p = all_nodes_policy(json!({}));
    let (client, log) = fake_client(accepting(Some(p.clone())));
    let (nodes, _never_filled) = reflector::store::<toa_operator::plan::NodeMeta>();
    let stores = Stores {
        policies: store(vec![p.clone()]),
        nodes,
        node_states: store(vec![]),
        daemonsets: store(vec![]),
        agent_pods: store(vec![]),
        agent_events: store(vec![]),
        node_leases: None,
    };
    let ctx = context(client, stores);
    let action = controller::reconcile(Arc::new(p), ctx.clone())
        .await
        .expect("reconcile");
    assert!(log.all().is_empty(), "{:?}", log.lines());
    assert!(format!("{action:?}").contains("requeue"));
    controller::housekeeping_pass(&ctx)
        .await
        .expect("housekeeping");
    assert!(log.all().is_empty(), "{:?}", log.lines());
}

#[tokio::test]
async fn api_errors_back_off_with_growing_jittered_delays() {
    let p = all_nodes_policy(json!({}));
    let (client, _log) = fake_client(|_| status(503, "ServiceUnavailable", "apiserver overloaded"));
    let stores = World {
        policies: vec![p.clone()],
        nodes: vec![bare_node("n1")],
        states: vec![],
        daemonsets: vec![],
    }
    .stores();
    let ctx = context(client, stores);
    let p = Arc::new(p);
    let err = controller::reconcile(p.clone(), ctx.clone())
        .await
        .expect_err("API down");
    assert_eq!(err.reason(), "ServiceUnavailable");
    for _ in 0..5 {
        let action = controller::error_policy(p.clone(), &err, ctx.clone());
        assert!(
            format!("{action:?}").contains("requeue_after: Some"),
            "{action:?}"
        );
    }
    // After 5 failures the 6th delay is 32 s x jitter [0.5, 1.5); another key starts at ~1 s.
    let sixth = ctx.backoff.next_delay("edge");
    assert!(
        sixth >= Duration::from_secs(16) && sixth < Duration::from_secs(48),
        "{sixth:?}"
    );
    assert!(ctx.backoff.next_delay("other") < Duration::from_millis(1500));
    let metrics = ctx.metrics.encode().expect("metrics");
    assert!(
        metrics.contains(r#"toa_operator_reconciles_total{kind="ToaPolicy",result="error"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"reason="ServiceUnavailable""#),
        "{metrics}"
    );
}

// ---------------------------------------------------------------- failures stay with their policy

/// Policy `a` selects zone=a, `b` zone=b; the API server refuses the agent label on node b1
/// (as a ValidatingAdmissionPolicy would). Both policies still get their status; `b`'s says
/// what was refused and an Event carries it; `a` is untouched by b's failure.
#[tokio::test]
async fn a_refused_write_is_reported_on_its_policy_and_blocks_no_other() {
    const DENIAL: &str = "nodes \"b1\" is forbidden: ValidatingAdmissionPolicy 'no-agent-on-b1' with binding 'no-agent-on-b1' denied request: no agent on b1";
    let fin = json!({"finalizers": ["toa.dev/unload"]});
    let pa = policy(
        "a",
        fin.clone(),
        json!({"nodeSelector": {"matchLabels": {"zone": "a"}}}),
    );
    let pb = policy(
        "b",
        fin,
        json!({"nodeSelector": {"matchLabels": {"zone": "b"}}}),
    );
    let by_name: std::collections::BTreeMap<String, ToaPolicy> =
        [("a".to_string(), pa.clone()), ("b".to_string(), pb.clone())].into();
    let (client, log) = fake_client(move |r| {
        if r.method == "PATCH" && r.path == "/api/v1/nodes/b1" {
            return status(403, "Forbidden", DENIAL);
        }
        if r.method == "PATCH" && r.path.starts_with(POLICIES) {
            let name = r.path.trim_start_matches(POLICIES).split('/').nth(1);
            let mut p = serde_json::to_value(name.and_then(|n| by_name.get(n))).unwrap_or_default();
            p["status"] = r.body["status"].clone();
            return (200, p);
        }
        match r.method.as_str() {
            "PATCH" | "POST" | "PUT" => (200, r.body.clone()),
            _ => status(404, "NotFound", "not in the fake"),
        }
    });
    let stores = World {
        policies: vec![pa.clone(), pb.clone()],
        nodes: vec![
            node("a1", json!({"zone": "a"})),
            node("a2", json!({"zone": "a"})),
            node("b1", json!({"zone": "b"})),
            node("b2", json!({"zone": "b"})),
        ],
        states: vec![],
        daemonsets: vec![live_agent()],
    }
    .stores();
    let ctx = context(client, stores);

    // a's reconcile also runs the whole cluster's writes (b1's label fails in it): a's status
    // is written all the same, and says nothing of b's failure.
    controller::reconcile(Arc::new(pa), ctx.clone())
        .await
        .expect("a is not held back by b's refused write");
    let reqs = log.all();
    let st = find(&reqs, "PATCH", &format!("{POLICIES}/a/status"));
    assert_eq!(st.len(), 1, "{:?}", log.lines());
    assert_eq!(st[0].body["status"]["selectedNodes"], 2);
    let synced = |body: &Value| {
        body["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Synced").cloned())
            .unwrap_or_default()
    };
    assert_eq!(synced(&st[0].body)["status"], "True", "{}", st[0].body);
    log.clear();

    // b's reconcile: the status is written with the refusal, an Event carries it, and the
    // reconcile fails afterwards so that the write is retried with backoff.
    let err = controller::reconcile(Arc::new(pb), ctx.clone())
        .await
        .expect_err("b's write is retried");
    assert_eq!(err.reason(), "Forbidden");
    let reqs = log.all();
    let st = find(&reqs, "PATCH", &format!("{POLICIES}/b/status"));
    assert_eq!(st.len(), 1, "{:?}", log.lines());
    assert_eq!(st[0].body["status"]["selectedNodes"], 2);
    let c = synced(&st[0].body);
    assert_eq!(c["status"], "False", "{c}");
    assert_eq!(c["reason"], "WriteFailed", "{c}");
    let msg = c["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("label Node b1") && msg.contains("no agent on b1"),
        "{msg}"
    );
    let ev: Vec<&Request> = find(&reqs, "POST", EVENTS)
        .into_iter()
        .filter(|e| e.body["reason"] == "WriteFailed")
        .collect();
    assert_eq!(ev.len(), 1, "{:?}", log.lines());
    assert_eq!(ev[0].body["type"], "Warning");
    assert_eq!(ev[0].body["regarding"]["name"], "b");
    assert!(
        ev[0].body["note"]
            .as_str()
            .is_some_and(|n| n.contains("no agent on b1")),
        "{}",
        ev[0].body
    );
    // The other nodes of b were written.
    assert_eq!(find(&reqs, "PATCH", "/api/v1/nodes/b2").len(), 1);
}
