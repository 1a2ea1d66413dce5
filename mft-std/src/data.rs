//! Training data: reading a data file into tokenized examples, holding out an evaluation split,
//! and walking the examples in micro-batches that the models train on.
//!
//! # Examples and what is scored
//!
//! An [`Example`] is a token sequence and, per token, whether it is a prediction target: in
//! Hugging Face terms `labels[i] = ids[i]` when `scored[i]`, else `-100`. The first token is never
//! scored (nothing predicts it). A [`MicroBatch`] turns this into the per-position targets the
//! models use: `targets[t] = ids[t + 1]` when `scored[t + 1]`, else [`IGNORE_INDEX`].
//!
//! # File formats
//!
//! The extension decides ([`DataFormat::from_path`]): `.jsonl` and `.json` are JSON Lines, every
//! other file is plain text. A UTF-8 byte-order mark at the start of the file is skipped.
//!
//! **Plain text.** Documents are paragraphs: runs of lines separated by blank (empty or
//! whitespace-only) lines, joined with `\n`. Each document is tokenized with the tokenizer's
//! special tokens (`encode(doc, true)`) and followed by the end-of-sequence id; all documents are
//! concatenated into one stream that is cut into windows of `seq` tokens, one starting every
//! `stride` tokens (`stride` defaults to `seq`, and must lie in `1..=seq`). As in Hugging Face's
//! strided perplexity, the windows stop at the first one that reaches the end of the stream, and a
//! window scores only the tokens no earlier window scored: all but the first token of the first
//! window, the last `min(stride, …)` new ones of each later window. With `stride == seq` the windows
//! do not overlap and each scores all its tokens but the first. A final window shorter than `seq`
//! is kept when it holds at least 2 tokens.
//!
//! **JSON Lines.** Every non-blank line is one example, never joined with other lines, and cut to
//! its first `seq` tokens only when it is longer. A line is an object of exactly one of these
//! shapes (other keys are ignored):
//!
//! | object | ids | scored |
//! |---|---|---|
//! | `{"text": s}` | `encode(s, true)` + EOS | every token but the first |
//! | `{"prompt": p, "completion": c}` | `encode(p, true)` + `encode(c, false)` + EOS | the completion's tokens and the EOS |
//! | `{"ids": [..]}` | the ids as given (no EOS added) | every token but the first |
//! | `{"ids": [..], "mask": [..]}` | the ids as given | where `mask` is 1 (or `true`), the first token never |
//!
//! # Refusals
//!
//! Every problem is an [`Error::Data`] naming the file and the 1-based line (0 for the file as a
//! whole): a line that is not UTF-8 (in plain text, the line of the first bad byte), not JSON, not
//! an object, of no shape or of several, with fields of the wrong type, an empty `text` or
//! `completion`, an id outside the vocabulary, a `mask` whose length differs from `ids`, an example
//! of fewer than 2 tokens or with no scored token (nothing to learn); a file with no examples; an
//! evaluation split that would leave nothing to train on. A file that cannot be read is an
//! [`Error::Io`].
//!
//! # Splits and order
//!
//! [`load`] shuffles the examples with a permutation drawn from the seed (or keeps the file order),
//! then holds out the last `max(1, round(n × eval_fraction))` for evaluation (none when
//! `eval_fraction` is 0). A [`Batcher`] walks the training examples epoch after epoch, each epoch
//! in its own seeded order, in micro-batches that never span two epochs; its [`BatchPosition`] is
//! saved with a checkpoint and [`Batcher::resume`] continues exactly where it left off.
//! [`eval_batches`] walks the evaluation examples in order.

use std::fmt;
use std::path::{Path, PathBuf};

use mft_kernels::IGNORE_INDEX;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// What the data module needs of a tokenizer.
pub trait TextEncoder {
    /// Ids of `text`, as Hugging Face's `tokenizer(text, add_special_tokens=...)` gives them.
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>>;
    /// The end-of-sequence id.
    fn eos_id(&self) -> u32;
}

