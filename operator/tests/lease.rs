//! Leader election against the HTTP-level fake: the exact Lease requests (create, renew,
//! takeover, conflict, release) and the run loop's leadership signal.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use serde_json::{json, Value};
use support::{fake_client, status, Log, Reply, Request};
use toa_operator::lease::{self, Fence, LeaseLock, LeaseTiming};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/toa-system/leases/toa-operator-leader";
const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/toa-system/leases";

/// A minimal Lease store with resourceVersion checks, as the API server does them.
#[derive(Default)]
struct LeaseServer {
    object: Option<Value>,
    version: u64,
}

impl LeaseServer {
    fn reply(&mut self, r: &Request) -> Reply {
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", PATH) => match &self.object {
                Some(o) => (200, o.clone()),
                None => status(404, "NotFound", "leases \"toa-operator-leader\" not found"),
            },
            ("POST", COLLECTION) => {
                if self.object.is_some() {
                    return status(409, "AlreadyExists", "already exists");
                }
                self.store(r.body.clone());
                (201, self.object.clone().unwrap_or_default())
            }
            ("PUT", PATH) => {
                let sent = r.body.pointer("/metadata/resourceVersion").cloned();
                if sent != Some(json!(self.version.to_string())) {
                    return status(409, "Conflict", "the object has been modified");
                }
                self.store(r.body.clone());
                (200, self.object.clone().unwrap_or_default())
            }
            _ => status(404, "NotFound", "unexpected request"),
        }
    }

    fn store(&mut self, mut obj: Value) {
        self.version += 1;
        obj["metadata"]["resourceVersion"] = json!(self.version.to_string());
        obj["metadata"]["namespace"] = json!("toa-system");
        self.object = Some(obj);
    }

    /// Another replica writes the lease directly.
    fn set_holder(&mut self, holder: Option<&str>, renew: &str) {
        let obj = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "toa-operator-leader"},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 15,
                "renewTime": renew,
                "acquireTime": "2026-01-01T00:00:00.000000Z",
                "leaseTransitions": 3,
            }
        });
        self.store(obj);
    }
}

/// A [`LeaseServer`] behind a fake client. `intercept` answers a request first when it returns
/// a reply (an outage, a hang, a conflict); the server answers the others.
fn lease_api(
    intercept: impl Fn(&Request) -> Option<Reply> + Send + 'static,
) -> (Arc<Mutex<LeaseServer>>, Client, Log) {
    let server = Arc::new(Mutex::new(LeaseServer::default()));
    let s = server.clone();
    let (client, log) = fake_client(move |r| {
        if let Some(reply) = intercept(r) {
            return reply;
        }
        s.lock()
            .map(|mut s| s.reply(r))
            .unwrap_or((500, Value::Null))
    });
    (server, client, log)
}

fn setup() -> (Arc<Mutex<LeaseServer>>, LeaseLock, Log) {
    let (server, client, log) = lease_api(|_| None);
    let lock = LeaseLock::new(
        client,
        "toa-system",
        "toa-operator-leader",
        "me",
        LeaseTiming::default(),
    );
    (server, lock, log)
}

/// The election loop of candidate "me", running on its own task.
struct Election {
    leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    fence: Fence,
}

impl Election {
    fn start(client: Client, timing: LeaseTiming) -> Self {
        let lock = LeaseLock::new(client, "toa-system", "toa-operator-leader", "me", timing);
        let fence = lock.fence();
        let (leader_tx, leader) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(lease::run(lock, leader_tx, stop_rx));
        Election {
            leader,
            stop,
            task,
            fence,
        }
    }

    /// Waits (at most 5 s) until leadership is `leading`; `what` names the expectation.
    async fn wait_leading(&mut self, leading: bool, what: &str) {
        tokio::time::timeout(
            Duration::from_secs(5),
            self.leader.wait_for(|l| *l == leading),
        )
        .await
        .expect(what)
        .expect("channel open");
    }

    /// Asks the loop to stop and waits (at most 5 s) until it has.
    async fn stop(&mut self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("the loop stopped in time")
            .expect("join");
    }
}

