//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas are safe:
//! only the holder runs the controllers.
//!
//! Own module rather than a crate: `kube-lease-manager` 0.13 does support kube 5, but it reads
//! the wall clock internally (no deterministic tests of expiry), panics on invalid parameters
//! and manages the Lease with strategic-merge patches we could not assert exactly. This is the
//! client-go algorithm in ~200 lines:
//! - expiry is judged by *our* monotonic clock from the moment we last saw the lease record
//!   change (never by comparing our wall clock with the holder's), so clock skew between nodes
//!   cannot produce two leaders;
//! - every write is a `replace` carrying the resourceVersion we read (optimistic concurrency):
//!   of two candidates racing for a free lease, exactly one write succeeds (the other gets 409);
//! - the leader renews every `retry_period` and steps down by itself when it could not renew
//!   within `renew_deadline` (< lease duration), before anyone else may take over;
//! - on shutdown the leader releases the lease so a successor takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Timing of the election (client-go's defaults).
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    /// How long a lease stays valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (must be < lease_duration).
    pub renew_deadline: Duration,
    /// Pause between attempts (acquire or renew).
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {name}: API request failed: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The part of the lease record whose change proves the holder is alive.
#[derive(Clone, Debug, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    transitions: i32,
}

/// Whether this process may write as leader right now: true only while its last successful
/// acquire or renew is younger than the renew deadline, by this process's monotonic clock.
/// The election loop publishes the loss of leadership only on its next step; a process that
/// was paused (SIGSTOP, a VM freeze, a long GC-like stall) resumes with every timer due at once
/// and could write from stale caches before that step runs. Writers check the fence first.
#[derive(Clone, Debug)]
pub struct Fence {
    last_renew: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    deadline: Duration,
}

impl Fence {
    /// A fence closed until the first renewal; it stays open for `deadline` after each one.
    pub fn new(deadline: Duration) -> Self {
        Fence {
            last_renew: Default::default(),
            deadline,
        }
    }

    /// A fence that is always open (no election: tests, single-writer tools).
    pub fn always_open() -> Self {
        let f = Fence::new(Duration::MAX);
        f.renewed(Instant::now());
        f
    }

    pub fn renewed(&self, at: Instant) {
        if let Ok(mut g) = self.last_renew.lock() {
            *g = Some(at);
        }
    }

    pub fn close(&self) {
        if let Ok(mut g) = self.last_renew.lock() {
            *g = None;
        }
    }

    pub fn holds_at(&self, now: Instant) -> bool {
        match self.last_renew.lock() {
            Ok(g) => g.is_some_and(|t| now.saturating_duration_since(t) < self.deadline),
            Err(_) => false,
        }
    }

    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }
}

