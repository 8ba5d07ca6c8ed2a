//! The on-host cache of built modules, keyed by (kernel release, kernel version, module
//! source digest). Entries are written to a temporary directory, checksummed, fsynced and
//! renamed into place, so a crash never leaves a truncated module under a valid key; every
//! read re-verifies the checksum. Entries of other kernel releases (the node rebooted into a
//! new kernel) stay until they have been unused for the agent's `--cache-max-age-days`
//! (see [`Cache::prune`]), so a rollback to the old kernel loads without a build meanwhile.

use crate::modinfo;
use crate::source::hex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MODULE_FILE: &str = "toa.ko";
const META_FILE: &str = "meta.json";
/// Unix seconds when the entry's kernel release was last seen running (written by
/// [`Cache::prune`] for the running release's entries); advisory: an entry without it counts
/// from its meta.json's modification time, i.e. when it was stored.
const LAST_USED_FILE: &str = "last-used";

/// What identifies a build: a module built for one of these never fits another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub release: String,
    pub version: String,
    pub source_digest: String,
}

impl CacheKey {
    /// Directory name: a digest, because `uname -v` holds spaces, `#` and dates.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        for part in [&self.release, &self.version, &self.source_digest] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex(&h.finalize())[..32].to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheMeta {
    pub release: String,
    pub version: String,
    pub source_digest: String,
    pub srcversion: String,
    pub sha256: String,
    pub size: u64,
}

/// A verified cache entry.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub path: PathBuf,
    pub meta: CacheMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache directory {dir}: {err} (check --cache-dir is a writable host path)")]
    Io { dir: PathBuf, err: io::Error },
}

