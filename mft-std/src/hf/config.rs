//! Hugging Face's config.json read into a [`ModelConfig`]: GPT-2 (`gpt2`), Qwen 2.5 (`qwen2`)
//! and Gemma 3 (`gemma3_text`, or the text part of the multimodal `gemma3`).
//!
//! Both generations of transformers' files are read: v4 writes RoPE as `rope_theta`,
//! `rope_scaling` and (Gemma) `rope_local_base_freq`; v5 writes `rope_parameters`, for Gemma a
//! dict per layer type (`full_attention`, `sliding_attention`). Fields that set a shape or a
//! RoPE base are required; options with a fixed meaning (`tie_word_embeddings`, activations,
//! softcapping, …) take transformers' defaults when absent. The one exception is the
//! `text_config` of a multimodal `gemma3` file: transformers writes it as the difference from
//! `Gemma3TextConfig`'s defaults, so those defaults fill in whatever it leaves out.
//!
//! Anything that would change the math in a way mft does not implement (another activation,
//! softcapping, a RoPE type other than linear, Qwen's sliding window, attention biases on
//! Gemma) is refused with an error naming the file and the field.

use std::path::Path;

use mft_models::config::{MAX_LAYERS, sliding_pattern};
use mft_models::{Family, ModelConfig, Rope};
use serde_json::{Map, Value, json};

use super::fields::{Fields, MISSING, parse_json};
use crate::error::{Error, Result};

/// Reads a config.json file.
pub fn read_model_config(path: &Path) -> Result<ModelConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse_model_config(&text, path)
}

/// Parses the text of a config.json; `origin` is the file it came from, named in errors.
pub fn parse_model_config(json: &str, origin: &Path) -> Result<ModelConfig> {
    let root = parse_json(json, origin)?;
    let top = Fields::root(&root, origin)?;
    let model_type = top.str("model_type")?;
    let unsupported = || Error::UnsupportedModelType {
        path: origin.to_path_buf(),
        model_type: model_type.into(),
    };
    let family = Family::from_model_type(model_type).ok_or_else(unsupported)?;
    let config = match (family, model_type) {
        (Family::Gpt2, _) => gpt2(&top)?,
        (Family::Qwen2, _) => qwen2(&top)?,
        (Family::Gemma3, "gemma3") => {
            let text =
                top.object("text_config")?.ok_or_else(|| top.error("text_config", MISSING))?;
            if let Some(inner) = text.str_or("model_type", None)?
                && inner != "gemma3_text"
            {
                return Err(text.error("model_type", format!("\"{inner}\", expected gemma3_text")));
            }
            // Fill in what transformers left out of the nested config: its class defaults.
            let mut merged = gemma3_text_defaults();
            merged.extend(text.map.iter().map(|(k, v)| (k.clone(), v.clone())));
            // tie_word_embeddings may be written at either level; the nested one wins.
            if !text.map.contains_key("tie_word_embeddings")
                && let Some(tie) = top.map.get("tie_word_embeddings")
            {
                merged.insert("tie_word_embeddings".into(), tie.clone());
            }
            gemma3(&Fields { map: &merged, path: origin, prefix: text.prefix.clone() })?
        }
        (Family::Gemma3, _) => gemma3(&top)?,
    };
    config.validate().map_err(|source| Error::Model { path: origin.to_path_buf(), source })?;
    Ok(config)
}

/// GPT-2: `ModelConfig::gpt2_with` is the template; the file sets the sizes.
fn gpt2(f: &Fields<'_>) -> Result<ModelConfig> {
    let hidden = f.usize("n_embd")?;
    let layers = f.usize("n_layer")?;
    let heads = f.usize("n_head")?;
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(f.error("n_head", format!("{heads} does not divide n_embd {hidden}")));
    }
    let mut config = ModelConfig::gpt2_with(hidden, layers, heads);
    config.vocab = f.usize("vocab_size")?;
    config.max_positions = f.usize("n_positions")?;
    config.norm_eps = f.f32_or("layer_norm_epsilon", config.norm_eps)?;
    config.intermediate = f.usize_or("n_inner", hidden.saturating_mul(4))?;
    f.one_of("activation_function", "gelu_new", &["gelu_new", "gelu_pytorch_tanh"])?;
    config.tie_embeddings = f.bool_or("tie_word_embeddings", true)?;
    f.refuse_true("scale_attn_by_inverse_layer_idx")?;
    f.refuse_true("add_cross_attention")?;
    if !f.bool_or("scale_attn_weights", true)? {
        config.attention_scale = 1.0;
    }
    Ok(config)
}

