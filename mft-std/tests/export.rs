//! Export of trained results: PEFT adapters and transformers snapshots read back exactly
//! through mft's own readers, carry the names and shapes transformers and PEFT write, and load
//! in PEFT and transformers with the logits mft computes.
//!
//! The PEFT proof is in `tests/fixtures/peft_export/<family>/`, written by
//! `scripts/peft_export_check.py`: the adapter `examples/export_fixture.rs` exports (committed
//! as mft wrote it) and the logits PEFT computes with it on the base model, and transformers with
//! the merged snapshot, in float64. This test rebuilds that adapter, checks that mft still
//! writes the same thing, and compares mft's logits with PEFT's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mft_kernels::{Kernels, Sequential};
use mft_models::{
    Adapters, Family, LayerParam, LoraConfig, LoraLayout, LoraTargets, Model, ModelConfig,
    ParamLayout, Purpose, Rope, Weights,
};
use mft_std::Error;
use mft_std::export::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, MODEL_CONFIG, MODEL_WEIGHTS, export_hf_snapshot,
    export_peft_adapter, merge_lora, model_config_json, target_module_names,
};
use mft_std::hf::{
    ModelWeights, load_adapters, load_weights, parse_model_config, read_lora_config,
    read_model_config,
};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

mod common;
use common::assert_close;

#[allow(dead_code)] // its `main` is the example's
#[path = "../examples/export_fixture.rs"]
mod export_fixture;

/// mft's logits against PEFT's and transformers' (float64 references; mft computes in f32).
const REFERENCE_RTOL: f32 = 1e-4;
/// Merged model against base model + adapter, both computed by mft in f32, relative to the
/// largest logit (f32 rounding alone leaves about 1e-6 of it on any element).
const MERGE_RTOL: f32 = 1e-5;
/// Logits smaller than this fraction of the largest are measured against it: f32 leaves an
/// absolute error of about 1e-6 of the largest logit on every element (the adapters here scale
/// by up to 8), which is no relative precision for a logit near zero.
const FLOOR: f32 = 0.1;

fn golden_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mft-models/tests/fixtures").join(case)
}

fn peft_export_dir(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft_export").join(family)
}

/// The tensors of a safetensors file: name → (dtype, shape, bytes), and its metadata.
struct TensorFile {
    tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    metadata: Option<std::collections::HashMap<String, String>>,
}

impl TensorFile {
    fn read(path: &Path) -> TensorFile {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file =
            SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tensors = file
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, (view.dtype(), view.shape().to_vec(), view.data().to_vec())))
            .collect();
        let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
        TensorFile { tensors, metadata: metadata.metadata().clone() }
    }

    /// Names and shapes.
    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.tensors.iter().map(|(n, (_, s, _))| (n.clone(), s.clone())).collect()
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        let (dtype, _, bytes) = self.tensors.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(*dtype, Dtype::F32, "{name}");
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    fn i64s(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let (dtype, shape, bytes) = self.tensors.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(*dtype, Dtype::I64, "{name}");
        let values = bytes.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()));
        (values.collect(), shape.clone())
    }
}

/// mft's logits `[batch·seq, vocab]` for `ids`.
fn logits(
    config: &ModelConfig,
    weights: Weights<'_, f32>,
    adapters: Option<(&LoraLayout, &[f32])>,
    ids: &[u32],
    batch: usize,
    seq: usize,
) -> Vec<f32> {
    let model = Model::new(*config).unwrap();
    let kernels = Kernels::best();
    let lora = adapters.map(|(layout, _)| layout);
    let len = model.workspace_len(&kernels, lora, batch, seq, Purpose::Logits, 1);
    let mut workspace = vec![f32::NAN; len];
    let mut out = vec![0.0; batch * seq * config.vocab];
    let adapters = adapters.map(|(layout, weights)| Adapters { layout, weights });
    model
        .logits(&kernels, weights, adapters, ids, batch, seq, &mut out, &mut workspace, &Sequential)
        .unwrap();
    out
}

