//! Tokenizers of the three families, read from a Hugging Face checkpoint directory: a thin
//! wrapper over the `tokenizers` crate that gives exactly the ids of
//! `transformers.AutoTokenizer(text, add_special_tokens=...)["input_ids"]`.
//!
//! A directory's `tokenizer.json` is read as the `tokenizers` library serializes it; GPT-2
//! checkpoints that only ship `vocab.json` + `merges.txt` get the byte-level BPE that
//! Hugging Face's `GPT2Tokenizer` builds from them. `tokenizer_config.json`, when present,
//! names the eos and bos tokens and may switch adding bos / eos on or off
//! (`add_bos_token`, `add_eos_token`), as it does in transformers.
//!
//! A tokenizer of another family is refused by its markers: GPT-2 has `<|endoftext|>` and a
//! ByteLevel pre-tokenizer but no `<|im_start|>`; Qwen 2.5 has `<|im_start|>` and
//! `<|endoftext|>` and a ByteLevel pipeline; Gemma 3 has `<bos>`, `<eos>` and
//! `<start_of_turn>`, and a `▁` pipeline (spaces replaced by `▁`) with byte fallback.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use mft_models::Family;
use serde_json::Value;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, ModelWrapper, Tokenizer as Backend};

use crate::error::{Error, Result};

/// A model family's tokenizer: text to token ids and back.
pub struct Tokenizer {
    inner: Backend,
    path: PathBuf,
    family: Family,
    eos: (String, u32),
    bos: Option<(String, u32)>,
    vocab_size: usize,
    max_id: u32,
}

impl Tokenizer {
    /// Reads the tokenizer of a checkpoint directory: `dir/tokenizer.json` (or, for GPT-2
    /// only, `dir/vocab.json` + `dir/merges.txt`), with `dir/tokenizer_config.json` when
    /// present (its `eos_token` / `bos_token`, when absent, are the family's: GPT-2 and Qwen
    /// `<|endoftext|>`, Gemma `<eos>` / `<bos>`). Refuses files that are missing, unreadable,
    /// not JSON, or of another family.
    pub fn from_dir(dir: &Path, family: Family) -> Result<Tokenizer> {
        let json = dir.join("tokenizer.json");
        let (inner, path) = if json.exists() {
            (read_tokenizer_json(&json, family)?, json)
        } else if family == Family::Gpt2 {
            let vocab = dir.join("vocab.json");
            let merges = dir.join("merges.txt");
            if !vocab.exists() && !merges.exists() {
                return Err(tokenizer_error(
                    dir,
                    "no tokenizer.json, and no vocab.json + merges.txt".into(),
                ));
            }
            (read_gpt2_bpe(&vocab, &merges)?, vocab)
        } else {
            return Err(tokenizer_error(
                &json,
                format!("not found ({} tokenizers are read from tokenizer.json)", name(family)),
            ));
        };
        let config_path = dir.join("tokenizer_config.json");
        let config =
            if config_path.exists() { Some(TokenizerConfig::read(&config_path)?) } else { None };
        Tokenizer::finish(inner, path, family, config.unwrap_or_default())
    }

    /// Reads a `tokenizer.json` alone, with the family's eos and bos tokens.
    pub fn from_file(path: &Path, family: Family) -> Result<Tokenizer> {
        let inner = read_tokenizer_json(path, family)?;
        Tokenizer::finish(inner, path.to_path_buf(), family, TokenizerConfig::default())
    }

    /// [`Tokenizer::from_file`] on the bytes of a `tokenizer.json`; `origin` is the file they
    /// came from, named in errors.
    pub fn from_json_bytes(bytes: &[u8], origin: &Path, family: Family) -> Result<Tokenizer> {
        let inner = parse_tokenizer_json(origin, bytes, family)?;
        Tokenizer::finish(inner, origin.to_path_buf(), family, TokenizerConfig::default())
    }

