//! The kernel log lines that one module load produced, and what they say about the refusal.
//!
//! `finit_module(2)` answers with one errno; the reason is in the kernel log. `EINVAL`, for
//! example, means a rejected parameter value *or* a module built against another kernel build
//! ("disagrees about version of symbol", kernel/module/version.c `check_version`). The agent
//! reads the records that the load added to `/dev/kmsg` (Documentation/ABI/testing/dev-kmsg)
//! and classifies them, so the node status names the real cause and its remedy.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Longest record `/dev/kmsg` hands out (the kernel's `CONSOLE_EXT_LOG_MAX` is 8 KiB).
const RECORD_MAX: usize = 8192;
/// At most this many lines are kept from one load; the first ones name the cause.
const LINES_MAX: usize = 20;

/// A reader positioned at the end of the kernel log when it was opened.
#[derive(Debug)]
pub struct KmsgCursor {
    file: File,
}

impl KmsgCursor {
    /// Opens `path` (normally `/dev/kmsg`) non-blocking and seeks past every existing record.
    ///
    /// Errors: the open or seek error (e.g. `EPERM` with `kernel.dmesg_restrict=1` and no
    /// `CAP_SYSLOG`); the caller then explains refusals without the log.
    pub fn open_at_end(path: &Path) -> io::Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Self { file })
    }

    /// Messages of the records written since the cursor was opened (or last read), oldest
    /// first, without the `prio,seq,time,flags;` prefix and continuation (key=value) lines.
    /// Records overwritten meanwhile (`EPIPE`) are skipped; read errors end the list.
    pub fn read_new(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; RECORD_MAX];
        loop {
            // One read(2) returns exactly one record.
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(msg) = record_message(&buf[..n]) {
                        out.push(msg);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        out
    }
}

/// The message text of one `/dev/kmsg` record: `prio,seq,usec,flags[,...];text\n[ KEY=val\n]*`.
fn record_message(record: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(record);
    let (_, rest) = text.split_once(';')?;
    let first = rest.lines().next()?.trim_end();
    Some(unescape(first))
}

/// `/dev/kmsg` escapes non-printable bytes as `\xHH`; restores the printable ones.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        let hex = rest.get(i + 2..i + 4);
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) if b.is_ascii_graphic() || b == b' ' => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            _ => {
                out.push_str("\\x");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The lines of `messages` that concern `module` (the loader and the module prefix them
/// with `NAME:`), plus lockdown notices, at most [`LINES_MAX`].
pub fn lines_about(module: &str, messages: &[String]) -> Vec<String> {
    let prefix = format!("{module}:");
    messages
        .iter()
        .filter(|m| m.starts_with(&prefix) || m.starts_with("Lockdown:"))
        .take(LINES_MAX)
        .cloned()
        .collect()
}

/// What the kernel log says about a refused load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogCause {
    /// The module was built against another kernel build: symbol CRCs
    /// (`disagrees about version of symbol`, `no symbol version for`), `version magic`, or a
    /// symbol the running kernel does not export (`Unknown symbol`). The line is kept.
    KernelMismatch(String),
    /// A parameter value was refused (the kernel's `invalid for parameter`, or the module's own
    /// validation message). The line is kept.
    BadParameter(String),
    /// The log says nothing that decides between the two.
    Unknown,
}

/// Classifies the log lines of one refused load; the first deciding line wins.
pub fn classify(lines: &[String]) -> LogCause {
    const MISMATCH: [&str; 5] = [
        "disagrees about version of symbol",
        "no symbol version for",
        "version magic",
        "unknown symbol",
        "invalid elf",
    ];
    const PARAMETER: [&str; 4] = [
        "invalid for parameter",
        "invalid option kind",
        "invalid prefix length",
        "invalid address in",
    ];
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if MISMATCH.iter().any(|p| lower.contains(p)) {
            return LogCause::KernelMismatch(line.clone());
        }
        if PARAMETER.iter().any(|p| lower.contains(p))
            || lower.contains("beyond the /")
            || lower.contains("too many entries")
        {
            return LogCause::BadParameter(line.clone());
        }
    }
    LogCause::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn record_prefix_and_continuation_lines_are_dropped() {
        assert_eq!(
            record_message(b"4,1201,91234567,-;toa: disagrees about version of symbol module_layout\n SUBSYSTEM=x\n"),
            Some("toa: disagrees about version of symbol module_layout".to_string())
        );
        assert_eq!(record_message(b"garbage without separator"), None);
        assert_eq!(
            record_message(b"6,1,2,-;a\\x20b \\x07bell\n"),
            Some("a b \\x07bell".to_string())
        );
    }

    #[test]
    fn only_lines_about_the_module_are_kept() {
        let log = s(&[
            "e1000: eth0 NIC Link is Up",
            "toa: version magic '6.1.0-9-amd64 SMP' should be '6.1.0-56-amd64 SMP'",
            "toab: unrelated module",
            "Lockdown: insmod: unsigned module loading is restricted; see man kernel_lockdown.7",
        ]);
        assert_eq!(
            lines_about("toa", &log),
            s(&[
                "toa: version magic '6.1.0-9-amd64 SMP' should be '6.1.0-56-amd64 SMP'",
                "Lockdown: insmod: unsigned module loading is restricted; see man kernel_lockdown.7",
            ])
        );
        let many: Vec<String> = (0..50).map(|i| format!("toa: line {i}")).collect();
        assert_eq!(lines_about("toa", &many).len(), LINES_MAX);
    }

    #[test]
    fn kernel_build_mismatch_is_told_from_a_bad_parameter() {
        // Lines as kernel/module/version.c, main.c and params.c print them.
        for line in [
            "toa: disagrees about version of symbol module_layout",
            "toa: no symbol version for nf_register_sockopt",
            "toa: version magic '6.12.9+bpo-amd64 SMP preempt mod_unload modversions ' should be '6.1.0-56-amd64 SMP preempt mod_unload modversions '",
            "toa: Unknown symbol register_kretprobe (err -2)",
        ] {
            assert_eq!(
                classify(&s(&["toa: module verification failed: signature and/or required key missing - tainting kernel", line])),
                LogCause::KernelMismatch(line.to_string()),
                "{line}"
            );
        }
        for line in [
            "toa: `abc' invalid for parameter `ipv4_kinds'",
            "toa: ipv4_kinds: invalid option kind 'x' (expected a comma list of integers 0..255)",
            "toa: trusted_sources: '10.0.0.1/8' has address bits set beyond the /8 prefix (write the network address)",
        ] {
            assert_eq!(
                classify(&s(&[line])),
                LogCause::BadParameter(line.to_string()),
                "{line}"
            );
        }
        assert_eq!(classify(&s(&["toa: something else"])), LogCause::Unknown);
        assert_eq!(classify(&[]), LogCause::Unknown);
    }

    #[test]
    fn a_cursor_reads_only_what_follows_it() {
        // A regular file stands in for /dev/kmsg: same seek-to-end, then whole reads.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kmsg");
        std::fs::write(&path, "6,1,1,-;old record\n").expect("write");
        let mut cursor = KmsgCursor::open_at_end(&path).expect("open");
        assert!(cursor.read_new().is_empty());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, b"4,2,2,-;toa: Unknown symbol x (err -2)\n")
            })
            .expect("append");
        assert_eq!(
            cursor.read_new(),
            vec!["toa: Unknown symbol x (err -2)".to_string()]
        );
        assert!(KmsgCursor::open_at_end(&dir.path().join("missing")).is_err());
    }
}