/// A model's weights copied into the two flat stores, to edit and compare.
#[derive(Debug, Clone, PartialEq)]
struct Stores {
    matrices: Vec<f32>,
    vectors: Vec<f32>,
}

impl Stores {
    fn as_weights(&self) -> Weights<'_, f32> {
        Weights::new(&self.matrices, &self.vectors)
    }
}

/// The base model of a golden fixture.
fn load_model(dir: &Path) -> (ModelConfig, Stores) {
    let config = read_model_config(&dir.join("config.json")).unwrap();
    let layout = ParamLayout::new(&config);
    let weights: ModelWeights<f32> =
        load_weights(&[dir.join("model.safetensors")], &layout).unwrap();
    let (matrices, vectors) = weights.to_stores(&layout).unwrap();
    (config, Stores { matrices, vectors })
}

/// Asserts two float buffers are equal bit for bit.
fn assert_bits_eq(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = a.iter().zip(b).position(|(x, y)| x.to_bits() != y.to_bits()) {
        panic!("{what}: element {i} is {} but was {}", a[i], b[i]);
    }
}

/// Names of the files in `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// config.json

/// Configurations a generated config.json must reproduce: every preset, every golden fixture,
/// and settings the presets do not exercise.
fn configs_to_write() -> Vec<(String, ModelConfig)> {
    let mut configs: Vec<(String, ModelConfig)> =
        ["gpt2", "gpt2-medium", "qwen2.5-0.5b", "gemma3-270m", "gemma3-1b"]
            .into_iter()
            .map(|name| (name.to_string(), ModelConfig::preset(name).unwrap()))
            .collect();
    for family in ["gpt2", "qwen2", "gemma3"] {
        for mode in ["full", "lora"] {
            let case = format!("{family}_{mode}");
            let config = read_model_config(&golden_dir(&case).join("config.json")).unwrap();
            configs.push((case, config));
        }
    }
    let mut unscaled = ModelConfig::gpt2_with(64, 3, 4);
    unscaled.attention_scale = 1.0;
    unscaled.intermediate = 100;
    unscaled.norm_eps = 1e-6;
    configs.push(("gpt2 without attention scaling, n_inner".into(), unscaled));
    let mut qwen = ModelConfig::qwen2_5_0_5b();
    qwen.tie_embeddings = false;
    qwen.rope = Some(Rope { base: 500_000.0, linear_factor: 4.0 });
    qwen.padding_idx = Some(151_643);
    qwen.head_dim = 128;
    qwen.attention_scale = (1.0 / 128f64.sqrt()) as f32;
    configs.push(("qwen2 untied, linear RoPE, head_dim, pad".into(), qwen));
    let mut gemma = ModelConfig::gemma3_1b();
    gemma.rope = Some(Rope { base: 1_000_000.0, linear_factor: 8.0 });
    gemma.attention_scale = (1.0 / 200f64.sqrt()) as f32;
    gemma.padding_idx = Some(3);
    configs.push(("gemma3 linear global RoPE, scalar 200, pad 3".into(), gemma));
    let mut global = ModelConfig::gemma3_270m();
    global.sliding_layers = 0;
    global.sliding_window = None;
    global.attention_scale = 0.3;
    configs.push(("gemma3 without sliding layers, odd scale".into(), global));
    configs
}

