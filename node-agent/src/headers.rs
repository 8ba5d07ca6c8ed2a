//! Finds the build tree (kernel headers) of the running kernel, or names the package that
//! provides it on the host's distribution.

use crate::host::Host;
use crate::kernel::OsRelease;
use std::path::PathBuf;

/// Where distributions put the build tree, in the order we try them.
pub fn candidates(release: &str) -> Vec<PathBuf> {
    vec![
        PathBuf::from(format!("/lib/modules/{release}/build")),
        PathBuf::from(format!("/usr/lib/modules/{release}/build")),
        PathBuf::from(format!("/usr/src/linux-headers-{release}")),
        PathBuf::from(format!("/usr/src/kernels/{release}")),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Headers {
    /// A host path (symlinks resolved inside the host root) holding a kbuild `Makefile`.
    Found(PathBuf),
    Missing {
        searched: Vec<PathBuf>,
        package: String,
    },
}

/// A directory counts only if it has a Makefile: a dangling or half-removed
/// `/lib/modules/REL/build` is common after headers packages are purged.
pub fn discover(host: &dyn Host, release: &str, os: &OsRelease) -> Headers {
    let searched = candidates(release);
    for dir in &searched {
        if host.exists(&dir.join("Makefile")) {
            let resolved = host.resolve(dir).unwrap_or_else(|_| dir.clone());
            return Headers::Found(resolved);
        }
    }
    Headers::Missing {
        searched,
        package: package_for(os, release),
    }
}

/// The package that provides the headers of `release` on this distribution.
pub fn package_for(os: &OsRelease, release: &str) -> String {
    if os.is_like("debian") || os.is_like("ubuntu") {
        format!("linux-headers-{release}")
    } else if [
        "rhel",
        "fedora",
        "centos",
        "rocky",
        "almalinux",
        "amzn",
        "ol",
    ]
    .iter()
    .any(|f| os.is_like(f))
    {
        format!("kernel-devel-{release}")
    } else if os.is_like("suse") || os.is_like("sles") || os.is_like("opensuse") {
        "kernel-default-devel".to_string()
    } else {
        format!("the kernel headers package for {release} (linux-headers-{release} or kernel-devel-{release})")
    }
}

/// The human message for a HeadersMissing status.
pub fn missing_message(release: &str, searched: &[PathBuf], package: &str) -> String {
    let list: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
    format!(
        "kernel headers for {release} not found (searched {}); install the package {package} on the node",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    fn os(text: &str) -> OsRelease {
        OsRelease::parse(text)
    }

    #[test]
    fn finds_lib_modules_build() {
        let host = FakeHost::debian();
        assert_eq!(
            discover(&host, "6.1.0-56-amd64", &os("ID=debian")),
            Headers::Found(PathBuf::from("/lib/modules/6.1.0-56-amd64/build"))
        );
    }

    #[test]
    fn finds_rhel_kernels_dir() {
        let host = FakeHost::default();
        host.put("/usr/src/kernels/5.14.0-427.el9.x86_64/Makefile", "");
        assert_eq!(
            discover(
                &host,
                "5.14.0-427.el9.x86_64",
                &os("ID=rocky\nID_LIKE=\"rhel fedora\"")
            ),
            Headers::Found(PathBuf::from("/usr/src/kernels/5.14.0-427.el9.x86_64"))
        );
    }

    #[test]
    fn directory_without_makefile_does_not_count() {
        let host = FakeHost::default();
        host.put("/lib/modules/6.1.0-56-amd64/build/.config", "");
        match discover(&host, "6.1.0-56-amd64", &os("ID=debian")) {
            Headers::Missing { package, searched } => {
                assert_eq!(package, "linux-headers-6.1.0-56-amd64");
                assert_eq!(searched.len(), 4);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn package_names_per_distribution() {
        let r = "6.8.0-45-generic";
        assert_eq!(
            package_for(&os("ID=ubuntu\nID_LIKE=debian"), r),
            "linux-headers-6.8.0-45-generic"
        );
        assert_eq!(
            package_for(&os("ID=fedora"), r),
            "kernel-devel-6.8.0-45-generic"
        );
        assert_eq!(
            package_for(&os("ID=amzn\nID_LIKE=\"centos rhel fedora\""), r),
            "kernel-devel-6.8.0-45-generic"
        );
        assert_eq!(
            package_for(&os("ID=sles\nID_LIKE=suse"), r),
            "kernel-default-devel"
        );
        assert_eq!(
            package_for(&os("ID=opensuse-leap\nID_LIKE=\"suse opensuse\""), r),
            "kernel-default-devel"
        );
        assert!(package_for(&os("ID=arch"), r).contains("linux-headers-6.8.0-45-generic"));
    }

    #[test]
    fn message_names_package_and_paths() {
        let m = missing_message("R", &candidates("R"), "linux-headers-R");
        assert!(m.contains("linux-headers-R") && m.contains("/lib/modules/R/build"));
    }
}