/// The encoder of a model without a tokenizer (random weights without a tokenizer.json): only
/// `{"ids"}` lines can be read; text is refused. Its end-of-sequence (padding) id is 0.
pub struct IdsOnly;

impl TextEncoder for IdsOnly {
    fn encode(&self, _: &str, _: bool) -> Result<Vec<u32>> {
        Err(crate::Error::Training {
            problem: "this model has no tokenizer (no tokenizer.json): give JSONL lines of \
                      {\"ids\": [...]}"
                .into(),
        })
    }

    fn eos_id(&self) -> u32 {
        0
    }
}

/// One training (or evaluation) sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids, at most [`DataOptions::seq`] of them and at least 2.
    pub ids: Vec<u32>,
    /// Per token: whether it is a prediction target (Hugging Face label `ids[i]`) or not (label
    /// `-100`). Same length as `ids`; `scored[0]` is always false.
    pub scored: Vec<bool>,
}

impl Example {
    /// The number of scored tokens (targets this example contributes to the loss).
    pub fn scored_tokens(&self) -> usize {
        self.scored.iter().filter(|&&s| s).count()
    }
}

/// How a data file is read, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// Paragraphs of text, concatenated and cut into windows.
    Text,
    /// One JSON object per line, one example each.
    Jsonl,
}

impl DataFormat {
    /// [`DataFormat::Jsonl`] for `.jsonl` and `.json` (in any case), [`DataFormat::Text`] for
    /// anything else.
    pub fn from_path(path: &Path) -> Self {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext.eq_ignore_ascii_case("jsonl") || ext.eq_ignore_ascii_case("json") {
            DataFormat::Jsonl
        } else {
            DataFormat::Text
        }
    }
}

/// How [`load`] tokenizes, cuts and splits a data file.
#[derive(Debug, Clone, PartialEq)]
pub struct DataOptions {
    /// The longest example, in tokens (the window length for plain text). At least 2.
    pub seq: usize,
    /// Plain text only: a window starts every `stride` tokens (`1..=seq`); `None` means `seq`.
    pub stride: Option<usize>,
    /// The model's vocabulary size: every id must be below it.
    pub vocab: usize,
    /// Seed of the permutation that shuffles the examples before the split.
    pub seed: u64,
    /// Shuffle before splitting (otherwise the evaluation examples are the file's last ones).
    pub shuffle: bool,
    /// The share of examples held out for evaluation, in `[0, 1)`.
    pub eval_fraction: f64,
}

impl DataOptions {
    /// Options for `seq`-token examples over a `vocab`-token vocabulary: `stride` = `seq`, seed 0,
    /// shuffled, 5 % held out for evaluation.
    pub fn new(seq: usize, vocab: usize) -> Self {
        DataOptions { seq, stride: None, vocab, seed: 0, shuffle: true, eval_fraction: 0.05 }
    }
}

/// A loaded data file: its examples, split into training and evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The examples to train on (never empty).
    pub train: Vec<Example>,
    /// The examples held out for evaluation.
    pub eval: Vec<Example>,
    /// The file they came from.
    pub source: PathBuf,
    /// How it was read.
    pub format: DataFormat,
}

/// Reads, tokenizes and splits the data file at `path` (see the [module docs](self) for the
/// formats, what is scored and what is refused).
pub fn load(path: &Path, encoder: &dyn TextEncoder, options: &DataOptions) -> Result<Dataset> {
    check_encoder_and_options(path, encoder, options)?;
    let bytes =
        std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse(&bytes, path, DataFormat::from_path(path), encoder, options)
}

