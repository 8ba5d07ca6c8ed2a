//! Compiles the module against the host's build tree in a private work directory.

use crate::host::{CommandOutcome, CommandSpec, Host};
use crate::modinfo::{self, ModInfo};
use crate::source::ModuleSource;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lines of build output kept for the node status on failure.
pub const LOG_TAIL_LINES: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot prepare the build directory {dir}: {err}")]
    Setup { dir: PathBuf, err: std::io::Error },
    #[error("cannot run make (is make installed in the agent image?): {0}")]
    Spawn(std::io::Error),
    #[error(
        "module build failed (exit code {code:?}); last lines of the build log are in the status"
    )]
    Failed { code: Option<i32>, log_tail: String },
    #[error("module build did not finish within {}s (raise --build-timeout on slow nodes)", .after.as_secs())]
    TimedOut { after: Duration, log_tail: String },
    #[error("make succeeded but produced no usable toa.ko: {reason}")]
    NoModule { reason: String, log_tail: String },
}

impl BuildError {
    pub fn log_tail(&self) -> Option<&str> {
        match self {
            BuildError::Failed { log_tail, .. }
            | BuildError::TimedOut { log_tail, .. }
            | BuildError::NoModule { log_tail, .. } => Some(log_tail),
            _ => None,
        }
    }
}

/// A freshly built module.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: Vec<u8>,
    pub info: ModInfo,
    pub duration: Duration,
}

/// Removes the work directory however the build ends.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory is only disk space, reused names never collide.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static BUILD_SEQ: AtomicU64 = AtomicU64::new(0);

/// Keeps the last `n` lines of `log`.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Where the compiler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain<'a> {
    /// The agent's own image, against the host's build tree (a host path).
    Image,
    /// `chroot ROOT` (a local path), against a build tree inside it (a path as seen inside);
    /// the work directory is created in the root's `/tmp`. The root gets a `/proc` of its
    /// own for the build (see [`CHROOT_SCRIPT`]).
    Chroot(&'a Path),
}

/// How a chroot build starts, run by `/bin/sh` inside `unshare --mount` with the root as `$0`
/// and `make ARGS...` as `$@`: the kernel's build tools read `/proc` (objtool of 7.x kernels
/// reads the stack limit from `/proc/self/limits` and stops with `read_stack_limit: fopen
/// failed` without it), and a root fetched by mmdebstrap has an empty `/proc`. The private
/// mount namespace of unshare(1) takes that mount away when the build ends, however it ends.
pub const CHROOT_SCRIPT: &str = r#"mount -t proc proc "$0/proc" && exec chroot "$0" "$@""#;

