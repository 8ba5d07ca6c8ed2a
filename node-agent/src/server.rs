//! HTTP endpoints: /metrics (Prometheus text), /healthz (process alive), /readyz (module as
//! desired).

use crate::metrics::{read_view, Metrics, SharedView};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub view: SharedView,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(st): State<AppState>) -> Response {
    // Reading procfs/sysfs is fast but blocking: keep it off the async workers.
    let m = st.metrics.clone();
    match tokio::task::spawn_blocking(move || m.render()).await {
        Ok(Ok(body)) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            body,
        )
            .into_response(),
        Ok(Err(_)) | Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response(),
    }
}

async fn readyz(State(st): State<AppState>) -> Response {
    let v = read_view(&st.view);
    let reason = v.reason.map(|r| r.as_str()).unwrap_or("");
    if v.ready() {
        (StatusCode::OK, format!("ready: {}\n", v.phase.as_str())).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: phase {} {reason} (desired {:?})\n",
                v.phase.as_str(),
                v.desired
            ),
        )
            .into_response()
    }
}