    /// The token ids of `text`; with `add_special_tokens`, the ones the tokenizer adds around
    /// it too (Gemma's `<bos>`). Special tokens written in the text are matched as tokens.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| self.error(format!("cannot encode text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, leaving out special tokens when `skip_special_tokens` is set. Byte
    /// sequences that are not UTF-8 (a cut character) come out as U+FFFD. Refuses ids that are
    /// not in the tokenizer.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(self.error(format!(
                "token id {bad} is not in the tokenizer ({} tokens)",
                self.vocab_size
            )));
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| self.error(format!("cannot decode ids: {e}")))
    }

    /// The id of the end-of-sequence token.
    pub fn eos_id(&self) -> u32 {
        self.eos.1
    }

    /// The id of the beginning-of-sequence token, when the tokenizer adds one in front of a
    /// sequence encoded with special tokens (Gemma 3's `<bos>`); `None` for GPT-2 and Qwen 2.5.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|(_, id)| *id)
    }

    /// The number of tokens, added tokens included (Python's `len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Refuses a tokenizer whose largest token id does not fit a model vocabulary of
    /// `model_vocab` entries. Gemma 3's `<image_soft_token>` is not counted: the tokenizer
    /// every Gemma 3 shares puts it at 262144, past the 262144 rows of the text-only 270m and
    /// 1B models, where only images (never text) produce it. Text that spells it out is
    /// refused by the data reader like any other out-of-range id.
    pub fn check_vocab(&self, model_vocab: usize) -> Result<()> {
        if self.max_id as usize >= model_vocab {
            return Err(self.error(format!(
                "the largest token id is {}, but the model's vocabulary has {model_vocab} entries",
                self.max_id
            )));
        }
        Ok(())
    }

    /// The file the tokenizer was read from (`tokenizer.json`, or GPT-2's `vocab.json`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The family it was read for.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Settles eos, bos and the post-processor once the backend is read.
    fn finish(
        mut inner: Backend,
        path: PathBuf,
        family: Family,
        config: TokenizerConfig,
    ) -> Result<Tokenizer> {
        // Truncation and padding stored in tokenizer.json are off in `tokenizer(text)`.
        inner.with_truncation(None).map_err(|e| tokenizer_error(&path, e.to_string()))?;
        inner.with_padding(None);

        let (default_eos, default_bos) = match family {
            Family::Gpt2 => ("<|endoftext|>", Some("<|endoftext|>")),
            Family::Qwen2 => ("<|endoftext|>", None),
            Family::Gemma3 => ("<eos>", Some("<bos>")),
        };
        let eos_name = match config.eos {
            Some(Some(name)) => name,
            _ => default_eos.to_string(),
        };
        let bos_name = match config.bos {
            Some(name) => name,
            None => default_bos.map(str::to_string),
        };
        let eos = special_token(&mut inner, &path, &eos_name, "eos")?;
        let bos = match bos_name {
            Some(name) => Some(special_token(&mut inner, &path, &name, "bos")?),
            None => None,
        };

        // As transformers does: explicit add_bos_token / add_eos_token (or no post-processor
        // at all) mean a template of exactly those tokens.
        if config.add_bos.is_some()
            || config.add_eos.is_some()
            || inner.get_post_processor().is_none()
        {
            let bos_added = bos.as_ref().filter(|_| config.add_bos == Some(true));
            let eos_added = Some(&eos).filter(|_| config.add_eos == Some(true));
            let template = template(bos_added, eos_added)
                .map_err(|e| tokenizer_error(&path, format!("cannot add bos/eos: {e}")))?;
            inner.with_post_processor(Some(template));
        }

        // bos counts when it is added: in front of "a" with special tokens, not without.
        let encode = |special| {
            inner
                .encode_fast("a", special)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| tokenizer_error(&path, format!("cannot encode text: {e}")))
        };
        let (with, without) = (encode(true)?, encode(false)?);
        let bos = bos.filter(|(_, id)| with.first() == Some(id) && with[1..].starts_with(&without));
        let vocab_size = inner.get_vocab_size(true);
        let max_id = inner
            .get_vocab(true)
            .into_iter()
            .filter(|(token, _)| !(family == Family::Gemma3 && token == GEMMA3_IMAGE_TOKEN))
            .map(|(_, id)| id)
            .max()
            .unwrap_or(0);
        Ok(Tokenizer { inner, path, family, eos, bos, vocab_size, max_id })
    }

    fn error(&self, problem: String) -> Error {
        tokenizer_error(&self.path, problem)
    }
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("family", &self.family)
            .field("vocab_size", &self.vocab_size)
            .field("eos", &self.eos)
            .field("bos", &self.bos)
            .finish()
    }
}

/// A post-processor adding `bos` in front and `eos` behind (each when given).
fn template(
    bos: Option<&(String, u32)>,
    eos: Option<&(String, u32)>,
) -> std::result::Result<TemplateProcessing, String> {
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    for (seq, type_id) in [("$A", 0), ("$B", 1)] {
        let out = if type_id == 0 { &mut single } else { &mut pair };
        if let Some((name, _)) = bos {
            out.push(format!("{name}:{type_id}"));
        }
        out.push(format!("{seq}:{type_id}"));
        if let Some((name, _)) = eos {
            out.push(format!("{name}:{type_id}"));
        }
    }
    let pair = [single.clone(), pair].concat();
    specials.extend(bos.cloned());
    specials.extend(eos.filter(|e| Some(*e) != bos).cloned());
    TemplateProcessing::builder()
        .try_single(single.join(" "))?
        .try_pair(pair.join(" "))?
        .special_tokens(specials)
        .build()
        .map_err(|e| e.to_string())
}