fn wall(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

#[tokio::test]
async fn creates_a_missing_lease_and_holds_it() {
    let (_server, mut lock, log) = setup();
    let held = lock
        .try_acquire_or_renew(Instant::now(), wall("2026-11-26T01:00:00Z"))
        .await
        .expect("step");
    assert!(held);
    let reqs = log.all();
    assert_eq!(
        log.lines(),
        [format!("GET {PATH}"), format!("POST {COLLECTION}")]
    );
    let body = &reqs[1].body;
    assert_eq!(body["kind"], "Lease");
    assert_eq!(body["metadata"]["name"], "toa-operator-leader");
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(body["spec"]["leaseTransitions"], 0);
    assert_eq!(body["spec"]["renewTime"], "2026-11-26T01:00:00.000000Z");
    assert_eq!(body["spec"]["acquireTime"], "2026-11-26T01:00:00.000000Z");
}

#[tokio::test]
async fn renews_with_optimistic_concurrency() {
    let (_server, mut lock, log) = setup();
    let t0 = Instant::now();
    assert!(lock
        .try_acquire_or_renew(t0, wall("2026-11-26T01:00:00Z"))
        .await
        .expect("acquire"));
    log.clear();
    assert!(lock
        .try_acquire_or_renew(t0 + Duration::from_secs(2), wall("2026-11-26T01:00:02Z"))
        .await
        .expect("renew"));
    let reqs = log.all();
    assert_eq!(log.lines(), [format!("GET {PATH}"), format!("PUT {PATH}")]);
    let body = &reqs[1].body;
    // The replace carries the version we read: a concurrent writer makes it fail with 409.
    assert_eq!(body["metadata"]["resourceVersion"], "1");
    assert_eq!(body["spec"]["holderIdentity"], "me");
    assert_eq!(body["spec"]["renewTime"], "2026-11-26T01:00:02.000000Z");
    // A renewal keeps the acquire time and the transition count.
    assert_eq!(body["spec"]["acquireTime"], "2026-11-26T01:00:00.000000Z");
    assert_eq!(body["spec"]["leaseTransitions"], 0);
}

#[tokio::test]
async fn respects_a_live_holder_and_takes_over_an_expired_one() {
    let (server, mut lock, log) = setup();
    if let Ok(mut s) = server.lock() {
        s.set_holder(Some("other"), "2020-01-01T00:00:00.000000Z");
    }
    let t0 = Instant::now();
    // The holder's renewTime is years old by our wall clock, but expiry is judged by our own
    // monotonic clock since we first saw this record: not expired yet (clock-skew safe).
    assert!(!lock
        .try_acquire_or_renew(t0, wall("2026-11-26T01:00:00Z"))
        .await
        .expect("step"));
    assert!(!lock
        .try_acquire_or_renew(t0 + Duration::from_secs(14), wall("2026-11-26T01:00:14Z"))
        .await
        .expect("step"));
    assert!(
        log.lines().iter().all(|l| l.starts_with("GET ")),
        "no write while held: {:?}",
        log.lines()
    );
    log.clear();
    // Unchanged for a full lease duration: the holder is dead, take over.
    assert!(lock
        .try_acquire_or_renew(t0 + Duration::from_secs(16), wall("2026-11-26T01:00:16Z"))
        .await
        .expect("takeover"));
    let reqs = log.all();
    assert_eq!(log.lines(), [format!("GET {PATH}"), format!("PUT {PATH}")]);
    assert_eq!(reqs[1].body["spec"]["holderIdentity"], "me");
    assert_eq!(reqs[1].body["spec"]["leaseTransitions"], 4);
    assert_eq!(
        reqs[1].body["spec"]["acquireTime"],
        "2026-11-26T01:00:16.000000Z"
    );
}

#[tokio::test]
async fn a_renewing_holder_is_never_overtaken() {
    let (server, mut lock, _log) = setup();
    let t0 = Instant::now();
    for i in 0..5u64 {
        if let Ok(mut s) = server.lock() {
            s.set_holder(
                Some("other"),
                &format!("2026-11-26T01:00:{:02}.000000Z", i * 10),
            );
        }
        // 10 s apart, 50 s in total: far beyond one lease duration, but the record changes.
        let held = lock
            .try_acquire_or_renew(
                t0 + Duration::from_secs(i * 10),
                wall("2026-11-26T01:00:00Z"),
            )
            .await
            .expect("step");
        assert!(!held, "took over a live lease at step {i}");
    }
}

#[tokio::test]
async fn a_lost_race_is_not_an_error() {
    let (server, client, log) = lease_api(|r| {
        (r.method == "PUT").then(|| status(409, "Conflict", "the object has been modified"))
    });
    if let Ok(mut s) = server.lock() {
        s.set_holder(None, "2026-11-26T00:00:00.000000Z");
    }
    let mut lock = LeaseLock::new(
        client,
        "toa-system",
        "toa-operator-leader",
        "me",
        LeaseTiming::default(),
    );
    let held = lock
        .try_acquire_or_renew(Instant::now(), wall("2026-11-26T01:00:00Z"))
        .await
        .expect("a 409 is an answer, not a failure");
    assert!(!held);
    assert_eq!(log.lines(), [format!("GET {PATH}"), format!("PUT {PATH}")]);
}

#[tokio::test]
async fn api_failures_are_errors() {
    let (client, _log) = fake_client(|_| status(403, "Forbidden", "leases is forbidden"));
    let mut lock = LeaseLock::new(
        client,
        "toa-system",
        "toa-operator-leader",
        "me",
        LeaseTiming::default(),
    );
    let e = lock
        .try_acquire_or_renew(Instant::now(), wall("2026-11-26T01:00:00Z"))
        .await
        .expect_err("forbidden");
    assert!(e.to_string().contains("toa-operator-leader"), "{e}");
}

#[tokio::test]
async fn release_clears_the_holder_only_when_held() {
    let (server, mut lock, log) = setup();
    assert!(lock
        .try_acquire_or_renew(Instant::now(), wall("2026-11-26T01:00:00Z"))
        .await
        .expect("acquire"));
    log.clear();
    lock.release(wall("2026-11-26T01:00:05Z"))
        .await
        .expect("release");
    let reqs = log.all();
    assert_eq!(log.lines(), [format!("GET {PATH}"), format!("PUT {PATH}")]);
    let spec = &reqs[1].body["spec"];
    assert!(
        spec.get("holderIdentity").is_none_or(Value::is_null),
        "{spec}"
    );
    assert_eq!(spec["leaseDurationSeconds"], 1);
    // Someone else's lease is left alone.
    if let Ok(mut s) = server.lock() {
        s.set_holder(Some("other"), "2026-11-26T01:00:06.000000Z");
    }
    log.clear();
    lock.release(wall("2026-11-26T01:00:07Z"))
        .await
        .expect("release");
    assert_eq!(log.lines(), [format!("GET {PATH}")]);
}

#[tokio::test]
async fn run_loop_publishes_leadership_and_releases_on_shutdown() {
    let (server, client, log) = lease_api(|_| None);
    let timing = LeaseTiming {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_millis(20),
    };
    let mut election = Election::start(client, timing);
    election.wait_leading(true, "became leader in time").await;
    // Keeps renewing.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        log.lines().iter().filter(|l| l.starts_with("PUT")).count() >= 2,
        "{:?}",
        log.lines()
    );
    election.stop().await;
    assert!(!*election.leader.borrow());
    let holder = server
        .lock()
        .ok()
        .and_then(|s| s.object.clone())
        .and_then(|o| o.pointer("/spec/holderIdentity").cloned());
    assert!(
        holder.as_ref().is_none_or(Value::is_null),
        "lease not released: {holder:?}"
    );
}