#[test]
fn generated_config_reads_back_for_presets_fixtures_and_variants() {
    let path = Path::new("out/config.json");
    for (name, config) in configs_to_write() {
        let text = model_config_json(&config, path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = parse_model_config(&text, path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, config, "{name}: {text}");
        let json: Value = serde_json::from_str(&text).unwrap();
        let architecture = match config.family {
            Family::Gpt2 => "GPT2LMHeadModel",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Gemma3 => "Gemma3ForCausalLM",
        };
        assert_eq!(json["architectures"][0], architecture, "{name}");
        assert_eq!(json["model_type"], config.family.model_type(), "{name}");
    }
}

#[test]
fn a_config_that_cannot_read_back_is_refused_naming_the_file() {
    let path = Path::new("out/config.json");
    let mut odd = ModelConfig::gpt2();
    odd.attention_scale = 0.3;
    let err = model_config_json(&odd, path).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("out/config.json: "), "{message}");
    assert!(message.contains("attention scale"), "{message}");
    assert_eq!(message.lines().count(), 1);

    let mut qwen = ModelConfig::qwen2_5_0_5b();
    qwen.attention_scale = 0.2; // Qwen always scales by 1/sqrt(head_dim)
    let message = model_config_json(&qwen, path).unwrap_err().to_string();
    assert!(message.contains("attention scale"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// PEFT adapters

#[test]
fn target_module_names_select_exactly_the_targets() {
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let projections: Vec<LayerParam> =
            LayerParam::ALL.into_iter().filter(|p| p.in_family(family) && p.is_matrix()).collect();
        for mask in 1u32..1 << projections.len() {
            let targets = projections
                .iter()
                .enumerate()
                .filter(|(i, _)| mask >> i & 1 == 1)
                .fold(LoraTargets::NONE, |t, (_, &p)| t.with(p));
            let names = target_module_names(family, targets);
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted, "sorted");
            let back =
                LoraTargets::from_module_names(family, names.iter().map(String::as_str)).unwrap();
            assert_eq!(back, targets, "{family:?}: {names:?}");
        }
    }
    let gpt2 = |params: &[LayerParam]| {
        let targets = params.iter().fold(LoraTargets::NONE, |t, &p| t.with(p));
        target_module_names(Family::Gpt2, targets)
    };
    assert_eq!(gpt2(&[LayerParam::O]), ["attn.c_proj"]);
    assert_eq!(gpt2(&[LayerParam::Down, LayerParam::Qkv]), ["c_attn", "mlp.c_proj"]);
    assert_eq!(gpt2(&[LayerParam::O, LayerParam::Down]), ["c_proj"]);
}

/// Exports `lora` with `adapters`, reads it back with mft's readers, and checks the file
/// against PEFT's conventions (and `peft_file`, an adapter PEFT wrote for the same targets).
fn check_adapter_round_trip(
    what: &str,
    model: &ModelConfig,
    lora: &LoraLayout,
    adapters: &[f32],
    peft_file: Option<&Path>,
) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adapter");
    export_peft_adapter(&out, model, lora, adapters, Some("some/base")).unwrap();
    assert_eq!(files(&out), [ADAPTER_CONFIG, ADAPTER_WEIGHTS], "{what}");

    let config = read_lora_config(&out.join(ADAPTER_CONFIG), model.family).unwrap();
    assert_eq!(config, *lora.config(), "{what}");
    let back = load_adapters(&out.join(ADAPTER_WEIGHTS), lora).unwrap();
    assert_bits_eq(what, &back, adapters);

    let json = read_json(&out.join(ADAPTER_CONFIG));
    assert_eq!(json["peft_type"], "LORA", "{what}");
    assert_eq!(json["task_type"], "CAUSAL_LM", "{what}");
    assert_eq!(json["bias"], "none", "{what}");
    assert_eq!(json["fan_in_fan_out"], model.family == Family::Gpt2, "{what}");
    assert_eq!(json["base_model_name_or_path"], "some/base", "{what}");
    assert_eq!(json["inference_mode"], true, "{what}");

    let file = TensorFile::read(&out.join(ADAPTER_WEIGHTS));
    let format = file.metadata.as_ref().and_then(|m| m.get("format"));
    assert_eq!(format.map(String::as_str), Some("pt"), "{what}");
    assert!(file.tensors.values().all(|t| t.0 == Dtype::F32), "{what}: f32 only");
    let rank = lora.config().rank;
    for (layer, param, is_b) in lora.tensors() {
        let slot = lora.slot(layer, param).unwrap();
        let name = lora.name(layer, param, is_b).to_string();
        let expected =
            if is_b { vec![slot.out_features, rank] } else { vec![rank, slot.in_features] };
        assert_eq!(file.tensors[&name].1, expected, "{what}: {name}");
    }
    assert_eq!(file.tensors.len(), lora.tensors().count(), "{what}");
    if let Some(peft) = peft_file {
        assert_eq!(file.shapes(), TensorFile::read(peft).shapes(), "{what}: PEFT's names/shapes");
    }
}