/// The id of `name`, registered as a special token as transformers does for the named ones.
fn special_token(
    inner: &mut Backend,
    path: &Path,
    name: &str,
    role: &str,
) -> Result<(String, u32)> {
    let Some(id) = inner.token_to_id(name) else {
        return Err(tokenizer_error(path, format!("has no token {name:?} (its {role} token)")));
    };
    if !inner.get_added_tokens_decoder().contains_key(&id) {
        inner
            .add_special_tokens([AddedToken::from(name, true)])
            .map_err(|e| tokenizer_error(path, e.to_string()))?;
    }
    Ok((name.to_string(), id))
}

/// The image placeholder of Gemma 3's tokenizer (see [`Tokenizer::check_vocab`]).
const GEMMA3_IMAGE_TOKEN: &str = "<image_soft_token>";

/// Reads a tokenizer.json after checking that it belongs to `family`.
fn read_tokenizer_json(path: &Path, family: Family) -> Result<Backend> {
    let bytes =
        std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse_tokenizer_json(path, &bytes, family)
}

/// A tokenizer.json's bytes read after checking that it belongs to `family`.
fn parse_tokenizer_json(path: &Path, bytes: &[u8], family: Family) -> Result<Backend> {
    refuse_what_panics(path, bytes)?;
    // A file the tokenizers library reads goes straight to it, the family told from the
    // result: a real vocabulary is tens of MB (Gemma 3's 33 MB), and a `Value` of it first
    // would cost as much again as the tokenizer itself.
    if let Ok(inner) = serde_json::from_slice::<Backend>(bytes) {
        check_family(path, family, &Facts::of_backend(&inner))?;
        return Ok(inner);
    }
    // Any other file is read as JSON first, so that the refusal names what is wrong: not JSON,
    // another family, or not a tokenizer.
    let value = parse_json(path, bytes)?;
    check_family(path, family, &Facts::of_tokenizer_json(&value))?;
    serde_json::from_value(value).map_err(|e| {
        tokenizer_error(path, format!("not a tokenizer the tokenizers library reads: {e}"))
    })
}

/// The parts of a tokenizer.json that the tokenizers library (0.23) panics on instead of
/// refusing, read in a first pass that skips everything else without building it.
#[derive(serde::Deserialize)]
struct PanicProne {
    #[serde(default)]
    normalizer: Option<Value>,
}

/// Refuses, as errors, the files the tokenizers library panics on (found by fuzzing): any
/// JSON syntax error (one inside `decoder` panics there), and a `Precompiled` normalizer (at
/// the top or in a `Sequence`) whose fields do not read.
fn refuse_what_panics(path: &Path, bytes: &[u8]) -> Result<()> {
    let prone = match serde_json::from_slice::<PanicProne>(bytes) {
        Ok(prone) => prone,
        // Not an object (or a `normalizer` of another type): what the later checks name.
        Err(e) if e.is_data() => return Ok(()),
        Err(_) => return parse_json(path, bytes).map(drop),
    };
    let mut pending: Vec<&Value> = prone.normalizer.iter().collect();
    while let Some(step) = pending.pop() {
        if step["type"] == "Sequence" {
            pending.extend(step["normalizers"].as_array().into_iter().flatten());
        } else if step["type"] == "Precompiled" {
            let read = serde_json::from_value::<tokenizers::normalizers::precompiled::Precompiled>;
            read(step.clone()).map_err(|e| {
                tokenizer_error(
                    path,
                    format!("normalizer: a Precompiled step that does not read: {e}"),
                )
            })?;
        }
    }
    Ok(())
}

