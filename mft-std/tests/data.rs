//! The data module: each file format's ids and scored masks, windows, truncation, the split,
//! micro-batches (targets, padding, order, resumption) and every refusal with its line.

use std::path::{Path, PathBuf};

use mft_kernels::IGNORE_INDEX;
use mft_std::data::{
    BatchPosition, Batcher, DataFormat, DataOptions, Dataset, Example, MicroBatch, TextEncoder,
    eval_batches, load, parse,
};
use mft_std::{Error, Result};

// --- A toy tokenizer ---------------------------------------------------------------------------

const BOS: u32 = 1;
const EOS: u32 = 2;
const VOCAB: usize = 259;

/// One id per byte (`3 + byte`), BOS first when special tokens are asked for; fails on "FAIL".
struct Bytes;

impl TextEncoder for Bytes {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        if text.contains("FAIL") {
            return Err(Error::Tokenizer { path: "toy".into(), problem: "cannot say FAIL".into() });
        }
        let bos = add_special_tokens.then_some(BOS);
        Ok(bos.into_iter().chain(text.bytes().map(|b| 3 + u32::from(b))).collect())
    }

    fn eos_id(&self) -> u32 {
        EOS
    }
}

/// The toy ids of `text`, without BOS.
fn t(text: &str) -> Vec<u32> {
    Bytes.encode(text, false).unwrap()
}

/// `[BOS] + t(text) + [EOS]`.
fn doc(text: &str) -> Vec<u32> {
    [vec![BOS], t(text), vec![EOS]].concat()
}

/// `scored` from a string of `x` (scored) and `.` (not).
fn mask(pattern: &str) -> Vec<bool> {
    pattern.chars().map(|c| c == 'x').collect()
}

fn ex(ids: Vec<u32>, pattern: &str) -> Example {
    Example { ids, scored: mask(pattern) }
}

// --- Files -------------------------------------------------------------------------------------

struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Files(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// In file order, nothing held out.
fn plain(seq: usize) -> DataOptions {
    DataOptions { shuffle: false, eval_fraction: 0.0, ..DataOptions::new(seq, VOCAB) }
}

fn load_str(name: &str, contents: &str, options: &DataOptions) -> Dataset {
    let files = Files::new();
    let path = files.write(name, contents);
    load(&path, &Bytes, options).unwrap()
}

/// The message of a refusal, after checking it is an `Error::Data` at `line` of `path` whose
/// text starts `path:line:` (or `path:` for line 0).
fn refusal(result: Result<Dataset>, path: &Path, line: usize) -> String {
    let err = match result {
        Err(e) => e,
        Ok(d) => panic!("expected a refusal at line {line}, got {:?}", d.train),
    };
    let text = err.to_string();
    match &err {
        Error::Data { path: p, line: l, .. } => {
            assert_eq!((p.as_path(), *l), (path, line), "{text}");
        }
        other => panic!("expected a Data error, got {other:?}"),
    }
    let prefix = match line {
        0 => format!("{}: ", path.display()),
        n => format!("{}:{n}: ", path.display()),
    };
    assert!(text.starts_with(&prefix), "{text:?} does not start with {prefix:?}");
    text
}

// --- Plain text --------------------------------------------------------------------------------

#[test]
fn plain_text_is_paragraphs_in_one_stream_cut_into_windows() {
    // Two paragraphs (the blank line between holds spaces); CRLF line ends.
    let data = load_str("notes.txt", "ab\r\ncd\r\n  \r\n\r\nxy\r\n", &plain(4));
    assert_eq!(data.format, DataFormat::Text);
    assert!(data.eval.is_empty());
    let stream = [doc("ab\ncd"), doc("xy")].concat();
    assert_eq!(stream.len(), 11);
    let want = vec![
        ex(stream[0..4].to_vec(), ".xxx"),
        ex(stream[4..8].to_vec(), ".xxx"),
        // The final partial window of 3 tokens is kept.
        ex(stream[8..11].to_vec(), ".xx"),
    ];
    assert_eq!(data.train, want);
}

#[test]
fn plain_text_drops_a_last_window_of_one_token() {
    // [BOS a..g EOS] = 9 tokens: two windows of 4, and a single token left over.
    let data = load_str("a.txt", "abcdefg\n", &plain(4));
    let stream = doc("abcdefg");
    assert_eq!(
        data.train,
        vec![ex(stream[0..4].to_vec(), ".xxx"), ex(stream[4..8].to_vec(), ".xxx")]
    );
}

#[test]
fn strided_windows_score_only_what_no_earlier_window_scored() {
    let stream = doc("abcdefg"); // 9 tokens
    let options = DataOptions { stride: Some(2), ..plain(4) };
    let data = load_str("a.txt", "abcdefg", &options);
    // As Hugging Face's strided perplexity: windows at 0, 2, 4, 6; the last reaches the end.
    let want = vec![
        ex(stream[0..4].to_vec(), ".xxx"),
        ex(stream[2..6].to_vec(), "..xx"),
        ex(stream[4..8].to_vec(), "..xx"),
        ex(stream[6..9].to_vec(), "..x"),
    ];
    assert_eq!(data.train, want);

    // Stride 1: every window after the first scores only its last token.
    let options = DataOptions { stride: Some(1), ..plain(3) };
    let data = load_str("a.txt", "abc", &options); // [BOS a b c EOS]
    let stream = doc("abc");
    let want = vec![
        ex(stream[0..3].to_vec(), ".xx"),
        ex(stream[1..4].to_vec(), "..x"),
        ex(stream[2..5].to_vec(), "..x"),
    ];
    assert_eq!(data.train, want);

    // A stride equal to seq is the default.
    assert_eq!(DataOptions::new(4, VOCAB).stride, None);
    let a = load_str("a.txt", "abcdefghij\n\nkl", &DataOptions { stride: Some(4), ..plain(4) });
    let b = load_str("a.txt", "abcdefghij\n\nkl", &plain(4));
    assert_eq!(a.train, b.train);
    assert_eq!(a.train.len(), 4);
}

#[test]
fn stride_outside_one_to_seq_is_refused() {
    let files = Files::new();
    let path = files.write("a.txt", "abcdef");
    for stride in [0, 5] {
        let options = DataOptions { stride: Some(stride), ..plain(4) };
        let msg = refusal(load(&path, &Bytes, &options), &path, 0);
        assert!(msg.contains(&format!("stride {stride}")), "{msg}");
    }
}

// --- JSON Lines --------------------------------------------------------------------------------

#[test]
fn jsonl_shapes_give_their_ids_and_scored_tokens() {
    let lines = [
        r#"{"text": "hi"}"#,
        r#"{"prompt": "Q?", "completion": "A!"}"#,
        r#"{"prompt": "", "completion": "x"}"#,
        r#"{"ids": [5, 6, 7]}"#,
        r#"{"ids": [5, 6, 7, 8], "mask": [1, 0, true, 1]}"#,
        r#"{"ids": [9, 10, 11], "mask": [false, true, false]}"#,
    ];
    let data = load_str("d.jsonl", &lines.join("\n"), &plain(64));
    assert_eq!(data.format, DataFormat::Jsonl);
    let want = vec![
        ex(doc("hi"), ".xxx"),
        // The prompt (with its BOS) is not scored; the completion and the EOS are.
        ex([vec![BOS], t("Q?"), t("A!"), vec![EOS]].concat(), "...xxx"),
        ex(vec![BOS, t("x")[0], EOS], ".xx"),
        // Bare ids: no EOS added, every next-token prediction scored.
        ex(vec![5, 6, 7], ".xx"),
        // mask[0] is forced off.
        ex(vec![5, 6, 7, 8], "..xx"),
        ex(vec![9, 10, 11], ".x."),
    ];
    assert_eq!(data.train, want);
}

#[test]
fn jsonl_lines_are_truncated_only_when_longer_than_seq() {
    let lines = [
        r#"{"text": "abcdef"}"#,
        r#"{"ids": [5, 6]}"#,
        r#"{"prompt": "a", "completion": "bcdefg"}"#,
        r#"{"ids": [5, 6, 7, 8, 9], "mask": [0, 0, 0, 1, 1]}"#,
    ];
    let data = load_str("d.jsonl", &lines.join("\n"), &plain(4));
    let want = vec![
        ex(doc("abcdef")[..4].to_vec(), ".xxx"),
        // Lines are never joined: a short example stays short.
        ex(vec![5, 6], ".x"),
        ex([vec![BOS], t("a"), t("bc")].concat(), "..xx"),
        ex(vec![5, 6, 7, 8], "...x"),
    ];
    assert_eq!(data.train, want);

    // A line that loses every scored token to truncation has nothing left to learn.
    let files = Files::new();
    let path = files.write(
        "e.jsonl",
        format!("{}\n{}\n", lines[0], r#"{"prompt": "abcd", "completion": "e"}"#),
    );
    let msg = refusal(load(&path, &Bytes, &plain(4)), &path, 2);
    assert!(msg.contains("no token is scored"), "{msg}");
}

#[test]
fn jsonl_ignores_extra_keys_blank_lines_and_crlf_and_reads_json_extension() {
    let contents =
        "\r\n{\"text\": \"a\", \"id\": 3, \"meta\": {\"x\": [1]}}\r\n   \n\n{\"ids\": [7, 8]}";
    let data = load_str("d.json", contents, &plain(16));
    assert_eq!(data.format, DataFormat::Jsonl);
    assert_eq!(data.train, vec![ex(doc("a"), ".xx"), ex(vec![7, 8], ".x")]);
    assert_eq!(DataFormat::from_path(Path::new("x.JSONL")), DataFormat::Jsonl);
    assert_eq!(DataFormat::from_path(Path::new("x.md")), DataFormat::Text);
    assert_eq!(DataFormat::from_path(Path::new("jsonl")), DataFormat::Text);
}

// --- The split ---------------------------------------------------------------------------------

/// `n` examples `{"ids": [10 + i, 3]}`, one per line.
fn numbered(n: u32) -> String {
    (0..n).map(|i| format!("{{\"ids\": [{}, 3]}}\n", 10 + i)).collect()
}

fn firsts(examples: &[Example]) -> Vec<u32> {
    examples.iter().map(|e| e.ids[0]).collect()
}

#[test]
fn split_holds_out_the_last_examples_after_a_seeded_shuffle() {
    let files = Files::new();
    let path = files.write("d.jsonl", numbered(20));
    let split = |shuffle: bool, seed: u64, eval_fraction: f64| {
        let options = DataOptions { shuffle, seed, eval_fraction, ..DataOptions::new(8, VOCAB) };
        let d = load(&path, &Bytes, &options).unwrap();
        (firsts(&d.train), firsts(&d.eval))
    };

    // In file order: the last round(20 × 0.1) = 2 are held out.
    let (train, eval) = split(false, 0, 0.1);
    assert_eq!(train, (10..28).collect::<Vec<_>>());
    assert_eq!(eval, [28, 29]);
    // At least one is held out; none with a fraction of 0; 20 × 0.05 = 1; 20 × 0.125 = 2.5 → 3.
    assert_eq!(split(false, 0, 0.01).1, [29]);
    assert_eq!(split(false, 0, 0.0).1, Vec::<u32>::new());
    assert_eq!(split(false, 0, 0.0).0.len(), 20);
    assert_eq!(DataOptions::new(8, VOCAB).eval_fraction, 0.05);
    assert_eq!(split(false, 0, 0.05).1.len(), 1);
    assert_eq!(split(false, 0, 0.125).1.len(), 3);

    // Shuffled: the same seed gives the same split, another seed another; nothing lost.
    let a = split(true, 7, 0.25);
    assert_eq!(a, split(true, 7, 0.25));
    assert_ne!(a, split(true, 8, 0.25));
    assert_ne!(a.0, (10..25).collect::<Vec<_>>());
    let mut all = [a.0.clone(), a.1.clone()].concat();
    all.sort_unstable();
    assert_eq!(all, (10..30).collect::<Vec<_>>());
    assert_eq!(a.1.len(), 5);
}

#[test]
fn split_that_leaves_nothing_to_train_on_is_refused() {
    let files = Files::new();
    let path = files.write("d.jsonl", numbered(1));
    let options = DataOptions { eval_fraction: 0.05, ..plain(8) };
    let msg = refusal(load(&path, &Bytes, &options), &path, 0);
    assert!(msg.contains("leaves none to train on"), "{msg}");
    let path = files.write("e.jsonl", numbered(2));
    let options = DataOptions { eval_fraction: 0.75, ..plain(8) };
    refusal(load(&path, &Bytes, &options), &path, 0);
    let options = DataOptions { eval_fraction: 1.0, ..plain(8) };
    let msg = refusal(load(&path, &Bytes, &options), &path, 0);
    assert!(msg.contains("eval_fraction"), "{msg}");
    // Two examples at 0.05 hold out one and train on the other.
    let options = DataOptions { eval_fraction: 0.05, ..plain(8) };
    let d = load(&path, &Bytes, &options).unwrap();
    assert_eq!((d.train.len(), d.eval.len()), (1, 1));
}

// --- Micro-batches -----------------------------------------------------------------------------

#[test]
fn micro_batch_targets_are_the_next_scored_token_and_padding_is_ignored() {
    let a = ex(vec![5, 6, 7], ".xx");
    let b = ex(vec![8, 9], ".x");
    let c = ex(vec![10, 11, 12, 13], "..xx");
    let mut mb = MicroBatch::new();
    mb.fill([&a, &b, &c], EOS);
    let i = IGNORE_INDEX;
    assert_eq!((mb.batch, mb.seq), (3, 4));
    assert_eq!(mb.input_ids, [5, 6, 7, EOS, 8, 9, EOS, EOS, 10, 11, 12, 13]);
    assert_eq!(mb.targets, [6, 7, i, i, 9, i, i, i, i, 12, 13, i]);
    assert_eq!(mb.scored_tokens, 5);

    // The same as Hugging Face labels (ids where scored, -100 elsewhere) shifted by the model.
    let labels: Vec<i32> = [&a, &b, &c]
        .iter()
        .flat_map(|e| {
            let row = e.ids.iter().zip(&e.scored).map(|(&id, &s)| if s { id as i32 } else { i });
            row.chain(std::iter::repeat(i)).take(4)
        })
        .collect();
    let mut shifted = vec![0; labels.len()];
    mft_models::shift_labels(&labels, 4, &mut shifted);
    assert_eq!(mb.targets, shifted);
    let batch = mb.as_batch();
    assert_eq!((batch.batch, batch.seq, batch.input_ids.len()), (3, 4, 12));

    // Refilling reuses the buffers and forgets the previous batch.
    mb.fill([&b], 0);
    assert_eq!((mb.batch, mb.seq, mb.scored_tokens), (1, 2, 1));
    assert_eq!(mb.input_ids, [8, 9]);
    assert_eq!(mb.targets, [9, i]);
}

/// Ten examples, each known by its first id (100 + i), of lengths 2..=4.
fn ten() -> Vec<Example> {
    (0..10u32)
        .map(|i| {
            let len = 2 + (i as usize % 3);
            ex((0..len as u32).map(|k| 100 + i + 50 * k).collect(), &".xxx"[..len])
        })
        .collect()
}

/// The first ids of the rows of each of the next `n` micro-batches.
fn walk(batcher: &mut Batcher, n: usize) -> Vec<Vec<u32>> {
    let mut mb = MicroBatch::new();
    (0..n)
        .map(|_| {
            batcher.next_batch(&mut mb);
            mb.input_ids.chunks(mb.seq).map(|row| row[0]).collect()
        })
        .collect()
}

#[test]
fn batcher_order_is_a_seeded_permutation_per_epoch_and_never_spans_epochs() {
    let mut batcher = Batcher::new(ten(), 3, EOS, 1, true);
    assert_eq!(batcher.batches_per_epoch(), 4);
    let epochs: Vec<Vec<u32>> = (0..3).map(|_| walk(&mut batcher, 4).concat()).collect();
    for (e, order) in epochs.iter().enumerate() {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (100..110).collect::<Vec<_>>(), "epoch {e} visits each example once");
    }
    assert_ne!(epochs[0], epochs[1]);
    assert_ne!(epochs[1], epochs[2]);
    assert_ne!(epochs[0], (100..110).collect::<Vec<_>>());
    assert_eq!(batcher.position(), BatchPosition { epoch: 3, index: 0 });

    // Deterministic by seed, different across seeds.
    let again: Vec<Vec<u32>> = {
        let mut b = Batcher::new(ten(), 3, EOS, 1, true);
        (0..3).map(|_| walk(&mut b, 4).concat()).collect()
    };
    assert_eq!(epochs, again);
    let other = walk(&mut Batcher::new(ten(), 3, EOS, 2, true), 4).concat();
    assert_ne!(other, epochs[0]);

    // Sizes 3, 3, 3, 1: the last micro-batch of an epoch holds the rest.
    let mut b = Batcher::new(ten(), 3, EOS, 1, true);
    let sizes: Vec<usize> = walk(&mut b, 8).iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 3, 1, 3, 3, 3, 1]);

    // Without shuffling every epoch is the given order.
    let mut b = Batcher::new(ten(), 4, EOS, 1, false);
    let want: Vec<Vec<u32>> = vec![(100..104).collect(), (104..108).collect(), vec![108, 109]];
    assert_eq!(walk(&mut b, 3), want);
    assert_eq!(walk(&mut b, 3), want);
}

