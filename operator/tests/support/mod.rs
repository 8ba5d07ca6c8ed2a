//! An HTTP-level fake of the Kubernetes API: a `tower-test` mock service behind a real
//! `kube::Client`. Every request the code under test sends is recorded (method, path, query,
//! content type, JSON body) and answered by a test-supplied responder, so tests assert the
//! exact requests and objects written.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request as HttpRequest, Response as HttpResponse};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// One request as the API server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    /// The Accept header (a metadata-only request asks for `as=PartialObjectMetadata...`).
    pub accept: Option<String>,
    pub body: Value,
}

impl Request {
    /// `METHOD path` for compact assertions on request sequences.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The responder's answer: HTTP status code and JSON body.
pub type Reply = (u16, Value);

/// Status "code" that leaves the request unanswered, like a watch on which nothing happens.
pub const HANG: u16 = 0;

/// Requests recorded so far.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Request>>>);

impl Log {
    pub fn all(&self) -> Vec<Request> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
    pub fn lines(&self) -> Vec<String> {
        self.all().iter().map(Request::line).collect()
    }
    pub fn clear(&self) {
        if let Ok(mut v) = self.0.lock() {
            v.clear();
        }
    }
    fn push(&self, r: Request) {
        if let Ok(mut v) = self.0.lock() {
            v.push(r);
        }
    }
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.replace("%2F", "/").replace("%3D", "="))
        })
        .collect()
}

/// A kube Client whose every request is recorded and answered by `responder`.
pub fn fake_client<F>(mut responder: F) -> (Client, Log)
where
    F: FnMut(&Request) -> Reply + Send + 'static,
{
    let (service, mut handle) = tower_test::mock::pair::<HttpRequest<Body>, HttpResponse<Body>>();
    let log = Log::default();
    let recorded = log.clone();
    tokio::spawn(async move {
        let mut parked = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
            };
            let req = Request {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parse_query(parts.uri.query()),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                accept: parts
                    .headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body,
            };
            let (code, reply) = responder(&req);
            recorded.push(req);
            if code == HANG {
                // Never answered (an open watch with no events): keep the sender alive.
                parked.push(send);
                continue;
            }
            let bytes = serde_json::to_vec(&reply).unwrap_or_default();
            match HttpResponse::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(bytes))
            {
                Ok(resp) => send.send_response(resp),
                Err(e) => send.send_error(e),
            }
        }
    });
    (Client::new(service, "default"), log)
}

/// A Kubernetes `Status` failure body.
pub fn status(code: u16, reason: &str, message: &str) -> Reply {
    (
        code,
        json!({
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        }),
    )
}

/// A Kubernetes `Status` success body (what DELETE returns for immediate deletions).
pub fn success() -> Reply {
    (
        200,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 200}),
    )
}
