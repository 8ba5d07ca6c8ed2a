//! Kubernetes mode: the desired state is the node's own ToaNodeState (watched with a field
//! selector on its name, so an agent never lists other nodes' objects), and the status goes
//! back with server-side apply under the field manager `toa-node-agent`.
//!
//! Write rate: the runner publishes on every status change and otherwise every
//! --heartbeat-interval (default 300 s), so a quiet node writes 12 times per hour.

use crate::desired::{Desired, DesiredSpec};
use crate::runner::{StatusSink, Update};
use crate::status::NodeStatus;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use std::sync::mpsc::Sender;
use toa_crds::{ToaNodeState, AGENT_FIELD_MANAGER, API_VERSION};

/// Turns one ToaNodeState into an update for the runner.
pub fn update_from(obj: &ToaNodeState) -> Update {
    let spec = DesiredSpec::from(&obj.spec);
    match spec.validate() {
        Ok(()) => Update::Desired(Desired {
            spec,
            generation: obj.metadata.generation.unwrap_or(0),
        }),
        // The API server's CEL rules should make this impossible; never act on it anyway.
        Err(e) => Update::Absent(format!(
            "ToaNodeState spec rejected by the agent: {e}; fix the ToaPolicy's module settings"
        )),
    }
}

/// Watches the node's ToaNodeState and forwards every version to the runner. Returns when
/// the runner is gone.
pub async fn watch_desired(api: Api<ToaNodeState>, node: String, tx: Sender<Update>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut seen = false;
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let update = match event {
            Ok(Event::Apply(obj) | Event::InitApply(obj)) => {
                seen = true;
                Some(update_from(&obj))
            }
            Ok(Event::Delete(_)) => {
                seen = false;
                Some(Update::Absent(format!(
                    "ToaNodeState {node} was deleted; the module is left as it is until the operator writes a new desired state"
                )))
            }
            Ok(Event::Init) => None,
            Ok(Event::InitDone) if !seen => Some(Update::Absent(format!(
                "no ToaNodeState named {node} yet; waiting for the operator (is a ToaPolicy selecting this node?)"
            ))),
            Ok(Event::InitDone) => None,
            Err(e) => {
                tracing::warn!(error = %e, "watching ToaNodeState failed; retrying with backoff");
                None
            }
        };
        if let Some(u) = update {
            if tx.send(u).is_err() {
                return;
            }
        }
    }
}

/// Writes the status subresource with server-side apply.
pub struct KubeSink {
    api: Api<ToaNodeState>,
    name: String,
    rt: tokio::runtime::Handle,
}

impl KubeSink {
    /// `rt`: the runtime to run requests on (the runner calls from its own thread).
    pub fn new(api: Api<ToaNodeState>, name: String, rt: tokio::runtime::Handle) -> Self {
        Self { api, name, rt }
    }

    /// The apply body: only the fields this manager owns.
    pub fn body(&self, status: &NodeStatus) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "ToaNodeState",
            "metadata": { "name": self.name },
            "status": status.to_crd(),
        })
    }
}

