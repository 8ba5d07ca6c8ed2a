//! The loaded-module view (`/sys/module/toa`), `finit_module` / `delete_module`, and the
//! translation of kernel refusals into reasons and remedies.

use crate::host::{Errno, Host};
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

/// A kernel refusal in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

/// Explains a `finit_module` errno. `locked_down`: lockdown is integrity/confidentiality.
pub fn explain_load(errno: Errno, locked_down: bool, secure_boot: Option<bool>) -> Refusal {
    let e = errno.0;
    let sb = if secure_boot == Some(true) {
        " (Secure Boot is on)"
    } else {
        ""
    };
    let (reason, message) = match e {
        libc::EKEYREJECTED | libc::ENOKEY => (
            Reason::SignatureRequired,
            format!("the kernel requires signed modules{sb} and rejected the unsigned toa.ko ({errno}); enroll a machine owner key (MOK) and sign the module, or disable module signature enforcement"),
        ),
        libc::EPERM if locked_down => (
            Reason::SignatureRequired,
            format!("kernel lockdown{sb} refuses unsigned modules ({errno}); sign toa.ko with an enrolled key or boot without lockdown"),
        ),
        libc::EPERM => (
            Reason::LoadFailed,
            format!("not permitted to load modules ({errno}); the agent needs CAP_SYS_MODULE (privileged container) and kernel.modules_disabled=0"),
        ),
        libc::EEXIST => (
            Reason::LoadFailed,
            format!("a module named toa is already loaded ({errno}); it appeared while the agent was loading"),
        ),
        libc::EBUSY => (
            Reason::ForeignModule,
            format!("the module refused to initialise: its resources are taken ({errno}); another TOA module probably holds the getsockopt range, see the kernel log"),
        ),
        libc::ENOEXEC => (
            Reason::UnsupportedKernel,
            format!("the kernel rejected toa.ko as invalid ({errno}); it was built for another kernel or the build tree does not match the running kernel (check the headers package version)"),
        ),
        libc::EINVAL => (
            Reason::ParametersRejected,
            format!("the kernel rejected the module or its parameters ({errno}); see the kernel log for the bad parameter or version magic"),
        ),
        libc::ENOENT => (
            Reason::UnsupportedKernel,
            format!("the module needs a kernel symbol this kernel does not have ({errno}); see the kernel log for the unknown symbol"),
        ),
        libc::ENOMEM => (
            Reason::LoadFailed,
            format!("out of kernel memory while loading ({errno})"),
        ),
        libc::ENOSYS => (
            Reason::UnsupportedKernel,
            format!("this kernel does not support loading modules ({errno}); CONFIG_MODULES is off"),
        ),
        _ => (Reason::LoadFailed, format!("finit_module failed: {errno}")),
    };
    Refusal { reason, message }
}

/// Loads a local `.ko` with parameters.
pub fn load(host: &dyn Host, image: &Path, params: &str) -> Result<(), Errno> {
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

    #[test]
    fn refusals_have_reasons_and_remedies() {
        let r = explain_load(Errno(libc::EKEYREJECTED), false, Some(true));
        assert_eq!(r.reason, Reason::SignatureRequired);
        assert!(r.message.contains("Secure Boot") && r.message.contains("sign"));
        assert_eq!(
            explain_load(Errno(libc::EPERM), true, None).reason,
            Reason::SignatureRequired
        );
        let r = explain_load(Errno(libc::EPERM), false, None);
        assert_eq!(r.reason, Reason::LoadFailed);
        assert!(r.message.contains("CAP_SYS_MODULE"));
        assert_eq!(
            explain_load(Errno(libc::EBUSY), false, None).reason,
            Reason::ForeignModule
        );
        assert_eq!(
            explain_load(Errno(libc::ENOEXEC), false, None).reason,
            Reason::UnsupportedKernel
        );
        assert_eq!(
            explain_load(Errno(libc::EINVAL), false, None).reason,
            Reason::ParametersRejected
        );
        assert!(explain_load(Errno(libc::EEXIST), false, None)
            .message
            .contains("already loaded"));
        assert!(explain_load(Errno(libc::E2BIG), false, None)
            .message
            .contains("finit_module"));
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
