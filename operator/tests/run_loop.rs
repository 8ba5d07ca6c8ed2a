//! The whole controller (`controller::run`: watchers, reflector stores, mappers, reconcile,
//! housekeeping) against the HTTP-level fake: initial lists come from the fake, watches stay
//! open and silent. Checks that the wiring produces the writes and stops on shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::Reporter;
use serde_json::{json, Value};
use support::{fake_client, status, Request, HANG};
use toa_operator::config::AgentConfig;
use toa_operator::controller::{self, AgentTarget};
use toa_operator::metrics::Metrics;

fn list(kind: &str, api_version: &str, items: Value) -> (u16, Value) {
    (
        200,
        json!({"apiVersion": api_version, "kind": format!("{kind}List"),
               "metadata": {"resourceVersion": "5"}, "items": items}),
    )
}

fn policy() -> Value {
    json!({
        "apiVersion": "toa.dev/v1alpha1", "kind": "ToaPolicy",
        "metadata": {"name": "edge", "uid": "uid-edge", "generation": 1, "resourceVersion": "3",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"nodeSelector": {}},
    })
}

fn answer(r: &Request) -> (u16, Value) {
    let watching = r.query.get("watch").map(String::as_str) == Some("true");
    match (r.method.as_str(), r.path.as_str()) {
        ("GET", _) if watching => (HANG, Value::Null),
        ("GET", "/apis/toa.dev/v1alpha1/toapolicies") => {
            list("ToaPolicy", "toa.dev/v1alpha1", json!([policy()]))
        }
        ("GET", "/api/v1/nodes") => list(
            "Node",
            "v1",
            json!([{"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": "n1", "uid": "uid-n1", "resourceVersion": "4",
                                 "labels": {"kubernetes.io/os": "linux"}},
                    "status": {"images": [{"names": ["big/image:1"], "sizeBytes": 1}]}}]),
        ),
        // A leftover state whose Node is gone: the operator must delete it.
        ("GET", "/apis/toa.dev/v1alpha1/toanodestates") => list(
            "ToaNodeState",
            "toa.dev/v1alpha1",
            json!([{"apiVersion": "toa.dev/v1alpha1", "kind": "ToaNodeState",
                    "metadata": {"name": "ghost", "uid": "uid-ghost", "resourceVersion": "2"},
                    "spec": {"nodeName": "ghost", "policy": "old", "desiredState": "Loaded"},
                    "status": {"phase": "Failed", "reason": "BuildFailed"}}]),
        ),
        ("GET", "/apis/apps/v1/namespaces/toa-system/daemonsets") => {
            list("DaemonSet", "apps/v1", json!([]))
        }
        ("PATCH", p) if p.starts_with("/apis/toa.dev/v1alpha1/toapolicies/edge") => {
            let mut obj = policy();
            if p.ends_with("/status") {
                obj["status"] = r.body["status"].clone();
            }
            (200, obj)
        }
        ("GET", "/api/v1/namespaces/toa-system/pods") => list("Pod", "v1", json!([])),
        ("GET", "/api/v1/namespaces/toa-system/events") => list("Event", "v1", json!([])),
        ("PATCH", _) | ("POST", _) => (200, r.body.clone()),
        ("DELETE", _) => support::success(),
        _ => status(404, "NotFound", "not in the fake"),
    }
}

#[tokio::test]
async fn controller_wiring_writes_and_stops_on_shutdown() {
    let (client, log) = fake_client(answer);
    let cfg =
        AgentConfig::parse("image: reg.example/agent:1\n", "t.yaml".as_ref()).expect("config");
    let agent = AgentTarget {
        desired: toa_operator::daemonset::build(&cfg, "toa-node-agent", "toa-system"),
        name: "toa-node-agent".into(),
        namespace: "toa-system".into(),
        start_timeout: Duration::from_secs(300),
    };
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let (synced_tx, mut synced) = tokio::sync::watch::channel(false);
    let reporter = Reporter {
        controller: "toa-operator".into(),
        instance: Some("t".into()),
    };
    let task = tokio::spawn(controller::run(
        client,
        agent,
        metrics.clone(),
        reporter,
        toa_operator::lease::Fence::always_open(),
        Arc::new(toa_operator::server::Liveness::new(Duration::from_secs(90))),
        None,
        stop,
        synced_tx,
    ));

    tokio::time::timeout(Duration::from_secs(10), synced.wait_for(|s| *s))
        .await
        .expect("stores synced from the lists")
        .expect("channel");

    let wanted = [
        "PATCH /apis/toa.dev/v1alpha1/toapolicies/edge",
        "PATCH /apis/apps/v1/namespaces/toa-system/daemonsets/toa-node-agent",
        "PATCH /apis/toa.dev/v1alpha1/toanodestates/n1",
        "PATCH /api/v1/nodes/n1",
        "PATCH /apis/toa.dev/v1alpha1/toapolicies/edge/status",
        "DELETE /apis/toa.dev/v1alpha1/toanodestates/ghost",
    ];
    let all_written = || {
        let lines = log.lines();
        wanted.iter().all(|w| lines.iter().any(|l| l == w))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !all_written() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(all_written(), "missing writes; got {:#?}", log.lines());

    // Nodes and ToaNodeStates are listed in pages from the most recent state (a list at
    // resourceVersion=0 comes from the watch cache in one piece, whatever the limit).
    for path in ["/api/v1/nodes", "/apis/toa.dev/v1alpha1/toanodestates"] {
        let list = log
            .all()
            .into_iter()
            .find(|r| r.method == "GET" && r.path == path && !r.query.contains_key("watch"))
            .expect("list");
        assert_eq!(
            list.query.get("limit").map(String::as_str),
            Some("500"),
            "{list:?}"
        );
        assert_eq!(list.query.get("resourceVersion"), None, "{list:?}");
    }

    // The DaemonSet watch is confined to our object by a field selector.
    let ds_list = log
        .all()
        .into_iter()
        .find(|r| r.method == "GET" && r.path == "/apis/apps/v1/namespaces/toa-system/daemonsets")
        .expect("daemonset list");
    assert_eq!(
        ds_list.query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=toa-node-agent")
    );

    let text = metrics.encode().expect("metrics");
    assert!(
        text.contains(r#"toa_operator_nodes{policy="old",phase="Failed"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"toa_operator_reconciles_total{kind="ToaPolicy",result="ok"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#"toa_operator_reconciles_total{kind="Cluster",result="ok"}"#),
        "{text}"
    );

    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("controller stops on shutdown")
        .expect("join");
}
