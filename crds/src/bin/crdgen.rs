//! Writes crds/toapolicies.yaml and crds/toanodestates.yaml from the Rust types.
//! Usage: `cargo run -p toa-crds --bin crdgen [-- OUT_DIR]` (default: the crate directory).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let out_dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let files = match toa_crds::crd_files() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("crdgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    for f in files {
        let path = out_dir.join(f.file_name);
        if let Err(e) = std::fs::write(&path, f.yaml) {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("crdgen: wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
