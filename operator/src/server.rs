//! The operator's HTTP endpoints: `/metrics`, `/healthz` (process alive and, on the leader, its
//! control loop making progress: see [`Liveness`]), `/readyz` (ready to take over or acting: a
//! standby replica is ready, a leader only once its caches are synced).
//!
//! A standby answers 200 on purpose: if only the leader were Ready, `helm install --wait`,
//! `kubectl rollout status` and surge rollouts would wait forever for the second replica.
//! The body says which role the replica has, and `toa_operator_leader` tells it to Prometheus.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Whether the leader's control loop makes progress. The leader finishes a reconcile pass at
/// least every housekeeping interval (30 s) even when nothing changes; a leader that has
/// finished none for `stall_limit` (default 3 x 30 s) is stuck (a hung request, a deadlock, a
/// watch that never syncs again) and `/healthz` fails, so that the kubelet restarts it. A
/// standby has no loop to check.
#[derive(Debug)]
pub struct Liveness {
    stall_limit: Duration,
    state: Mutex<LiveState>,
}

#[derive(Debug, Default)]
struct LiveState {
    leading_since: Option<Instant>,
    last_pass: Option<Instant>,
}

impl Liveness {
    pub fn new(stall_limit: Duration) -> Self {
        Liveness {
            stall_limit,
            state: Mutex::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut LiveState) -> T) -> T {
        let mut g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// The controllers start (leadership acquired) at `at`.
    pub fn leading(&self, at: Instant) {
        self.with(|s| {
            s.leading_since = Some(at);
            s.last_pass = None;
        });
    }

    /// The controllers stopped (leadership lost or shutdown).
    pub fn standing_by(&self) {
        self.with(|s| *s = LiveState::default());
    }

    /// A reconcile pass (plan and writes) finished at `at`, whatever its writes' results.
    pub fn pass_finished(&self, at: Instant) {
        self.with(|s| s.last_pass = Some(at));
    }

    /// `Err(stalled_for)` when leading and no pass finished within the stall limit.
    pub fn check(&self, now: Instant) -> Result<(), Duration> {
        self.with(|s| {
            let Some(since) = s.leading_since else {
                return Ok(());
            };
            let since = s.last_pass.map_or(since, |p| p.max(since));
            let stalled = now.saturating_duration_since(since);
            if stalled >= self.stall_limit {
                Err(stalled)
            } else {
                Ok(())
            }
        })
    }
}

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// Progress of the leader's control loop (for /healthz).
    pub liveness: Arc<Liveness>,
    /// True while this replica is the leader.
    pub leader: watch::Receiver<bool>,
    /// True once the controllers' caches have synced after becoming leader.
    pub synced: watch::Receiver<bool>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> Response {
    s.metrics.set_leader(*s.leader.borrow());
    match s.metrics.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn healthz(State(s): State<HttpState>) -> (StatusCode, String) {
    match s.liveness.check(Instant::now()) {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(stalled) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "leader has finished no reconcile pass for {}s: the control loop is stuck\n",
                stalled.as_secs()
            ),
        ),
    }
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    match (*s.leader.borrow(), *s.synced.borrow()) {
        (true, true) => (StatusCode::OK, "ok: leader\n"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "leader: caches syncing\n"),
        (false, _) => (
            StatusCode::OK,
            "ok: standby, another replica holds the leader lease\n",
        ),
    }
}

/// Binds `addr` and serves until `shutdown` turns true.
pub async fn serve(
    addr: std::net::SocketAddr,
    state: HttpState,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics /healthz /readyz");
    serve_on(listener, state, shutdown).await
}

/// Serves on an already bound listener until `shutdown` turns true.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: HttpState,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain HTTP/1.1 GET over loopback against the real server.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.expect("write");
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await.expect("read");
        let code = raw
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (code, body)
    }

    #[tokio::test]
    async fn endpoints_reflect_leadership_and_metrics() {
        let metrics = Arc::new(Metrics::new());
        metrics.error("Node", "Forbidden");
        let (leader_tx, leader) = watch::channel(false);
        let (synced_tx, synced) = watch::channel(false);
        let (stop_tx, stop) = watch::channel(false);
        let liveness = Arc::new(Liveness::new(Duration::from_millis(300)));
        let state = HttpState {
            metrics,
            liveness: liveness.clone(),
            leader,
            synced,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve_on(listener, state, stop));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 200);
        assert!(body.contains("standby"), "{body}");
        leader_tx.send_replace(true);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("syncing"), "{body}");
        synced_tx.send_replace(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("toa_operator_leader 1"), "{body}");
        assert!(
            body.contains(
                r#"toa_operator_reconcile_errors_total{kind="Node",reason="Forbidden"} 1"#
            ),
            "{body}"
        );
        assert_eq!(get(addr, "/nope").await.0, 404);

        // A leader whose loop finishes no pass within the stall limit fails /healthz.
        liveness.leading(Instant::now());
        assert_eq!(get(addr, "/healthz").await.0, 200);
        tokio::time::sleep(Duration::from_millis(350)).await;
        let (code, body) = get(addr, "/healthz").await;
        assert_eq!(code, 503);
        assert!(body.contains("no reconcile pass"), "{body}");
        liveness.pass_finished(Instant::now());
        assert_eq!(get(addr, "/healthz").await.0, 200);
        liveness.standing_by();
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(get(addr, "/healthz").await.0, 200, "a standby is healthy");

        stop_tx.send_replace(true);
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("server stops on shutdown")
            .expect("join");
        assert!(done.is_ok());
    }
}