/// One candidate's view of one Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
    /// Last record seen and when (our monotonic clock) we first saw it.
    observed: Option<(Record, Instant)>,
    /// Owner of a Lease we create (the release's ConfigMap), so that it goes with the release.
    owner: Option<OwnerReference>,
    /// Opened by each successful acquire/renew (at the time the attempt started).
    fence: Fence,
    /// The last step returned `false` because our write lost to a concurrent one (409), not
    /// because another replica holds a live lease.
    lost_race: bool,
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl LeaseLock {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: LeaseTiming,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
            owner: None,
            fence: Fence::new(timing.renew_deadline),
            lost_race: false,
        }
    }

    /// The write fence this lock opens on every successful acquire or renew.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// A Lease this lock creates carries `owner` as ownerReference: the garbage collector
    /// removes it with the owner (the Helm release's ConfigMap).
    pub fn with_owner(mut self, owner: Option<OwnerReference>) -> Self {
        self.owner = owner;
        self
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether the last step lost a race (409) rather than finding another live holder.
    pub fn lost_race(&self) -> bool {
        self.lost_race
    }

    fn err(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            name: self.name.clone(),
            source,
        }
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// One election step at local time `now` (monotonic) and wall time `wall` (written into
    /// the record). Returns whether we hold the lease afterwards.
    pub async fn try_acquire_or_renew(
        &mut self,
        now: Instant,
        wall: Timestamp,
    ) -> Result<bool, LeaseError> {
        self.lost_race = false;
        let current = match self.api.get_opt(&self.name).await {
            Ok(c) => c,
            Err(e) => return Err(self.err(e)),
        };
        let Some(current) = current else {
            return self.create(now, wall).await;
        };
        let spec = current.spec.clone().unwrap_or_default();
        let record = Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.clone(),
            transitions: spec.lease_transitions.unwrap_or(0),
        };
        let seen_at = match &self.observed {
            Some((r, at)) if *r == record => *at,
            _ => now,
        };
        self.observed = Some((record.clone(), seen_at));

        let held_by_other = record.holder.as_deref().is_some_and(|h| h != self.identity);
        if held_by_other {
            let valid_for = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.timing.lease_duration);
            if now.duration_since(seen_at) < valid_for {
                return Ok(false);
            }
        }

        let we_hold = record.holder.as_deref() == Some(self.identity.as_str());
        let new_spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration_secs()),
            acquire_time: if we_hold {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(wall))
            },
            renew_time: Some(MicroTime(wall)),
            // Every acquisition that is not a renewal is a transition (as in client-go).
            lease_transitions: Some(if we_hold {
                record.transitions
            } else {
                record.transitions.saturating_add(1)
            }),
            ..spec
        };
        let updated = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: current.metadata.namespace.clone(),
                resource_version: current.metadata.resource_version.clone(),
                ..current.metadata.clone()
            },
            spec: Some(new_spec),
        };
        match self
            .api
            .replace(&self.name, &PostParams::default(), &updated)
            .await
        {
            Ok(written) => {
                self.remember(&written, now);
                Ok(true)
            }
            // Someone else wrote first: read again before concluding anything.
            Err(e) if is_status(&e, 409) => {
                self.lost_race = true;
                Ok(false)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    async fn create(&mut self, now: Instant, wall: Timestamp) -> Result<bool, LeaseError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                owner_references: self.owner.clone().map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration_secs()),
                acquire_time: Some(MicroTime(wall)),
                renew_time: Some(MicroTime(wall)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(written) => {
                self.remember(&written, now);
                Ok(true)
            }
            // Another candidate created it between our get and create.
            Err(e) if is_status(&e, 409) => {
                self.lost_race = true;
                Ok(false)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn remember(&mut self, written: &Lease, now: Instant) {
        self.fence.renewed(now);
        let spec = written.spec.clone().unwrap_or_default();
        self.observed = Some((
            Record {
                holder: spec.holder_identity.filter(|h| !h.is_empty()),
                renew_time: spec.renew_time,
                transitions: spec.lease_transitions.unwrap_or(0),
            },
            now,
        ));
    }

    /// Gives the lease up if we hold it, so a successor need not wait for expiry.
    pub async fn release(&mut self, wall: Timestamp) -> Result<(), LeaseError> {
        let current = match self.api.get_opt(&self.name).await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.err(e)),
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let released = Lease {
            metadata: current.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                renew_time: Some(MicroTime(wall)),
                ..spec
            }),
        };
        match self
            .api
            .replace(&self.name, &PostParams::default(), &released)
            .await
        {
            Ok(_) => Ok(()),
            // Changed under us: it is not ours any more, nothing to release.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }
}

/// How long one election step may take: a leader's renewal must finish before its renew
/// deadline (counted from its last successful renewal), after which it could no longer write
/// anyway; a candidate's attempt gets one renew deadline. Zero means: no time left.
pub fn step_budget(timing: &LeaseTiming, last_renew: Option<Instant>, now: Instant) -> Duration {
    match last_renew {
        Some(t) => (t + timing.renew_deadline).saturating_duration_since(now),
        None => timing.renew_deadline,
    }
}

/// Runs the election until `shutdown` turns true, publishing leadership on `leader`.
///
/// Every step is bounded (see [`step_budget`]): a request that hangs, or a client that keeps
/// retrying, cannot keep a leader that no longer renews believing it leads past its renew
/// deadline, while the standby takes over after the lease duration. (Give `lock` a client
/// without a retry layer: a retry would only spend the budget.) Leadership is published as
/// `false` as soon as the renew deadline is missed or another replica holds the lease. A lost
/// race (409: the lease changed between our read and our write) is not taken as a loss: the
/// lease is read again at once, and only a live other holder ends leadership. Either way the
/// loop goes on as a candidate. On shutdown the lease is released if held.
pub async fn run(
    mut lock: LeaseLock,
    leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let timing = lock.timing;
    let mut last_renew: Option<Instant> = None;
    // After a lost race the next step comes at once (bounded, so a server that answers every
    // write with 409 cannot make us spin).
    let mut rereads_in_a_row = 0u32;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let now = Instant::now();
        let budget = step_budget(&timing, last_renew, now);
        let step = if budget.is_zero() {
            None
        } else {
            tokio::time::timeout(budget, lock.try_acquire_or_renew(now, Timestamp::now()))
                .await
                .ok()
        };
        let was_leader = *leader.borrow();
        let mut reread = false;
        match step {
            Some(Ok(true)) => {
                if !was_leader {
                    tracing::info!(identity = lock.identity(), lease = %lock.name, "acquired leadership");
                }
                last_renew = Some(now);
                leader.send_replace(true);
                rereads_in_a_row = 0;
            }
            Some(Ok(false)) if lock.lost_race && rereads_in_a_row < MAX_REREADS => {
                // Our write lost to a concurrent change: read the lease again before
                // deciding anything (we may well still hold it).
                tracing::info!(
                    identity = lock.identity(),
                    "lease changed under us (409): reading it again"
                );
                reread = true;
                rereads_in_a_row += 1;
            }
            Some(Ok(false)) => {
                lock.fence.close();
                if was_leader {
                    tracing::warn!(
                        identity = lock.identity(),
                        "lease taken by another replica: standing by as a candidate"
                    );
                }
                last_renew = None;
                leader.send_replace(false);
                rereads_in_a_row = 0;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "leader election step failed");
            }
            None => {
                tracing::warn!(budget = ?budget, "leader election step did not finish within the renew deadline");
            }
        }
        let expired =
            last_renew.is_some_and(|t| Instant::now().duration_since(t) >= timing.renew_deadline);
        if expired {
            lock.fence.close();
            last_renew = None;
            if *leader.borrow() {
                tracing::error!("could not renew the lease within the renew deadline: stepping down, standing by as a candidate");
                leader.send_replace(false);
            }
        }
        if reread {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(timing.retry_period) => {}
            _ = shutdown.changed() => {}
        }
    }
    lock.fence.close();
    if *leader.borrow() {
        leader.send_replace(false);
        let released =
            tokio::time::timeout(timing.renew_deadline, lock.release(Timestamp::now())).await;
        match released {
            Ok(Ok(())) => tracing::info!("released the leader lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the leader lease"),
            Err(_) => tracing::warn!("releasing the leader lease timed out"),
        }
    }
}

/// Re-reads in a row after lost races before a step counts as lost.
const MAX_REREADS: u32 = 3;

/// A candidate identity unique per process: the pod name (POD_NAME from the downward API, else
/// HOSTNAME) plus a random suffix, so a restarted pod never mistakes the old process's lease
/// for its own.
pub fn default_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "toa-operator".to_string());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{host}_{:08x}", h.finish() as u32)
}

#[cfg(test)]
mod fence_tests {
    use super::*;

    #[test]
    fn fence_is_closed_until_renewed_and_after_the_deadline() {
        let f = Fence::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!f.holds_at(t0), "closed before the first renewal");
        f.renewed(t0);
        assert!(f.holds_at(t0 + Duration::from_secs(9)));
        // A process paused for longer than the renew deadline must not write on resume.
        assert!(!f.holds_at(t0 + Duration::from_secs(10)));
        assert!(!f.holds_at(t0 + Duration::from_secs(20)));
        f.renewed(t0 + Duration::from_secs(20));
        assert!(f.holds_at(t0 + Duration::from_secs(21)));
        f.clone().close();
        assert!(
            !f.holds_at(t0 + Duration::from_secs(21)),
            "clones share state"
        );
        assert!(Fence::always_open().holds());
    }
}
