//! Reconcile errors, how they are labelled in metrics, and the retry backoff.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::Duration;

/// A failed API request made while applying a plan.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{verb} {kind} {name}: {source}")]
    Api {
        /// Kind of the object the request addressed (metrics label `kind`).
        kind: &'static str,
        verb: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("encoding {kind} {name}: {source}")]
    Encode {
        kind: &'static str,
        name: String,
        #[source]
        source: serde_json::Error,
    },
    /// The leader lease was not renewed within the renew deadline (by our own clock): writing
    /// now could overlap with a successor's writes (e.g. after the process was paused).
    #[error("not writing: the leader lease was not renewed within the renew deadline")]
    LeaseNotHeld,
}

impl Error {
    pub(crate) fn api(
        kind: &'static str,
        verb: &'static str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Error {
        let name = name.to_string();
        move |source| Error::Api {
            kind,
            verb,
            name,
            source,
        }
    }

    /// Kind of object the failing request addressed.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Api { kind, .. } | Error::Encode { kind, .. } => kind,
            Error::LeaseNotHeld => "Lease",
        }
    }

    /// One line for a condition message: for an API answer its message and reason only (the
    /// full `Display` carries the whole Status structure).
    pub fn summary(&self) -> String {
        match self {
            Error::Api {
                kind,
                verb,
                name,
                source: kube::Error::Api(status),
            } => format!(
                "{verb} {kind} {name}: {} ({}, HTTP {})",
                status.message,
                if status.reason.is_empty() {
                    "no reason"
                } else {
                    status.reason.as_str()
                },
                status.code
            ),
            other => other.to_string(),
        }
    }

    /// A short, bounded-cardinality reason for the `reason` metrics label: the API status
    /// reason (Conflict, Forbidden, NotFound, Invalid, ...) or the class of client failure.
    pub fn reason(&self) -> String {
        match self {
            Error::Encode { .. } => "Encode".to_string(),
            Error::LeaseNotHeld => "LeaseNotHeld".to_string(),
            Error::Api { source, .. } => match source {
                kube::Error::Api(status) if !status.reason.is_empty() => status.reason.clone(),
                kube::Error::Api(status) => format!("Http{}", status.code),
                kube::Error::HyperError(_) | kube::Error::Service(_) => "Transport".to_string(),
                kube::Error::SerdeError(_) => "Decode".to_string(),
                kube::Error::Auth(_) => "Auth".to_string(),
                _ => "Client".to_string(),
            },
        }
    }
}

/// Exponential backoff with jitter, per object: 1st retry after ~1 s, doubling up to ~5 min.
/// Jitter (x0.5 .. x1.5) spreads retries of many objects that failed together (e.g. during an
/// API server outage) instead of retrying them in lock-step.
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `key` and returns how long to wait before retrying it.
    pub fn next_delay(&self, key: &str) -> Duration {
        let attempt = {
            let mut map = self
                .failures
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = map.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(20)));
        let capped = exp.min(self.max);
        capped.mul_f64(jitter_factor())
    }

    /// Forgets the failures of `key` (after a successful reconcile).
    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// A factor in [0.5, 1.5). std's RandomState is randomly seeded per instance, which is all the
/// randomness jitter needs (no RNG crate).
fn jitter_factor() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    0.5 + (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.to_string(),
            message: "m".to_string(),
            ..kube::core::Status::default()
        }))
    }

    #[test]
    fn reasons_are_bounded_labels() {
        let e = Error::api("ToaNodeState", "apply", "n1")(api_error(409, "Conflict"));
        assert_eq!(
            (e.kind(), e.reason().as_str()),
            ("ToaNodeState", "Conflict")
        );
        let e = Error::api("Node", "patch", "n1")(api_error(500, ""));
        assert_eq!(e.reason(), "Http500");
        assert!(e.to_string().contains("patch Node n1"), "{e}");
        assert_eq!(e.summary(), "patch Node n1: m (no reason, HTTP 500)");
    }

    #[test]
    fn backoff_grows_is_capped_jittered_and_resets() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let d1 = b.next_delay("p");
        assert!(
            d1 >= Duration::from_millis(500) && d1 < Duration::from_millis(1500),
            "{d1:?}"
        );
        let d2 = b.next_delay("p");
        assert!(
            d2 >= Duration::from_secs(1) && d2 < Duration::from_secs(3),
            "{d2:?}"
        );
        for _ in 0..10 {
            let d = b.next_delay("p");
            assert!(d < Duration::from_secs(12), "{d:?}");
        }
        // Another key is independent.
        assert!(b.next_delay("q") < Duration::from_millis(1500));
        b.reset("p");
        assert!(b.next_delay("p") < Duration::from_millis(1500));
    }

    #[test]
    fn jitter_spreads_delays() {
        let samples: Vec<f64> = (0..64).map(|_| jitter_factor()).collect();
        assert!(samples.iter().all(|f| (0.5..1.5).contains(f)));
        let min = samples.iter().cloned().fold(f64::MAX, f64::min);
        let max = samples.iter().cloned().fold(f64::MIN, f64::max);
        assert!(max - min > 0.1, "jitter is not random: {min}..{max}");
    }
}