#[tokio::test]
async fn leader_steps_down_when_it_cannot_renew_in_time() {
    let outage = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let down = outage.clone();
    let (_server, client, _log) = lease_api(move |_| {
        down.load(std::sync::atomic::Ordering::SeqCst)
            .then(|| status(503, "ServiceUnavailable", "apiserver down"))
    });
    let timing = LeaseTiming {
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(300),
        retry_period: Duration::from_millis(20),
    };
    let mut election = Election::start(client, timing);
    election.wait_leading(true, "became leader").await;
    let lost_at = Instant::now();
    outage.store(true, std::sync::atomic::Ordering::SeqCst);
    election.wait_leading(false, "stepped down").await;
    // Not before the renew deadline (transient errors are tolerated), and well before the
    // lease could expire for the others.
    let after = lost_at.elapsed();
    assert!(
        after >= Duration::from_millis(200),
        "stepped down too early: {after:?}"
    );
    assert!(
        after < Duration::from_millis(1500),
        "stepped down too late: {after:?}"
    );
    election.stop().await;
}

/// Records every value the leadership channel takes (a short flip would escape `wait_for`).
fn record(mut leader: tokio::sync::watch::Receiver<bool>) -> Arc<Mutex<Vec<bool>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        while leader.changed().await.is_ok() {
            let v = *leader.borrow_and_update();
            if let Ok(mut s) = seen.lock() {
                s.push(v);
            }
        }
    });
    out
}

