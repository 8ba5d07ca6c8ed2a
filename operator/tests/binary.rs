//! The real `toa-operator` binary against a fake API server on loopback (plain HTTP, a
//! kubeconfig pointing at it): leader election, controllers, /healthz and /readyz, and a
//! graceful SIGTERM that releases the Lease and exits 0.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

#[derive(Default)]
struct Api {
    /// "METHOD path" of every request.
    lines: Vec<String>,
    lease: Option<Value>,
    lease_version: u64,
}

type Shared = Arc<Mutex<Api>>;

fn list(kind: &str, api_version: &str, items: Value) -> Value {
    json!({"apiVersion": api_version, "kind": format!("{kind}List"),
           "metadata": {"resourceVersion": "5"}, "items": items})
}

fn policy() -> Value {
    json!({"apiVersion": "toa.dev/v1alpha1", "kind": "ToaPolicy",
           "metadata": {"name": "edge", "uid": "uid-edge", "generation": 1, "resourceVersion": "3",
                        "creationTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["toa.dev/unload"]},
           "spec": {"nodeSelector": {}}})
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/toa-system/leases";

async fn handle(State(api): State<Shared>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let body: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if query.contains("watch=true") {
        // An open watch on which nothing happens.
        std::future::pending::<()>().await;
    }
    let (code, reply) = {
        let Ok(mut api) = api.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        api.lines.push(format!("{method} {path}"));
        answer(&mut api, &method, &path, body)
    };
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(reply),
    )
        .into_response()
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound"}),
    )
}

fn answer(api: &mut Api, method: &str, path: &str, body: Value) -> (u16, Value) {
    let lease_path = format!("{LEASES}/toa-operator-leader");
    match (method, path) {
        ("GET", p) if p == lease_path => api.lease.clone().map_or_else(not_found, |l| (200, l)),
        ("POST", LEASES) | ("PUT", _) if path.starts_with(LEASES) => {
            api.lease_version += 1;
            let mut l = body;
            l["metadata"]["resourceVersion"] = json!(api.lease_version.to_string());
            api.lease = Some(l.clone());
            (if method == "POST" { 201 } else { 200 }, l)
        }
        ("GET", "/apis/toa.dev/v1alpha1/toapolicies") => (
            200,
            list("ToaPolicy", "toa.dev/v1alpha1", json!([policy()])),
        ),
        ("GET", "/api/v1/nodes") => (
            200,
            list(
                "Node",
                "v1",
                json!([{"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "uid": "uid-n1", "resourceVersion": "4",
                             "labels": {"kubernetes.io/os": "linux"}}}]),
            ),
        ),
        ("GET", "/apis/toa.dev/v1alpha1/toanodestates") => {
            (200, list("ToaNodeState", "toa.dev/v1alpha1", json!([])))
        }
        ("GET", "/apis/apps/v1/namespaces/toa-system/daemonsets") => {
            (200, list("DaemonSet", "apps/v1", json!([])))
        }
        ("GET", "/api/v1/namespaces/toa-system/pods") => (200, list("Pod", "v1", json!([]))),
        ("GET", "/api/v1/namespaces/toa-system/events") => (200, list("Event", "v1", json!([]))),
        ("PATCH", p) if p.starts_with("/apis/toa.dev/v1alpha1/toapolicies/edge") => {
            let mut obj = policy();
            obj["status"] = body["status"].clone();
            (200, obj)
        }
        ("PATCH", _) | ("POST", _) => (200, body),
        _ => not_found(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GET over plain HTTP/1.1; returns the status code.
/// The raw HTTP response (status line, headers, body) of a GET.
fn http_response(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn http_get(port: u16, path: &str) -> Option<u16> {
    http_response(port, path)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn http_body(port: u16, path: &str) -> Option<String> {
    let out = http_response(port, path)?;
    Some(out.split_once("\r\n\r\n")?.1.to_string())
}

/// Everything the child printed (after it exited or was killed).
fn output(child: &mut std::process::Child) -> String {
    let mut logs = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut logs);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut logs);
    }
    logs
}

fn wait_until(child: &mut std::process::Child, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "operator exited ({status}) before {what}:\n{}",
                output(child)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("timed out waiting for {what}:\n{}", output(child));
}

/// Runs the operator binary against the fake API with `--log-format FORMAT` through leading,
/// serving and a graceful SIGTERM shutdown; returns its logs (stdout and stderr, piped: not a
/// terminal).
fn run_operator(log_format: &str) -> String {
    let api: Shared = Arc::default();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let api_port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().fallback(handle).with_state(api.clone());
    rt.spawn(async move { axum::serve(listener, app).await });

    let dir = std::env::temp_dir().join(format!("toa-op-bin-{}-{log_format}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: 'http://127.0.0.1:{api_port}'}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: u}}}}]\ncurrent-context: fake\nusers: [{{name: u, user: {{}}}}]\n"
        ),
    )
    .expect("kubeconfig");
    let agent_config = dir.join("agent.yaml");
    std::fs::write(&agent_config, "image: reg.example/agent:1\n").expect("agent config");

    let metrics_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_toa-operator"))
        .args(["--agent-config", agent_config.to_str().unwrap_or_default()])
        .args(["--namespace", "toa-system", "--log-format", log_format])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn toa-operator");

    wait_until(&mut child, "/healthz", 20, || {
        http_get(metrics_port, "/healthz") == Some(200)
    });
    wait_until(&mut child, "/readyz and the leader gauge", 20, || {
        http_get(metrics_port, "/readyz") == Some(200)
            && http_body(metrics_port, "/metrics")
                .is_some_and(|b| b.contains("toa_operator_leader 1"))
    });
    let lines = || api.lock().map(|a| a.lines.clone()).unwrap_or_default();
    wait_until(&mut child, "node state and label writes", 20, || {
        let l = lines();
        l.iter()
            .any(|x| x == "PATCH /apis/toa.dev/v1alpha1/toanodestates/n1")
            && l.iter().any(|x| x == "PATCH /api/v1/nodes/n1")
    });
    assert!(
        lines().iter().any(|x| x == &format!("POST {LEASES}")),
        "{:?}",
        lines()
    );

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "operator did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let logs = output(&mut child);
    assert!(status.success(), "exit {status:?}\n{logs}");
    // The lease was given back on the way out.
    let holder = api
        .lock()
        .ok()
        .and_then(|a| a.lease.clone())
        .and_then(|l| l.pointer("/spec/holderIdentity").cloned());
    assert!(
        holder.as_ref().is_none_or(Value::is_null),
        "lease still held: {holder:?}\n{logs}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    logs
}

#[test]
fn binary_leads_serves_and_shuts_down_gracefully() {
    let logs = run_operator("json");
    // JSON logs, one object per line.
    let first = logs
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_default();
    let parsed: BTreeMap<String, Value> = serde_json::from_str(first).unwrap_or_default();
    assert!(parsed.contains_key("level"), "not JSON logs: {logs}");
}

#[test]
fn text_logs_have_no_colour_codes_when_not_on_a_terminal() {
    // `kubectl logs` and log files show ANSI escapes as garbage.
    let logs = run_operator("text");
    assert!(logs.contains("INFO"), "no text log lines: {logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escape codes in piped logs: {logs:?}"
    );
}
