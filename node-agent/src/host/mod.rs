//! The seam between the agent's decisions and the machine.
//!
//! Paths given to a [`Host`] are absolute paths *as the host sees them* (`/lib/modules/..`,
//! `/etc/os-release`, `/sys/module/toa/..`). The real implementation maps them under the
//! configured host root (e.g. `/host` inside the DaemonSet); the fake keeps an in-memory tree.
//! Files the agent owns itself (module sources, cache, work dirs) are plain local paths and are
//! handled with `std::fs`, because tests can use temporary directories for those.

#[cfg(test)]
pub mod fake;
pub mod real;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `uname(2)` says about the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uname {
    /// `uname -r`, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// `uname -v`, e.g. `#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-01-10)`.
    pub version: String,
}

/// A command to run on behalf of the agent (the module build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Local working directory.
    pub cwd: PathBuf,
    pub timeout: Duration,
}

/// How a command ended. `output` is stdout and stderr interleaved as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Exited { code: Option<i32>, output: String },
    TimedOut { output: String },
}

/// A raw errno from a module syscall, kept numeric so that [`crate::module`] can explain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

/// A refused `finit_module(2)`: the errno, and the kernel log lines about the module that the
/// attempt produced (empty when the log could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRefusal {
    pub errno: Errno,
    pub kernel_log: Vec<String>,
}

impl From<Errno> for LoadRefusal {
    fn from(errno: Errno) -> Self {
        Self {
            errno,
            kernel_log: Vec::new(),
        }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", io::Error::from_raw_os_error(self.0))
    }
}

/// Everything the agent does to or reads from the host.
pub trait Host: Send + Sync {
    /// Reads a host file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads a host file as UTF-8 text.
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        let bytes = self.read(path)?;
        String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
    /// Whether a host path exists (following symlinks inside the host root).
    fn exists(&self, path: &Path) -> bool;
    /// Names of the entries of a host directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Resolves symlinks of a host path *within the host root*, returning a host path.
    fn resolve(&self, path: &Path) -> io::Result<PathBuf>;
    /// The local path through which the agent's own processes (apt, gpgv) reach a host path
    /// (the host's keyrings under the host root).
    fn to_local(&self, path: &Path) -> PathBuf;
    /// Makes a host kernel build tree usable by `make -C` from the agent's process and
    /// returns the directory to pass. Build trees hold absolute paths (Debian's headers
    /// Makefile includes `/usr/src/linux-headers-REL-common/Makefile`), so under a host root
    /// other than `/` they must also be reachable at their real paths.
    fn build_tree(&self, kdir: &Path) -> io::Result<PathBuf>;
    /// Writes a sysfs attribute (module parameters); the kernel may refuse with EINVAL.
    fn write_sysfs(&self, path: &Path, value: &str) -> io::Result<()>;
    /// `uname(2)`.
    fn uname(&self) -> io::Result<Uname>;
    /// `finit_module(2)` of a local `.ko` file with a parameter string; a refusal carries the
    /// kernel log lines about the module that the attempt produced.
    fn load_module(&self, image: &Path, params: &str) -> Result<(), LoadRefusal>;
    /// `delete_module(2)` with `O_NONBLOCK` (never waits inside the kernel).
    fn unload_module(&self, name: &str) -> Result<(), Errno>;
    /// Runs the TOA self-test's handshakes (see [`crate::selftest`]) against the loaded module.
    fn run_self_test(&self, plan: &crate::selftest::plan::Plan) -> crate::selftest::Outcome;
    /// Runs a command to completion or until its timeout (then kills its process group).
    fn run(&self, cmd: &CommandSpec) -> io::Result<CommandOutcome>;
    /// Whether some module registered the IPv4 socket option `optname` (netfilter's
    /// `nf_register_sockopt`): a `getsockopt(IPPROTO_IP, optname)` on a fresh TCP socket
    /// fails with ENOPROTOOPT only when nobody did (the kernel's `nf_getsockopt`). The
    /// registrations are global, not per network namespace.
    fn ip_sockopt_registered(&self, optname: i32) -> io::Result<bool>;
    /// Whether the agent's own `PATH` (its image, not the host) has an executable `name`.
    fn has_program(&self, name: &str) -> bool;
    /// The versioned gcc programs (`gcc-N`) on the agent's own `PATH`, by major version.
    fn gcc_programs(&self) -> Vec<String>;
    /// eBPF backend: loads and attaches it, or adopts the pinned one (see [`toa_ebpf::attach`]);
    /// the parameters are written in every case.
    fn ebpf_attach(&self, params: &toa_ebpf::Params) -> Result<toa_ebpf::Outcome, toa_ebpf::Error>;
    /// eBPF backend: whether this node can run it, without attaching (see [`toa_ebpf::probe`]);
    /// backend Auto asks this before it picks EBPF.
    fn ebpf_probe(&self) -> Result<(), toa_ebpf::Error>;
    /// eBPF backend: whether every link is pinned (it serves).
    fn ebpf_attached(&self) -> bool;
    /// eBPF backend: detaches it and removes its pins; false when nothing was pinned.
    fn ebpf_detach(&self) -> Result<bool, toa_ebpf::Error>;
    /// eBPF backend: its counters summed over CPUs, named as in `/proc/net/toa_stats`.
    fn ebpf_counters(&self) -> Result<Vec<(&'static str, u64)>, toa_ebpf::Error>;
}

/// Sorts `gcc-N` names by N and drops everything else.
pub fn sorted_gcc_names(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<(u32, String)> = names
        .into_iter()
        .filter_map(|n| {
            let major = n.strip_prefix("gcc-")?.parse().ok()?;
            Some((major, n))
        })
        .collect();
    v.sort();
    v.dedup();
    v.into_iter().map(|(_, n)| n).collect()
}