/// Qwen 2 / 2.5.
fn qwen2(f: &Fields<'_>) -> Result<ModelConfig> {
    let hidden = f.usize("hidden_size")?;
    let layers = f.usize("num_hidden_layers")?;
    let heads = f.usize("num_attention_heads")?;
    let kv_heads = f.usize_or("num_key_value_heads", heads)?;
    let head_dim = match f.get("head_dim") {
        Some(_) => f.usize("head_dim")?,
        None if heads > 0 && hidden.is_multiple_of(heads) => hidden / heads,
        None => {
            return Err(f.error(
                "num_attention_heads",
                format!("{heads} does not divide hidden_size {hidden}"),
            ));
        }
    };
    f.one_of("hidden_act", "silu", &["silu"])?;
    if f.bool_or("use_sliding_window", false)? {
        return Err(f.error("use_sliding_window", "true: mft does not run Qwen's sliding window"));
    }
    if let Some(types) = layer_types(f, layers)?
        && types != 0
    {
        return Err(f.error(
            &format!("layer_types[{}]", types.trailing_zeros()),
            "sliding_attention: mft does not run Qwen's sliding window",
        ));
    }
    let rope = global_rope(f, "rope_theta")?;
    Ok(ModelConfig {
        family: Family::Qwen2,
        vocab: f.usize("vocab_size")?,
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        intermediate: f.usize("intermediate_size")?,
        max_positions: f.usize("max_position_embeddings")?,
        norm_eps: f.f32("rms_norm_eps")?,
        tie_embeddings: f.bool_or("tie_word_embeddings", false)?,
        attention_scale: inverse_sqrt(head_dim as f64),
        rope: Some(rope),
        rope_local: None,
        sliding_window: None,
        sliding_layers: 0,
        padding_idx: padding_idx(f, None)?,
    })
}

/// `pad_token_id`, which Qwen 2 and Gemma 3 hand to `nn.Embedding` as `padding_idx`: that
/// row's embedding gets no gradient from the input side. `default` is the family's config
/// class default (Gemma3TextConfig: 0; Qwen2Config: none).
fn padding_idx(f: &Fields<'_>, default: Option<usize>) -> Result<Option<u32>> {
    let id = match f.get("pad_token_id") {
        Some(_) => f.usize_or_none("pad_token_id")?,
        None => default,
    };
    match id {
        None => Ok(None),
        Some(id) => u32::try_from(id)
            .map(Some)
            .map_err(|_| f.error("pad_token_id", format!("{id}: not a token id"))),
    }
}

/// Gemma 3's text model.
fn gemma3(f: &Fields<'_>) -> Result<ModelConfig> {
    let layers = f.usize("num_hidden_layers")?;
    let head_dim = f.usize("head_dim")?;
    f.one_of("hidden_activation", "gelu_pytorch_tanh", &["gelu_pytorch_tanh"])?;
    for field in ["final_logit_softcapping", "attn_logit_softcapping"] {
        if let Some(value) = f.get(field) {
            return Err(f.error(field, format!("{value}: mft does not implement softcapping")));
        }
    }
    f.refuse_true("attention_bias")?;
    f.refuse_true("use_bidirectional_attention")?;
    let sliding_layers = match layer_types(f, layers)? {
        Some(mask) => mask,
        None => {
            let period = match f.get("sliding_window_pattern") {
                Some(_) => f.usize("sliding_window_pattern")?,
                None => f.usize_or("_sliding_window_pattern", 6)?,
            };
            if period == 0 {
                return Err(f.error("sliding_window_pattern", "must be positive"));
            }
            sliding_pattern(layers, period)
        }
    };
    let sliding_window = f.usize_or_none("sliding_window")?;
    if sliding_layers != 0 && sliding_window.is_none() {
        return Err(f.error("sliding_window", "missing, and layer_types has sliding layers"));
    }
    let scalar = f.f64("query_pre_attn_scalar")?;
    if !(scalar.is_finite() && scalar > 0.0) {
        return Err(f.error("query_pre_attn_scalar", format!("{scalar}: must be positive")));
    }
    let rope = global_rope(f, "rope_theta")?;
    let rope_local = local_rope(f)?;
    Ok(ModelConfig {
        family: Family::Gemma3,
        vocab: f.usize("vocab_size")?,
        hidden: f.usize("hidden_size")?,
        layers,
        heads: f.usize("num_attention_heads")?,
        kv_heads: f.usize("num_key_value_heads")?,
        head_dim,
        intermediate: f.usize("intermediate_size")?,
        max_positions: f.usize("max_position_embeddings")?,
        norm_eps: f.f32("rms_norm_eps")?,
        tie_embeddings: f.bool_or("tie_word_embeddings", true)?,
        attention_scale: inverse_sqrt(scalar),
        rope: Some(rope),
        rope_local: Some(rope_local),
        sliding_window,
        sliding_layers,
        padding_idx: padding_idx(f, Some(0))?,
    })
}