#[test]
fn batcher_resumes_from_a_saved_position() {
    let mut first = Batcher::new(ten(), 3, EOS, 9, true);
    walk(&mut first, 6); // into the second epoch
    let saved = first.position();
    assert_eq!(saved, BatchPosition { epoch: 1, index: 6 });
    let json = serde_json::to_string(&saved).unwrap();
    let restored: BatchPosition = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, saved);

    let mut later = Batcher::new(ten(), 3, EOS, 9, true);
    later.resume(restored).unwrap();
    assert_eq!(later.position(), saved);
    // Full micro-batches, not just first ids, must match.
    let (mut x, mut y) = (MicroBatch::new(), MicroBatch::new());
    for _ in 0..9 {
        first.next_batch(&mut x);
        later.next_batch(&mut y);
        assert_eq!(x, y);
        assert_eq!(first.position(), later.position());
    }

    // The end of an epoch is the start of the next.
    let mut end = Batcher::new(ten(), 3, EOS, 9, true);
    end.resume(BatchPosition { epoch: 4, index: 10 }).unwrap();
    assert_eq!(end.position(), BatchPosition { epoch: 5, index: 0 });
    let mut start = Batcher::new(ten(), 3, EOS, 9, true);
    start.resume(BatchPosition { epoch: 5, index: 0 }).unwrap();
    assert_eq!(walk(&mut end, 5), walk(&mut start, 5));

    // A position past the end of an epoch is refused.
    let err = later.resume(BatchPosition { epoch: 0, index: 11 }).unwrap_err();
    assert!(err.to_string().contains("epoch of 10 examples"), "{err}");
}