/// GPT-2's byte-level BPE from vocab.json + merges.txt, as `GPT2Tokenizer` builds it.
fn read_gpt2_bpe(vocab_path: &Path, merges_path: &Path) -> Result<Backend> {
    let vocab: HashMap<String, u32> = serde_json::from_value(read_json(vocab_path)?)
        .map_err(|e| tokenizer_error(vocab_path, format!("not a vocabulary: {e}")))?;
    check_family(vocab_path, Family::Gpt2, &Facts::of_vocab(&vocab))?;
    let text = std::fs::read_to_string(merges_path)
        .map_err(|source| Error::Io { path: merges_path.to_path_buf(), source })?;
    let merges = parse_merges(merges_path, &text)?;
    let vocab: Vocab = vocab.into_iter().collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| tokenizer_error(merges_path, e.to_string()))?;
    let mut inner = Backend::new(bpe);
    inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    inner.with_decoder(Some(ByteLevel::default()));
    inner
        .add_special_tokens([AddedToken::from("<|endoftext|>", true)])
        .map_err(|e| tokenizer_error(vocab_path, e.to_string()))?;
    Ok(inner)
}

/// merges.txt: an optional `#version` line, then one `left right` pair per line.
fn parse_merges(path: &Path, text: &str) -> Result<Merges> {
    let mut merges = Merges::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || (n == 0 && line.starts_with("#version")) {
            continue;
        }
        match line.split(' ').collect::<Vec<_>>()[..] {
            [a, b] if !a.is_empty() && !b.is_empty() => merges.push((a.into(), b.into())),
            _ => {
                return Err(tokenizer_error(
                    path,
                    format!("line {}: expected two tokens separated by one space", n + 1),
                ));
            }
        }
    }
    Ok(merges)
}

/// What tokenizer_config.json says about eos and bos (`None`: it does not say).
#[derive(Default)]
struct TokenizerConfig {
    eos: Option<Option<String>>,
    bos: Option<Option<String>>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
}

impl TokenizerConfig {
    fn read(path: &Path) -> Result<TokenizerConfig> {
        let value = read_json(path)?;
        let token = |field: &str| -> Result<Option<Option<String>>> {
            match value.get(field) {
                None => Ok(None),
                Some(Value::Null) => Ok(Some(None)),
                Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
                    _ => Err(config_error(path, field, "expected {\"content\": \"...\"}")),
                },
                Some(_) => {
                    Err(config_error(path, field, "expected a string or {\"content\": ...}"))
                }
            }
        };
        let flag = |field: &str| -> Result<Option<bool>> {
            match value.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(_) => Err(config_error(path, field, "expected true or false")),
            }
        };
        Ok(TokenizerConfig {
            eos: token("eos_token")?,
            bos: token("bos_token")?,
            add_bos: flag("add_bos_token")?,
            add_eos: flag("add_eos_token")?,
        })
    }
}

/// The facts that tell the families' tokenizers apart.
struct Facts {
    endoftext: bool,
    im_start: bool,
    start_of_turn: bool,
    bos: bool,
    eos: bool,
    byte_level: bool,
    metaspace: bool,
    byte_fallback: bool,
}

