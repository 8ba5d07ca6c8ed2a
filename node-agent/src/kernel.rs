//! Facts about the running kernel and the host distribution.

use crate::host::Host;
use std::path::Path;

/// `SecureBoot` EFI variable (global variable GUID); 4 attribute bytes then 1 data byte.
const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e39c6b2b9d70";

/// The host's `/etc/os-release`, reduced to what the agent needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub version_id: String,
    /// `VERSION_CODENAME` (`bookworm`); empty when absent (Debian sid says none).
    pub version_codename: String,
    pub pretty_name: String,
}

impl OsRelease {
    pub fn parse(text: &str) -> Self {
        let mut os = OsRelease::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else {
                continue;
            };
            let value = value
                .trim()
                .trim_matches('"')
                .trim_matches('\'')
                .to_string();
            match key {
                "ID" => os.id = value.to_lowercase(),
                "ID_LIKE" => os.id_like = value.split_whitespace().map(str::to_lowercase).collect(),
                "VERSION_ID" => os.version_id = value,
                "VERSION_CODENAME" => os.version_codename = value,
                "PRETTY_NAME" => os.pretty_name = value,
                _ => {}
            }
        }
        os
    }

    /// Whether the distribution is `family` or derived from it.
    pub fn is_like(&self, family: &str) -> bool {
        self.id == family || self.id_like.iter().any(|f| f == family)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelFacts {
    pub release: String,
    pub version: String,
    pub boot_id: String,
    pub os: OsRelease,
    /// Active lockdown mode (`none`, `integrity`, `confidentiality`); None when not visible.
    pub lockdown: Option<String>,
    /// Secure Boot state; None when the EFI variable exists but cannot be read.
    pub secure_boot: Option<bool>,
}

impl KernelFacts {
    /// Whether the kernel refuses unsigned modules for policy reasons.
    pub fn locked_down(&self) -> bool {
        matches!(
            self.lockdown.as_deref(),
            Some("integrity" | "confidentiality")
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("uname failed: {0}")]
    Uname(std::io::Error),
}

/// Collects the kernel facts. Only `uname` is mandatory; the rest degrades to empty/None
/// because a missing file says "not visible here", not "broken".
pub fn gather(host: &dyn Host) -> Result<KernelFacts, KernelError> {
    let uname = host.uname().map_err(KernelError::Uname)?;
    let boot_id = host
        .read_to_string(Path::new("/proc/sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let os = host
        .read_to_string(Path::new("/etc/os-release"))
        .or_else(|_| host.read_to_string(Path::new("/usr/lib/os-release")))
        .map(|s| OsRelease::parse(&s))
        .unwrap_or_default();
    let lockdown = host
        .read_to_string(Path::new("/sys/kernel/security/lockdown"))
        .ok()
        .and_then(|s| parse_lockdown(&s));
    Ok(KernelFacts {
        release: uname.release,
        version: uname.version,
        boot_id,
        os,
        lockdown,
        secure_boot: secure_boot(host),
    })
}

/// `[none] integrity confidentiality` -> `none`.
pub fn parse_lockdown(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_string())
}

fn secure_boot(host: &dyn Host) -> Option<bool> {
    if !host.exists(Path::new("/sys/firmware/efi")) {
        // Legacy BIOS boot: there is no Secure Boot.
        return Some(false);
    }
    match host.read(Path::new(SECURE_BOOT_VAR)) {
        Ok(bytes) if bytes.len() >= 5 => Some(bytes[4] == 1),
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn gathers_debian_facts() {
        let host = FakeHost::debian();
        let f = gather(&host).expect("facts");
        assert_eq!(f.release, "6.1.0-56-amd64");
        assert!(f.version.contains("Debian 6.1.192-2"));
        assert_eq!(f.boot_id, "0b6e3b7c-2a55-4a1f-9a8e-000000000001");
        assert_eq!(f.os.id, "debian");
        assert_eq!(f.os.pretty_name, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(f.lockdown.as_deref(), Some("none"));
        assert!(!f.locked_down());
        assert_eq!(f.secure_boot, Some(false));
    }

    #[test]
    fn secure_boot_from_efivars() {
        let host = FakeHost::debian();
        host.put(SECURE_BOOT_VAR, [6u8, 0, 0, 0, 1]);
        host.put(
            "/sys/kernel/security/lockdown",
            "none [integrity] confidentiality\n",
        );
        let f = gather(&host).expect("facts");
        assert_eq!(f.secure_boot, Some(true));
        assert_eq!(f.lockdown.as_deref(), Some("integrity"));
        assert!(f.locked_down());
        host.put(SECURE_BOOT_VAR, [6u8, 0, 0, 0, 0]);
        assert_eq!(gather(&host).expect("facts").secure_boot, Some(false));
        host.put(SECURE_BOOT_VAR, [6u8]);
        assert_eq!(gather(&host).expect("facts").secure_boot, None);
    }

    #[test]
    fn os_release_variants() {
        let os = OsRelease::parse(
            "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n# comment\ngarbage\n",
        );
        assert_eq!(os.id, "rocky");
        assert!(os.is_like("rhel") && os.is_like("fedora") && !os.is_like("debian"));
        assert_eq!(os.version_id, "9.4");
    }

    #[test]
    fn missing_optional_files_are_not_errors() {
        let host = FakeHost::default();
        host.set_uname("6.12.0", "#1");
        let f = gather(&host).expect("facts");
        assert_eq!(f.boot_id, "");
        assert_eq!(f.lockdown, None);
        assert_eq!(f.os, OsRelease::default());
    }

    #[test]
    fn uname_failure_is_an_error() {
        assert!(gather(&FakeHost::default()).is_err());
    }

    #[test]
    fn lockdown_parsing() {
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality").as_deref(),
            Some("none")
        );
        assert_eq!(
            parse_lockdown("none integrity [confidentiality]\n").as_deref(),
            Some("confidentiality")
        );
        assert_eq!(parse_lockdown("garbage"), None);
    }
}