/// `Gemma3TextConfig`'s defaults for the fields mft reads (transformers 4.50 to 5.x), the
/// base that a multimodal file's sparse `text_config` is laid over.
fn gemma3_text_defaults() -> Map<String, Value> {
    let defaults = json!({
        "vocab_size": 262_208,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131_072,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "query_pre_attn_scalar": 256,
        "sliding_window": 4096,
        "tie_word_embeddings": true,
    });
    match defaults {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

fn inverse_sqrt(x: f64) -> f32 {
    (1.0 / x.sqrt()) as f32
}

/// The RoPE of global layers: `rope_parameters` (flat, or its `full_attention` entry), else
/// `rope_theta` with `rope_scaling`.
fn global_rope(f: &Fields<'_>, theta_field: &str) -> Result<Rope> {
    let (params, _) = rope_parameters(f)?;
    let spec = match params {
        Some(p) => Some(RopeSpec::read(&p)?),
        None => f.object("rope_scaling")?.map(|s| RopeSpec::read(&s)).transpose()?,
    };
    let factor = spec.as_ref().map_or(1.0, |s| s.factor);
    let base = match spec.and_then(|s| s.theta) {
        Some(theta) => theta,
        None => f.f32(theta_field)?,
    };
    Ok(Rope { base, linear_factor: factor })
}

/// Gemma's RoPE of sliding layers: `rope_parameters.sliding_attention`, else
/// `rope_local_base_freq` (never scaled: v4's `rope_scaling` is for global layers only).
fn local_rope(f: &Fields<'_>) -> Result<Rope> {
    let (_, local) = rope_parameters(f)?;
    let spec = local.map(|p| RopeSpec::read(&p)).transpose()?;
    let factor = spec.as_ref().map_or(1.0, |s| s.factor);
    let base = match spec.and_then(|s| s.theta) {
        Some(theta) => theta,
        None => f.f32("rope_local_base_freq")?,
    };
    Ok(Rope { base, linear_factor: factor })
}

/// v5's `rope_parameters` as (global, sliding) entries: a flat dict is the global one.
fn rope_parameters<'a>(f: &Fields<'a>) -> Result<(Option<Fields<'a>>, Option<Fields<'a>>)> {
    let Some(params) = f.object("rope_parameters")? else {
        return Ok((None, None));
    };
    let per_type =
        ["full_attention", "sliding_attention"].iter().any(|k| params.map.contains_key(*k));
    if !per_type {
        return Ok((Some(params), None));
    }
    if let Some(other) =
        params.map.keys().find(|k| !matches!(k.as_str(), "full_attention" | "sliding_attention"))
    {
        return Err(
            params.error(other, "unknown layer type (expected full_attention, sliding_attention)")
        );
    }
    Ok((params.object("full_attention")?, params.object("sliding_attention")?))
}

/// One RoPE entry (`rope_scaling`, or a `rope_parameters` dict).
struct RopeSpec {
    theta: Option<f32>,
    factor: f32,
}

impl RopeSpec {
    fn read(f: &Fields<'_>) -> Result<RopeSpec> {
        let (field, kind) = match f.get("rope_type") {
            Some(_) => ("rope_type", f.str("rope_type")?),
            None => ("type", f.str_or("type", Some("default"))?.unwrap_or("default")),
        };
        let factor = match kind {
            "default" => 1.0,
            "linear" => f.f32("factor")?,
            other => {
                return Err(f.error(
                    field,
                    format!("\"{other}\" is not supported (supported: default, linear)"),
                ));
            }
        };
        let theta = f.get("rope_theta").map(|_| f.f32("rope_theta")).transpose()?;
        Ok(RopeSpec { theta, factor })
    }
}

/// `layer_types` as a sliding-layer mask, if present; it must name every layer.
fn layer_types(f: &Fields<'_>, layers: usize) -> Result<Option<u128>> {
    let Some(value) = f.get("layer_types") else { return Ok(None) };
    let types = value
        .as_array()
        .ok_or_else(|| f.expected("layer_types", "a list of layer types", value))?;
    if types.len() != layers {
        return Err(f.error(
            "layer_types",
            format!("{} entries for {layers} layers (num_hidden_layers)", types.len()),
        ));
    }
    let mut mask = 0u128;
    for (layer, kind) in types.iter().enumerate().take(MAX_LAYERS) {
        match kind.as_str() {
            Some("sliding_attention") => mask |= 1 << layer,
            Some("full_attention") => {}
            _ => {
                return Err(f.expected(
                    &format!("layer_types[{layer}]"),
                    "\"sliding_attention\" or \"full_attention\"",
                    kind,
                ));
            }
        }
    }
    Ok(Some(mask))
}
