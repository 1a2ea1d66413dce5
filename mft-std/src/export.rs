//! Trained results written in the formats the Hugging Face ecosystem loads: a LoRA run as a PEFT
//! adapter directory ([`export_peft_adapter`]: `adapter_config.json` + `adapter_model.safetensors`,
//! what `PeftModel.from_pretrained` reads), and a model as a transformers snapshot
//! ([`export_hf_snapshot`]: `config.json` + `model.safetensors`, what
//! `AutoModelForCausalLM.from_pretrained` reads). [`merge_lora`] folds adapters into the base
//! weights, so a LoRA run can also be shipped as a plain snapshot.
//!
//! Every file is written atomically ([`crate::fsio`]), weights before the config that announces
//! them, so a directory with a config always has its weights. Tensors are f32, little-endian,
//! under the names and in the shapes transformers and PEFT use (GPT-2's Conv1D weights `[in,
//! out]`, every other projection `[out, in]`; LoRA `A` `[r, in]`, `B` `[out, r]`). Whatever is
//! written reads back through [`crate::hf`] to the same configuration and the same bits.

use std::io::{self, Write};
use std::path::Path;

use mft_core::{DType, Element};
use mft_models::params::{GlobalParam, LayerParam};
use mft_models::{
    Family, LoraConfig, LoraLayout, LoraTargets, ModelConfig, Param, ParamLayout, Rope, Weights,
};
use rayon::prelude::*;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::fsio::{create_dir_all, write_atomic, write_atomic_with};
use crate::hf::config::parse_model_config;

/// File name of a PEFT adapter's configuration.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// File name of a PEFT adapter's weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// File name of a transformers model's configuration.
pub const MODEL_CONFIG: &str = "config.json";
/// File name of a transformers model's (unsharded) weights.
pub const MODEL_WEIGHTS: &str = "model.safetensors";

/// Writes the adapters of a LoRA run as a PEFT adapter directory: `adapter_model.safetensors`
/// (every `lora_A`/`lora_B` under PEFT's key, f32) and `adapter_config.json` (see
/// [`adapter_config_json`]). `dir` is created if missing; files already there are replaced.
/// `adapters` is the flat buffer of `lora`, which must be the layout of `lora.config()` on
/// `model`.
///
/// # Errors
/// [`Error::Output`] naming `dir` when `lora` or `adapters` do not belong to `model`;
/// [`Error::Io`] naming the directory or file that cannot be created or written.
pub fn export_peft_adapter(
    dir: &Path,
    model: &ModelConfig,
    lora: &LoraLayout,
    adapters: &[f32],
    base_model_name_or_path: Option<&str>,
) -> Result<()> {
    let output = |problem: String| Error::Output { path: dir.to_path_buf(), problem };
    let config = lora.config();
    config.validate().map_err(|e| output(format!("invalid LoRA configuration: {e}")))?;
    if LoraLayout::new(model, config) != *lora {
        return Err(output("the LoRA layout was made for another model".into()));
    }
    if adapters.len() != lora.len() {
        return Err(output(format!(
            "the adapter buffer holds {} floats; the LoRA layout has {}",
            adapters.len(),
            lora.len()
        )));
    }
    let rank = config.rank;
    let tensors: Vec<TensorOut<'_>> = lora
        .tensors()
        .map(|(layer, param, is_b)| {
            let slot = lora.slot(layer, param).expect("tensors() lists adapted projections");
            let shape = if is_b { [slot.out_features, rank] } else { [rank, slot.in_features] };
            TensorOut {
                name: lora.name(layer, param, is_b).to_string(),
                shape: shape.to_vec(),
                data: &adapters[lora.range(layer, param, is_b)],
            }
        })
        .collect();
    create_dir_all(dir)?;
    write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
    let text = adapter_config_json(model.family, config, base_model_name_or_path);
    write_atomic(&dir.join(ADAPTER_CONFIG), text.as_bytes())
}