/// [`load`] on the bytes of a data file read as `format`; `path` is the file they came from,
/// named in errors.
pub fn parse(
    bytes: &[u8],
    path: &Path,
    format: DataFormat,
    encoder: &dyn TextEncoder,
    options: &DataOptions,
) -> Result<Dataset> {
    let bad =
        |line: usize, problem: String| Error::Data { path: path.to_path_buf(), line, problem };
    let eos = check_encoder_and_options(path, encoder, options)?;
    if bytes.is_empty() {
        return Err(bad(0, "the file is empty".into()));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let reader = Reader { encoder, options, eos };
    let mut examples = match format {
        DataFormat::Text => reader.text(bytes),
        DataFormat::Jsonl => reader.jsonl(bytes),
    }
    .map_err(|(line, problem)| bad(line, problem))?;
    if examples.is_empty() {
        return Err(bad(0, "no examples: the file holds only blank lines".into()));
    }

    if options.shuffle {
        let order = permutation(examples.len(), options.seed, SPLIT_STREAM);
        let mut slots: Vec<Option<Example>> = examples.into_iter().map(Some).collect();
        examples = order.iter().map(|&i| slots[i].take().expect("a permutation")).collect();
    }
    let n = examples.len();
    let f = options.eval_fraction;
    let held = if f == 0.0 { 0 } else { ((n as f64 * f).round() as usize).max(1) };
    if held >= n {
        return Err(bad(
            0,
            format!(
                "{n} example(s) are too few: holding out {held} for evaluation (eval_fraction {f}) \
                 leaves none to train on"
            ),
        ));
    }
    let eval = examples.split_off(n - held);
    Ok(Dataset { train: examples, eval, source: path.to_path_buf(), format })
}

/// Refuses options that cannot describe examples, and an end-of-sequence id outside the
/// vocabulary (errors name `path`); returns that id.
fn check_encoder_and_options(
    path: &Path,
    encoder: &dyn TextEncoder,
    options: &DataOptions,
) -> Result<u32> {
    let bad = |problem: String| Error::Data { path: path.to_path_buf(), line: 0, problem };
    check_options(options).map_err(bad)?;
    let eos = encoder.eos_id();
    if eos as usize >= options.vocab {
        let vocab = options.vocab;
        return Err(bad(format!(
            "the end-of-sequence id {eos} is outside the vocabulary of {vocab}"
        )));
    }
    Ok(eos)
}

/// Refuses options that cannot describe examples.
fn check_options(options: &DataOptions) -> std::result::Result<(), String> {
    let DataOptions { seq, stride, vocab, eval_fraction, .. } = *options;
    if seq < 2 {
        return Err(format!("a sequence length of {seq} leaves nothing to learn (at least 2)"));
    }
    if let Some(stride) = stride
        && !(1..=seq).contains(&stride)
    {
        return Err(format!("stride {stride} must lie in 1..={seq} (the sequence length)"));
    }
    if vocab == 0 || vocab > i32::MAX as usize {
        return Err(format!("a vocabulary of {vocab} tokens is not one a model has"));
    }
    if !(0.0..1.0).contains(&eval_fraction) {
        return Err(format!("eval_fraction {eval_fraction} must lie in [0, 1)"));
    }
    Ok(())
}

/// A problem at a line (1-based, 0 for the whole file); [`load`] adds the path.
type LineResult<T> = std::result::Result<T, (usize, String)>;

/// What the format readers share.
struct Reader<'a> {
    encoder: &'a dyn TextEncoder,
    options: &'a DataOptions,
    eos: u32,
}

