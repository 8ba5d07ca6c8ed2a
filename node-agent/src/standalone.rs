//! Standalone mode: the desired state comes from a file (polled for changes), the status
//! goes to a JSON file (written atomically) and the log.

use crate::desired::{self, Desired};
use crate::runner::{StatusSink, Update};
use crate::status::NodeStatus;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// Polls `path` every `interval`; sends a new [`Update`] whenever its content changes.
/// Runs until the receiver is gone.
pub fn watch_file(path: PathBuf, interval: Duration, tx: Sender<Update>) {
    let mut last_text: Option<String> = None;
    let mut generation: i64 = 0;
    let mut have_valid = false;
    loop {
        let text = std::fs::read_to_string(&path);
        let update = match text {
            Ok(t) if last_text.as_deref() == Some(t.as_str()) => None,
            Ok(t) => {
                let parsed = desired::parse(&t, &path);
                last_text = Some(t);
                match parsed {
                    Ok(spec) => {
                        generation += 1;
                        have_valid = true;
                        Some(Update::Desired(Desired { spec, generation }))
                    }
                    Err(e) => {
                        // Keep acting on the last valid state; a typo must not unload anything.
                        tracing::error!(error = %e, "invalid desired-state file; keeping the previous desired state");
                        (!have_valid).then(|| Update::Absent(e.to_string()))
                    }
                }
            }
            Err(e) => {
                if last_text.is_some() || !have_valid {
                    tracing::error!(path = %path.display(), error = %e, "cannot read the desired-state file; keeping the previous desired state");
                }
                let first = last_text.is_none() && !have_valid;
                last_text = None;
                first.then(|| {
                    Update::Absent(format!(
                        "desired-state file {}: {e} (create it, or point --desired at it)",
                        path.display()
                    ))
                })
            }
        };
        if let Some(u) = update {
            if tx.send(u).is_err() {
                return;
            }
        }
        std::thread::sleep(interval);
    }
}

/// Writes the status as pretty JSON, atomically (temporary file + rename), so that readers
/// never see half a document.
pub struct FileSink {
    path: Option<PathBuf>,
}

impl FileSink {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self { path }
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "status".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

impl StatusSink for FileSink {
    fn publish(&mut self, status: &NodeStatus) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut json = serde_json::to_vec_pretty(&status.to_crd()).map_err(|e| e.to_string())?;
        json.push(b'\n');
        write_atomic(path, &json).map_err(|e| format!("status file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Phase;
    use std::sync::mpsc;

    #[test]
    fn file_sink_writes_json_atomically() {
        let d = tempfile::tempdir().expect("t");
        let path = d.path().join("status.json");
        let mut sink = FileSink::new(Some(path.clone()));
        let status = NodeStatus {
            phase: Phase::Loaded,
            ..Default::default()
        };
        sink.publish(&status).expect("publish");
        let back: toa_crds::ToaNodeStateStatus =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(back.phase, Some(Phase::Loaded));
        assert_eq!(std::fs::read_dir(d.path()).expect("ls").count(), 1);
        let mut bad = FileSink::new(Some(PathBuf::from("/nonexistent/dir/status.json")));
        assert!(bad
            .publish(&status)
            .expect_err("fails")
            .contains("/nonexistent/dir"));
    }

    #[test]
    fn watcher_sends_changes_only_and_survives_typos() {
        let d = tempfile::tempdir().expect("t");
        let path = d.path().join("desired.yaml");
        let (tx, rx) = mpsc::channel();
        let p2 = path.clone();
        std::thread::spawn(move || watch_file(p2, Duration::from_millis(20), tx));
        let recv = || rx.recv_timeout(Duration::from_secs(5)).expect("update");
        assert!(matches!(recv(), Update::Absent(m) if m.contains("desired.yaml")));
        std::fs::write(&path, "desiredState: Loaded\n").expect("w");
        match recv() {
            Update::Desired(d) => assert_eq!(d.generation, 1),
            other => panic!("unexpected {other:?}"),
        }
        // A broken edit is ignored (no update), a fixed one is a new generation.
        std::fs::write(&path, "desiredState: [\n").expect("w");
        std::thread::sleep(Duration::from_millis(100));
        assert!(rx.try_recv().is_err());
        std::fs::write(&path, "desiredState: Unloaded\n").expect("w");
        match recv() {
            Update::Desired(d) => {
                assert_eq!(d.generation, 2);
                assert_eq!(d.spec.desired_state, crate::desired::DesiredState::Unloaded);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