/// The text of the `adapter_config.json` PEFT (0.21) reads for `lora` on a model of `family`:
/// plain LoRA (`peft_type` LORA, `task_type` CAUSAL_LM, no bias, no DoRA, nothing saved beside
/// the adapters), `target_modules` as [`target_module_names`] lists them, and `fan_in_fan_out`
/// true for GPT-2, whose Conv1D modules store their weight `[in, out]`.
pub fn adapter_config_json(
    family: Family,
    lora: &LoraConfig,
    base_model_name_or_path: Option<&str>,
) -> String {
    // PEFT writes an integral alpha as an integer (it is usually given as one); keep that look.
    let alpha = if lora.alpha.fract() == 0.0 && lora.alpha.abs() < 16_777_216.0 {
        json!(lora.alpha as i64)
    } else {
        shortest(lora.alpha)
    };
    let config = json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base_model_name_or_path,
        "bias": "none",
        "exclude_modules": null,
        "fan_in_fan_out": family == Family::Gpt2,
        "inference_mode": true,
        "init_lora_weights": true,
        "layer_replication": null,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": alpha,
        "lora_bias": false,
        "lora_dropout": shortest(lora.dropout),
        "modules_to_save": null,
        "peft_type": "LORA",
        "r": lora.rank,
        "rank_pattern": {},
        "revision": null,
        "target_modules": target_module_names(family, lora.targets),
        "target_parameters": null,
        "task_type": "CAUSAL_LM",
        "trainable_token_indices": null,
        "use_dora": false,
        "use_rslora": lora.rslora,
    });
    pretty(&config)
}