impl Reader<'_> {
    /// `encoder.encode`, with its failure and any id outside the vocabulary reported at `line`.
    fn encode(&self, text: &str, special: bool, line: usize) -> LineResult<Vec<u32>> {
        let ids = self
            .encoder
            .encode(text, special)
            .map_err(|e| (line, format!("the tokenizer failed: {e}")))?;
        let vocab = self.options.vocab;
        match ids.iter().find(|&&id| id as usize >= vocab) {
            Some(id) => Err((
                line,
                format!("the tokenizer gave id {id}, outside the vocabulary of {vocab}"),
            )),
            None => Ok(ids),
        }
    }

    /// Plain text: paragraphs → one token stream → (strided) windows.
    fn text(&self, bytes: &[u8]) -> LineResult<Vec<Example>> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
            (line, "not valid UTF-8".to_string())
        })?;
        let mut stream = Vec::new();
        let mut paragraph: Vec<&str> = Vec::new();
        let mut first_line = 0;
        // A blank sentinel line at the end flushes the last paragraph.
        for (i, line) in text.lines().chain([""]).enumerate() {
            if !line.trim().is_empty() {
                if paragraph.is_empty() {
                    first_line = i + 1;
                }
                paragraph.push(line);
            } else if !paragraph.is_empty() {
                stream.extend(self.encode(&paragraph.join("\n"), true, first_line)?);
                stream.push(self.eos);
                paragraph.clear();
            }
        }
        let seq = self.options.seq;
        Ok(windows(&stream, seq, self.options.stride.unwrap_or(seq)))
    }

    /// JSON Lines: one example per non-blank line.
    fn jsonl(&self, bytes: &[u8]) -> LineResult<Vec<Example>> {
        let mut examples = Vec::new();
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let text =
                std::str::from_utf8(raw).map_err(|_| (line, "not valid UTF-8".to_string()))?;
            if text.trim().is_empty() {
                continue;
            }
            let value: Value =
                serde_json::from_str(text).map_err(|e| (line, format!("invalid JSON: {e}")))?;
            let Value::Object(object) = value else {
                return Err((line, format!("expected a JSON object, found {}", kind(&value))));
            };
            let mut example = self.object(&object).map_err(|problem| (line, problem))?;
            example.ids.truncate(self.options.seq);
            example.scored.truncate(self.options.seq);
            if example.ids.len() < 2 {
                let n = example.ids.len();
                return Err((
                    line,
                    format!("{n} token(s): an example needs at least 2 to learn from"),
                ));
            }
            example.scored[0] = false;
            if example.scored_tokens() == 0 {
                return Err((line, "no token is scored: nothing to learn from".to_string()));
            }
            examples.push(example);
        }
        Ok(examples)
    }

    /// One JSON object → an example (not yet truncated, `scored[0]` not yet cleared); errors are
    /// the problem alone.
    fn object(&self, object: &Map<String, Value>) -> std::result::Result<Example, String> {
        let has = |key: &str| object.contains_key(key);
        let text = has("text");
        let pair = has("prompt") || has("completion");
        let ids = has("ids") || has("mask");
        let vocab = self.options.vocab;
        // The encoder's failures carry no line here; `encode` reports them at line 0 and the
        // caller re-attaches the line.
        let encode = |s: &str, special: bool| self.encode(s, special, 0).map_err(|(_, p)| p);
        match (text, pair, ids) {
            (true, false, false) => {
                let s = string(object, "text")?;
                if s.is_empty() {
                    return Err("\"text\" is empty".into());
                }
                let mut ids = encode(s, true)?;
                ids.push(self.eos);
                Ok(Example { scored: vec![true; ids.len()], ids })
            }
            (false, true, false) => {
                let prompt = string(object, "prompt")?;
                let completion = string(object, "completion")?;
                if completion.is_empty() {
                    return Err("\"completion\" is empty".into());
                }
                let mut ids = encode(prompt, true)?;
                let prompt_len = ids.len();
                ids.extend(encode(completion, false)?);
                ids.push(self.eos);
                let scored = (0..ids.len()).map(|i| i >= prompt_len).collect();
                Ok(Example { ids, scored })
            }
            (false, false, true) => {
                let ids = id_list(object, vocab)?;
                let scored = match object.get("mask") {
                    None => vec![true; ids.len()],
                    Some(mask) => {
                        let mask = mask_list(mask)?;
                        if mask.len() != ids.len() {
                            let (m, n) = (mask.len(), ids.len());
                            return Err(format!("\"mask\" has {m} entries but \"ids\" has {n}"));
                        }
                        mask
                    }
                };
                Ok(Example { ids, scored })
            }
            (false, false, false) => {
                let keys: Vec<&str> = object.keys().map(String::as_str).collect();
                Err(format!(
                    "expected {{\"text\"}}, {{\"prompt\", \"completion\"}} or {{\"ids\"[, \"mask\"]}}; \
                     found keys {keys:?}"
                ))
            }
            _ => Err("mixes several shapes: give one of {\"text\"}, {\"prompt\", \"completion\"} \
                      or {\"ids\"[, \"mask\"]}"
                .into()),
        }
    }
}

