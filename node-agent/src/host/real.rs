//! The real host: files under a host root, raw syscalls for modules, processes for builds.

use super::{CommandOutcome, CommandSpec, Errno, Host, LoadRefusal, Uname};
use crate::kmsg::{self, KmsgCursor};
use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Symlink hops allowed while resolving one path (the kernel's own limit is 40).
const MAX_SYMLINK_HOPS: usize = 40;
/// The kernel log device (Documentation/ABI/testing/dev-kmsg).
const KMSG: &str = "/dev/kmsg";
/// Bound on each wait of the self-test (SYN-ACK, accept); a loopback-speed handshake takes
/// well under a millisecond, a loaded TCG guest a few.
const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(3);

/// The machine the agent runs on. Host files live under `root` (`/` on a plain host, `/host`
/// in the DaemonSet), except sysfs: it is global and the DaemonSet mounts it at `/sys`.
#[derive(Debug, Clone)]
pub struct RealHost {
    root: PathBuf,
    /// The eBPF backend's object, cgroup and pin directory (local paths of the agent).
    ebpf: toa_ebpf::Target,
}

impl RealHost {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            ebpf: toa_ebpf::Target {
                object: PathBuf::from(crate::cli::DEFAULT_EBPF_OBJECT),
                cgroup: PathBuf::from(toa_ebpf::CGROUP_ROOT),
                pin_dir: PathBuf::from(toa_ebpf::PIN_DIR),
            },
        }
    }

    /// Where the eBPF backend's object is and where it attaches and pins.
    pub fn with_ebpf(mut self, target: toa_ebpf::Target) -> Self {
        self.ebpf = target;
        self
    }

    /// The local path through which a host path is reachable from the agent's process.
    pub fn local_path(&self, path: &Path) -> PathBuf {
        match self.resolve(path) {
            Ok(p) => self.map(&p),
            Err(_) => self.map(path),
        }
    }

    fn map(&self, path: &Path) -> PathBuf {
        if path.starts_with("/sys") {
            return path.to_path_buf();
        }
        let rel = path.strip_prefix("/").unwrap_or(path);
        self.root.join(rel)
    }
}

