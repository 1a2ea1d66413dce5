//! Fuzz training data files: JSON Lines and plain text, read with the demo's tokenizer or
//! without one (ids only), under varied sequence lengths, strides and evaluation splits
//! ([`mft_std::data::parse`]); data that is accepted is then walked in micro-batches. Bad input
//! must be an error naming the file and line, never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mft_models::Family;
use mft_std::data::{Batcher, DataFormat, DataOptions, IdsOnly, MicroBatch, TextEncoder, parse};
use mft_std::tokenizer::Tokenizer;

fn demo_tokenizer() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        Tokenizer::from_dir(&mft_fuzz::repo_file("demo/base"), Family::Gpt2)
            .expect("the demo tokenizer loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, bytes)) = data.split_first() else { return };
    let format = if how & 1 == 0 { DataFormat::Jsonl } else { DataFormat::Text };
    let encoder: &dyn TextEncoder = if how & 2 == 0 { demo_tokenizer() } else { &IdsOnly };
    let seq = [2, 3, 16, 64][usize::from(how >> 2) & 3];
    let mut options = DataOptions::new(seq, 1024);
    options.stride = [None, Some(1), Some(seq), Some(seq + 1)][usize::from(how >> 4) & 3];
    options.eval_fraction = [0.0, 0.05, 0.5, 0.99][usize::from(how >> 6)];
    options.seed = u64::from(how);
    let path = if format == DataFormat::Jsonl { "data.jsonl" } else { "data.txt" };
    let Ok(dataset) = parse(bytes, path.as_ref(), format, encoder, &options) else { return };
    assert!(!dataset.train.is_empty(), "an accepted file has examples to train on");
    for example in dataset.train.iter().chain(&dataset.eval) {
        assert!((2..=seq).contains(&example.ids.len()), "examples hold 2..=seq tokens");
        assert!(example.ids.iter().all(|&id| id < 1024), "ids lie in the vocabulary");
        assert!(!example.scored[0] && example.scored_tokens() > 0, "scored as documented");
    }
    let mut batcher = Batcher::new(dataset.train, 3, encoder.eos_id(), options.seed, true);
    let mut batch = MicroBatch::new();
    for _ in 0..4 {
        batcher.next_batch(&mut batch);
        assert_eq!(batch.input_ids.len(), batch.batch * batch.seq);
    }
});