/// The JSON type of `value`, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The string field `key` of `object`.
fn string<'v>(object: &'v Map<String, Value>, key: &str) -> std::result::Result<&'v str, String> {
    match object.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("\"{key}\" must be a string, found {}", kind(other))),
        None => Err(format!("\"{key}\" is missing")),
    }
}

/// The `"ids"` field: an array of ids below `vocab`.
fn id_list(object: &Map<String, Value>, vocab: usize) -> std::result::Result<Vec<u32>, String> {
    let items = match object.get("ids") {
        Some(Value::Array(items)) => items,
        Some(other) => return Err(format!("\"ids\" must be an array, found {}", kind(other))),
        None => return Err("\"mask\" without \"ids\"".into()),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.as_u64() {
            Some(id) if id < vocab as u64 => Ok(id as u32),
            Some(id) => Err(format!("\"ids\"[{i}] = {id} is outside the vocabulary of {vocab}")),
            None => Err(format!("\"ids\"[{i}] must be a non-negative integer, found {item}")),
        })
        .collect()
}

/// The `"mask"` field: an array of 0/1 or booleans.
fn mask_list(mask: &Value) -> std::result::Result<Vec<bool>, String> {
    let Value::Array(items) = mask else {
        return Err(format!("\"mask\" must be an array, found {}", kind(mask)));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Bool(b) => Ok(*b),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
            Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
            _ => Err(format!("\"mask\"[{i}] must be 0, 1, true or false, found {item}")),
        })
        .collect()
}

/// Cuts `stream` into windows of `seq` tokens starting every `stride` tokens, each scoring the
/// tokens that no earlier window scored (never its first); stops at the first window reaching the
/// end; drops a last window of fewer than 2 tokens.
fn windows(stream: &[u32], seq: usize, stride: usize) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut scored_up_to = 0; // stream positions below this are scored by an earlier window
    let mut start = 0;
    while start < stream.len() {
        let end = (start + seq).min(stream.len());
        if end - start < 2 {
            break;
        }
        let scored = (start..end).map(|p| p > start && p >= scored_up_to).collect();
        examples.push(Example { ids: stream[start..end].to_vec(), scored });
        scored_up_to = end;
        if end == stream.len() {
            break;
        }
        start += stride;
    }
    examples
}

// --- Seeded permutations --------------------------------------------------------------------
//
// Shuffles must give the same order for the same seed on every machine and in every future build,
// or a resumed run (or a federated client) would see other data than the run it continues. The
// generators of the `rand` crates do not promise value stability across versions, and the data
// module needs no more than a permutation; so it carries its own: SplitMix64 (Steele, Lea and
// Flood, 2014; a 64-bit counter through a mixing function, good enough for shuffling) driving a
// Fisher–Yates shuffle.

/// The stream of the shuffle before the train/eval split; epoch `e` of a [`Batcher`] uses `e + 1`.
const SPLIT_STREAM: u64 = 0;