/// The `target_modules` PEFT needs to adapt exactly `targets` of a `family` model, sorted: a
/// projection's last name (`q_proj`, `c_attn`) when that name selects nothing else, else its
/// path within the block (`attn.c_proj` when GPT-2's `mlp.c_proj` is not targeted). PEFT
/// matches a module whose name is the entry or ends with `.` and the entry.
pub fn target_module_names(family: Family, targets: LoraTargets) -> Vec<String> {
    let projections: Vec<LayerParam> =
        LayerParam::ALL.into_iter().filter(|p| p.in_family(family) && p.is_matrix()).collect();
    let selects = |name: &str, p: LayerParam| {
        let path = p.module_path(family);
        path == name || path.strip_suffix(name).is_some_and(|head| head.ends_with('.'))
    };
    let mut names: Vec<String> = targets
        .params(family)
        .map(|p| {
            let path = p.module_path(family);
            let last = path.rsplit('.').next().unwrap_or(path);
            let alone = projections.iter().all(|&q| !selects(last, q) || targets.contains(q));
            if alone { last.to_string() } else { path.to_string() }
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Writes a model as a transformers snapshot: `model.safetensors` (every parameter of `layout`
/// under its Hugging Face name and shape, f32, with `{"format": "pt"}` metadata; a tied head is
/// not written, as transformers does not) and `config.json`.
///
/// The config is `source_config` copied byte for byte when given (the run's own config.json,
/// with its tokenizer ids and other fields mft does not model), else generated from `model` by
/// [`model_config_json`]. A multimodal `gemma3` source is not copied (the snapshot holds only the
/// text model, which its architecture does not load); the `gemma3_text` config is generated
/// instead. `dir` is created if missing; files already there are replaced.
///
/// # Errors
/// [`Error::Output`] naming `dir` when `layout` or `weights` do not belong to `model`, or when
/// `source_config` describes another model (naming that file); the errors of
/// [`crate::hf::read_model_config`] for an unreadable source; [`Error::Io`] naming the
/// directory or file that cannot be created or written.
pub fn export_hf_snapshot(
    dir: &Path,
    model: &ModelConfig,
    layout: &ParamLayout,
    weights: Weights<'_, f32>,
    source_config: Option<&Path>,
) -> Result<()> {
    let output = |problem: String| Error::Output { path: dir.to_path_buf(), problem };
    if ParamLayout::new(model) != *layout {
        return Err(output("the parameter layout was made for another model".into()));
    }
    if let Some((buffer, expected, actual)) = weights.size_mismatch(layout, mft_models::Paging::Off)
    {
        return Err(output(format!(
            "{buffer} holds {actual} values where the layout has {expected}"
        )));
    }
    let write = |param: Param, out: &mut dyn Write| {
        let slot = layout.slot(param).expect("params() lists the layout's parameters");
        let data =
            if slot.matrix { weights.matrix(layout, param) } else { weights.vector(layout, param) };
        write_f32s(out, data)
    };
    export_hf_snapshot_with(dir, model, layout, write, source_config)
}

/// [`export_hf_snapshot`] of weights that are not all in memory: `write(param, out)` writes
/// parameter `param`'s values (f32, little-endian, [`ParamLayout::slot`]`(param).len` of them)
/// as it reads them (from a scratch file, say).
///
/// # Errors
/// As [`export_hf_snapshot`]; what `write` fails with.
pub fn export_hf_snapshot_with(
    dir: &Path,
    model: &ModelConfig,
    layout: &ParamLayout,
    mut write: impl FnMut(Param, &mut dyn Write) -> io::Result<()>,
    source_config: Option<&Path>,
) -> Result<()> {
    let output = |problem: String| Error::Output { path: dir.to_path_buf(), problem };
    if ParamLayout::new(model) != *layout {
        return Err(output("the parameter layout was made for another model".into()));
    }
    let config_text = match source_config {
        Some(source) => source_config_text(source, model)?,
        None => None,
    };
    let config_path = dir.join(MODEL_CONFIG);
    let config_text = match config_text {
        Some(text) => text,
        None => model_config_json(model, &config_path)?.into_bytes(),
    };
    let params: Vec<Param> = layout.params().collect();
    let header: Vec<TensorHeader> = params
        .iter()
        .map(|&param| TensorHeader {
            name: param.name(model.family).to_string(),
            dtype: DType::F32,
            shape: hf_shape(model, param),
        })
        .collect();
    create_dir_all(dir)?;
    write_safetensors_with(&dir.join(MODEL_WEIGHTS), &header, |i, out| write(params[i], out))?;
    write_atomic(&config_path, &config_text)
}

/// The bytes of `source` to copy as the snapshot's config.json, or `None` when it is a
/// multimodal Gemma 3 config (whose text config is generated instead). Refuses a source that
/// does not describe `model`.
fn source_config_text(source: &Path, model: &ModelConfig) -> Result<Option<Vec<u8>>> {
    let bytes =
        std::fs::read(source).map_err(|e| Error::Io { path: source.to_path_buf(), source: e })?;
    let text = String::from_utf8_lossy(&bytes);
    let parsed = parse_model_config(&text, source)?;
    if parsed != *model {
        return Err(Error::Output {
            path: source.to_path_buf(),
            problem: format!(
                "describes another model than the weights being exported ({})",
                differences(&parsed, model).join(", ")
            ),
        });
    }
    let multimodal = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("model_type").and_then(Value::as_str).map(|t| t == "gemma3"))
        .unwrap_or(false);
    Ok((!multimodal).then_some(bytes))
}

/// The text of a config.json for `model` that transformers (5.x) loads as the family's causal
/// LM and [`crate::hf::read_model_config`] reads back to exactly `model`. `path` is the file it
/// is meant for, named in errors.
///
/// # Errors
/// [`Error::Output`] naming `path` when `model` holds a setting config.json cannot express (an
/// attention scale GPT-2 or Qwen would not compute, a GPT-2 `padding_idx`, …), listing the
/// fields that would not read back.
pub fn model_config_json(model: &ModelConfig, path: &Path) -> Result<String> {
    let output = |problem: String| Error::Output { path: path.to_path_buf(), problem };
    let mut config = match model.family {
        Family::Gpt2 => gpt2_config(model).map_err(output)?,
        Family::Qwen2 => qwen2_config(model),
        Family::Gemma3 => gemma3_config(model).map_err(output)?,
    };
    config.insert("dtype".into(), json!("float32"));
    let text = pretty(&Value::Object(config));
    let parsed = parse_model_config(&text, path).map_err(|e| {
        let why = match e {
            Error::Config { field, problem, .. } => format!("{field}: {problem}"),
            Error::Model { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        output(format!("this configuration cannot be written as a config.json ({why})"))
    })?;
    if parsed != *model {
        let fields = differences(&parsed, model).join(", ");
        return Err(output(format!(
            "this configuration cannot be written as a config.json that reads back the same \
             ({fields})"
        )));
    }
    Ok(text)
}

/// GPT-2's fields.
fn gpt2_config(m: &ModelConfig) -> std::result::Result<Map<String, Value>, String> {
    // The scale transformers computes for scale_attn_weights, as the reader takes it.
    let scaled = ModelConfig::gpt2_with(m.hidden, m.layers, m.heads.max(1)).attention_scale;
    let scale_attn_weights = if m.attention_scale == scaled {
        true
    } else if m.attention_scale == 1.0 {
        false
    } else {
        return Err(format!(
            "attention scale {} is neither 1/sqrt(head_dim) nor 1, the two GPT-2 computes",
            m.attention_scale
        ));
    };
    let n_inner = if m.intermediate == 4 * m.hidden { Value::Null } else { json!(m.intermediate) };
    // GPT2Config's default token ids (50256, GPT-2's <|endoftext|>) do not exist in a smaller
    // vocabulary; transformers warns about them.
    let mut config = object(json!({
        "activation_function": "gelu_new",
        "add_cross_attention": false,
        "architectures": ["GPT2LMHeadModel"],
        "layer_norm_epsilon": shortest(m.norm_eps),
        "model_type": "gpt2",
        "n_embd": m.hidden,
        "n_head": m.heads,
        "n_inner": n_inner,
        "n_layer": m.layers,
        "n_positions": m.max_positions,
        "scale_attn_by_inverse_layer_idx": false,
        "scale_attn_weights": scale_attn_weights,
        "tie_word_embeddings": true,
        "vocab_size": m.vocab,
    }));
    if m.vocab <= 50256 {
        config.insert("bos_token_id".into(), Value::Null);
        config.insert("eos_token_id".into(), Value::Null);
    }
    Ok(config)
}

/// Qwen 2.5's fields.
fn qwen2_config(m: &ModelConfig) -> Map<String, Value> {
    let global = m.rope.unwrap_or(Rope { base: 10_000.0, linear_factor: 1.0 });
    object(json!({
        "architectures": ["Qwen2ForCausalLM"],
        "head_dim": m.head_dim,
        "hidden_act": "silu",
        "hidden_size": m.hidden,
        "intermediate_size": m.intermediate,
        "layer_types": vec!["full_attention"; m.layers],
        "max_position_embeddings": m.max_positions,
        "model_type": "qwen2",
        "num_attention_heads": m.heads,
        "num_hidden_layers": m.layers,
        "num_key_value_heads": m.kv_heads,
        "pad_token_id": m.padding_idx,
        "rms_norm_eps": shortest(m.norm_eps),
        "rope_parameters": rope_parameters(global),
        "sliding_window": null,
        "tie_word_embeddings": m.tie_embeddings,
        "use_sliding_window": false,
        "vocab_size": m.vocab,
    }))
}

/// Gemma 3 text's fields.
fn gemma3_config(m: &ModelConfig) -> std::result::Result<Map<String, Value>, String> {
    let global = m.rope.unwrap_or(Rope { base: 1_000_000.0, linear_factor: 1.0 });
    let local = m.rope_local.unwrap_or(Rope { base: 10_000.0, linear_factor: 1.0 });
    let layer_types: Vec<&str> = (0..m.layers)
        .map(|l| match l < 128 && m.sliding_layers >> l & 1 == 1 {
            true => "sliding_attention",
            false => "full_attention",
        })
        .collect();
    Ok(object(json!({
        "architectures": ["Gemma3ForCausalLM"],
        "attention_bias": false,
        "attn_logit_softcapping": null,
        "final_logit_softcapping": null,
        "head_dim": m.head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": m.hidden,
        "intermediate_size": m.intermediate,
        "layer_types": layer_types,
        "max_position_embeddings": m.max_positions,
        "model_type": "gemma3_text",
        "num_attention_heads": m.heads,
        "num_hidden_layers": m.layers,
        "num_key_value_heads": m.kv_heads,
        "pad_token_id": m.padding_idx,
        "query_pre_attn_scalar": query_pre_attn_scalar(m.attention_scale)?,
        "rms_norm_eps": shortest(m.norm_eps),
        "rope_parameters": {
            "full_attention": rope_parameters(global),
            "sliding_attention": rope_parameters(local),
        },
        "sliding_window": m.sliding_window,
        "tie_word_embeddings": m.tie_embeddings,
        "use_bidirectional_attention": false,
        "vocab_size": m.vocab,
    })))
}

/// Gemma's `query_pre_attn_scalar` `s` whose `s^-½` (computed in f64, rounded to f32, as the
/// reader does) is `scale`: an integer when one fits, as in every published config.
fn query_pre_attn_scalar(scale: f32) -> std::result::Result<Value, String> {
    let reads_as = |s: f64| (1.0 / s.sqrt()) as f32 == scale;
    let exact = 1.0 / (f64::from(scale) * f64::from(scale));
    if !(exact.is_finite() && exact > 0.0) {
        return Err(format!("attention scale {scale} has no query_pre_attn_scalar"));
    }
    let whole = exact.round();
    if (1.0..9.0e15).contains(&whole) && reads_as(whole) {
        return Ok(json!(whole as u64));
    }
    Ok(json!(exact))
}

/// A RoPE as a transformers 5 `rope_parameters` entry.
fn rope_parameters(rope: Rope) -> Value {
    if rope.linear_factor == 1.0 {
        json!({"rope_theta": shortest(rope.base), "rope_type": "default"})
    } else {
        json!({
            "factor": shortest(rope.linear_factor),
            "rope_theta": shortest(rope.base),
            "rope_type": "linear",
        })
    }
}

/// The names of the fields of two configurations that differ.
fn differences(a: &ModelConfig, b: &ModelConfig) -> Vec<&'static str> {
    let fields = [
        ("model_type", a.family != b.family),
        ("vocab_size", a.vocab != b.vocab),
        ("hidden_size", a.hidden != b.hidden),
        ("num_hidden_layers", a.layers != b.layers),
        ("num_attention_heads", a.heads != b.heads),
        ("num_key_value_heads", a.kv_heads != b.kv_heads),
        ("head_dim", a.head_dim != b.head_dim),
        ("intermediate_size", a.intermediate != b.intermediate),
        ("max_position_embeddings", a.max_positions != b.max_positions),
        ("norm epsilon", a.norm_eps != b.norm_eps),
        ("tie_word_embeddings", a.tie_embeddings != b.tie_embeddings),
        ("attention scale", a.attention_scale != b.attention_scale),
        ("rope", a.rope != b.rope),
        ("local rope", a.rope_local != b.rope_local),
        ("sliding_window", a.sliding_window != b.sliding_window),
        ("layer_types", a.sliding_layers != b.sliding_layers),
        ("pad_token_id", a.padding_idx != b.padding_idx),
    ];
    fields.into_iter().filter(|f| f.1).map(|f| f.0).collect()
}

/// Folds LoRA adapters into the base weights: every adapted projection becomes
/// `W + scaling·B·A`, in the layout the matrix store keeps it (`[out, in]`, or `[in, out]`
/// for GPT-2's Conv1D, where the update is `(B·A)ᵀ`). Each sum is taken in f64 and rounded
/// once. The merged model, run without adapters, computes what the base model computes with
/// them (up to that rounding), and can be exported with [`export_hf_snapshot`].
///
/// # Panics
/// When `matrices` is not the matrix store of `model`, `lora` not the layout of its config on
/// `model`, or `adapters` not `lora`'s buffer: programming errors of the caller.
pub fn merge_lora<T: Element + Send>(
    model: &ModelConfig,
    matrices: &mut [T],
    lora: &LoraLayout,
    adapters: &[f32],
) {
    let layout = ParamLayout::new(model);
    assert_eq!(matrices.len(), layout.matrix_len(), "merge_lora: not the model's matrix store");
    assert_eq!(LoraLayout::new(model, lora.config()), *lora, "merge_lora: LoRA of another model");
    assert_eq!(adapters.len(), lora.len(), "merge_lora: not the LoRA layout's buffer");
    let rank = lora.config().rank;
    let scaling = f64::from(lora.config().scaling());
    let conv1d = model.family == Family::Gpt2;
    for (layer, param, is_b) in lora.tensors() {
        if is_b {
            continue;
        }
        let slot = lora.slot(layer, param).expect("tensors() lists adapted projections");
        let (fan_in, fan_out) = (slot.in_features, slot.out_features);
        let a = &adapters[lora.range(layer, param, false)];
        let b = &adapters[lora.range(layer, param, true)];
        let weight = layout.slot(Param::Layer(layer, param)).expect("adapted projections exist");
        let w = &mut matrices[weight.range()];
        // Each row of W gains scaling·Σ_r c[r]·M[r, :]. Linear rows are outputs: c = B[o, :],
        // M = A. Conv1D rows are inputs: c = A[:, i], M = Bᵀ.
        let b_t: Vec<f32>;
        let (width, m): (usize, &[f32]) = if conv1d {
            b_t = (0..rank * fan_out).map(|k| b[(k % fan_out) * rank + k / fan_out]).collect();
            (fan_out, &b_t)
        } else {
            (fan_in, a)
        };
        let coefficient = |row: usize, r: usize| {
            if conv1d { a[r * fan_in + row] } else { b[row * rank + r] }
        };
        w.par_chunks_mut(width).enumerate().for_each_init(
            || vec![0.0f64; width],
            |sum, (row, w_row)| {
                sum.fill(0.0);
                for r in 0..rank {
                    let c = f64::from(coefficient(row, r));
                    for (s, &v) in sum.iter_mut().zip(&m[r * width..(r + 1) * width]) {
                        *s += c * f64::from(v);
                    }
                }
                for (w, s) in w_row.iter_mut().zip(sum.iter()) {
                    *w = T::from_f32((f64::from(w.to_f32()) + scaling * s) as f32);
                }
            },
        );
    }
}

/// The shape of `param` in a transformers checkpoint: Linear weights `[out, in]`, GPT-2's
/// Conv1D weights `[in, out]`, tables `[rows, hidden]`, vectors 1-D.
pub(crate) fn hf_shape(model: &ModelConfig, param: Param) -> Vec<usize> {
    match param {
        Param::Global(GlobalParam::Positions) => vec![model.max_positions, model.hidden],
        Param::Global(g) if g.is_matrix() => vec![model.vocab, model.hidden],
        Param::Global(g) => vec![g.numel(model)],
        Param::Layer(_, p) => match p.features(model) {
            Some((fan_in, fan_out)) if model.family == Family::Gpt2 => vec![fan_in, fan_out],
            Some((fan_in, fan_out)) => vec![fan_out, fan_in],
            None => vec![p.numel(model)],
        },
    }
}

/// One f32 tensor to write.
struct TensorOut<'a> {
    name: String,
    shape: Vec<usize>,
    data: &'a [f32],
}

/// Writes `tensors` as a safetensors file, in the given order, with `{"format": "pt"}`
/// metadata (see [`write_safetensors_with`]).
fn write_safetensors(path: &Path, tensors: &[TensorOut<'_>]) -> Result<()> {
    let header: Vec<TensorHeader> = tensors
        .iter()
        .map(|t| {
            debug_assert_eq!(t.shape.iter().product::<usize>(), t.data.len(), "{}", t.name);
            TensorHeader { name: t.name.clone(), dtype: DType::F32, shape: t.shape.clone() }
        })
        .collect();
    write_safetensors_with(path, &header, |i, out| write_f32s(out, tensors[i].data))
}

/// A tensor of a safetensors file being written: its name, stored type and shape.
pub(crate) struct TensorHeader {
    pub(crate) name: String,
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
}

/// Writes a safetensors file of the tensors `header` describes, in that order, with
/// `{"format": "pt"}` metadata: the header's length (u64, little-endian), the JSON header padded
/// with spaces to a multiple of 8 bytes (so the data, after the 8-byte length, is aligned), then
/// each tensor's bytes as `write(i, out)` writes them (exactly its size, little-endian), back
/// to back. Written atomically.
pub(crate) fn write_safetensors_with(
    path: &Path,
    header: &[TensorHeader],
    write: impl FnMut(usize, &mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    write_safetensors_with_metadata(path, header, &[], write)
}

/// [`write_safetensors_with`] with `metadata` entries besides `{"format": "pt"}`.
pub(crate) fn write_safetensors_with_metadata(
    path: &Path,
    header: &[TensorHeader],
    metadata: &[(&str, String)],
    mut write: impl FnMut(usize, &mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    let mut entries = Map::new();
    let mut meta = Map::new();
    meta.insert("format".into(), "pt".into());
    for (key, value) in metadata {
        meta.insert((*key).into(), value.clone().into());
    }
    entries.insert("__metadata__".into(), Value::Object(meta));
    let mut offset = 0usize;
    let mut ends = Vec::with_capacity(header.len());
    for t in header {
        let end = offset + t.dtype.size_bytes() * t.shape.iter().product::<usize>();
        let dtype = match t.dtype {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        };
        let entry = json!({"dtype": dtype, "shape": t.shape, "data_offsets": [offset, end]});
        let previous = entries.insert(t.name.clone(), entry);
        debug_assert!(previous.is_none(), "tensor {} written twice", t.name);
        ends.push(end);
        offset = end;
    }
    let mut text = Value::Object(entries).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    write_atomic_with(path, |out| {
        out.write_all(&(text.len() as u64).to_le_bytes())?;
        out.write_all(text.as_bytes())?;
        let mut counted = CountingWriter { inner: out, written: 0 };
        for (i, &end) in ends.iter().enumerate() {
            let start = counted.written;
            write(i, &mut counted)?;
            if counted.written != end {
                return Err(io::Error::other(format!(
                    "tensor {}: {} bytes written where the header says {}",
                    header[i].name,
                    counted.written - start,
                    end - start
                )));
            }
        }
        Ok(())
    })
}

/// Counts the bytes written through it.
struct CountingWriter<'w, W> {
    inner: &'w mut W,
    written: usize,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `values` little-endian.
pub(crate) fn write_f32s(out: &mut (impl Write + ?Sized), values: &[f32]) -> io::Result<()> {
    if cfg!(target_endian = "little") {
        return out.write_all(bytemuck::cast_slice(values));
    }
    let mut chunk = [0u8; 4096];
    for part in values.chunks(chunk.len() / 4) {
        for (bytes, v) in chunk.chunks_exact_mut(4).zip(part) {
            bytes.copy_from_slice(&v.to_le_bytes());
        }
        out.write_all(&chunk[..4 * part.len()])?;
    }
    Ok(())
}

/// `x` as the JSON number with the fewest digits that reads back (through f64) as `x`:
/// `0.05`, not `0.05000000074505806`.
fn shortest(x: f32) -> Value {
    let decimal: f64 = x.to_string().parse().expect("Rust prints floats it can parse");
    json!(decimal)
}

/// The object of a `json!({...})` literal.
fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// JSON indented by two spaces, ending with a newline (as transformers and PEFT write it).
fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("a JSON value serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_keeps_the_value_and_drops_the_noise() {
        for x in [0.05f32, 1e-6, 1e-5, 10_000.0, 1_000_000.0, 0.1, 6.5, 3.0e38, 1.0e-40] {
            let text = shortest(x).to_string();
            assert_eq!(text.parse::<f64>().unwrap() as f32, x, "{text}");
        }
        assert_eq!(shortest(0.05).to_string(), "0.05");
        assert_eq!(shortest(1e-6).to_string(), "1e-6");
    }

    #[test]
    fn query_pre_attn_scalar_is_an_integer_when_one_fits() {
        assert_eq!(query_pre_attn_scalar(1.0 / 16.0).unwrap(), json!(256));
        let twelve = (1.0 / 12f64.sqrt()) as f32;
        assert_eq!(query_pre_attn_scalar(twelve).unwrap(), json!(12));
        let odd = 0.3f32;
        let s = query_pre_attn_scalar(odd).unwrap().as_f64().unwrap();
        assert_eq!((1.0 / s.sqrt()) as f32, odd);
    }
}