/// A renewal that never gets an answer (a proxy that stops answering) must not keep the leader
/// leading past its renew deadline: the step is bounded, leadership is dropped in time and the
/// fence closes, and the loop goes on (as a candidate) instead of hanging.
#[tokio::test]
async fn a_hanging_renewal_is_cut_at_the_renew_deadline() {
    let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = hang.clone();
    let (_server, client, log) = lease_api(move |_| {
        h.load(std::sync::atomic::Ordering::SeqCst)
            .then_some((support::HANG, Value::Null))
    });
    let timing = LeaseTiming {
        lease_duration: Duration::from_millis(3000),
        renew_deadline: Duration::from_millis(400),
        retry_period: Duration::from_millis(50),
    };
    let mut election = Election::start(client, timing);
    election.wait_leading(true, "became leader").await;
    let hung_at = Instant::now();
    hang.store(true, std::sync::atomic::Ordering::SeqCst);
    election
        .wait_leading(false, "stepped down although the renewal never returned")
        .await;
    let after = hung_at.elapsed();
    assert!(
        after < Duration::from_millis(400 + 150),
        "stepped down after {after:?}: later than the renew deadline"
    );
    assert!(
        !election.fence.holds(),
        "the fence closed with the deadline"
    );
    // The loop keeps trying as a candidate (new requests after the step-down).
    let before = log.all().len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(log.all().len() > before, "{:?}", log.lines());
    // Stops although requests hang.
    election.stop().await;
}

/// A 409 on renewal (the Lease changed between our read and our write: someone edited its
/// labels, or a stale read) is not a loss: the leader reads the lease again at once, finds
/// itself still the holder, renews and never publishes leadership as lost.
#[tokio::test]
async fn a_lost_race_while_leading_is_reread_not_taken_as_lost() {
    let puts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = puts.clone();
    let (_server, client, log) = lease_api(move |r| {
        // The 2nd renewal conflicts once.
        (r.method == "PUT" && n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1)
            .then(|| status(409, "Conflict", "the object has been modified"))
    });
    let timing = LeaseTiming {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_millis(100),
    };
    let mut election = Election::start(client, timing);
    let seen = record(election.leader.clone());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        puts.load(std::sync::atomic::Ordering::SeqCst) >= 4,
        "{:?}",
        log.lines()
    );
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        seen.first() == Some(&true) && !seen.contains(&false),
        "leadership flipped on a 409: {seen:?}"
    );
    // The conflicting PUT was followed at once by a GET and a successful PUT.
    let lines = log.lines();
    let conflict = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("PUT"))
        .nth(1)
        .map(|(i, _)| i)
        .expect("a second PUT");
    assert_eq!(
        &lines[conflict + 1..conflict + 3],
        [format!("GET {PATH}"), format!("PUT {PATH}")]
    );
    election.stop().await;
}

/// A leader whose lease was taken over (another live holder) steps down but stays a candidate,
/// and leads again once the other lets the lease go.
#[tokio::test]
async fn a_deposed_leader_stays_a_candidate_and_leads_again() {
    let (server, client, _log) = lease_api(|_| None);
    let timing = LeaseTiming {
        lease_duration: Duration::from_millis(600),
        renew_deadline: Duration::from_millis(400),
        retry_period: Duration::from_millis(50),
    };
    let mut election = Election::start(client, timing);
    election.wait_leading(true, "became leader").await;
    // Another replica takes the lease (and keeps renewing it for a while).
    for i in 0..6 {
        if let Ok(mut s) = server.lock() {
            s.set_holder(Some("other"), &format!("2026-11-26T01:00:{i:02}.000000Z"));
            if let Some(o) = s.object.as_mut() {
                o["spec"]["leaseDurationSeconds"] = json!(1);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if i == 2 {
            assert!(
                !*election.leader.borrow(),
                "still leading under another live holder"
            );
        }
    }
    // The other goes silent: its lease expires and we lead again, in the same run loop.
    election
        .wait_leading(true, "led again after the other's lease expired")
        .await;
    assert!(!election.task.is_finished());
    election.stop().await;
}