/// Every golden LoRA fixture (written by PEFT) exports to the same tensor names and shapes,
/// and reads back exactly.
#[test]
fn adapters_of_every_family_round_trip() {
    for family in ["gpt2", "qwen2", "gemma3"] {
        let dir = golden_dir(&format!("{family}_lora"));
        let model = read_model_config(&dir.join("config.json")).unwrap();
        let lora = read_lora_config(&dir.join(ADAPTER_CONFIG), model.family).unwrap();
        let layout = LoraLayout::new(&model, &lora);
        let adapters = load_adapters(&dir.join(ADAPTER_WEIGHTS), &layout).unwrap();
        let peft = dir.join(ADAPTER_WEIGHTS);
        check_adapter_round_trip(family, &model, &layout, &adapters, Some(&peft));

        // The exported fixture's settings: suffix targets, rsLoRA, fractional alpha, dropout.
        let case = export_fixture::case(family).unwrap();
        check_adapter_round_trip(family, &case.model, &case.lora, &case.adapters, None);
    }
}

#[test]
fn adapter_settings_round_trip() {
    let model = ModelConfig { vocab: 64, max_positions: 16, ..ModelConfig::gpt2_with(32, 2, 4) };
    for (alpha, dropout, rslora, rank) in
        [(16.0, 0.0, false, 8), (0.1, 0.05, true, 3), (1e-3, 0.999, false, 1), (7.25, 0.3, true, 2)]
    {
        let targets = LoraTargets::from_module_names(Family::Gpt2, ["mlp.c_proj"]).unwrap();
        let config = LoraConfig { rank, alpha, dropout, rslora, targets };
        let layout = LoraLayout::new(&model, &config);
        let adapters: Vec<f32> = (0..layout.len()).map(|i| (i as f32 * 0.37).sin()).collect();
        check_adapter_round_trip(&format!("{config:?}"), &model, &layout, &adapters, None);
    }
}

#[test]
fn committed_peft_fixture_is_what_mft_exports() {
    for family in export_fixture::FAMILIES {
        let committed = peft_export_dir(family);
        let case = export_fixture::case(family).unwrap();
        let dir = tempfile::tempdir().unwrap();
        export_peft_adapter(
            dir.path(),
            &case.model,
            &case.lora,
            &case.adapters,
            case.base_model_name_or_path,
        )
        .unwrap();
        let rerun = "re-run scripts/peft_export_check.py if the export format changed on purpose";
        let ours = TensorFile::read(&dir.path().join(ADAPTER_WEIGHTS));
        let theirs = TensorFile::read(&committed.join(ADAPTER_WEIGHTS));
        assert_eq!(ours.tensors, theirs.tensors, "{family}: adapter tensors differ; {rerun}");
        assert_eq!(
            read_json(&dir.path().join(ADAPTER_CONFIG)),
            read_json(&committed.join(ADAPTER_CONFIG)),
            "{family}: adapter_config.json differs; {rerun}"
        );
        let config = read_lora_config(&committed.join(ADAPTER_CONFIG), case.model.family).unwrap();
        assert_eq!(config, *case.lora.config(), "{family}");
        let committed_adapters =
            load_adapters(&committed.join(ADAPTER_WEIGHTS), &case.lora).unwrap();
        assert_bits_eq(family, &committed_adapters, &case.adapters);
    }
}

