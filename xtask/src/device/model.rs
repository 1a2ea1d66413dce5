//! `--model DIR` on a device: the checkpoint's files (`config.json` and its safetensors) are
//! pushed once to `/data/local/tmp/mft/models/<content hash>/` and reused by every later run
//! with the same content, whatever the directory is called on this machine. A directory is
//! complete once its `.complete` marker is there, written after the last file arrived, so an
//! interrupted push is pushed again.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::adb::Adb;

/// The files of a checkpoint directory the benchmark reads, sorted by name.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let listing = fs::read_dir(dir).map_err(|e| format!("--model {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = listing
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            p.is_file()
                && (name == "config.json"
                    || name.ends_with(".safetensors")
                    || name == "model.safetensors.index.json")
        })
        .collect();
    files.sort();
    if !files.iter().any(|p| p.ends_with("config.json")) {
        return Err(format!("--model {}: no config.json there", dir.display()));
    }
    if !files.iter().any(|p| p.extension().is_some_and(|e| e == "safetensors")) {
        return Err(format!("--model {}: no .safetensors file there", dir.display()));
    }
    Ok(files)
}

/// 64-bit FNV-1a, continued from `state`.
fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state
}

/// A cache key for `files`: two FNV-1a hashes (different starting states) over each file's
/// name, length and bytes, as 32 hex digits. Not a cryptographic hash: it names content, it
/// does not defend against someone crafting a collision.
pub fn content_hash(files: &[PathBuf]) -> Result<String, String> {
    let (mut a, mut b) = (0xcbf2_9ce4_8422_2325_u64, 0x6c62_272e_07bb_0142_u64);
    let mut buffer = vec![0u8; 1 << 20];
    for path in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
        for part in [name.as_bytes(), &len.to_le_bytes()] {
            a = fnv1a(a, part);
            b = fnv1a(b, part);
        }
        loop {
            let n = file.read(&mut buffer).map_err(|e| format!("{}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            a = fnv1a(a, &buffer[..n]);
            b = fnv1a(b, &buffer[..n]);
        }
    }
    Ok(format!("{a:016x}{b:016x}"))
}

/// Puts the checkpoint in `dir` on the device under `models_dir` unless it is there already;
/// the directory on the device, and whether it was pushed now.
pub fn push_cached(adb: &Adb, dir: &Path, models_dir: &str) -> Result<(String, bool), String> {
    let files = files(dir)?;
    let hash = content_hash(&files)?;
    let remote = format!("{models_dir}/{hash}");
    let marker = format!("{remote}/.complete");
    let present =
        adb.shell(&format!("if [ -f {marker} ]; then echo present; else echo absent; fi"))?;
    if present.trim() == "present" {
        eprintln!("xtask: {} is on the device already ({remote})", dir.display());
        return Ok((remote, false));
    }
    eprintln!("xtask: pushing {} ({} files) to {remote}", dir.display(), files.len());
    adb.shell(&format!("rm -rf {remote} && mkdir -p {remote}"))?;
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        adb.push(file, &format!("{remote}/{name}"))?;
    }
    adb.shell(&format!("touch {marker}"))?;
    Ok((remote, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_the_content_not_the_place() {
        let root = std::env::temp_dir().join(format!("xtask-model-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (one, two) = (root.join("one"), root.join("two"));
        for dir in [&one, &two] {
            fs::create_dir_all(dir).unwrap();
            fs::write(dir.join("config.json"), "{}").unwrap();
            fs::write(dir.join("model.safetensors"), [1u8, 2, 3]).unwrap();
            fs::write(dir.join("tokenizer.json"), "not pushed").unwrap();
        }
        fs::write(two.join("tokenizer.json"), "different, and still not pushed").unwrap();
        let hash = |dir: &Path| content_hash(&files(dir).unwrap()).unwrap();
        assert_eq!(files(&one).unwrap().len(), 2);
        assert_eq!(hash(&one), hash(&two));
        assert_eq!(hash(&one).len(), 32);
        fs::write(two.join("model.safetensors"), [1u8, 2, 4]).unwrap();
        assert_ne!(hash(&one), hash(&two));
        fs::remove_file(two.join("config.json")).unwrap();
        assert!(files(&two).unwrap_err().contains("no config.json"));
        fs::remove_dir_all(&root).unwrap();
    }
}
