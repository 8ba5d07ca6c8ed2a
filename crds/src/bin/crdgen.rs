//! Writes crds/toapolicies.yaml and crds/toanodestates.yaml from the Rust
//! types, and the same files into charts/toa-operator/crds/ (the chart ships
//! copies; its check fails when they differ).
//!
//! Usage: `cargo run -p toa-crds --bin crdgen [-- OUT_DIR...]`
//! (default: crds/ and, when it exists, charts/toa-operator/crds/).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut out_dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if out_dirs.is_empty() {
        let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let chart = crate_dir.join("../charts/toa-operator/crds");
        out_dirs.push(crate_dir);
        if chart.is_dir() {
            out_dirs.push(chart);
        }
    }
    let files = match toa_crds::crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    for dir in &out_dirs {
        for f in &files {
            let path = dir.join(f.file_name);
            if let Err(e) = std::fs::write(&path, &f.yaml) {
                eprintln!("crdgen: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("crdgen: wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
}