/// SplitMix64: state advanced by the golden-ratio increment, output through a 64-bit finalizer.
struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator for `(seed, stream)`: distinct streams of one seed give unrelated sequences.
    fn new(seed: u64, stream: u64) -> Self {
        SplitMix64(mix(seed) ^ mix(stream.wrapping_add(0x6A09_E667_F3BC_C909)))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias: draws above the largest multiple of `n`
    /// are rejected.
    fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// The SplitMix64 finalizer (a bijection on u64).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A permutation of `0..len` drawn from `(seed, stream)` by Fisher–Yates.
fn permutation(len: usize, seed: u64, stream: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = SplitMix64::new(seed, stream);
    for i in (1..len).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

// --- Batching -------------------------------------------------------------------------------

/// A micro-batch in the layout of [`mft_models::Batch`], with its buffers reused from call to
/// call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MicroBatch {
    /// Token ids, `[batch, seq]`; rows shorter than `seq` are right-padded with the pad id.
    pub input_ids: Vec<u32>,
    /// Per position the id to predict (the next token) or [`IGNORE_INDEX`], `[batch, seq]`.
    pub targets: Vec<i32>,
    /// Examples (rows) in this micro-batch.
    pub batch: usize,
    /// Tokens per row: the longest example of this micro-batch.
    pub seq: usize,
    /// Targets that are not [`IGNORE_INDEX`]: the weight of this micro-batch when gradients are
    /// accumulated per token.
    pub scored_tokens: usize,
}

impl MicroBatch {
    /// An empty micro-batch, to be filled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills the micro-batch with `examples`, one row each, padded with `pad_id` to the longest:
    /// `targets[t] = ids[t + 1]` where `scored[t + 1]`, [`IGNORE_INDEX`] elsewhere (the last
    /// position, padding, unscored tokens).
    ///
    /// # Panics
    /// If an example's `ids` and `scored` differ in length.
    pub fn fill<'e, I>(&mut self, examples: I, pad_id: u32)
    where
        I: IntoIterator<Item = &'e Example>,
        I::IntoIter: Clone,
    {
        let examples = examples.into_iter();
        self.batch = examples.clone().count();
        self.seq = examples.clone().map(|e| e.ids.len()).max().unwrap_or(0);
        self.input_ids.clear();
        self.targets.clear();
        self.scored_tokens = 0;
        for example in examples {
            assert_eq!(example.ids.len(), example.scored.len(), "Example: ids and scored differ");
            let n = example.ids.len();
            self.input_ids.extend_from_slice(&example.ids);
            self.input_ids.resize(self.input_ids.len() + (self.seq - n), pad_id);
            for t in 1..n {
                if example.scored[t] {
                    self.targets.push(example.ids[t] as i32);
                    self.scored_tokens += 1;
                } else {
                    self.targets.push(IGNORE_INDEX);
                }
            }
            self.targets.resize(self.targets.len() + (self.seq + 1 - n.max(1)), IGNORE_INDEX);
        }
    }

    /// The micro-batch as the models take it.
    pub fn as_batch(&self) -> mft_models::Batch<'_> {
        mft_models::Batch {
            input_ids: &self.input_ids,
            targets: &self.targets,
            batch: self.batch,
            seq: self.seq,
        }
    }
}

/// Where a [`Batcher`] stands: saved with a checkpoint, given back to [`Batcher::resume`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct BatchPosition {
    /// The epoch (0-based) the next micro-batch comes from.
    pub epoch: u64,
    /// How many examples of that epoch's order were served already.
    pub index: usize,
}

/// A position that does not lie in an epoch of the batcher's examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionOutOfRange {
    /// The position asked for.
    pub position: BatchPosition,
    /// Examples in an epoch.
    pub examples: usize,
}

impl fmt::Display for PositionOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let BatchPosition { epoch, index } = self.position;
        write!(
            f,
            "position {index} of epoch {epoch} is past the end of an epoch of {} examples \
             (was the checkpoint made with other data?)",
            self.examples
        )
    }
}

impl std::error::Error for PositionOutOfRange {}

/// Walks the training examples in micro-batches of `batch` examples, epoch after epoch.
///
/// Epoch `e` visits the examples in the order of a permutation drawn from `(seed, e)` when
/// shuffling, in their given order otherwise. A micro-batch never spans two epochs: an epoch's
/// last one holds the remaining `len % batch` examples when `batch` does not divide `len`.
#[derive(Debug, Clone)]
pub struct Batcher {
    examples: Vec<Example>,
    batch: usize,
    pad_id: u32,
    seed: u64,
    shuffle: bool,
    position: BatchPosition,
    /// The order of `position.epoch`.
    order: Vec<usize>,
}

impl Batcher {
    /// A batcher at the start of epoch 0. `pad_id` fills the rows shorter than a micro-batch's
    /// longest (the end-of-sequence id).
    ///
    /// # Panics
    /// If `examples` is empty or `batch` is 0.
    pub fn new(
        examples: Vec<Example>,
        batch: usize,
        pad_id: u32,
        seed: u64,
        shuffle: bool,
    ) -> Self {
        assert!(!examples.is_empty(), "Batcher: no examples");
        assert!(batch > 0, "Batcher: a micro-batch of 0 examples");
        let mut batcher = Batcher {
            examples,
            batch,
            pad_id,
            seed,
            shuffle,
            position: BatchPosition::default(),
            order: Vec::new(),
        };
        batcher.order = batcher.order_of(0);
        batcher
    }