impl Facts {
    fn of_tokenizer_json(json: &Value) -> Facts {
        let added: Vec<&str> = json["added_tokens"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["content"].as_str()).collect())
            .unwrap_or_default();
        let vocab = &json["model"]["vocab"];
        let has = |token: &str| {
            added.contains(&token)
                || vocab.get(token).is_some()
                || vocab.as_array().is_some_and(|v| v.iter().any(|p| p[0] == token))
        };
        let byte_fallback = json["model"]["byte_fallback"] == true;
        Facts::of_pipeline(has, &json["normalizer"], &json["pre_tokenizer"], byte_fallback)
    }

    /// A tokenizer the tokenizers library has read: the same facts as
    /// [`Facts::of_tokenizer_json`] gives for its file.
    fn of_backend(inner: &Backend) -> Facts {
        let has = |token: &str| inner.token_to_id(token).is_some();
        // The normalizer and pre-tokenizer as they are written in tokenizer.json (both small).
        let normalizer = serde_json::to_value(inner.get_normalizer()).unwrap_or_default();
        let pre_tokenizer = serde_json::to_value(inner.get_pre_tokenizer()).unwrap_or_default();
        let byte_fallback =
            matches!(inner.get_model(), ModelWrapper::BPE(bpe) if bpe.byte_fallback);
        Facts::of_pipeline(has, &normalizer, &pre_tokenizer, byte_fallback)
    }

    /// The facts of a pipeline: which of the family markers `has` finds, and what the
    /// normalizer and pre-tokenizer (as tokenizer.json writes them) do.
    fn of_pipeline(
        has: impl Fn(&str) -> bool,
        normalizer: &Value,
        pre_tokenizer: &Value,
        byte_fallback: bool,
    ) -> Facts {
        let byte_level = any_step(pre_tokenizer, "pretokenizers", &|p| p["type"] == "ByteLevel");
        let metaspace =
            any_step(normalizer, "normalizers", &|n| n["type"] == "Replace" && n["content"] == "▁")
                || any_step(pre_tokenizer, "pretokenizers", &|p| p["type"] == "Metaspace");
        Facts { byte_level, metaspace, byte_fallback, ..Facts::markers(has) }
    }

    /// Which family markers `has` finds; no pipeline steps.
    fn markers(has: impl Fn(&str) -> bool) -> Facts {
        Facts {
            endoftext: has("<|endoftext|>"),
            im_start: has("<|im_start|>"),
            start_of_turn: has("<start_of_turn>"),
            bos: has("<bos>"),
            eos: has("<eos>"),
            byte_level: false,
            metaspace: false,
            byte_fallback: false,
        }
    }

    /// A vocab.json: the pipeline is GPT-2's byte-level one, built here.
    fn of_vocab(vocab: &HashMap<String, u32>) -> Facts {
        Facts { byte_level: true, ..Facts::markers(|token| vocab.contains_key(token)) }
    }

    /// The family these facts point to, and the reason.
    fn looks_like(&self) -> Option<(Family, &'static str)> {
        if self.start_of_turn {
            Some((Family::Gemma3, "has <start_of_turn>"))
        } else if self.im_start {
            Some((Family::Qwen2, "has <|im_start|>"))
        } else if self.endoftext && self.byte_level {
            Some((Family::Gpt2, "has <|endoftext|> and no <|im_start|>"))
        } else {
            None
        }
    }

    /// What a tokenizer of `family` has and these facts lack.
    fn missing(&self, family: Family) -> Vec<&'static str> {
        let needs: &[(bool, &'static str)] = match family {
            Family::Gpt2 => &[
                (self.endoftext, "no <|endoftext|> token"),
                (self.byte_level, "no ByteLevel pre-tokenizer"),
                (!self.im_start, "has <|im_start|>"),
                (!self.start_of_turn, "has <start_of_turn>"),
            ],
            Family::Qwen2 => &[
                (self.im_start, "no <|im_start|> token"),
                (self.endoftext, "no <|endoftext|> token"),
                (self.byte_level, "no ByteLevel pre-tokenizer"),
                (!self.start_of_turn, "has <start_of_turn>"),
            ],
            Family::Gemma3 => &[
                (self.start_of_turn, "no <start_of_turn> token"),
                (self.bos, "no <bos> token"),
                (self.eos, "no <eos> token"),
                (self.metaspace, "no \"▁\" pipeline (Replace \" \" → \"▁\", or Metaspace)"),
                (self.byte_fallback, "no byte fallback"),
            ],
        };
        needs.iter().filter(|(ok, _)| !ok).map(|(_, what)| *what).collect()
    }
}

/// Whether `step` or, for a `Sequence`, any step inside it (listed under `list`) satisfies `pred`.
fn any_step(step: &Value, list: &str, pred: &dyn Fn(&Value) -> bool) -> bool {
    if step["type"] == "Sequence" {
        step[list].as_array().is_some_and(|s| s.iter().any(|p| any_step(p, list, pred)))
    } else {
        pred(step)
    }
}

/// Refuses a tokenizer that is not of `family`, in one line naming what gives it away.
fn check_family(path: &Path, family: Family, facts: &Facts) -> Result<()> {
    let missing = facts.missing(family);
    if missing.is_empty() {
        return Ok(());
    }
    let problem = match facts.looks_like() {
        Some((other, why)) if other != family => format!(
            "this looks like a {} tokenizer ({why}), but the model is {}",
            name(other),
            family.model_type()
        ),
        _ => format!("this is not a {} tokenizer: {}", name(family), missing.join(", ")),
    };
    Err(tokenizer_error(path, problem))
}

/// The family's name in messages.
fn name(family: Family) -> &'static str {
    match family {
        Family::Gpt2 => "GPT-2",
        Family::Qwen2 => "Qwen 2.5",
        Family::Gemma3 => "Gemma 3",
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes =
        std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse_json(path, &bytes)
}

fn parse_json(path: &Path, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        line: source.line(),
        column: source.column(),
        source,
    })
}

fn tokenizer_error(path: &Path, problem: String) -> Error {
    Error::Tokenizer { path: path.to_path_buf(), problem }
}

fn config_error(path: &Path, field: &str, problem: &str) -> Error {
    Error::Config { path: path.to_path_buf(), field: field.into(), problem: problem.into() }
}

impl crate::data::TextEncoder for Tokenizer {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        Tokenizer::encode(self, text, add_special_tokens)
    }

    fn eos_id(&self) -> u32 {
        Tokenizer::eos_id(self)
    }
}