/// Builds `toa.ko` with `make -C KDIR M=WORK modules`. `work_root` is used with the image's
/// toolchain; a chroot build works in the root's own `/tmp`.
pub fn build(
    host: &dyn Host,
    kdir: &Path,
    source: &ModuleSource,
    work_root: &Path,
    timeout: Duration,
    toolchain: Toolchain<'_>,
) -> Result<Built, BuildError> {
    let seq = BUILD_SEQ.fetch_add(1, Ordering::Relaxed);
    let name = format!("build-{}-{seq}", std::process::id());
    let (dir, inside) = match toolchain {
        Toolchain::Image => (work_root.join(&name), None),
        Toolchain::Chroot(root) => {
            let inside = Path::new("/tmp/toa-build").join(&name);
            (root.join("tmp/toa-build").join(&name), Some(inside))
        }
    };
    let setup = |err| BuildError::Setup {
        dir: dir.clone(),
        err,
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(setup)?;
    }
    std::fs::create_dir_all(&dir).map_err(setup)?;
    let guard = WorkDir(dir.clone());
    source.copy_to(&guard.0).map_err(setup)?;

    let tree = match toolchain {
        Toolchain::Image => host.build_tree(kdir).map_err(|err| BuildError::Setup {
            dir: kdir.to_path_buf(),
            err,
        })?,
        Toolchain::Chroot(_) => kdir.to_path_buf(),
    };
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let make_args = vec![
        format!("-j{jobs}"),
        "-C".into(),
        tree.display().to_string(),
        format!("M={}", inside.as_deref().unwrap_or(&guard.0).display()),
        "modules".into(),
    ];
    let (program, args) = match toolchain {
        Toolchain::Image => ("make".to_string(), make_args),
        Toolchain::Chroot(root) => (
            "unshare".to_string(),
            ["--mount", "--", "/bin/sh", "-c", CHROOT_SCRIPT]
                .into_iter()
                .map(str::to_string)
                .chain([root.display().to_string(), "make".into()])
                .chain(make_args)
                .collect(),
        ),
    };
    let cmd = CommandSpec {
        program,
        args,
        cwd: guard.0.clone(),
        timeout,
    };
    let started = Instant::now();
    let outcome = host.run(&cmd).map_err(BuildError::Spawn)?;
    let duration = started.elapsed();
    let output = match outcome {
        CommandOutcome::TimedOut { output } => {
            return Err(BuildError::TimedOut {
                after: timeout,
                log_tail: tail(&output, LOG_TAIL_LINES),
            })
        }
        CommandOutcome::Exited { code, output } if code != Some(0) => {
            return Err(BuildError::Failed {
                code,
                log_tail: tail(&output, LOG_TAIL_LINES),
            })
        }
        CommandOutcome::Exited { output, .. } => output,
    };
    let no_module = |reason: String| BuildError::NoModule {
        reason,
        log_tail: tail(&output, LOG_TAIL_LINES),
    };
    let image = std::fs::read(guard.0.join("toa.ko"))
        .map_err(|e| no_module(format!("reading toa.ko: {e}")))?;
    let info = modinfo::parse(&image).map_err(|e| no_module(e.to_string()))?;
    if info.srcversion.is_none() {
        return Err(no_module(
            "toa.ko has no srcversion (the module source must declare MODULE_VERSION)".into(),
        ));
    }
    Ok(Built {
        image,
        info,
        duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::{FakeBuild, FakeHost};

    fn source() -> (tempfile::TempDir, ModuleSource) {
        let d = tempfile::tempdir().expect("t");
        std::fs::write(d.path().join("Makefile"), "obj-m += toa.o\n").expect("w");
        std::fs::write(d.path().join("toa.c"), "int x;\n").expect("w");
        let s = ModuleSource::scan(d.path()).expect("scan");
        (d, s)
    }

    #[test]
    fn successful_build_returns_the_module_and_cleans_up() {
        let (_d, src) = source();
        let work = tempfile::tempdir().expect("t");
        let host = FakeHost::debian();
        host.lock().build = Some(FakeBuild::Succeed {
            srcversion: "ABC".into(),
        });
        let kdir = Path::new("/lib/modules/6.1.0-56-amd64/build");
        let built = build(
            &host,
            kdir,
            &src,
            work.path(),
            Duration::from_secs(5),
            Toolchain::Image,
        )
        .expect("build");
        assert_eq!(built.info.srcversion.as_deref(), Some("ABC"));
        let runs = host.lock().runs.clone();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].program, "make");
        assert!(runs[0].args.contains(&"-C".to_string()));
        assert!(runs[0].args.contains(&kdir.display().to_string()));
        assert!(runs[0].args.iter().any(|a| a.starts_with("M=")));
        assert_eq!(runs[0].args.last().map(String::as_str), Some("modules"));
        // The private directory is gone afterwards.
        assert_eq!(std::fs::read_dir(work.path()).expect("ls").count(), 0);
    }

    #[test]
    fn chroot_build_runs_make_inside_the_root_and_cleans_up() {
        let (_d, src) = source();
        let work = tempfile::tempdir().expect("t");
        let root = tempfile::tempdir().expect("t");
        let host = FakeHost::debian();
        host.lock().build = Some(FakeBuild::Succeed {
            srcversion: "ROOTED".into(),
        });
        let kdir = Path::new("/lib/modules/5.10.0-35-amd64/build");
        let built = build(
            &host,
            kdir,
            &src,
            work.path(),
            Duration::from_secs(5),
            Toolchain::Chroot(root.path()),
        )
        .expect("build");
        assert_eq!(built.info.srcversion.as_deref(), Some("ROOTED"));
        let runs = host.lock().runs.clone();
        // In a mount namespace of its own, with the root's /proc mounted, then chroot.
        assert_eq!(runs[0].program, "unshare");
        assert_eq!(
            runs[0].args[..5],
            ["--mount", "--", "/bin/sh", "-c", CHROOT_SCRIPT]
        );
        assert_eq!(runs[0].args[5], root.path().display().to_string());
        assert_eq!(runs[0].args[6], "make");
        assert!(runs[0].args.contains(&kdir.display().to_string()));
        let m = runs[0]
            .args
            .iter()
            .find_map(|a| a.strip_prefix("M="))
            .expect("M=");
        assert!(m.starts_with("/tmp/toa-build/build-"), "{m}");
        // The sources were copied into the root's /tmp, and removed after.
        assert!(runs[0].cwd.starts_with(root.path().join("tmp/toa-build")));
        assert_eq!(
            std::fs::read_dir(root.path().join("tmp/toa-build"))
                .expect("ls")
                .count(),
            0
        );
        assert_eq!(std::fs::read_dir(work.path()).expect("ls").count(), 0);
    }

    #[test]
    fn failure_keeps_the_last_fifty_lines() {
        let (_d, src) = source();
        let work = tempfile::tempdir().expect("t");
        let host = FakeHost::debian();
        let log: Vec<String> = (0..120).map(|i| format!("line {i}")).collect();
        host.lock().build = Some(FakeBuild::Fail {
            code: 2,
            output: log.join("\n"),
        });
        let err = build(
            &host,
            Path::new("/k"),
            &src,
            work.path(),
            Duration::from_secs(5),
            Toolchain::Image,
        )
        .expect_err("fails");
        let tail = err.log_tail().expect("tail").to_string();
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(tail.starts_with("line 70") && tail.ends_with("line 119"));
        assert!(matches!(err, BuildError::Failed { code: Some(2), .. }));
    }

    #[test]
    fn timeout_is_reported() {
        let (_d, src) = source();
        let work = tempfile::tempdir().expect("t");
        let host = FakeHost::debian();
        host.lock().build = Some(FakeBuild::Hang {
            output: "CC toa.o".into(),
        });
        let err = build(
            &host,
            Path::new("/k"),
            &src,
            work.path(),
            Duration::from_secs(7),
            Toolchain::Image,
        )
        .expect_err("times out");
        assert!(err.to_string().contains("7s"), "{err}");
        assert!(matches!(err, BuildError::TimedOut { .. }));
    }

    #[test]
    fn missing_make_is_explained() {
        let (_d, src) = source();
        let work = tempfile::tempdir().expect("t");
        let host = FakeHost::debian();
        let err = build(
            &host,
            Path::new("/k"),
            &src,
            work.path(),
            Duration::from_secs(1),
            Toolchain::Image,
        )
        .expect_err("no make");
        assert!(err.to_string().contains("make"));
    }

    #[test]
    fn tail_of_short_logs() {
        assert_eq!(tail("a\nb", 50), "a\nb");
        assert_eq!(tail("", 50), "");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