#[test]
fn mft_computes_what_peft_and_transformers_compute_on_the_exports() {
    for family in export_fixture::FAMILIES {
        let committed = peft_export_dir(family);
        let reference = TensorFile::read(&committed.join("reference.safetensors"));
        let (ids, shape) = reference.i64s("input_ids");
        let (batch, seq) = (shape[0], shape[1]);
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();

        // The committed adapter, through mft's readers, on the base model: PEFT's logits.
        let (model, base) = load_model(&export_fixture::base_dir(family));
        let lora = read_lora_config(&committed.join(ADAPTER_CONFIG), model.family).unwrap();
        let layout = LoraLayout::new(&model, &lora);
        let adapters = load_adapters(&committed.join(ADAPTER_WEIGHTS), &layout).unwrap();
        let with_adapter =
            logits(&model, base.as_weights(), Some((&layout, &adapters)), &ids, batch, seq);
        let peft = reference.f32s("peft_logits");
        assert_close(&format!("{family}: PEFT"), &with_adapter, &peft, REFERENCE_RTOL, FLOOR);

        // The merged snapshot mft exports, read back: transformers' logits of the same files.
        let mut merged = base.clone();
        merge_lora(&model, &mut merged.matrices, &layout, &adapters);
        let dir = tempfile::tempdir().unwrap();
        let params = ParamLayout::new(&model);
        export_hf_snapshot(dir.path(), &model, &params, merged.as_weights(), None).unwrap();
        let (back_config, back) = load_model(dir.path());
        assert_eq!(back_config, model);
        assert_eq!(back, merged, "{family}: the snapshot reads back bit for bit");
        let merged_logits = logits(&model, back.as_weights(), None, &ids, batch, seq);
        let hf = reference.f32s("merged_logits");
        assert_close(&format!("{family}: merged"), &merged_logits, &hf, REFERENCE_RTOL, FLOOR);
    }
}

// ---------------------------------------------------------------------------------------------
// merging

#[test]
fn the_merged_model_computes_what_the_adapter_computes() {
    let ids: Vec<u32> = (0..24).map(|i| (i * 29 + 7) % 95 + 1).collect();
    let (batch, seq) = (2, 12);
    for family in export_fixture::FAMILIES {
        let case = export_fixture::case(family).unwrap();
        let (model, base) = load_model(&export_fixture::base_dir(family));
        let merged = export_fixture::merged_weights(family, &case).unwrap();
        let adapted = (&case.lora, case.adapters.as_slice());
        let expected = logits(&model, base.as_weights(), Some(adapted), &ids, batch, seq);
        let actual = logits(&model, merged.as_weights(), None, &ids, batch, seq);
        assert_close(&format!("{family}: merged"), &actual, &expected, MERGE_RTOL, 1.0);
        let unmerged = logits(&model, base.as_weights(), None, &ids, batch, seq);
        let moved = unmerged.iter().zip(&expected).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(moved > 1e-3, "{family}: the adapter must change the logits (by {moved})");
        assert_eq!(merged.vectors, base.vectors, "{family}: merging touches only projections");
    }
}

