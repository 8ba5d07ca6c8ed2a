//! Whether the agent's own userspace has the compiler the running kernel was built with.
//!
//! An external module must be compiled with its kernel's compiler: Debian's headers name it
//! (`CC = gcc-12`, `x86_64-linux-gnu-gcc-16`) and `CONFIG_CC_VERSION_TEXT` in the build tree's
//! `.config` records its banner. When the agent image lacks that compiler (a Debian 11 node's
//! gcc-10, a sid node's gcc-16 in a trixie image), `make` would only fail with "gcc-10: not
//! found" deep in its log: the agent says so before building (`CompilerMismatch`), naming the
//! kernel's compiler, what the image has, and the remedy.

use crate::host::Host;
use std::path::Path;

/// The compiler a kernel was built with, from its `CONFIG_CC_VERSION_TEXT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCompiler {
    /// The whole banner, e.g. `gcc-10 (Debian 10.2.1-6) 10.2.1 20210110`.
    pub text: String,
    /// The program the banner names, e.g. `gcc-10` or `x86_64-linux-gnu-gcc-16`.
    pub program: String,
    /// The major version from the banner's first `X.Y.Z`.
    pub major: u32,
}

impl KernelCompiler {
    /// The versioned name every Debian-family gcc package installs (`gcc-16` for
    /// `x86_64-linux-gnu-gcc-16`).
    pub fn versioned_name(&self) -> String {
        format!("gcc-{}", self.major)
    }
}

/// Reads `CONFIG_CC_VERSION_TEXT` from a kernel `.config`. `None` for a config without it
/// (kernels before 5.8), or a compiler that is not gcc (clang kernels need no gcc major).
pub fn parse_config(config: &str) -> Option<KernelCompiler> {
    let text = config.lines().find_map(|l| {
        l.strip_prefix("CONFIG_CC_VERSION_TEXT=")
            .map(|v| v.trim().trim_matches('"'))
    })?;
    from_version_text(text)
}

/// The compiler named by a version banner as `CONFIG_CC_VERSION_TEXT` and `/proc/version`
/// print it (`gcc-10 (Debian 10.2.1-6) 10.2.1 20210110`). `None` for a compiler that is not gcc.
pub fn from_version_text(text: &str) -> Option<KernelCompiler> {
    let text = text.trim().to_string();
    let program = text.split_whitespace().next()?.to_string();
    let base = program.rsplit('/').next().unwrap_or(&program);
    // gcc, gcc-N, x86_64-linux-gnu-gcc-N; not clang, not cc.
    let stem = base.rsplit_once("gcc").map(|(_, rest)| rest)?;
    if !(stem.is_empty() || stem.starts_with('-')) {
        return None;
    }
    let major = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|w| w.split('.').count() >= 3 && w.split('.').all(|p| !p.is_empty()))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())?;
    Some(KernelCompiler {
        text,
        program,
        major,
    })
}

/// The compiler of the kernel whose build tree is `kdir` (a host path), if it names one.
pub fn of_build_tree(host: &dyn Host, kdir: &Path) -> Option<KernelCompiler> {
    host.read_to_string(&kdir.join(".config"))
        .ok()
        .and_then(|c| parse_config(&c))
}

/// The message of a `CompilerMismatch` status, or `None` when the agent has the compiler
/// (its exact program name or the versioned `gcc-N`). A kernel built with plain `gcc` names no
/// program to look for: the build decides.
pub fn mismatch(host: &dyn Host, release: &str, kc: &KernelCompiler) -> Option<String> {
    if kc.program == "gcc" {
        return None;
    }
    let versioned = kc.versioned_name();
    if host.has_program(&kc.program) || host.has_program(&versioned) {
        return None;
    }
    let have = host.gcc_programs();
    let have = if have.is_empty() {
        "none".to_string()
    } else {
        have.join(", ")
    };
    Some(format!(
        "kernel {release} was built with `{}` (CONFIG_CC_VERSION_TEXT) but the agent image has no \
         {versioned} (it has: {have}); a module built by another compiler major does not match the \
         kernel: run an agent image that provides {versioned} (images/node-agent.packages on a \
         Debian suite that ships it), or update the node to a kernel built with one of {have}",
        kc.text
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn reads_debian_banners() {
        let c = parse_config(
            "CONFIG_CC_VERSION_TEXT=\"gcc-10 (Debian 10.2.1-6) 10.2.1 20210110\"\nCONFIG_CC_IS_GCC=y\n",
        )
        .expect("gcc-10");
        assert_eq!((c.program.as_str(), c.major), ("gcc-10", 10));
        let c = parse_config(
            "CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-16 (Debian 16.1.0-2) 16.1.0\"\n",
        )
        .expect("gcc-16");
        assert_eq!(
            (c.program.as_str(), c.major, c.versioned_name().as_str()),
            ("x86_64-linux-gnu-gcc-16", 16, "gcc-16")
        );
        let c = parse_config(
            "CONFIG_CC_VERSION_TEXT=\"gcc (GCC) 11.4.1 20231218 (Red Hat 11.4.1-3)\"\n",
        )
        .expect("rhel");
        assert_eq!((c.program.as_str(), c.major), ("gcc", 11));
    }

    #[test]
    fn clang_and_old_configs_name_no_gcc() {
        assert_eq!(
            parse_config("CONFIG_CC_VERSION_TEXT=\"Debian clang version 16.0.6 (15)\"\n"),
            None
        );
        assert_eq!(parse_config("CONFIG_CC_IS_GCC=y\n"), None);
    }

    #[test]
    fn a_missing_compiler_is_named_with_what_the_image_has() {
        let host = FakeHost::default();
        host.lock().programs = vec!["gcc-12".into(), "gcc-14".into(), "make".into()];
        let kc =
            parse_config("CONFIG_CC_VERSION_TEXT=\"gcc-10 (Debian 10.2.1-6) 10.2.1 20210110\"\n")
                .expect("gcc-10");
        let m = mismatch(&host, "5.10.0-35-amd64", &kc).expect("mismatch");
        assert!(
            m.contains("`gcc-10 (Debian 10.2.1-6) 10.2.1 20210110`"),
            "{m}"
        );
        assert!(m.contains("has no gcc-10 (it has: gcc-12, gcc-14)"), "{m}");
        assert!(m.contains("run an agent image that provides gcc-10"), "{m}");
        let kc = parse_config("CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\n")
            .expect("gcc-12");
        assert_eq!(mismatch(&host, "6.1.0-56-amd64", &kc), None);
        // The triplet name counts through its versioned gcc-N.
        host.lock().programs.push("gcc-16".into());
        let kc = parse_config(
            "CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-16 (Debian 16.1.0-2) 16.1.0\"\n",
        )
        .expect("gcc-16");
        assert_eq!(mismatch(&host, "7.2.0-1-amd64", &kc), None);
    }
}
