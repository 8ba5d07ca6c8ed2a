//! The reconcile loop: one thread that owns the [`Reconciler`], takes desired states from a
//! channel, re-checks periodically, and publishes statuses to a sink (file or API server)
//! only when they change or the heartbeat is due.

use crate::desired::Desired;
use crate::metrics::SharedView;
use crate::reconcile::Reconciler;
use crate::status::{now_rfc3339, NodeStatus, Phase};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// A desired-state source's news.
#[derive(Debug, Clone)]
pub enum Update {
    Desired(Desired),
    /// No (valid) desired state exists; the module is left as it is.
    Absent(String),
}

/// Where statuses go.
pub trait StatusSink: Send {
    fn publish(&mut self, status: &NodeStatus) -> Result<(), String>;
}

pub struct Runner<'a> {
    reconciler: Reconciler,
    sink: &'a mut dyn StatusSink,
    view: SharedView,
    heartbeat: Duration,
    last: Option<(NodeStatus, Instant)>,
}

impl<'a> Runner<'a> {
    pub fn new(
        reconciler: Reconciler,
        sink: &'a mut dyn StatusSink,
        view: SharedView,
        heartbeat: Duration,
    ) -> Self {
        Self {
            reconciler,
            sink,
            view,
            heartbeat,
            last: None,
        }
    }

    /// Runs until the update channel closes.
    pub fn run(&mut self, rx: &Receiver<Update>) {
        let mut desired: Option<Desired> = None;
        let mut next_pass: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let heartbeat_due = self
                .last
                .as_ref()
                .map(|(_, at)| *at + self.heartbeat)
                .unwrap_or(now + self.heartbeat);
            let wake = next_pass.map_or(heartbeat_due, |p| p.min(heartbeat_due));
            let mut update = match rx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(u) => Some(u),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Only the newest desired state matters.
            while let Ok(u) = rx.try_recv() {
                update = Some(u);
            }
            match update {
                Some(Update::Desired(d)) if desired.as_ref() != Some(&d) => {
                    tracing::info!(generation = d.generation, state = ?d.spec.desired_state, "new desired state");
                    desired = Some(d);
                    next_pass = Some(Instant::now());
                }
                Some(Update::Absent(why)) => {
                    desired = None;
                    next_pass = None;
                    let status = NodeStatus {
                        phase: Phase::Pending,
                        message: Some(why),
                        agent_version: crate::AGENT_VERSION.to_string(),
                        ..Default::default()
                    };
                    self.publish(status, None, false);
                }
                Some(Update::Desired(_)) | None => {}
            }
            if let (Some(d), Some(at)) = (&desired, next_pass) {
                if Instant::now() >= at {
                    let d = d.clone();
                    let mut interim: Vec<NodeStatus> = Vec::new();
                    let pass = {
                        let sink = &mut *self.sink;
                        let view = self.view.clone();
                        let mut progress = |s: &NodeStatus| {
                            let mut s = s.clone();
                            s.agent_version = crate::AGENT_VERSION.to_string();
                            s.observed_generation = Some(d.generation);
                            s.last_heartbeat_time = Some(now_rfc3339());
                            set_view(&view, &s, Some(&d));
                            log_status(&s);
                            if let Err(e) = sink.publish(&s) {
                                tracing::warn!(error = %e, "cannot publish status");
                            }
                            interim.push(s);
                        };
                        self.reconciler.reconcile(&d, &mut progress)
                    };
                    if let Some(last) = interim.pop() {
                        // The sink saw an interim status: the final one must be written.
                        self.last = Some((last, Instant::now()));
                    }
                    next_pass = Some(Instant::now() + pass.requeue);
                    self.publish(pass.status, Some(&d), false);
                    continue;
                }
            }
            if let Some((status, at)) = &self.last {
                if at.elapsed() >= self.heartbeat {
                    let status = status.clone();
                    self.publish(status, desired.as_ref(), true);
                }
            }
        }
    }

    fn publish(&mut self, mut status: NodeStatus, desired: Option<&Desired>, heartbeat: bool) {
        set_view(&self.view, &status, desired);
        let changed = match &self.last {
            Some((prev, _)) => !prev.same_content(&status),
            None => true,
        };
        if !changed && !heartbeat {
            return;
        }
        if changed {
            log_status(&status);
        }
        status.last_heartbeat_time = Some(now_rfc3339());
        match self.sink.publish(&status) {
            Ok(()) => self.last = Some((status, Instant::now())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot publish status; will retry");
                // Keep `last` unchanged so the next pass retries the write.
            }
        }
    }
}

fn log_status(s: &NodeStatus) {
    tracing::info!(
        phase = s.phase.as_str(),
        reason = s.reason.map(|r| r.as_str()).unwrap_or(""),
        message = s.message.as_deref().unwrap_or(""),
        source = s
            .module
            .as_ref()
            .map(|m| crate::status::source_name(m.source))
            .unwrap_or(""),
        "node status"
    );
}

fn set_view(view: &SharedView, s: &NodeStatus, desired: Option<&Desired>) {
    let mut v = match view.write() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    v.desired = desired.map(|d| d.spec.desired_state);
    v.phase = s.phase;
    v.reason = s.reason;
    if let Some(k) = &s.kernel {
        v.kernel_release = k.release.clone();
    }
    v.srcversion = s
        .module
        .as_ref()
        .map(|m| m.srcversion.clone())
        .unwrap_or_default();
}