/// The merge in the stored layouts, against a direct evaluation of `W + s·B·A` (for GPT-2's
/// Conv1D, of its transpose), element by element.
#[test]
fn merge_adds_the_scaled_product_in_the_stored_layout() {
    for family in export_fixture::FAMILIES {
        let case = export_fixture::case(family).unwrap();
        let (model, base) = load_model(&export_fixture::base_dir(family));
        let params = ParamLayout::new(&model);
        let merged =
            export_fixture::merged_weights(family, &case).unwrap().to_stores(&params).unwrap().0;
        let rank = case.lora.config().rank;
        let scaling = f64::from(case.lora.config().scaling());
        for (layer, param, _) in case.lora.tensors().filter(|t| !t.2) {
            let slot = case.lora.slot(layer, param).unwrap();
            let a = &case.adapters[case.lora.range(layer, param, false)];
            let b = &case.adapters[case.lora.range(layer, param, true)];
            let weight = params.slot(mft_models::Param::Layer(layer, param)).unwrap().range();
            let (w0, w1) = (&base.matrices[weight.clone()], &merged[weight]);
            for o in 0..slot.out_features {
                for i in 0..slot.in_features {
                    let delta: f64 = (0..rank)
                        .map(|r| {
                            f64::from(b[o * rank + r]) * f64::from(a[r * slot.in_features + i])
                        })
                        .sum();
                    let at = if family == "gpt2" {
                        i * slot.out_features + o
                    } else {
                        o * slot.in_features + i
                    };
                    let expected = (f64::from(w0[at]) + scaling * delta) as f32;
                    let diff = (w1[at] - expected).abs();
                    assert!(
                        diff <= f32::EPSILON * expected.abs(),
                        "{family}: layer {layer} {param:?} [{o}, {i}]: {} vs {expected}",
                        w1[at]
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// snapshots

#[test]
fn snapshots_of_every_family_round_trip_with_hugging_face_names_and_shapes() {
    for case in ["gpt2_full", "qwen2_full", "gemma3_full", "qwen2_lora"] {
        let source = golden_dir(case);
        let (model, weights) = load_model(&source);
        let layout = ParamLayout::new(&model);
        let hf = TensorFile::read(&source.join("model.safetensors"));
        for source_config in [None, Some(source.join("config.json"))] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("snapshot");
            export_hf_snapshot(
                &out,
                &model,
                &layout,
                weights.as_weights(),
                source_config.as_deref(),
            )
            .unwrap();
            assert_eq!(files(&out), [MODEL_CONFIG, MODEL_WEIGHTS], "{case}");
            let (back_config, back) = load_model(&out);
            assert_eq!(back_config, model, "{case}");
            assert_eq!(back.matrices.len(), weights.matrices.len());
            assert_bits_eq(case, &back.matrices, &weights.matrices);
            assert_bits_eq(case, &back.vectors, &weights.vectors);

            let file = TensorFile::read(&out.join(MODEL_WEIGHTS));
            // transformers' own file: the same names, shapes and values (GPT-2's attn.bias
            // masks are not saved by transformers 5 either).
            assert_eq!(file.shapes(), hf.shapes(), "{case}: names and shapes");
            assert_eq!(file.tensors, hf.tensors, "{case}: values");
            let format = file.metadata.as_ref().and_then(|m| m.get("format"));
            assert_eq!(format.map(String::as_str), Some("pt"), "{case}");
            assert_eq!(
                file.tensors.contains_key("lm_head.weight"),
                !model.tie_embeddings,
                "{case}"
            );
            if let Some(source) = &source_config {
                let copied = std::fs::read(out.join(MODEL_CONFIG)).unwrap();
                assert_eq!(copied, std::fs::read(source).unwrap(), "{case}: copied verbatim");
            }
        }
    }
}

#[test]
fn gpt2_snapshot_keeps_the_conv1d_layout() {
    let (model, weights) = load_model(&golden_dir("gpt2_full"));
    let dir = tempfile::tempdir().unwrap();
    export_hf_snapshot(dir.path(), &model, &ParamLayout::new(&model), weights.as_weights(), None)
        .unwrap();
    let file = TensorFile::read(&dir.path().join(MODEL_WEIGHTS));
    let h = model.hidden;
    assert_eq!(file.tensors["transformer.h.0.attn.c_attn.weight"].1, [h, 3 * h]);
    assert_eq!(file.tensors["transformer.h.1.mlp.c_fc.weight"].1, [h, model.intermediate]);
    assert_eq!(file.tensors["transformer.h.1.mlp.c_proj.weight"].1, [model.intermediate, h]);
    assert_eq!(file.tensors["transformer.wpe.weight"].1, [model.max_positions, h]);
    assert!(!file.tensors.contains_key("lm_head.weight"));
}

#[test]
fn a_multimodal_gemma3_source_config_is_replaced_by_the_text_config() {
    let source = golden_dir("gemma3_full");
    let (model, weights) = load_model(&source);
    let mut text = read_json(&source.join("config.json"));
    text.as_object_mut().unwrap().remove("architectures");
    let multimodal = serde_json::json!({
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text,
    });
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("multimodal.json");
    std::fs::write(&config_path, multimodal.to_string()).unwrap();
    let out = dir.path().join("out");
    let layout = ParamLayout::new(&model);
    export_hf_snapshot(&out, &model, &layout, weights.as_weights(), Some(&config_path)).unwrap();
    let written = read_json(&out.join(MODEL_CONFIG));
    assert_eq!(written["model_type"], "gemma3_text");
    assert_eq!(read_model_config(&out.join(MODEL_CONFIG)).unwrap(), model);
}

#[test]
fn a_source_config_of_another_model_is_refused() {
    let (model, weights) = load_model(&golden_dir("qwen2_full"));
    let other = golden_dir("qwen2_lora").join("config.json"); // tied head
    let dir = tempfile::tempdir().unwrap();
    let layout = ParamLayout::new(&model);
    let err = export_hf_snapshot(dir.path(), &model, &layout, weights.as_weights(), Some(&other))
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(&err, Error::Output { path, .. } if *path == other), "{err:?}");
    assert!(message.contains("tie_word_embeddings"), "{message}");
    assert!(files(dir.path()).is_empty(), "nothing is written");
}

// ---------------------------------------------------------------------------------------------
// errors and atomicity

#[test]
fn an_unwritable_directory_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let target = blocker.join("out");
    let case = export_fixture::case("gpt2").unwrap();

    let err =
        export_peft_adapter(&target, &case.model, &case.lora, &case.adapters, None).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(message.contains(&target.display().to_string()), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");

    let (model, weights) = load_model(&export_fixture::base_dir("gpt2"));
    let layout = ParamLayout::new(&model);
    let err = export_hf_snapshot(&target, &model, &layout, weights.as_weights(), None).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&target.display().to_string()), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn buffers_of_another_model_are_refused_naming_the_directory() {
    let case = export_fixture::case("qwen2").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adapter");
    let short = &case.adapters[1..];
    let err = export_peft_adapter(&out, &case.model, &case.lora, short, None).unwrap_err();
    assert!(matches!(&err, Error::Output { path, .. } if *path == out), "{err:?}");
    assert_eq!(err.to_string().lines().count(), 1);

    let other = ModelConfig { layers: 1, ..case.model };
    let err = export_peft_adapter(&out, &other, &case.lora, &case.adapters, None).unwrap_err();
    assert!(matches!(&err, Error::Output { path, .. } if *path == out), "{err:?}");

    let (model, weights) = load_model(&export_fixture::base_dir("qwen2"));
    let layout = ParamLayout::new(&model);
    let cut = Weights::new(&weights.matrices[1..], &weights.vectors);
    let err = export_hf_snapshot(&out, &model, &layout, cut, None).unwrap_err();
    assert!(matches!(&err, Error::Output { path, .. } if *path == out), "{err:?}");
    assert!(!out.exists(), "nothing is created");
}

#[test]
fn exporting_again_replaces_the_files_and_leaves_nothing_else() {
    let case = export_fixture::case("gemma3").unwrap();
    let dir = tempfile::tempdir().unwrap();
    export_peft_adapter(dir.path(), &case.model, &case.lora, &vec![0.5; case.lora.len()], None)
        .unwrap();
    export_peft_adapter(dir.path(), &case.model, &case.lora, &case.adapters, None).unwrap();
    assert_eq!(files(dir.path()), [ADAPTER_CONFIG, ADAPTER_WEIGHTS]);
    let back = load_adapters(&dir.path().join(ADAPTER_WEIGHTS), &case.lora).unwrap();
    assert_bits_eq("gemma3", &back, &case.adapters);
}