    /// The order in which epoch `epoch` visits the examples.
    fn order_of(&self, epoch: u64) -> Vec<usize> {
        if self.shuffle {
            permutation(self.examples.len(), self.seed, epoch.wrapping_add(1))
        } else {
            (0..self.examples.len()).collect()
        }
    }

    /// The examples walked.
    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    /// Micro-batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.examples.len().div_ceil(self.batch)
    }

    /// Where the next micro-batch comes from. After an epoch's last micro-batch this is the start
    /// of the next epoch.
    pub fn position(&self) -> BatchPosition {
        self.position
    }

    /// Continues from `position` (as [`Batcher::position`] gave it): the micro-batches that follow
    /// are those the saving batcher would have served, given the same examples, batch size and
    /// seed. An index equal to the epoch's length means the start of the next epoch.
    pub fn resume(
        &mut self,
        position: BatchPosition,
    ) -> std::result::Result<(), PositionOutOfRange> {
        let examples = self.examples.len();
        if position.index > examples {
            return Err(PositionOutOfRange { position, examples });
        }
        if position.epoch != self.position.epoch {
            self.order = self.order_of(position.epoch);
        }
        self.position = position;
        self.roll_over();
        Ok(())
    }

    /// Moves to the start of the next epoch when this one is done.
    fn roll_over(&mut self) {
        if self.position.index == self.examples.len() {
            let epoch = self.position.epoch.wrapping_add(1);
            self.order = self.order_of(epoch);
            self.position = BatchPosition { epoch, index: 0 };
        }
    }

    /// Fills `out` with the next micro-batch and moves past it.
    pub fn next_batch(&mut self, out: &mut MicroBatch) {
        let start = self.position.index;
        let end = (start + self.batch).min(self.examples.len());
        out.fill(self.order[start..end].iter().map(|&i| &self.examples[i]), self.pad_id);
        self.position.index = end;
        self.roll_over();
    }
}

/// The micro-batches of `examples` in their order, `batch` at a time (the last may hold fewer),
/// padded with `pad_id`: for evaluation.
///
/// # Panics
/// If `batch` is 0.
pub fn eval_batches(
    examples: &[Example],
    batch: usize,
    pad_id: u32,
) -> impl Iterator<Item = MicroBatch> + '_ {
    assert!(batch > 0, "eval_batches: a micro-batch of 0 examples");
    examples.chunks(batch).map(move |chunk| {
        let mut out = MicroBatch::new();
        out.fill(chunk, pad_id);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_permutations_and_depend_on_seed_and_stream() {
        for len in [0, 1, 2, 7, 100] {
            let mut p = permutation(len, 42, 3);
            p.sort_unstable();
            assert_eq!(p, (0..len).collect::<Vec<_>>());
        }
        let a = permutation(50, 1, 0);
        assert_eq!(a, permutation(50, 1, 0));
        assert_ne!(a, permutation(50, 2, 0));
        assert_ne!(a, permutation(50, 1, 1));
    }

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // SplitMix64 seeded with 0 (reference outputs of the published algorithm).
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn below_covers_its_range_uniformly() {
        let mut rng = SplitMix64::new(7, 0);
        let mut counts = [0usize; 6];
        for _ in 0..60_000 {
            counts[rng.below(6) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn windows_score_each_token_once() {
        let stream: Vec<u32> = (0..10).collect();
        let w = windows(&stream, 4, 2);
        let starts: Vec<u32> = w.iter().map(|e| e.ids[0]).collect();
        assert_eq!(starts, [0, 2, 4, 6]);
        let mut times = [0; 10];
        for e in &w {
            for (id, s) in e.ids.iter().zip(&e.scored) {
                times[*id as usize] += usize::from(*s);
            }
        }
        assert_eq!(times, [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    }
}
