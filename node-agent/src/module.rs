//! The loaded-module view (`/sys/module/toa`), `finit_module` / `delete_module`, and the
//! translation of kernel refusals into reasons and remedies.

use crate::host::{Errno, Host, LoadRefusal};
use crate::kmsg;
use crate::status::Reason;
use std::path::{Path, PathBuf};

fn sys_module() -> PathBuf {
    Path::new("/sys/module").join(crate::MODULE_NAME)
}

/// A `toa` module present in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// None: the module has no srcversion (built without MODULE_VERSION: not ours).
    pub srcversion: Option<String>,
    /// `live`, `coming` or `going`.
    pub initstate: String,
    pub refcnt: Option<u64>,
}

/// Reads `/sys/module/toa`; None when no toa module is loaded.
pub fn loaded(host: &dyn Host) -> Option<Loaded> {
    let dir = sys_module();
    // Built-in modules with parameters also have /sys/module/NAME, but no initstate.
    let initstate = host
        .read_to_string(&dir.join("initstate"))
        .ok()?
        .trim()
        .to_string();
    Some(Loaded {
        srcversion: host
            .read_to_string(&dir.join("srcversion"))
            .ok()
            .map(|s| s.trim().to_string()),
        initstate,
        refcnt: host
            .read_to_string(&dir.join("refcnt"))
            .ok()
            .and_then(|s| s.trim().parse().ok()),
    })
}

/// The IPv4 socket option through which the toa module answers NAT64 clients
/// (`getsockopt(IPPROTO_IP, 4096)`, kmod/toa_sockopt.c); vendor TOA modules use the same
/// number, so only one of them can be loaded at a time.
pub const TOA_SOCKOPT: i32 = 4096;

