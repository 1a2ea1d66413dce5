//! Fuzz the tokenizers: loading a tokenizer.json (a damaged copy of one of the three families'
//! fixtures, see `mft_fuzz::corrupt`) for each family, and encoding arbitrary bytes (as text,
//! with and without special tokens) and decoding arbitrary ids with the three fixtures. Bad
//! input must be an error naming the file, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mft_models::Family;
use mft_std::tokenizer::Tokenizer;

/// The fixture directories: the demo's GPT-2 BPE, and the small Qwen 2.5 and Gemma 3 ones.
const DIRS: [(&str, Family); 3] = [
    ("demo/base", Family::Gpt2),
    ("mft-std/tests/fixtures/tokenizers/qwen2", Family::Qwen2),
    ("mft-std/tests/fixtures/tokenizers/gemma3", Family::Gemma3),
];

struct Fixture {
    tokenizer: Tokenizer,
    json: Vec<u8>,
    family: Family,
    path: PathBuf,
}

fn fixtures() -> &'static [Fixture] {
    static FIXTURES: OnceLock<Vec<Fixture>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        DIRS.iter()
            .map(|&(dir, family)| {
                let dir = mft_fuzz::repo_file(dir);
                let tokenizer = Tokenizer::from_dir(&dir, family).expect("the fixture loads");
                let path = dir.join("tokenizer.json");
                let json = std::fs::read(&path).expect("the fixture is there");
                Fixture { tokenizer, json, family, path }
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else { return };
    let fixture = &fixtures()[usize::from(how >> 1) % DIRS.len()];
    if how & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        for special in [false, true] {
            let ids = fixture.tokenizer.encode(&text, special).expect("any text encodes");
            fixture.tokenizer.decode(&ids, special).expect("encoded ids decode");
        }
        let ids: Vec<u32> =
            rest.chunks_exact(2).map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))).collect();
        let _ = fixture.tokenizer.decode(&ids, how & 64 != 0);
    } else {
        let json = mft_fuzz::corrupt(&fixture.json, rest);
        if let Ok(tokenizer) = Tokenizer::from_json_bytes(&json, &fixture.path, fixture.family) {
            for text in ["a", "Hello, world!", " \u{2581}x<eos>", "<|endoftext|>\n"] {
                if let Ok(ids) = tokenizer.encode(text, true) {
                    let _ = tokenizer.decode(&ids, false);
                }
            }
        }
    }
});