impl StatusSink for KubeSink {
    fn publish(&mut self, status: &NodeStatus) -> Result<(), String> {
        let body = self.body(status);
        // force: the status belongs to this agent alone; take over any stale owner.
        let params = PatchParams::apply(AGENT_FIELD_MANAGER).force();
        match self.rt.block_on(
            self.api
                .patch_status(&self.name, &params, &Patch::Apply(&body)),
        ) {
            Ok(_) => Ok(()),
            // A real API server answers 404 for the status of a ToaNodeState that does not
            // exist (yet, or any more: no policy selects the node). There is nothing to report
            // to, and retrying would only repeat the warning; the watch brings the object back
            // when the operator creates it, and the runner then writes a fresh status.
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                tracing::debug!(node = %self.name, "no ToaNodeState to write the status to");
                Ok(())
            }
            Err(e) => Err(format!(
                "server-side apply of ToaNodeState {} status: {e}",
                self.name
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Phase;
    use http::{Request, Response};
    use kube::client::Body;
    use std::time::Duration;

    fn mock() -> (
        kube::Client,
        tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) {
        let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(svc, "default"), handle)
    }

    /// The status sink of node `node-a`, talking to a mocked apiserver.
    fn sink_for_node_a() -> (
        KubeSink,
        tower_test::mock::Handle<Request<Body>, Response<Body>>,
    ) {
        let (client, handle) = mock();
        let api: Api<ToaNodeState> = Api::all(client);
        let sink = KubeSink::new(api, "node-a".into(), tokio::runtime::Handle::current());
        (sink, handle)
    }

    fn object(generation: i64) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "toa.dev/v1alpha1",
            "kind": "ToaNodeState",
            "metadata": { "name": "node-a", "generation": generation, "resourceVersion": "7" },
            "spec": {
                "nodeName": "node-a", "policy": "default", "desiredState": "Loaded",
                "module": { "ipv4OptionKinds": [200, 254], "nat64OptionKinds": [253], "trustedSources": [] },
                "replaceForeignModule": false, "reloadAllowed": false
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_is_server_side_applied_by_the_agent() {
        let (mut sink, mut handle) = sink_for_node_a();
        let status = NodeStatus {
            phase: Phase::Loaded,
            observed_generation: Some(4),
            agent_version: "0.1.0".into(),
            ..Default::default()
        };
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("request");
            assert_eq!(req.method(), http::Method::PATCH);
            let uri = req.uri().to_string();
            assert!(
                uri.starts_with("/apis/toa.dev/v1alpha1/toanodestates/node-a/status?"),
                "{uri}"
            );
            assert!(uri.contains("fieldManager=toa-node-agent"), "{uri}");
            assert!(uri.contains("force=true"), "{uri}");
            assert_eq!(
                req.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("application/apply-patch+yaml")
            );
            let bytes = http_body_util::BodyExt::collect(req.into_body())
                .await
                .expect("body")
                .to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json body");
            assert_eq!(body["status"]["phase"], "Loaded");
            assert_eq!(body["status"]["observedGeneration"], 4);
            assert_eq!(body["metadata"]["name"], "node-a");
            assert!(body.get("spec").is_none(), "the agent never writes spec");
            let mut obj = object(4);
            obj["status"] = body["status"].clone();
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&obj).expect("json")))
                    .expect("response"),
            );
        });
        let result = tokio::task::spawn_blocking(move || sink.publish(&status))
            .await
            .expect("join");
        assert_eq!(result, Ok(()));
        server.await.expect("server");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apply_errors_are_reported() {
        let (mut sink, mut handle) = sink_for_node_a();
        let server = tokio::spawn(async move {
            let (_req, send) = handle.next_request().await.expect("request");
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "toanodestates.toa.dev \"node-a\" is forbidden", "reason": "Forbidden", "code": 403
            });
            answer_status(send, 403, &status);
        });
        let err = tokio::task::spawn_blocking(move || sink.publish(&NodeStatus::default()))
            .await
            .expect("join")
            .expect_err("forbidden");
        assert!(err.contains("node-a") && err.contains("forbidden"), "{err}");
        server.await.expect("server");
    }

    /// Answers a mocked request with an apiserver `Status` object and HTTP `code`.
    fn answer_status(
        send: tower_test::mock::SendResponse<Response<Body>>,
        code: u16,
        status: &serde_json::Value,
    ) {
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(status).expect("json")))
                .expect("response"),
        );
    }

    /// What kube-apiserver answers to a status apply for an object that does not exist
    /// (seen in tests/cluster: every agent start before a policy selects the node, and every
    /// node a policy releases): not an error worth a warning and a retry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_of_a_missing_object_is_not_an_error() {
        let (mut sink, mut handle) = sink_for_node_a();
        let server = tokio::spawn(async move {
            let (_req, send) = handle.next_request().await.expect("request");
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "toanodestates.toa.dev \"node-a\" not found", "reason": "NotFound",
                "details": { "name": "node-a", "group": "toa.dev", "kind": "toanodestates" }, "code": 404
            });
            answer_status(send, 404, &status);
        });
        let result = tokio::task::spawn_blocking(move || sink.publish(&NodeStatus::default()))
            .await
            .expect("join");
        assert_eq!(result, Ok(()));
        server.await.expect("server");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_forwards_the_own_object_only() {
        let (client, mut handle) = mock();
        let api: Api<ToaNodeState> = Api::all(client);
        let (tx, rx) = std::sync::mpsc::channel();
        let watch = tokio::spawn(watch_desired(api, "node-a".into(), tx));
        let (req, send) = handle.next_request().await.expect("list request");
        let uri = req.uri().to_string();
        assert!(
            uri.starts_with("/apis/toa.dev/v1alpha1/toanodestates?"),
            "{uri}"
        );
        assert!(
            uri.contains("fieldSelector=metadata.name%3Dnode-a"),
            "{uri}"
        );
        let list = serde_json::json!({
            "apiVersion": "toa.dev/v1alpha1", "kind": "ToaNodeStateList",
            "metadata": { "resourceVersion": "7" }, "items": [object(5)]
        });
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&list).expect("json")))
                .expect("response"),
        );
        let update = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("join")
            .expect("update");
        match update {
            Update::Desired(d) => {
                assert_eq!(d.generation, 5);
                assert_eq!(d.spec.module.ipv4_option_kinds, [200, 254]);
                assert_eq!(d.spec.node_name, "node-a");
            }
            other => panic!("unexpected {other:?}"),
        }
        watch.abort();
    }

    #[test]
    fn invalid_spec_is_not_acted_on() {
        let mut obj: ToaNodeState = serde_json::from_value(object(1)).expect("object");
        obj.spec.module.ipv4_option_kinds = vec![25];
        assert!(matches!(update_from(&obj), Update::Absent(m) if m.contains("25")));
    }
}
