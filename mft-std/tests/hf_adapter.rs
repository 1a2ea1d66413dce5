//! adapter_config.json → `LoraConfig`: PEFT's fields, and the options mft refuses by name.

use std::path::Path;

use mft_models::params::LayerParam;
use mft_models::{Family, LoraConfig};
use mft_std::Error;
use mft_std::hf::adapter::{parse_lora_config, read_lora_config};

/// As PEFT 0.21 writes a LoRA adapter for GPT-2 (the fields mft does not read trimmed).
const GPT2_ADAPTER: &str = r#"{
  "alpha_pattern": {},
  "base_model_name_or_path": "openai-community/gpt2",
  "bias": "none",
  "exclude_modules": null,
  "fan_in_fan_out": true,
  "inference_mode": true,
  "init_lora_weights": true,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": null,
  "loftq_config": {},
  "lora_alpha": 32,
  "lora_bias": false,
  "lora_dropout": 0.05,
  "modules_to_save": null,
  "peft_type": "LORA",
  "r": 8,
  "rank_pattern": {},
  "target_modules": ["c_proj", "c_attn"],
  "target_parameters": null,
  "task_type": "CAUSAL_LM",
  "trainable_token_indices": null,
  "use_dora": false,
  "use_rslora": false
}"#;

fn parse(json: &str, family: Family) -> mft_std::Result<LoraConfig> {
    parse_lora_config(json, Path::new("adapter_config.json"), family)
}

/// The `(field, problem)` of a `Config` error; panics on any other result.
fn config_error(result: mft_std::Result<LoraConfig>) -> (String, String) {
    match result {
        Err(Error::Config { path, field, problem }) => {
            assert_eq!(path, Path::new("adapter_config.json"));
            (field, problem)
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[test]
fn reads_peft_fields() {
    let config = parse(GPT2_ADAPTER, Family::Gpt2).unwrap();
    assert_eq!(config.rank, 8);
    assert_eq!(config.alpha, 32.0);
    assert_eq!(config.dropout, 0.05);
    assert!(!config.rslora);
    assert_eq!(config.scaling(), 4.0);
    let targets: Vec<_> = config.targets.params(Family::Gpt2).collect();
    // GPT-2's `c_proj` is both the attention output and the MLP output.
    assert_eq!(targets, [LayerParam::Qkv, LayerParam::O, LayerParam::Down]);
}

#[test]
fn reads_rslora_and_defaults() {
    let json =
        r#"{"r": 4, "lora_alpha": 8, "use_rslora": true, "target_modules": ["q_proj", "v_proj"]}"#;
    let config = parse(json, Family::Qwen2).unwrap();
    assert!(config.rslora);
    assert_eq!(config.dropout, 0.0);
    assert_eq!(config.scaling(), 4.0);
    let targets: Vec<_> = config.targets.params(Family::Qwen2).collect();
    assert_eq!(targets, [LayerParam::Q, LayerParam::V]);
}

#[test]
fn all_linear_targets_every_projection() {
    let json = GPT2_ADAPTER.replace(r#"["c_proj", "c_attn"]"#, r#""all-linear""#);
    let config = parse(&json, Family::Gemma3).unwrap();
    let targets: Vec<_> = config.targets.params(Family::Gemma3).collect();
    use LayerParam::*;
    assert_eq!(targets, [Q, K, V, O, Gate, Up, Down]);
}

#[test]
fn refuses_what_mft_does_not_train() {
    let cases = [
        (r#""bias": "none""#, r#""bias": "lora_only""#, "bias"),
        (r#""modules_to_save": null"#, r#""modules_to_save": ["score"]"#, "modules_to_save"),
        (r#""use_dora": false"#, r#""use_dora": true"#, "use_dora"),
        (
            r#""layers_to_transform": null"#,
            r#""layers_to_transform": [0, 1]"#,
            "layers_to_transform",
        ),
        (r#""rank_pattern": {}"#, r#""rank_pattern": {"c_attn": 4}"#, "rank_pattern"),
        (r#""lora_bias": false"#, r#""lora_bias": true"#, "lora_bias"),
        (r#""peft_type": "LORA""#, r#""peft_type": "IA3""#, "peft_type"),
    ];
    for (from, to, field) in cases {
        let json = GPT2_ADAPTER.replace(from, to);
        assert_ne!(json, GPT2_ADAPTER, "{from} is in the fixture");
        let (named, _) = config_error(parse(&json, Family::Gpt2));
        assert_eq!(named, field);
    }
}

#[test]
fn refuses_targets_the_family_lacks_by_name() {
    let json = GPT2_ADAPTER.replace(r#"["c_proj", "c_attn"]"#, r#"["c_attn", "q_proj"]"#);
    let (field, problem) = config_error(parse(&json, Family::Gpt2));
    assert_eq!(field, "target_modules");
    assert_eq!(problem, r#""q_proj" names no projection of gpt2"#);

    let json = GPT2_ADAPTER.replace(r#"["c_proj", "c_attn"]"#, r#"".*\\.c_attn""#);
    let (field, problem) = config_error(parse(&json, Family::Gpt2));
    assert_eq!(field, "target_modules");
    assert!(problem.contains("regular expression"), "{problem}");
}

#[test]
fn invalid_settings_are_refused_naming_the_file() {
    let json = GPT2_ADAPTER.replace(r#""r": 8"#, r#""r": 0"#);
    match parse(&json, Family::Gpt2) {
        Err(Error::Model { path, source }) => {
            assert_eq!(path, Path::new("adapter_config.json"));
            assert!(matches!(source, mft_models::Error::InvalidLora { field: "r", .. }));
        }
        other => panic!("expected a Model error, got {other:?}"),
    }
    let json = GPT2_ADAPTER.replace(r#""lora_alpha": 32,"#, "");
    assert_eq!(config_error(parse(&json, Family::Gpt2)), ("lora_alpha".into(), "missing".into()));
}

/// Found by fuzzing (fuzz/fuzz_targets/peft_adapter.rs): a rank this large overflowed the
/// adapters' layout; it is refused naming the field.
#[test]
fn an_absurd_rank_is_refused() {
    let json = GPT2_ADAPTER.replace(r#""r": 8"#, r#""r": 18446744073709551615"#);
    let err = parse(&json, Family::Gpt2).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Model { source: mft_models::Error::InvalidLora { field: "r", .. }, .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("2^24"), "{err}");
}

#[test]
fn read_lora_config_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter_config.json");
    std::fs::write(&path, GPT2_ADAPTER).unwrap();
    assert_eq!(
        read_lora_config(&path, Family::Gpt2).unwrap(),
        parse(GPT2_ADAPTER, Family::Gpt2).unwrap()
    );
    let err = read_lora_config(&dir.path().join("nope.json"), Family::Gpt2).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.json"), "{err}");
}