#[test]
fn eval_batches_walk_the_examples_in_order() {
    let examples = ten();
    let batches: Vec<MicroBatch> = eval_batches(&examples, 4, EOS).collect();
    let rows: Vec<Vec<u32>> =
        batches.iter().map(|mb| mb.input_ids.chunks(mb.seq).map(|r| r[0]).collect()).collect();
    assert_eq!(rows, vec![(100..104).collect::<Vec<_>>(), (104..108).collect(), vec![108, 109]]);
    let scored: usize = batches.iter().map(|mb| mb.scored_tokens).sum();
    assert_eq!(scored, examples.iter().map(Example::scored_tokens).sum::<usize>());
}

// --- Refusals ----------------------------------------------------------------------------------

/// Loads a JSONL file whose first line is valid and whose second is `bad`; checks the refusal
/// names line 2 and returns its message.
fn bad_second_line(bad: &[u8], options: &DataOptions) -> String {
    let files = Files::new();
    let contents = [&br#"{"text": "ok"}"#[..], b"\n", bad, b"\n"].concat();
    let path = files.write("data.jsonl", contents);
    refusal(load(&path, &Bytes, options), &path, 2)
}

#[test]
fn every_bad_jsonl_line_is_refused_with_its_line_number() {
    let o = plain(64);
    let cases: &[(&[u8], &str)] = &[
        (b"{\"text\": \"\xff\"}", "not valid UTF-8"),
        (br#"{"text": "a""#, "invalid JSON"),
        (b"[1, 2]", "expected a JSON object, found an array"),
        (b"\"text\"", "expected a JSON object, found a string"),
        (br#"{"text": 5}"#, "\"text\" must be a string, found a number"),
        (br#"{"prompt": ["a"], "completion": "b"}"#, "\"prompt\" must be a string"),
        (br#"{"prompt": "a", "completion": null}"#, "\"completion\" must be a string"),
        (br#"{"prompt": "a"}"#, "\"completion\" is missing"),
        (br#"{"mask": [1, 1]}"#, "\"mask\" without \"ids\""),
        (br#"{"ids": "5 6"}"#, "\"ids\" must be an array"),
        (br#"{"ids": [5, -1]}"#, "\"ids\"[1] must be a non-negative integer"),
        (br#"{"ids": [5, 6.5]}"#, "\"ids\"[1] must be a non-negative integer"),
        (br#"{"ids": [5, 6], "mask": [1, 2]}"#, "\"mask\"[1] must be 0, 1, true or false"),
        (br#"{"ids": [5, 6], "mask": 1}"#, "\"mask\" must be an array"),
        (br#"{"text": ""}"#, "\"text\" is empty"),
        (br#"{"prompt": "q", "completion": ""}"#, "\"completion\" is empty"),
        (br#"{"ids": [5, 300]}"#, "\"ids\"[1] = 300 is outside the vocabulary of 259"),
        (br#"{"ids": [5, 6, 7], "mask": [0, 1]}"#, "\"mask\" has 2 entries but \"ids\" has 3"),
        (br#"{"ids": [5]}"#, "1 token(s): an example needs at least 2"),
        (br#"{"ids": []}"#, "0 token(s)"),
        (br#"{"ids": [5, 6], "mask": [1, 0]}"#, "no token is scored"),
        (br#"{"foo": 1}"#, "found keys [\"foo\"]"),
        (br#"{"text": "a", "ids": [1, 2]}"#, "mixes several shapes"),
        (br#"{"text": "a", "completion": "b"}"#, "mixes several shapes"),
        (br#"{"text": "say FAIL"}"#, "the tokenizer failed: toy: cannot say FAIL"),
    ];
    for (bad, want) in cases {
        let msg = bad_second_line(bad, &o);
        assert!(msg.contains(want), "{} → {msg:?} lacks {want:?}", String::from_utf8_lossy(bad));
    }
    // Ids from the tokenizer are checked against the vocabulary too ('z' is 3 + 122 = 125).
    let msg = bad_second_line(br#"{"text": "z"}"#, &DataOptions { vocab: 120, ..plain(64) });
    assert!(msg.contains("id 125, outside the vocabulary of 120"), "{msg}");
}

#[test]
fn bad_plain_text_is_refused_at_its_line() {
    let files = Files::new();
    // The first bad byte is on line 3.
    let path = files.write("a.txt", b"ab\ncd\nx\xffy\nz\n");
    let msg = refusal(load(&path, &Bytes, &plain(8)), &path, 3);
    assert!(msg.contains("not valid UTF-8"), "{msg}");
    // An out-of-vocabulary id is reported at its paragraph's first line.
    let path = files.write("b.txt", "ok\n\nfine\nz\n");
    let msg = refusal(load(&path, &Bytes, &DataOptions { vocab: 120, ..plain(8) }), &path, 3);
    assert!(msg.contains("125"), "{msg}");
    let path = files.write("c.txt", "ok\n\n\nFAIL\n");
    let msg = refusal(load(&path, &Bytes, &plain(8)), &path, 4);
    assert!(msg.contains("cannot say FAIL"), "{msg}");
}

#[test]
fn files_without_examples_and_bad_options_are_refused_as_a_whole() {
    let files = Files::new();
    for name in ["e.jsonl", "e.txt"] {
        let path = files.write(name, "");
        let msg = refusal(load(&path, &Bytes, &plain(8)), &path, 0);
        assert!(msg.ends_with("the file is empty"), "{msg}");
    }
    for name in ["b.jsonl", "b.txt"] {
        let path = files.write(name, "\n  \n\t\r\n");
        let msg = refusal(load(&path, &Bytes, &plain(8)), &path, 0);
        assert!(msg.contains("no examples"), "{msg}");
    }
    let path = files.write("ok.txt", "abc");
    let msg = refusal(load(&path, &Bytes, &plain(1)), &path, 0);
    assert!(msg.contains("sequence length of 1"), "{msg}");
    let msg = refusal(load(&path, &Bytes, &DataOptions { vocab: 2, ..plain(8) }), &path, 0);
    assert!(msg.contains("end-of-sequence id 2"), "{msg}");

    let missing = files.0.path().join("missing.jsonl");
    match load(&missing, &Bytes, &plain(8)) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an Io error, got {other:?}"),
    }
}

/// `parse` (the bytes entry point the fuzz target drives) is what `load` does after reading the
/// file, refusals included.
#[test]
fn parse_reads_bytes_as_load_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let options = DataOptions { eval_fraction: 0.0, ..DataOptions::new(8, VOCAB) };
    for (name, text) in [
        ("a.jsonl", "{\"text\": \"hello\"}\n{\"ids\": [3, 4, 5]}\n"),
        ("b.txt", "one paragraph\n\nanother one\n"),
        ("c.jsonl", "{\"text\": \"fine\"}\n{\"ids\": [9999]}\n"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let parsed = parse(text.as_bytes(), &path, DataFormat::from_path(&path), &Bytes, &options);
        match (load(&path, &Bytes, &options), parsed) {
            (Ok(loaded), Ok(parsed)) => assert_eq!(loaded, parsed),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("{name}: load gave {a:?}, parse {b:?}"),
        }
    }
}