/// Why a lookup found nothing usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    Absent,
    /// The entry failed verification and was removed.
    Corrupt(String),
}

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn modules_dir(&self) -> PathBuf {
        self.dir.join("modules")
    }

    fn io(&self, err: io::Error) -> CacheError {
        CacheError::Io {
            dir: self.dir.clone(),
            err,
        }
    }

    /// Stores a module image atomically and returns the entry.
    pub fn store(&self, key: &CacheKey, image: &[u8]) -> Result<CacheEntry, CacheError> {
        let info = modinfo::parse(image).map_err(|e| self.io(io::Error::other(e)))?;
        let srcversion = info
            .srcversion
            .ok_or_else(|| self.io(io::Error::other("module without srcversion")))?;
        let meta = CacheMeta {
            release: key.release.clone(),
            version: key.version.clone(),
            source_digest: key.source_digest.clone(),
            srcversion,
            sha256: sha256_hex(image),
            size: image.len() as u64,
        };
        let modules = self.modules_dir();
        std::fs::create_dir_all(&modules).map_err(|e| self.io(e))?;
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = modules.join(format!(".tmp-{}-{}-{seq}", key.id(), std::process::id()));
        let result = (|| -> io::Result<PathBuf> {
            std::fs::create_dir_all(&tmp)?;
            write_synced(&tmp.join(MODULE_FILE), image)?;
            let json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
            write_synced(&tmp.join(META_FILE), &json)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            let dest = modules.join(key.id());
            if dest.exists() {
                std::fs::remove_dir_all(&dest)?;
            }
            std::fs::rename(&tmp, &dest)?;
            std::fs::File::open(&modules)?.sync_all()?;
            Ok(dest)
        })();
        match result {
            Ok(path) => Ok(CacheEntry {
                path: path.join(MODULE_FILE),
                meta,
            }),
            Err(e) => {
                // Never leave a half-written entry behind.
                let _ = std::fs::remove_dir_all(&tmp);
                Err(self.io(e))
            }
        }
    }

    /// Finds and verifies the entry for `key`; a corrupt entry is removed.
    pub fn lookup(&self, key: &CacheKey) -> Result<CacheEntry, Miss> {
        let dir = self.modules_dir().join(key.id());
        if !dir.exists() {
            return Err(Miss::Absent);
        }
        match verify(&dir) {
            Ok(meta)
                if meta.release == key.release
                    && meta.version == key.version
                    && meta.source_digest == key.source_digest =>
            {
                Ok(CacheEntry {
                    path: dir.join(MODULE_FILE),
                    meta,
                })
            }
            Ok(_) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(Miss::Corrupt("metadata does not match the key".into()))
            }
            Err(reason) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(Miss::Corrupt(reason))
            }
        }
    }

    /// Marks the entries of `running_release` used at `now` and removes entries built for
    /// another release that were not used for `max_age` (last seen running, as marked here,
    /// else when stored). Entries of the running release are never removed: the loaded module
    /// may be one of them, and its srcversion is how the agent recognises its own builds.
    /// Marking here (the agent calls this hourly) instead of on every lookup keeps the
    /// 30-second pass free of writes. Returns what was removed. Unreadable entries are left
    /// for [`Cache::lookup`] to judge.
    pub fn prune(
        &self,
        running_release: &str,
        max_age: Duration,
        now: SystemTime,
    ) -> Vec<CacheMeta> {
        let Ok(entries) = std::fs::read_dir(self.modules_dir()) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for dir in entries.filter_map(Result::ok).map(|e| e.path()) {
            if dir
                .file_name()
                .is_none_or(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            let Some(meta) = std::fs::read(dir.join(META_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice::<CacheMeta>(&b).ok())
            else {
                continue;
            };
            if meta.release == running_release {
                mark_used(&dir, now);
                continue;
            }
            if unused_for_longer(&dir, META_FILE, max_age, now)
                && std::fs::remove_dir_all(&dir).is_ok()
            {
                removed.push(meta);
            }
        }
        removed
    }

    /// The srcversions of every module this agent ever built on this host: a loaded `toa`
    /// with one of these is ours (maybe older), anything else is foreign.
    pub fn known_srcversions(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.modules_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| std::fs::read(e.path().join(META_FILE)).ok())
            .filter_map(|b| serde_json::from_slice::<CacheMeta>(&b).ok())
            .map(|m| m.srcversion)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn verify(dir: &Path) -> Result<CacheMeta, String> {
    let meta_bytes = std::fs::read(dir.join(META_FILE)).map_err(|e| format!("meta: {e}"))?;
    let meta: CacheMeta = serde_json::from_slice(&meta_bytes).map_err(|e| format!("meta: {e}"))?;
    let image = std::fs::read(dir.join(MODULE_FILE)).map_err(|e| format!("module: {e}"))?;
    if image.len() as u64 != meta.size || sha256_hex(&image) != meta.sha256 {
        return Err("checksum mismatch".into());
    }
    let info = modinfo::parse(&image).map_err(|e| e.to_string())?;
    if info.srcversion.as_deref() != Some(meta.srcversion.as_str()) {
        return Err("srcversion mismatch".into());
    }
    Ok(meta)
}

/// Records in `dir` (a cache entry or a build root) that the running kernel uses it at
/// `now` (seconds since the epoch, in the file `last-used`). Best effort: a failure only makes
/// the entry look older after a reboot.
pub(crate) fn mark_used(dir: &Path, now: SystemTime) {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Err(e) = std::fs::write(dir.join(LAST_USED_FILE), secs.to_string()) {
        tracing::debug!(error = %e, dir = %dir.display(), "cannot record cache use");
    }
}

/// Whether `dir` was last used (its `last-used` record, else the modification time of its
/// file `made`, written when it was stored) longer than `max_age` before `now`. False when
/// neither can be read.
pub(crate) fn unused_for_longer(
    dir: &Path,
    made: &str,
    max_age: Duration,
    now: SystemTime,
) -> bool {
    let last_used = std::fs::read_to_string(dir.join(LAST_USED_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        .or_else(|| {
            std::fs::metadata(dir.join(made))
                .and_then(|m| m.modified())
                .ok()
        });
    last_used
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|idle| idle > max_age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::toa_ko;

    fn key(digest: &str) -> CacheKey {
        CacheKey {
            release: "6.1.0-56-amd64".into(),
            version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-01-10)".into(),
            source_digest: digest.into(),
        }
    }

    fn key_for(release: &str, digest: &str) -> CacheKey {
        CacheKey {
            release: release.into(),
            ..key(digest)
        }
    }

    /// After a reboot into 6.12: the 6.1 build stays while it was used recently, goes once it
    /// has been unused for longer than the maximum age; 6.12's own builds always stay.
    #[test]
    fn prune_removes_only_old_releases_unused_for_max_age() {
        let d = tempfile::tempdir().expect("t");
        let cache = Cache::new(d.path());
        let day = Duration::from_secs(86_400);
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let max_age = 30 * day;
        // The node ran 6.1 until t0 (the hourly prune marks its builds), then 6.12.
        cache
            .store(&key_for("6.1.0-56-amd64", "a"), &toa_ko("SV61"))
            .expect("store");
        assert!(cache.prune("6.1.0-56-amd64", max_age, t0).is_empty());
        cache
            .store(&key_for("6.12.57-amd64", "a"), &toa_ko("SV612"))
            .expect("store");
        assert!(cache
            .prune("6.12.57-amd64", max_age, t0 + 29 * day)
            .is_empty());
        assert_eq!(cache.known_srcversions(), ["SV61", "SV612"]);
        let removed = cache.prune("6.12.57-amd64", max_age, t0 + 31 * day);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].release, "6.1.0-56-amd64");
        assert_eq!(cache.known_srcversions(), ["SV612"]);
        // The running release's entries stay, however old.
        assert!(cache
            .prune("6.12.57-amd64", max_age, t0 + 400 * day)
            .is_empty());
        assert!(cache.lookup(&key_for("6.12.57-amd64", "a")).is_ok());
        // Without a last-used record the store time counts (meta.json's mtime: now).
        let other = cache
            .store(&key_for("5.10.0-30-amd64", "a"), &toa_ko("SV510"))
            .expect("store");
        assert!(!other.path.with_file_name(LAST_USED_FILE).exists());
        assert!(cache
            .prune("6.12.57-amd64", max_age, SystemTime::now())
            .is_empty());
        assert_eq!(
            cache
                .prune("6.12.57-amd64", max_age, SystemTime::now() + 31 * day)
                .len(),
            1
        );
    }

    #[test]
    fn store_then_lookup() {
        let d = tempfile::tempdir().expect("t");
        let cache = Cache::new(d.path());
        assert_eq!(cache.lookup(&key("a")).expect_err("empty"), Miss::Absent);
        let stored = cache.store(&key("a"), &toa_ko("SV1")).expect("store");
        let found = cache.lookup(&key("a")).expect("hit");
        assert_eq!(found.meta, stored.meta);
        assert_eq!(found.meta.srcversion, "SV1");
        assert_eq!(std::fs::read(&found.path).expect("r"), toa_ko("SV1"));
        // No temporary directories left.
        let leftovers = std::fs::read_dir(d.path().join("modules"))
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn key_parts_all_matter() {
        let a = key("a");
        let mut b = a.clone();
        b.version.push('x');
        let mut c = a.clone();
        c.release.push('x');
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_ne!(a.id(), key("b").id());
    }

    #[test]
    fn truncated_module_is_detected_and_removed() {
        let d = tempfile::tempdir().expect("t");
        let cache = Cache::new(d.path());
        let e = cache.store(&key("a"), &toa_ko("SV1")).expect("store");
        let bytes = std::fs::read(&e.path).expect("r");
        std::fs::write(&e.path, &bytes[..bytes.len() / 2]).expect("w");
        assert!(matches!(cache.lookup(&key("a")), Err(Miss::Corrupt(_))));
        assert_eq!(cache.lookup(&key("a")).expect_err("gone"), Miss::Absent);
    }

    #[test]
    fn flipped_byte_is_detected() {
        let d = tempfile::tempdir().expect("t");
        let cache = Cache::new(d.path());
        let e = cache.store(&key("a"), &toa_ko("SV1")).expect("store");
        let mut bytes = std::fs::read(&e.path).expect("r");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&e.path, &bytes).expect("w");
        assert_eq!(
            cache.lookup(&key("a")).expect_err("corrupt"),
            Miss::Corrupt("checksum mismatch".into())
        );
    }

    #[test]
    fn missing_meta_is_corrupt() {
        let d = tempfile::tempdir().expect("t");
        let cache = Cache::new(d.path());
        let e = cache.store(&key("a"), &toa_ko("SV1")).expect("store");
        std::fs::remove_file(e.path.with_file_name(META_FILE)).expect("rm");
        assert!(matches!(cache.lookup(&key("a")), Err(Miss::Corrupt(_))));
    }

    #[test]
    fn overwrite_and_known_srcversions() {
        let d = tempfile::tempdir().expect("t");
        let cache = Cache::new(d.path());
        cache.store(&key("a"), &toa_ko("SV1")).expect("store");
        cache.store(&key("a"), &toa_ko("SV2")).expect("store again");
        cache.store(&key("b"), &toa_ko("SV3")).expect("store b");
        assert_eq!(cache.lookup(&key("a")).expect("hit").meta.srcversion, "SV2");
        assert_eq!(cache.known_srcversions(), ["SV2", "SV3"]);
    }

    #[test]
    fn unwritable_cache_names_the_flag() {
        let cache = Cache::new("/proc/definitely/not/writable");
        let err = cache.store(&key("a"), &toa_ko("SV1")).expect_err("fails");
        assert!(err.to_string().contains("--cache-dir"));
    }
}
