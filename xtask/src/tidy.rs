//! Conventions checked on every run: each Rust source file opens with `//!` docs saying what lives
//! there.

use std::fs;
use std::path::{Path, PathBuf};

use crate::phase::workspace_root;

/// Folders whose Rust files are checked.
const CHECKED: [&str; 8] =
    ["mft-core", "mft-kernels", "mft-models", "mft-std", "mft-fl", "benches", "xtask", "fuzz"];

/// Every `.rs` file in the checked crates must begin with a `//!` comment.
pub fn check() -> Result<(), String> {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in CHECKED {
        collect_rust_files(&root.join(dir), &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = fs::read_to_string(path).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|path| path.strip_prefix(&root).unwrap_or(path).display().to_string())
        .collect();
    println!("tidy: {} Rust files checked", files.len());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("files without `//!` module docs at the top: {}", missing.join(", ")))
    }
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                collect_rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
