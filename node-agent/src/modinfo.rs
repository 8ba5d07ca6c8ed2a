//! Reads a `.ko`'s `.modinfo` section (what `modinfo` prints) without running modinfo.
//!
//! The agent identifies its own module by `srcversion` (an MD4 of the module's sources that
//! modpost stores in `.modinfo` and the kernel exposes as `/sys/module/NAME/srcversion`).

use object::{Object, ObjectSection};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModinfoError {
    #[error("not a valid ELF kernel module: {0}")]
    NotElf(String),
    #[error("the module has no .modinfo section (is it a kernel module?)")]
    NoModinfo,
}

/// The fields of `.modinfo` the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    pub name: Option<String>,
    pub version: Option<String>,
    pub srcversion: Option<String>,
    pub vermagic: Option<String>,
    /// Every `key=value` entry in file order (keys repeat, e.g. `parm`).
    pub entries: Vec<(String, String)>,
}

/// Parses `.modinfo` out of a module image.
pub fn parse(image: &[u8]) -> Result<ModInfo, ModinfoError> {
    let file = object::File::parse(image).map_err(|e| ModinfoError::NotElf(e.to_string()))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or(ModinfoError::NoModinfo)?;
    let data = section
        .data()
        .map_err(|e| ModinfoError::NotElf(e.to_string()))?;
    let mut info = ModInfo::default();
    // Entries are NUL-terminated `key=value` strings, possibly padded with extra NULs.
    for raw in data.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let text = String::from_utf8_lossy(raw);
        let Some((key, value)) = text.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(value.to_string()),
            "version" => info.version = Some(value.to_string()),
            "srcversion" => info.srcversion = Some(value.to_string()),
            "vermagic" => info.vermagic = Some(value.to_string()),
            _ => {}
        }
        info.entries.push((key.to_string(), value.to_string()));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::fake_ko;

    #[test]
    fn reads_srcversion_and_friends() {
        let ko = fake_ko(&[
            ("version", "0.1.0"),
            ("parm", "ipv4_kinds:TCP option kinds"),
            ("srcversion", "0123456789ABCDEF0123456"),
            ("name", "toa"),
            ("vermagic", "6.1.0-56-amd64 SMP mod_unload"),
        ]);
        let info = parse(&ko).expect("parse");
        assert_eq!(info.srcversion.as_deref(), Some("0123456789ABCDEF0123456"));
        assert_eq!(info.name.as_deref(), Some("toa"));
        assert_eq!(info.version.as_deref(), Some("0.1.0"));
        assert_eq!(
            info.vermagic.as_deref(),
            Some("6.1.0-56-amd64 SMP mod_unload")
        );
        assert_eq!(info.entries.len(), 5);
    }

    #[test]
    fn module_without_srcversion() {
        let info = parse(&fake_ko(&[("name", "toa")])).expect("parse");
        assert_eq!(info.srcversion, None);
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(matches!(
            parse(b"hello world"),
            Err(ModinfoError::NotElf(_))
        ));
        assert!(matches!(parse(&[]), Err(ModinfoError::NotElf(_))));
    }

    #[test]
    fn truncated_elf_is_rejected() {
        let ko = fake_ko(&[("srcversion", "X")]);
        assert!(parse(&ko[..ko.len() / 2]).is_err());
    }
}
