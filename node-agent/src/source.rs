//! The module sources shipped with the agent: which files count, their digest, and a copy
//! into a private build directory (the shipped directory may be read-only).

use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};

/// Directories inside the module tree that never take part in the kernel build.
const SKIPPED_DIRS: &[&str] = &["tests", "fuzz", "out"];

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("module sources {dir}: {err} (set --module-src to the directory holding toa's Kbuild/Makefile and .c files)")]
    Io { dir: PathBuf, err: io::Error },
    #[error("module sources {0} contain no Makefile or Kbuild: this is not a kernel module source tree (check --module-src)")]
    NotAModule(PathBuf),
}

/// A module source tree: its files (relative, sorted) and their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSource {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    /// Hex SHA-256 over (path, length, content) of every file, in sorted path order.
    pub digest: String,
}

/// Files that make up the module: C sources, headers and the kbuild makefiles.
fn is_source_file(name: &str) -> bool {
    name.ends_with(".c") || name.ends_with(".h") || name == "Makefile" || name == "Kbuild"
}

fn collect(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir.join(rel))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let ty = entry.file_type()?;
        let path = rel.join(&name);
        if ty.is_dir() {
            if !SKIPPED_DIRS.contains(&name.as_str()) {
                collect(dir, &path, out)?;
            }
        } else if ty.is_file() && is_source_file(&name) && !name.ends_with(".mod.c") {
            out.push(path);
        }
    }
    Ok(())
}

impl ModuleSource {
    /// Scans `dir` and digests it.
    pub fn scan(dir: &Path) -> Result<Self, SourceError> {
        let io_err = |err| SourceError::Io {
            dir: dir.to_path_buf(),
            err,
        };
        let mut files = Vec::new();
        collect(dir, Path::new(""), &mut files).map_err(io_err)?;
        files.sort();
        if !files
            .iter()
            .any(|f| f == Path::new("Makefile") || f == Path::new("Kbuild"))
        {
            return Err(SourceError::NotAModule(dir.to_path_buf()));
        }
        let mut hasher = Sha256::new();
        for f in &files {
            let content = std::fs::read(dir.join(f)).map_err(io_err)?;
            // Length-prefixed framing: moving bytes between files changes the digest.
            hasher.update(f.to_string_lossy().as_bytes());
            hasher.update([0u8]);
            hasher.update((content.len() as u64).to_le_bytes());
            hasher.update(&content);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            digest: hex(&hasher.finalize()),
        })
    }

    /// Copies the source files into `dest` (created), preserving relative paths.
    pub fn copy_to(&self, dest: &Path) -> io::Result<()> {
        for f in &self.files {
            let target = dest.join(f);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(self.dir.join(f), &target)?;
        }
        Ok(())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path();
        std::fs::write(p.join("Makefile"), "obj-m += toa.o\n").expect("w");
        std::fs::write(p.join("toa.c"), "int x;\n").expect("w");
        std::fs::write(p.join("toa.h"), "#define X 1\n").expect("w");
        std::fs::write(p.join("README.md"), "docs\n").expect("w");
        std::fs::write(p.join("toa.o"), "obj").expect("w");
        std::fs::write(p.join(".toa.o.cmd"), "cmd").expect("w");
        std::fs::write(p.join("toa.mod.c"), "generated").expect("w");
        std::fs::create_dir_all(p.join("tests")).expect("mkdir");
        std::fs::write(p.join("tests/client.c"), "int main;\n").expect("w");
        std::fs::create_dir_all(p.join("lib")).expect("mkdir");
        std::fs::write(p.join("lib/parse.c"), "int y;\n").expect("w");
        d
    }

    #[test]
    fn selects_module_files_only() {
        let d = tree();
        let s = ModuleSource::scan(d.path()).expect("scan");
        let names: Vec<String> = s.files.iter().map(|f| f.display().to_string()).collect();
        assert_eq!(names, ["Makefile", "lib/parse.c", "toa.c", "toa.h"]);
        assert_eq!(s.digest.len(), 64);
    }

    #[test]
    fn digest_ignores_build_outputs_and_tracks_sources() {
        let d = tree();
        let a = ModuleSource::scan(d.path()).expect("scan").digest;
        std::fs::write(d.path().join("toa.ko"), "built").expect("w");
        std::fs::write(d.path().join("tests/client.c"), "changed").expect("w");
        assert_eq!(ModuleSource::scan(d.path()).expect("scan").digest, a);
        std::fs::write(d.path().join("toa.c"), "int x; ").expect("w");
        assert_ne!(ModuleSource::scan(d.path()).expect("scan").digest, a);
    }

    #[test]
    fn framing_makes_moves_visible() {
        let a = tempfile::tempdir().expect("t");
        std::fs::write(a.path().join("Makefile"), "").expect("w");
        std::fs::write(a.path().join("a.c"), "xy").expect("w");
        std::fs::write(a.path().join("b.c"), "").expect("w");
        let b = tempfile::tempdir().expect("t");
        std::fs::write(b.path().join("Makefile"), "").expect("w");
        std::fs::write(b.path().join("a.c"), "x").expect("w");
        std::fs::write(b.path().join("b.c"), "y").expect("w");
        assert_ne!(
            ModuleSource::scan(a.path()).expect("a").digest,
            ModuleSource::scan(b.path()).expect("b").digest
        );
    }

    #[test]
    fn copies_into_work_dir() {
        let d = tree();
        let s = ModuleSource::scan(d.path()).expect("scan");
        let w = tempfile::tempdir().expect("t");
        s.copy_to(&w.path().join("src")).expect("copy");
        assert!(w.path().join("src/lib/parse.c").exists());
        assert!(!w.path().join("src/toa.o").exists());
        assert_eq!(
            ModuleSource::scan(&w.path().join("src"))
                .expect("scan")
                .digest,
            s.digest
        );
    }

    #[test]
    fn errors_name_the_fix() {
        let e = ModuleSource::scan(Path::new("/nonexistent/kmod")).expect_err("missing");
        assert!(e.to_string().contains("--module-src"));
        let d = tempfile::tempdir().expect("t");
        std::fs::write(d.path().join("x.c"), "").expect("w");
        let e = ModuleSource::scan(d.path()).expect_err("not a module");
        assert!(matches!(e, SourceError::NotAModule(_)));
    }
}