/// Modules in `/proc/modules` whose name mentions toa (`ipvs_toa`, `kmod_toa`, ...): the
/// likely holders of [`TOA_SOCKOPT`] when no module named `toa` is loaded.
pub fn toa_like_modules(host: &dyn Host) -> Vec<String> {
    host.read_to_string(Path::new("/proc/modules"))
        .map(|text| {
            text.lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|name| *name != "toa" && name.contains("toa"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Where a loaded toa module of another origin comes from, in words for the status message:
/// its file under `/lib/modules/RELEASE` when `modules.dep` (written by depmod, see
/// depmod(8)) lists a `toa.ko[.xz|.zst|.gz]`, else that it was loaded from elsewhere (by
/// insmod from a build directory, say); plus the kernel's taint letters for the module
/// (`/sys/module/toa/taint`: O out-of-tree, E unsigned, see the kernel's
/// Documentation/admin-guide/tainted-kernels.rst) when it has any.
pub fn foreign_origin(host: &dyn Host, release: &str) -> String {
    let dep = format!("/lib/modules/{release}/modules.dep");
    let path = host.read_to_string(Path::new(&dep)).ok().and_then(|text| {
        text.lines()
            .filter_map(|l| l.split_once(':').map(|(file, _)| file.trim()))
            .find(|file| {
                let base = file.rsplit('/').next().unwrap_or(file);
                matches!(base, "toa.ko" | "toa.ko.xz" | "toa.ko.zst" | "toa.ko.gz")
            })
            .map(|file| {
                if file.starts_with('/') {
                    file.to_string()
                } else {
                    format!("/lib/modules/{release}/{file}")
                }
            })
    });
    let mut out = match path {
        Some(p) => format!("file {p}"),
        None => format!("not installed under /lib/modules/{release}: loaded from another path"),
    };
    let taint = host
        .read_to_string(&sys_module().join("taint"))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    if !taint.is_empty() {
        out.push_str(&format!(", taint {taint}"));
    }
    out
}

/// A kernel refusal in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

/// Explains a refused `finit_module` from its errno and the kernel log lines the attempt
/// produced. `locked_down`: lockdown is integrity/confidentiality.
///
/// `EINVAL` and `ENOEXEC` are ambiguous from the errno alone: kernel/module/version.c refuses a
/// module built against another kernel build with `EINVAL` ("disagrees about version of
/// symbol") or `ENOEXEC` ("version magic"), and kernel/params.c refuses a bad parameter value
/// with `EINVAL` too; the log line decides, and is quoted in the message.
pub fn explain_load(
    refusal: &LoadRefusal,
    locked_down: bool,
    secure_boot: Option<bool>,
) -> Refusal {
    let errno = refusal.errno;
    let e = errno.0;
    let sb = if secure_boot == Some(true) {
        " (Secure Boot is on)"
    } else {
        ""
    };
    let cause = kmsg::classify(&refusal.kernel_log);
    let (reason, message) = match (e, &cause) {
        (libc::EKEYREJECTED | libc::ENOKEY, _) => (
            Reason::SignatureRequired,
            format!("the kernel requires signed modules{sb} and rejected the unsigned toa.ko ({errno}); enroll a machine owner key (MOK) and sign the module, or disable module signature enforcement"),
        ),
        (libc::EPERM, _) if locked_down => (
            Reason::SignatureRequired,
            format!("kernel lockdown{sb} refuses unsigned modules ({errno}); sign toa.ko with an enrolled key or boot without lockdown"),
        ),
        (libc::EPERM, _) => (
            Reason::LoadFailed,
            format!("not permitted to load modules ({errno}); the agent needs CAP_SYS_MODULE (privileged container) and kernel.modules_disabled=0"),
        ),
        (libc::EEXIST, _) => (
            Reason::LoadFailed,
            format!("a module named toa is already loaded ({errno}); it appeared while the agent was loading"),
        ),
        (libc::EBUSY, _) => (
            Reason::ForeignModule,
            format!("the module refused to initialise: its resources are taken ({errno}); another TOA module probably holds the getsockopt range"),
        ),
        (libc::EINVAL | libc::ENOEXEC | libc::ENOENT, kmsg::LogCause::KernelMismatch(line)) => (
            Reason::KernelMismatch,
            format!("the kernel refused toa.ko as built for another kernel build ({errno}): \"{line}\"; the kernel headers used for the build do not match the running kernel exactly: install the headers package of this exact kernel build (same release and version), or let the agent fetch them"),
        ),
        (libc::EINVAL, kmsg::LogCause::BadParameter(line)) => (
            Reason::ParametersRejected,
            format!("the kernel rejected a module parameter ({errno}): \"{line}\"; correct the value in the ToaPolicy's module settings"),
        ),
        (libc::EINVAL, _) => (
            Reason::LoadFailed,
            format!("the kernel rejected the module ({errno}) and its log names no cause: either a module parameter or a module/kernel build mismatch; check `dmesg` on the node for lines starting with \"toa:\""),
        ),
        (libc::ENOEXEC, _) => (
            Reason::KernelMismatch,
            format!("the kernel rejected toa.ko as invalid ({errno}); it was built for another kernel or the build tree does not match the running kernel (check the headers package version)"),
        ),
        (libc::ENOENT, _) => (
            Reason::UnsupportedKernel,
            format!("the module needs a kernel symbol this kernel does not have ({errno}); see the kernel log for the unknown symbol"),
        ),
        (libc::ENOMEM, _) => (
            Reason::LoadFailed,
            format!("out of kernel memory while loading ({errno})"),
        ),
        (libc::ENOSYS, _) => (
            Reason::UnsupportedKernel,
            format!("this kernel does not support loading modules ({errno}); CONFIG_MODULES is off"),
        ),
        _ => (Reason::LoadFailed, format!("finit_module failed: {errno}")),
    };
    // Whatever the cause, the lines the kernel printed are the best evidence: quote the ones
    // the message does not already contain.
    let extra: Vec<&str> = refusal
        .kernel_log
        .iter()
        .map(String::as_str)
        .filter(|l| !message.contains(*l))
        .collect();
    let message = if extra.is_empty() {
        message
    } else {
        format!("{message}; kernel log: {}", extra.join(" | "))
    };
    Refusal { reason, message }
}

/// Loads a local `.ko` with parameters.
pub fn load(host: &dyn Host, image: &Path, params: &str) -> Result<(), LoadRefusal> {
    host.load_module(image, params)
}

/// One `delete_module` attempt (non-blocking).
pub fn unload_once(host: &dyn Host) -> Result<(), Errno> {
    match host.unload_module(crate::MODULE_NAME) {
        // Already gone is what we wanted.
        Err(Errno(libc::ENOENT)) => Ok(()),
        other => other,
    }
}

/// Whether an unload failure is worth retrying (module in use, or going away).
pub fn unload_retryable(errno: Errno) -> bool {
    matches!(errno.0, libc::EBUSY | libc::EAGAIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn reads_the_loaded_module() {
        let host = FakeHost::debian();
        assert_eq!(loaded(&host), None);
        host.insert_module(Some("ABCDEF"), &[]);
        let m = loaded(&host).expect("loaded");
        assert_eq!(m.srcversion.as_deref(), Some("ABCDEF"));
        assert_eq!(m.initstate, "live");
        assert_eq!(m.refcnt, Some(0));
    }

    #[test]
    fn module_without_srcversion() {
        let host = FakeHost::debian();
        host.insert_module(None, &[]);
        assert_eq!(loaded(&host).expect("loaded").srcversion, None);
    }

    fn refused(errno: i32, log: &[&str]) -> LoadRefusal {
        LoadRefusal {
            errno: Errno(errno),
            kernel_log: log.iter().map(|l| l.to_string()).collect(),
        }
    }

    fn explain(errno: i32) -> Refusal {
        explain_load(&refused(errno, &[]), false, None)
    }

    #[test]
    fn refusals_have_reasons_and_remedies() {
        let r = explain_load(&refused(libc::EKEYREJECTED, &[]), false, Some(true));
        assert_eq!(r.reason, Reason::SignatureRequired);
        assert!(r.message.contains("Secure Boot") && r.message.contains("sign"));
        assert_eq!(
            explain_load(&refused(libc::EPERM, &[]), true, None).reason,
            Reason::SignatureRequired
        );
        let r = explain(libc::EPERM);
        assert_eq!(r.reason, Reason::LoadFailed);
        assert!(r.message.contains("CAP_SYS_MODULE"));
        assert_eq!(explain(libc::EBUSY).reason, Reason::ForeignModule);
        assert_eq!(explain(libc::ENOEXEC).reason, Reason::KernelMismatch);
        assert!(explain(libc::EEXIST).message.contains("already loaded"));
        assert!(explain(libc::E2BIG).message.contains("finit_module"));
    }

    #[test]
    fn einval_from_a_build_mismatch_is_not_a_parameter_problem() {
        // Before, every EINVAL was reported as ParametersRejected: the wrong cause and remedy.
        let r = explain_load(
            &refused(
                libc::EINVAL,
                &["toa: disagrees about version of symbol module_layout"],
            ),
            false,
            None,
        );
        assert_eq!(r.reason, Reason::KernelMismatch);
        assert!(r
            .message
            .contains("disagrees about version of symbol module_layout"));
        assert!(r.message.contains("headers"));
        let r = explain_load(
            &refused(
                libc::ENOEXEC,
                &["toa: version magic '6.12.9 SMP' should be '6.1.0-56-amd64 SMP'"],
            ),
            false,
            None,
        );
        assert_eq!(r.reason, Reason::KernelMismatch);
        assert!(r.message.contains("should be '6.1.0-56-amd64 SMP'"));
    }

    #[test]
    fn einval_from_a_parameter_names_the_parameter() {
        let line = "toa: `abc' invalid for parameter `ipv4_kinds'";
        let r = explain_load(&refused(libc::EINVAL, &[line]), false, None);
        assert_eq!(r.reason, Reason::ParametersRejected);
        assert!(r.message.contains("ipv4_kinds"), "{}", r.message);
        // Without any log line, neither cause is claimed.
        let r = explain(libc::EINVAL);
        assert_eq!(r.reason, Reason::LoadFailed);
        assert!(r.message.contains("parameter") && r.message.contains("mismatch"));
    }

    #[test]
    fn other_kernel_lines_are_quoted() {
        let r = explain_load(
            &refused(
                libc::EBUSY,
                &["toa: TOA: sockopt 4096 already registered (another TOA module loaded?)"],
            ),
            false,
            None,
        );
        assert_eq!(r.reason, Reason::ForeignModule);
        assert!(r
            .message
            .contains("kernel log: toa: TOA: sockopt 4096 already registered"));
    }

    #[test]
    fn unload_semantics() {
        let host = FakeHost::debian();
        // Nothing loaded: success (idempotent).
        assert_eq!(unload_once(&host), Ok(()));
        host.insert_module(Some("A"), &[]);
        host.lock().unload_errors.push_back(Errno(libc::EBUSY));
        let e = unload_once(&host).expect_err("busy");
        assert!(unload_retryable(e));
        assert!(!unload_retryable(Errno(libc::EPERM)));
        assert_eq!(unload_once(&host), Ok(()));
        assert!(!host.module_loaded());
    }
}
