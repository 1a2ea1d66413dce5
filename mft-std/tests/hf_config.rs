//! config.json → `ModelConfig`: every family in the field names of transformers v4 and v5, and
//! every refusal naming its field.

use std::path::Path;

use mft_models::config::sliding_pattern;
use mft_models::{Family, ModelConfig, Rope};
use mft_std::Error;
use mft_std::hf::config::{parse_model_config, read_model_config};

fn parse(json: &str) -> mft_std::Result<ModelConfig> {
    parse_model_config(json, Path::new("config.json"))
}

/// The `(field, problem)` of a `Config` error; panics on any other result.
fn config_error(result: mft_std::Result<ModelConfig>) -> (String, String) {
    match result {
        Err(Error::Config { path, field, problem }) => {
            assert_eq!(path, Path::new("config.json"));
            (field, problem)
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
}

fn rope(base: f32, linear_factor: f32) -> Option<Rope> {
    Some(Rope { base, linear_factor })
}

// --- GPT-2 ---------------------------------------------------------------------------------

/// As transformers 5 writes GPT2Config (n_inner null, the head tied by default).
const GPT2: &str = r#"{
  "activation_function": "gelu_new",
  "attn_pdrop": 0.1,
  "layer_norm_epsilon": 1e-05,
  "model_type": "gpt2",
  "n_embd": 64,
  "n_head": 4,
  "n_inner": null,
  "n_layer": 3,
  "n_positions": 128,
  "reorder_and_upcast_attn": false,
  "scale_attn_by_inverse_layer_idx": false,
  "scale_attn_weights": true,
  "vocab_size": 1000
}"#;

#[test]
fn gpt2_takes_the_defaults_of_gpt2_with() {
    let config = parse(GPT2).unwrap();
    let mut expected = ModelConfig::gpt2_with(64, 3, 4);
    expected.vocab = 1000;
    expected.max_positions = 128;
    assert_eq!(config, expected);
    assert_eq!(config.intermediate, 256);
    assert!(config.tie_embeddings);
    assert_eq!(config.head_dim, 16);
    assert_eq!(config.attention_scale, 0.25);
    assert_eq!(config.norm_eps, 1e-5);
}

#[test]
fn gpt2_reads_n_inner_and_epsilon() {
    let json = GPT2
        .replace(r#""n_inner": null"#, r#""n_inner": 100"#)
        .replace("1e-05", "1e-06")
        .replace("gelu_new", "gelu_pytorch_tanh");
    let config = parse(&json).unwrap();
    assert_eq!(config.intermediate, 100);
    assert_eq!(config.norm_eps, 1e-6);
}

#[test]
fn gpt2_refuses_another_activation() {
    let (field, problem) = config_error(parse(&GPT2.replace("gelu_new", "relu")));
    assert_eq!(field, "activation_function");
    assert!(problem.contains("\"relu\""), "{problem}");
}

#[test]
fn gpt2_refuses_heads_that_do_not_divide_the_width() {
    let (field, _) = config_error(parse(&GPT2.replace(r#""n_head": 4"#, r#""n_head": 5"#)));
    assert_eq!(field, "n_head");
}

#[test]
fn gpt2_refuses_per_layer_attention_scaling() {
    let json = GPT2.replace(
        r#""scale_attn_by_inverse_layer_idx": false"#,
        r#""scale_attn_by_inverse_layer_idx": true"#,
    );
    assert_eq!(config_error(parse(&json)).0, "scale_attn_by_inverse_layer_idx");
}

// --- Qwen 2 --------------------------------------------------------------------------------

/// As transformers 4 wrote Qwen2.5's config (rope_theta, rope_scaling, no head tying field).
const QWEN2_V4: &str = r#"{
  "architectures": ["Qwen2ForCausalLM"],
  "hidden_act": "silu",
  "hidden_size": 896,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 21,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "torch_dtype": "bfloat16",
  "use_sliding_window": false,
  "vocab_size": 151936
}"#;

#[test]
fn qwen2_with_gqa_and_an_untied_head() {
    let config = parse(QWEN2_V4).unwrap();
    let expected = ModelConfig { tie_embeddings: false, ..ModelConfig::qwen2_5_0_5b() };
    assert_eq!(config, expected);
    assert_eq!((config.heads, config.kv_heads, config.head_dim), (14, 2, 64));
    assert_eq!(config.sliding_window, None, "use_sliding_window is false");
}

#[test]
fn qwen2_reads_tying_head_dim_and_linear_scaling() {
    let json = QWEN2_V4
        .replace(r#""rope_scaling": null"#, r#""rope_scaling": {"type": "linear", "factor": 4.0}"#)
        .replace(
            r#""vocab_size""#,
            r#""tie_word_embeddings": true, "head_dim": 128, "vocab_size""#,
        );
    let config = parse(&json).unwrap();
    assert!(config.tie_embeddings);
    assert_eq!(config.head_dim, 128);
    assert_eq!(config.attention_scale, (1.0 / 128f64.sqrt()) as f32);
    assert_eq!(config.rope, rope(1e6, 4.0));
}

#[test]
fn qwen2_v5_rope_parameters() {
    // As transformers 5 writes Qwen2Config: rope_parameters instead of rope_theta, layer_types.
    let json = r#"{
      "hidden_act": "silu", "hidden_size": 32, "intermediate_size": 48,
      "layer_types": ["full_attention", "full_attention"],
      "max_position_embeddings": 64, "model_type": "qwen2", "num_attention_heads": 4,
      "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
      "rope_parameters": {"factor": 2.0, "rope_theta": 5000.0, "rope_type": "linear"},
      "sliding_window": null, "tie_word_embeddings": false, "use_sliding_window": false,
      "vocab_size": 96
    }"#;
    let config = parse(json).unwrap();
    assert_eq!(config.rope, rope(5000.0, 2.0));
    assert_eq!((config.hidden, config.kv_heads, config.head_dim), (32, 2, 8));
    assert_eq!(config.rope_local, None);
}

#[test]
fn qwen2_refuses_its_sliding_window() {
    let json = QWEN2_V4.replace(r#""use_sliding_window": false"#, r#""use_sliding_window": true"#);
    let (field, problem) = config_error(parse(&json));
    assert_eq!(field, "use_sliding_window");
    assert!(problem.contains("sliding window"), "{problem}");
}

#[test]
fn qwen2_refuses_other_rope_scaling_by_name() {
    let json = QWEN2_V4.replace(
        r#""rope_scaling": null"#,
        r#""rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}"#,
    );
    let (field, problem) = config_error(parse(&json));
    assert_eq!(field, "rope_scaling.type");
    assert!(problem.contains("\"yarn\""), "{problem}");

    let json = QWEN2_V4.replace(
        r#""rope_scaling": null"#,
        r#""rope_scaling": {"rope_type": "dynamic", "factor": 2.0}"#,
    );
    assert_eq!(config_error(parse(&json)).0, "rope_scaling.rope_type");
}

#[test]
fn qwen2_refuses_another_activation() {
    let json = QWEN2_V4.replace(r#""hidden_act": "silu""#, r#""hidden_act": "gelu""#);
    assert_eq!(config_error(parse(&json)).0, "hidden_act");
}

#[test]
fn missing_field_is_named() {
    let json = QWEN2_V4.replace(r#""intermediate_size": 4864,"#, "");
    let (field, problem) = config_error(parse(&json));
    assert_eq!((field.as_str(), problem.as_str()), ("intermediate_size", "missing"));
    let message = parse(&json).unwrap_err().to_string();
    assert_eq!(message, "config.json: intermediate_size: missing");

    // Neither rope_theta nor rope_parameters: the base is not guessed.
    let json = QWEN2_V4.replace(r#""rope_theta": 1000000.0,"#, "");
    assert_eq!(config_error(parse(&json)).0, "rope_theta");
}

#[test]
fn a_field_of_the_wrong_type_is_named_with_its_value() {
    let json = QWEN2_V4.replace(r#""hidden_size": 896"#, r#""hidden_size": "896""#);
    let (field, problem) = config_error(parse(&json));
    assert_eq!(field, "hidden_size");
    assert_eq!(problem, r#"expected a non-negative integer, found "896""#);
}

#[test]
fn invalid_model_is_refused_naming_the_file() {
    let json = QWEN2_V4.replace(r#""num_key_value_heads": 2"#, r#""num_key_value_heads": 3"#);
    match parse(&json) {
        Err(Error::Model { path, source }) => {
            assert_eq!(path, Path::new("config.json"));
            assert_eq!(
                source,
                mft_models::Error::InvalidConfig {
                    field: "num_key_value_heads",
                    problem: "does not divide num_attention_heads"
                }
            );
        }
        other => panic!("expected a Model error, got {other:?}"),
    }
}

// --- Gemma 3 -------------------------------------------------------------------------------

/// As transformers 4 wrote gemma-3-270m's config, shrunk to 8 layers.
const GEMMA3_V4: &str = r#"{
  "_sliding_window_pattern": 6,
  "architectures": ["Gemma3ForCausalLM"],
  "attention_bias": false,
  "attn_logit_softcapping": null,
  "final_logit_softcapping": null,
  "head_dim": 256,
  "hidden_activation": "gelu_pytorch_tanh",
  "hidden_size": 640,
  "intermediate_size": 2048,
  "layer_types": [
    "sliding_attention", "sliding_attention", "full_attention", "sliding_attention",
    "sliding_attention", "sliding_attention", "sliding_attention", "full_attention"
  ],
  "max_position_embeddings": 32768,
  "model_type": "gemma3_text",
  "num_attention_heads": 4,
  "num_hidden_layers": 8,
  "num_key_value_heads": 1,
  "query_pre_attn_scalar": 144,
  "rms_norm_eps": 1e-06,
  "rope_local_base_freq": 10000.0,
  "rope_scaling": null,
  "rope_theta": 1000000.0,
  "sliding_window": 512,
  "use_bidirectional_attention": false,
  "vocab_size": 262144
}"#;

#[test]
fn gemma3_text_with_layer_types() {
    let config = parse(GEMMA3_V4).unwrap();
    let expected = ModelConfig {
        layers: 8,
        attention_scale: 1.0 / 12.0,
        sliding_layers: 0b0111_1011,
        ..ModelConfig::gemma3_270m()
    };
    assert_eq!(config, expected);
    assert!(config.is_sliding(0) && !config.is_sliding(2) && !config.is_sliding(7));
    assert_eq!(config.rope_of(0), rope(10_000.0, 1.0));
    assert_eq!(config.rope_of(2), rope(1e6, 1.0));
}

#[test]
fn gemma3_text_linear_scaling_is_for_global_layers_only() {
    let json = GEMMA3_V4.replace(
        r#""rope_scaling": null"#,
        r#""rope_scaling": {"rope_type": "linear", "factor": 8.0}"#,
    );
    let config = parse(&json).unwrap();
    assert_eq!(config.rope, rope(1e6, 8.0));
    assert_eq!(config.rope_local, rope(10_000.0, 1.0));
}

#[test]
fn gemma3_text_without_layer_types_uses_the_pattern() {
    let start = GEMMA3_V4.find(r#""layer_types""#).unwrap();
    let end = GEMMA3_V4[start..].find("],").unwrap() + start + 2;
    let without = format!("{}{}", &GEMMA3_V4[..start], &GEMMA3_V4[end..]);
    // `_sliding_window_pattern` 6: layer 6 (1-based) is global.
    assert_eq!(parse(&without).unwrap().sliding_layers, 0b1101_1111);
    assert_eq!(parse(&without).unwrap().sliding_layers, sliding_pattern(8, 6));
    // The older `sliding_window_pattern` spelling, period 3: layers 3 and 6 are global.
    let json = without.replace(r#""_sliding_window_pattern": 6"#, r#""sliding_window_pattern": 3"#);
    assert_eq!(parse(&json).unwrap().sliding_layers, 0b1101_1011);
    // Neither: transformers' default of 6.
    let json = without.replace(r#""_sliding_window_pattern": 6,"#, "");
    assert_eq!(parse(&json).unwrap().sliding_layers, sliding_pattern(8, 6));
}

#[test]
fn gemma3_text_v5_rope_parameters_per_layer_type() {
    let json = GEMMA3_V4
        .replace(r#""rope_local_base_freq": 10000.0,"#, "")
        .replace(r#""rope_theta": 1000000.0,"#, "")
        .replace(
            r#""rope_scaling": null"#,
            r#""rope_parameters": {
              "full_attention": {"factor": 8.0, "rope_theta": 500000.0, "rope_type": "linear"},
              "sliding_attention": {"rope_theta": 20000.0, "rope_type": "default"}
            }"#,
        );
    let config = parse(&json).unwrap();
    assert_eq!(config.rope, rope(500_000.0, 8.0));
    assert_eq!(config.rope_local, rope(20_000.0, 1.0));
    assert_eq!(config.rope_of(0), rope(20_000.0, 1.0));
    assert_eq!(config.rope_of(2), rope(500_000.0, 8.0));
}

#[test]
fn gemma3_text_refuses_an_unknown_rope_type_in_rope_parameters() {
    let json = GEMMA3_V4.replace(
        r#""rope_scaling": null"#,
        r#""rope_parameters": {"full_attention": {"rope_theta": 1e6, "rope_type": "yarn"}}"#,
    );
    let (field, problem) = config_error(parse(&json));
    assert_eq!(field, "rope_parameters.full_attention.rope_type");
    assert!(problem.contains("\"yarn\""), "{problem}");
}

#[test]
fn gemma3_text_refuses_softcapping() {
    for field in ["final_logit_softcapping", "attn_logit_softcapping"] {
        let json =
            GEMMA3_V4.replace(&format!(r#""{field}": null"#), &format!(r#""{field}": 30.0"#));
        let (named, problem) = config_error(parse(&json));
        assert_eq!(named, field);
        assert!(problem.contains("softcapping"), "{problem}");
    }
}

#[test]
fn gemma3_text_refuses_attention_bias_and_another_activation() {
    let json = GEMMA3_V4.replace(r#""attention_bias": false"#, r#""attention_bias": true"#);
    assert_eq!(config_error(parse(&json)).0, "attention_bias");
    let json = GEMMA3_V4.replace("gelu_pytorch_tanh", "gelu");
    assert_eq!(config_error(parse(&json)).0, "hidden_activation");
}

#[test]
fn gemma3_text_layer_types_must_name_every_layer() {
    let json = GEMMA3_V4.replace(r#""num_hidden_layers": 8"#, r#""num_hidden_layers": 9"#);
    let (field, problem) = config_error(parse(&json));
    assert_eq!(field, "layer_types");
    assert!(problem.contains("8 entries for 9 layers"), "{problem}");
    let json = GEMMA3_V4.replacen("full_attention", "chunked_attention", 1);
    assert_eq!(config_error(parse(&json)).0, "layer_types[2]");
}

#[test]
fn gemma3_text_refuses_an_untied_head() {
    let json =
        GEMMA3_V4.replace(r#""vocab_size""#, r#""tie_word_embeddings": false, "vocab_size""#);
    assert!(matches!(
        parse(&json),
        Err(Error::Model {
            source: mft_models::Error::InvalidConfig { field: "tie_word_embeddings", .. },
            ..
        })
    ));
}

/// As transformers 4 wrote gemma-3-4b-it's config: the text config only as its difference from
/// Gemma3TextConfig's defaults.
const GEMMA3_MULTIMODAL_V4: &str = r#"{
  "architectures": ["Gemma3ForConditionalGeneration"],
  "boi_token_index": 255999,
  "eoi_token_index": 256000,
  "eos_token_id": [1, 106],
  "image_token_index": 262144,
  "initializer_range": 0.02,
  "mm_tokens_per_image": 256,
  "model_type": "gemma3",
  "text_config": {
    "hidden_size": 2560,
    "intermediate_size": 10240,
    "model_type": "gemma3_text",
    "num_hidden_layers": 34,
    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    "sliding_window": 1024
  },
  "torch_dtype": "bfloat16",
  "transformers_version": "4.50.0.dev0",
  "vision_config": {
    "hidden_size": 1152,
    "image_size": 896,
    "intermediate_size": 4304,
    "model_type": "siglip_vision_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 27,
    "patch_size": 14,
    "vision_use_head": false
  }
}"#;

#[test]
fn gemma3_multimodal_takes_the_nested_text_config() {
    let config = parse(GEMMA3_MULTIMODAL_V4).unwrap();
    let expected = ModelConfig {
        family: Family::Gemma3,
        vocab: 262_208,
        hidden: 2560,
        layers: 34,
        heads: 8,
        kv_heads: 4,
        head_dim: 256,
        intermediate: 10240,
        max_positions: 131_072,
        norm_eps: 1e-6,
        tie_embeddings: true,
        attention_scale: 1.0 / 16.0,
        rope: rope(1e6, 8.0),
        rope_local: rope(10_000.0, 1.0),
        sliding_window: Some(1024),
        sliding_layers: sliding_pattern(34, 6),
        padding_idx: Some(0),
    };
    assert_eq!(config, expected);
}

#[test]
fn gemma3_multimodal_v5_full_text_config() {
    // transformers 5 writes the whole text config, rope_parameters included.
    let text = GEMMA3_V4.replace(r#""model_type": "gemma3_text","#, "");
    let json = format!(
        r#"{{"model_type": "gemma3", "text_config": {text}, "tie_word_embeddings": true}}"#
    );
    let config = parse(&json).unwrap();
    assert_eq!(config, parse(GEMMA3_V4).unwrap());
}

#[test]
fn gemma3_multimodal_errors_name_the_nested_field() {
    let json = GEMMA3_MULTIMODAL_V4.replace(
        r#""sliding_window": 1024"#,
        r#""sliding_window": 1024, "final_logit_softcapping": 30.0"#,
    );
    assert_eq!(config_error(parse(&json)).0, "text_config.final_logit_softcapping");
    let json = r#"{"model_type": "gemma3", "vision_config": {}}"#;
    assert_eq!(config_error(parse(json)), ("text_config".into(), "missing".into()));
}

// --- model types, syntax, files --------------------------------------------------------------

#[test]
fn unsupported_model_types_are_named() {
    let json = GEMMA3_V4.replace(r#""model_type": "gemma3_text""#, r#""model_type": "gemma2""#);
    let err = parse(&json).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedModelType { model_type, .. } if model_type == "gemma2")
    );
    assert_eq!(
        err.to_string(),
        r#"config.json: model_type "gemma2" is not supported (supported: gpt2, qwen2, gemma3_text, gemma3)"#
    );
    let err = parse(r#"{"model_type": "llama"}"#).unwrap_err();
    assert!(err.to_string().contains(r#""llama""#), "{err}");
    assert_eq!(config_error(parse(r#"{"vocab_size": 3}"#)).0, "model_type");
}

#[test]
fn invalid_json_names_file_line_and_column() {
    let err = parse("{\n  \"model_type\": \"gpt2\",\n  \"n_embd\": ,\n}").unwrap_err();
    match &err {
        Error::Json { path, line, column, .. } => {
            assert_eq!(path, Path::new("config.json"));
            assert_eq!((*line, *column), (3, 13));
        }
        other => panic!("expected a Json error, got {other:?}"),
    }
    assert!(err.to_string().starts_with("config.json: invalid JSON: "), "{err}");
    assert!(err.to_string().contains("line 3 column 13"), "{err}");
    assert_eq!(config_error(parse("[1, 2]")).0, "(top level)");
}

#[test]
fn read_model_config_reads_a_file_and_names_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, GPT2).unwrap();
    assert_eq!(read_model_config(&path).unwrap().hidden, 64);

    let absent = dir.path().join("absent.json");
    match read_model_config(&absent) {
        Err(Error::Io { path, .. }) => assert_eq!(path, absent),
        other => panic!("expected an Io error, got {other:?}"),
    }
}

// --- Found by fuzzing (fuzz/fuzz_targets/model_config.rs) -----------------------------------

/// Widths whose products overflow 64 bits are refused naming the field; they panicked (an
/// overflow in the parameter layout) before.
#[test]
fn absurd_widths_are_refused_not_overflowed() {
    let cases = [
        (
            r#"{"model_type":"gpt2","vocab_size":18446744073709551615,"n_positions":1024,"n_embd":4294967296,"n_layer":2,"n_head":1}"#,
            "vocab_size",
        ),
        (
            r#"{"model_type":"gpt2","vocab_size":4611686018427387904,"n_positions":4611686018427387904,"n_embd":4,"n_layer":2,"n_head":1}"#,
            "vocab_size",
        ),
        (
            r#"{"model_type":"gpt2","vocab_size":16,"n_positions":16,"n_embd":9223372036854775808,"n_layer":2,"n_head":1}"#,
            "hidden_size",
        ),
        (
            r#"{"model_type":"qwen2","vocab_size":100,"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4294967296,"num_key_value_heads":1,"head_dim":4294967296,"intermediate_size":64,"max_position_embeddings":64,"rms_norm_eps":1e-6,"rope_theta":10000}"#,
            "head_dim",
        ),
    ];
    for (json, field) in cases {
        match parse(json) {
            Err(Error::Model {
                source: mft_models::Error::InvalidConfig { field: f, .. }, ..
            }) => {
                assert_eq!(f, field, "{json}");
            }
            other => panic!("{json}: expected a Model error, got {other:?}"),
        }
        let message = parse(json).unwrap_err().to_string();
        assert!(message.contains("2^24") && !message.contains('\n'), "{message}");
    }
}
