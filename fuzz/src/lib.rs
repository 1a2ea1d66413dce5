//! What the fuzz targets share: a scratch directory for the parsers that read files, the tiny
//! models whose valid files the targets corrupt, and [`corrupt`], which turns a fuzz input into
//! a damaged copy of a valid file (so that the fuzzer reaches past the first header check
//! without a seed corpus).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mft_models::{Family, LoraConfig, LoraLayout, LoraTargets, ModelConfig, ParamLayout};

/// A directory of this process for the files a target writes (in `/dev/shm` where there is
/// one: the parsers that map or `pread` files read them from memory, not the disk).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let dir = base.join(format!("mft-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the scratch directory can be made");
        dir
    })
}

/// A subdirectory of [`scratch`], created empty.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch subdirectory can be made");
    dir
}

/// A GPT-2 of 2 layers, hidden width 8, 16 tokens, 8 positions: its files are a few KB.
pub fn tiny_gpt2() -> ModelConfig {
    let mut config = ModelConfig::gpt2_with(8, 2, 2);
    config.vocab = 16;
    config.max_positions = 8;
    config
}

/// The LoRA (rank 2, `c_attn` and `c_proj`) the adapter targets load into [`tiny_gpt2`].
pub fn tiny_lora() -> LoraLayout {
    let targets = LoraTargets::from_module_names(Family::Gpt2, ["c_attn", "c_proj"])
        .expect("GPT-2 has these modules");
    let lora = LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, rslora: false, targets };
    LoraLayout::new(&tiny_gpt2(), &lora)
}

/// The bytes of [`tiny_gpt2`]'s model.safetensors (random weights), as mft exports them.
pub fn tiny_gpt2_safetensors() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let config = tiny_gpt2();
        let layout = ParamLayout::new(&config);
        let weights = mft_std::random::random_weights::<f32>(&config, 1);
        let dir = fresh_dir("valid-snapshot");
        mft_std::export::export_hf_snapshot(&dir, &config, &layout, weights.as_weights(), None)
            .expect("the tiny snapshot exports");
        std::fs::read(dir.join("model.safetensors")).expect("the export wrote it")
    })
}

/// Path of a file in this crate's repository (for the fixtures the targets read).
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative)
}

/// A damaged copy of `valid` chosen by `data`: the first byte picks how, the next four (little
/// endian) where, the rest is what is written.
/// - 0: `data[1..]` as it is (a file written from scratch);
/// - 1: the rest overwrites `valid` at the position;
/// - 2: `valid` cut at the position;
/// - 3: the rest inserted at the position;
/// - 4: a bit flipped at the position, bit number from the sixth byte.
pub fn corrupt(valid: &[u8], data: &[u8]) -> Vec<u8> {
    let Some((&how, rest)) = data.split_first() else { return valid.to_vec() };
    if how % 5 == 0 {
        return rest.to_vec();
    }
    let mut at = [0u8; 4];
    let n = rest.len().min(4);
    at[..n].copy_from_slice(&rest[..n]);
    let at = u32::from_le_bytes(at) as usize % (valid.len() + 1);
    let tail = &rest[n..];
    let mut out = valid.to_vec();
    match how % 5 {
        1 => {
            let end = (at + tail.len()).min(out.len());
            out[at..end].copy_from_slice(&tail[..end - at]);
        }
        2 => out.truncate(at),
        3 => {
            out.splice(at..at, tail.iter().copied());
        }
        _ => {
            if at < out.len() {
                out[at] ^= 1 << (tail.first().copied().unwrap_or(0) % 8);
            }
        }
    }
    out
}