impl Host for RealHost {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(self.map(&self.resolve(path)?))
    }

    fn exists(&self, path: &Path) -> bool {
        match self.resolve(path) {
            Ok(p) => self.map(&p).exists(),
            Err(_) => false,
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.map(&self.resolve(path)?))? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn resolve(&self, path: &Path) -> io::Result<PathBuf> {
        if path.starts_with("/sys") || self.root == Path::new("/") {
            // The local view is the host view: let the kernel resolve links.
            return Ok(path.to_path_buf());
        }
        // Absolute symlinks (e.g. /lib/modules/REL/build -> /usr/src/linux-headers-REL)
        // must resolve inside the host root, not in the agent's container.
        let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
        let mut hops = 0;
        let mut resolved = PathBuf::from("/");
        while let Some(next) = pending.pop() {
            let mut comps: Vec<Component> = next.components().collect();
            comps.reverse();
            while let Some(c) = comps.pop() {
                match c {
                    Component::RootDir => resolved = PathBuf::from("/"),
                    Component::CurDir | Component::Prefix(_) => {}
                    Component::ParentDir => {
                        resolved.pop();
                    }
                    Component::Normal(name) => {
                        let candidate = resolved.join(name);
                        match std::fs::symlink_metadata(self.map(&candidate)) {
                            Ok(meta) if meta.file_type().is_symlink() => {
                                hops += 1;
                                if hops > MAX_SYMLINK_HOPS {
                                    return Err(io::Error::other(format!(
                                        "too many symlinks resolving {}",
                                        path.display()
                                    )));
                                }
                                let target = std::fs::read_link(self.map(&candidate))?;
                                let rest: PathBuf = comps.iter().rev().collect();
                                let joined = if target.is_absolute() {
                                    resolved = PathBuf::from("/");
                                    target.join(rest)
                                } else {
                                    target.join(rest)
                                };
                                pending.push(joined);
                                comps.clear();
                            }
                            _ => resolved = candidate,
                        }
                    }
                }
            }
        }
        Ok(resolved)
    }

    fn to_local(&self, path: &Path) -> PathBuf {
        self.local_path(path)
    }

    fn build_tree(&self, kdir: &Path) -> io::Result<PathBuf> {
        if self.root == Path::new("/") {
            return Ok(kdir.to_path_buf());
        }
        mirror_build_dirs(&self.root, Path::new("/"))?;
        Ok(kdir.to_path_buf())
    }

    fn write_sysfs(&self, path: &Path, value: &str) -> io::Result<()> {
        // One write(2) call: sysfs store handlers see exactly this buffer.
        std::fs::write(self.map(path), value.as_bytes())
    }

    fn uname(&self) -> io::Result<Uname> {
        // SAFETY: utsname is plain old data; uname fills it and NUL-terminates every field.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a properly sized struct.
        if unsafe { libc::uname(&mut uts) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel NUL-terminates these fixed-size arrays.
        let field = |f: &[libc::c_char]| {
            unsafe { CStr::from_ptr(f.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(Uname {
            release: field(&uts.release),
            version: field(&uts.version),
        })
    }

    fn load_module(&self, image: &Path, params: &str) -> Result<(), LoadRefusal> {
        let file = std::fs::File::open(image)
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::ENOENT)))?;
        let params = CString::new(params).map_err(|_| Errno(libc::EINVAL))?;
        // Positioned before the attempt, so only what this load printed is read afterwards.
        // The kernel log is global (not namespaced): the container's /dev/kmsg is the host's.
        let mut kmsg = match KmsgCursor::open_at_end(Path::new(KMSG)) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read {KMSG}; load refusals are explained without the kernel log");
                None
            }
        };
        // SAFETY: finit_module(fd, const char *params, int flags) with a live fd and a
        // NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                file.as_raw_fd(),
                params.as_ptr(),
                0 as libc::c_int,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let errno = Errno(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        );
        let messages = kmsg.as_mut().map(KmsgCursor::read_new).unwrap_or_default();
        Err(LoadRefusal {
            errno,
            kernel_log: kmsg::lines_about(crate::MODULE_NAME, &messages),
        })
    }

    fn run_self_test(&self, plan: &crate::selftest::plan::Plan) -> crate::selftest::Outcome {
        crate::selftest::netns::run(plan, SELF_TEST_TIMEOUT)
    }

    fn ip_sockopt_registered(&self, optname: i32) -> io::Result<bool> {
        use std::os::fd::{FromRawFd, OwnedFd};
        // SAFETY: socket(2) with constant arguments; the descriptor is owned (and closed)
        // by the OwnedFd right after the check.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut buf = [0u8; 64];
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: getsockopt(2) into a buffer of `len` bytes that outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::IPPROTO_IP,
                optname,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        // Any answer but "no such option" came from a registered handler (ENOENT, EINVAL,
        // ENOTCONN: whatever that module returns for an unconnected socket).
        Ok(e.raw_os_error() != Some(libc::ENOPROTOOPT))
    }

    fn unload_module(&self, name: &str) -> Result<(), Errno> {
        let name = CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: delete_module(const char *name, unsigned flags) with a NUL-terminated name.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_delete_module,
                name.as_ptr(),
                libc::O_NONBLOCK as libc::c_uint,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(Errno(
                io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO),
            ))
        }
    }

    fn has_program(&self, name: &str) -> bool {
        use std::os::unix::fs::PermissionsExt;
        path_dirs().any(|d| {
            std::fs::metadata(d.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    fn gcc_programs(&self) -> Vec<String> {
        let names = path_dirs()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|entries| entries.filter_map(Result::ok))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("gcc-"))
            .filter(|n| self.has_program(n));
        super::sorted_gcc_names(names)
    }

    fn ebpf_attach(&self, params: &toa_ebpf::Params) -> Result<toa_ebpf::Outcome, toa_ebpf::Error> {
        toa_ebpf::attach(&self.ebpf, params)
    }

    fn ebpf_probe(&self) -> Result<(), toa_ebpf::Error> {
        toa_ebpf::probe(&self.ebpf)
    }

    fn ebpf_attached(&self) -> bool {
        toa_ebpf::is_attached(&self.ebpf.pin_dir)
    }

    fn ebpf_detach(&self) -> Result<bool, toa_ebpf::Error> {
        toa_ebpf::detach(&self.ebpf.pin_dir)
    }

    fn ebpf_counters(&self) -> Result<Vec<(&'static str, u64)>, toa_ebpf::Error> {
        toa_ebpf::read_counters(&self.ebpf.pin_dir)
    }

    fn run(&self, cmd: &CommandSpec) -> io::Result<CommandOutcome> {
        let (mut reader, writer) = io::pipe()?;
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .current_dir(&cmd.cwd)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            // Own process group, so that a timeout kills make and every compiler it started.
            .process_group(0)
            .spawn()?;
        let collector = std::thread::spawn(move || {
            let mut out = Vec::new();
            // Read errors only truncate the log; the exit status still decides.
            let _ = reader.read_to_end(&mut out);
            out
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if started.elapsed() >= cmd.timeout {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status.is_none() {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: signalling our own child's process group.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
            child.wait()?;
        }
        let output = match collector.join() {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => String::from("(build output collector failed)"),
        };
        Ok(match status {
            Some(s) => CommandOutcome::Exited {
                code: s.code(),
                output,
            },
            None => CommandOutcome::TimedOut { output },
        })
    }
}

/// Where distributions keep kernel build trees and what they point into (Debian's
/// `scripts` and `tools` are relative links to /usr/lib/linux-kbuild-X.Y).
const BUILD_DIRS: &[(&str, &str)] = &[("usr/src", ""), ("usr/lib", "linux-kbuild-")];

/// Symlinks every host build tree (`<root>/usr/src/*`, `<root>/usr/lib/linux-kbuild-*`) to
/// the same path under `local_root`, so absolute paths inside them resolve. Existing local
/// entries are left alone (the agent image may ship its own).
pub fn mirror_build_dirs(root: &Path, local_root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    for (dir, prefix) in BUILD_DIRS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(prefix) {
                continue;
            }
            let local = local_root.join(dir).join(&name);
            if std::fs::symlink_metadata(&local).is_ok() {
                continue;
            }
            std::fs::create_dir_all(local_root.join(dir))?;
            std::os::unix::fs::symlink(entry.path(), &local)?;
            made.push(local);
        }
    }
    Ok(made)
}

/// The directories of the agent's own `PATH` (the image's, where `make` finds the compiler).
fn path_dirs() -> impl Iterator<Item = PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_absolute_symlinks_inside_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/src/linux-headers-X")).expect("mkdir");
        std::fs::write(root.join("usr/src/linux-headers-X/Makefile"), "all:\n").expect("write");
        std::fs::create_dir_all(root.join("lib/modules/X")).expect("mkdir");
        std::os::unix::fs::symlink("/usr/src/linux-headers-X", root.join("lib/modules/X/build"))
            .expect("symlink");
        let host = RealHost::new(root);
        let resolved = host
            .resolve(Path::new("/lib/modules/X/build/Makefile"))
            .expect("resolve");
        assert_eq!(resolved, Path::new("/usr/src/linux-headers-X/Makefile"));
        assert!(host.exists(Path::new("/lib/modules/X/build/Makefile")));
        assert_eq!(
            host.local_path(Path::new("/lib/modules/X/build")),
            root.join("usr/src/linux-headers-X")
        );
    }

    #[test]
    fn relative_symlinks_and_parent_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib/kbuild/scripts")).expect("mkdir");
        std::fs::create_dir_all(root.join("usr/src/h")).expect("mkdir");
        std::os::unix::fs::symlink("../../lib/kbuild/scripts", root.join("usr/src/h/scripts"))
            .expect("symlink");
        let host = RealHost::new(root);
        assert_eq!(
            host.resolve(Path::new("/usr/src/h/scripts"))
                .expect("resolve"),
            Path::new("/usr/lib/kbuild/scripts")
        );
    }

    #[test]
    fn build_dirs_are_mirrored_at_their_real_paths() {
        let host = tempfile::tempdir().expect("tempdir");
        let local = tempfile::tempdir().expect("tempdir");
        let h = host.path();
        std::fs::create_dir_all(h.join("usr/src/linux-headers-X-common")).expect("mkdir");
        std::fs::create_dir_all(h.join("usr/src/linux-headers-X")).expect("mkdir");
        std::fs::create_dir_all(h.join("usr/lib/linux-kbuild-6.1/scripts")).expect("mkdir");
        std::fs::create_dir_all(h.join("usr/lib/x86_64-linux-gnu")).expect("mkdir");
        std::fs::write(h.join("usr/src/linux-headers-X-common/Makefile"), "x").expect("w");
        // The image's own entry wins.
        std::fs::create_dir_all(local.path().join("usr/src/linux-headers-X")).expect("mkdir");
        let made = mirror_build_dirs(h, local.path()).expect("mirror");
        assert_eq!(made.len(), 2, "{made:?}");
        assert!(local
            .path()
            .join("usr/src/linux-headers-X-common/Makefile")
            .exists());
        assert!(local
            .path()
            .join("usr/lib/linux-kbuild-6.1/scripts")
            .is_dir());
        assert!(!local.path().join("usr/lib/x86_64-linux-gnu").exists());
        // Idempotent.
        assert!(mirror_build_dirs(h, local.path())
            .expect("again")
            .is_empty());
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::os::unix::fs::symlink("/b", root.join("a")).expect("symlink");
        std::os::unix::fs::symlink("/a", root.join("b")).expect("symlink");
        let host = RealHost::new(root);
        assert!(host.resolve(Path::new("/a")).is_err());
    }

    #[test]
    fn run_captures_output_and_exit_code() {
        let host = RealHost::new("/");
        let out = host
            .run(&CommandSpec {
                program: "sh".into(),
                args: vec!["-c".into(), "echo out; echo err >&2; exit 3".into()],
                cwd: std::env::temp_dir(),
                timeout: Duration::from_secs(10),
            })
            .expect("run");
        match out {
            CommandOutcome::Exited { code, output } => {
                assert_eq!(code, Some(3));
                assert!(output.contains("out") && output.contains("err"), "{output}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn run_kills_the_whole_group_on_timeout() {
        let host = RealHost::new("/");
        let started = Instant::now();
        let out = host
            .run(&CommandSpec {
                program: "sh".into(),
                args: vec![
                    "-c".into(),
                    "echo begin; sleep 30 & sleep 30; echo never".into(),
                ],
                cwd: std::env::temp_dir(),
                timeout: Duration::from_millis(300),
            })
            .expect("run");
        assert!(started.elapsed() < Duration::from_secs(10));
        match out {
            CommandOutcome::TimedOut { output } => {
                assert!(output.contains("begin"));
                assert!(!output.contains("never"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn uname_reports_the_running_kernel() {
        let u = RealHost::new("/").uname().expect("uname");
        assert!(!u.release.is_empty() && !u.version.is_empty());
    }
}
