//! The operator's HTTP endpoints: `/metrics`, `/healthz` (process alive), `/readyz` (ready to
//! take over or acting: a standby replica is ready, a leader only once its caches are synced).
//!
//! A standby answers 200 on purpose: if only the leader were Ready, `helm install --wait`,
//! `kubectl rollout status` and surge rollouts would wait forever for the second replica.
//! The body says which role the replica has, and `toa_operator_leader` tells it to Prometheus.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
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

async fn healthz() -> &'static str {
    "ok\n"
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
        let state = HttpState {
            metrics,
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

        stop_tx.send_replace(true);
        let done = tokio::time::timeout(std::time::Duration::from_secs(5), server)
            .await
            .expect("server stops on shutdown")
            .expect("join");
        assert!(done.is_ok());
    }
}
