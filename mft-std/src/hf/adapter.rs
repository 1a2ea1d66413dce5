//! PEFT's adapter_config.json read into a [`LoraConfig`].
//!
//! mft trains plain LoRA: one rank and one alpha for every targeted projection of every
//! layer, no bias, no DoRA. A file that asks for more (`bias` other than `"none"`,
//! `modules_to_save`, `use_dora`, `layers_to_transform`, per-module rank or alpha patterns, …)
//! is refused by naming the field, rather than loaded as something it is not.
//! `fan_in_fan_out` is ignored: it only tells PEFT how GPT-2's Conv1D stores its weight, which
//! mft knows from the family.

use std::path::Path;

use mft_models::params::LayerParam;
use mft_models::{Family, LoraConfig, LoraTargets};
use serde_json::Value;

use super::fields::{Fields, MISSING, parse_json};
use crate::error::{Error, Result};

/// Reads an adapter_config.json for a model of `family`.
pub fn read_lora_config(path: &Path, family: Family) -> Result<LoraConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse_lora_config(&text, path, family)
}

/// Parses the text of an adapter_config.json; `origin` is the file it came from, named in
/// errors.
pub fn parse_lora_config(json: &str, origin: &Path, family: Family) -> Result<LoraConfig> {
    let root = parse_json(json, origin)?;
    let f = Fields::root(&root, origin)?;
    if let Some(kind) = f.str_or("peft_type", None)?
        && kind != "LORA"
    {
        return Err(f.error("peft_type", format!("\"{kind}\": mft reads LoRA adapters only")));
    }
    let bias = f.str_or("bias", Some("none"))?.unwrap_or("none");
    if bias != "none" {
        return Err(
            f.error("bias", format!("\"{bias}\": mft trains no biases (expected \"none\")"))
        );
    }
    for field in ["use_dora", "lora_bias", "use_qalora"] {
        f.refuse_true(field)?;
    }
    for field in [
        "modules_to_save",
        "layers_to_transform",
        "layers_pattern",
        "rank_pattern",
        "alpha_pattern",
        "exclude_modules",
        "layer_replication",
        "target_parameters",
        "trainable_token_indices",
    ] {
        refuse_non_empty(&f, field)?;
    }
    let config = LoraConfig {
        rank: f.usize("r")?,
        alpha: f.f32("lora_alpha")?,
        dropout: f.f32_or("lora_dropout", 0.0)?,
        rslora: f.bool_or("use_rslora", false)?,
        targets: targets(&f, family)?,
    };
    config.validate().map_err(|source| Error::Model { path: origin.to_path_buf(), source })?;
    Ok(config)
}

/// Refuses `field` unless it is absent, null, or empty (`[]`, `{}`, `""`).
fn refuse_non_empty(f: &Fields<'_>, field: &str) -> Result<()> {
    let empty = match f.get(field) {
        None => true,
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(map)) => map.is_empty(),
        Some(Value::String(text)) => text.is_empty(),
        Some(_) => false,
    };
    if empty {
        return Ok(());
    }
    Err(f.error(field, "is set; mft applies one rank and alpha to whole targeted modules"))
}

/// `target_modules`: a list of module names, or PEFT's `"all-linear"`. PEFT reads any other
/// string as a regular expression, which mft does not evaluate.
fn targets(f: &Fields<'_>, family: Family) -> Result<LoraTargets> {
    const FIELD: &str = "target_modules";
    let value = f.get(FIELD).ok_or_else(|| f.error(FIELD, MISSING))?;
    let names: Vec<&str> = match value {
        Value::String(s) if s == "all-linear" => LayerParam::ALL
            .into_iter()
            .filter(|p| p.in_family(family) && p.is_matrix())
            .map(|p| p.module_path(family))
            .collect(),
        Value::String(s) => {
            return Err(f.error(
                FIELD,
                format!(
                    "\"{s}\" is a regular expression to PEFT; mft reads a list of module names \
                     or \"all-linear\""
                ),
            ));
        }
        Value::Array(items) => {
            let mut names = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let name = item
                    .as_str()
                    .ok_or_else(|| f.expected(&format!("{FIELD}[{i}]"), "a module name", item))?;
                names.push(name);
            }
            names
        }
        other => return Err(f.expected(FIELD, "a list of module names", other)),
    };
    // One name at a time first, so that the error names the module the family lacks.
    for name in &names {
        if LoraTargets::from_module_names(family, [*name]).is_err() {
            return Err(f.error(
                FIELD,
                format!("\"{name}\" names no projection of {}", family.model_type()),
            ));
        }
    }
    LoraTargets::from_module_names(family, names)
        .map_err(|source| Error::Model { path: f.path.to_path_buf(), source })
}
