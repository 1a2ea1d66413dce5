//! safetensors → flat weight stores and LoRA buffers: values land at their layout offsets
//! through every dtype conversion, sharded and multimodal checkpoints load, and each defect
//! (shape, dtype, missing tensor, corrupt file) is an error naming the file and the tensor.

use std::path::{Path, PathBuf};

use mft_core::{Element, bf16, f16};
use mft_models::params::{GlobalParam, LayerParam};
use mft_models::{
    Family, LoraConfig, LoraLayout, LoraTargets, ModelConfig, Param, ParamLayout, Rope,
};
use mft_std::Error;
use mft_std::hf::checkpoint::{
    ModelWeights, checkpoint_files, load_adapters, load_weights, load_weights_paged,
};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// A tensor to write.
#[derive(Clone)]
struct Tensor {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Tensor {
    fn new(name: impl Into<String>, dtype: Dtype, shape: Vec<usize>, values: &[f32]) -> Tensor {
        let bytes = match dtype {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
            Dtype::BF16 => values.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
            Dtype::F64 => values.iter().flat_map(|v| f64::from(*v).to_le_bytes()).collect(),
            other => panic!("the tests do not write {other}"),
        };
        Tensor { name: name.into(), dtype, shape, bytes }
    }
}

fn write(path: &Path, tensors: &[Tensor]) {
    let views = tensors
        .iter()
        .map(|t| (t.name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap()));
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Element `i` of the `k`-th tensor: exact in f16 and bf16 for `k < 32`.
fn value(k: usize, i: usize) -> f32 {
    k as f32 + (i % 8) as f32 / 8.0
}

/// The shape transformers gives `param`, from the config (not from the layout).
fn hf_shape(config: &ModelConfig, param: Param) -> Vec<usize> {
    match param {
        Param::Global(GlobalParam::Positions) => vec![config.max_positions, config.hidden],
        Param::Global(g) if g.is_matrix() => vec![config.vocab, config.hidden],
        Param::Global(g) => vec![g.numel(config)],
        Param::Layer(_, p) => match p.features(config) {
            Some((inp, out)) if config.family == Family::Gpt2 => vec![inp, out],
            Some((inp, out)) => vec![out, inp],
            None => vec![p.numel(config)],
        },
    }
}

/// Every parameter of `config` as a tensor named `rename(HF name)`, the `k`-th in layout order
/// holding `value(k, ·)`; matrices in `matrix_dtype`, vectors in `vector_dtype`.
fn model_tensors(
    config: &ModelConfig,
    matrix_dtype: Dtype,
    vector_dtype: Dtype,
    rename: impl Fn(String) -> String,
) -> Vec<Tensor> {
    let layout = ParamLayout::new(config);
    layout
        .params()
        .enumerate()
        .map(|(k, param)| {
            let shape = hf_shape(config, param);
            let values: Vec<f32> = (0..shape.iter().product()).map(|i| value(k, i)).collect();
            let matrix = layout.slot(param).unwrap().matrix;
            let dtype = if matrix { matrix_dtype } else { vector_dtype };
            Tensor::new(rename(param.name(config.family).to_string()), dtype, shape, &values)
        })
        .collect()
}

/// Asserts that every parameter holds `value(k, ·)` where the layout puts it, and that the
/// stores hold nothing else.
fn assert_loaded<T: Element>(weights: &ModelWeights<T>, config: &ModelConfig) {
    let layout = ParamLayout::new(config);
    let view = weights.as_weights();
    assert_eq!(view.size_mismatch(&layout, mft_models::Paging::Off), None);
    let mut covered = 0;
    for (k, param) in layout.params().enumerate() {
        let name = param.name(config.family);
        let slot = layout.slot(param).unwrap();
        let got: Vec<f32> = if slot.matrix {
            view.matrix(&layout, param).iter().map(|v| v.to_f32()).collect()
        } else {
            view.vector(&layout, param).to_vec()
        };
        assert_eq!(got.len(), slot.len, "{name}");
        for (i, v) in got.iter().enumerate() {
            assert_eq!(*v, value(k, i), "{name}[{i}]");
        }
        covered += slot.len;
    }
    assert_eq!(covered, layout.numel());
}

fn tiny_gpt2() -> ModelConfig {
    let mut config = ModelConfig::gpt2_with(8, 2, 2);
    config.vocab = 11;
    config.max_positions = 5;
    config
}

fn tiny_qwen2_untied() -> ModelConfig {
    ModelConfig {
        family: Family::Qwen2,
        vocab: 11,
        hidden: 8,
        layers: 2,
        heads: 2,
        kv_heads: 1,
        head_dim: 4,
        intermediate: 12,
        max_positions: 16,
        norm_eps: 1e-6,
        tie_embeddings: false,
        attention_scale: 0.5,
        rope: Some(Rope { base: 10_000.0, linear_factor: 1.0 }),
        rope_local: None,
        sliding_window: None,
        sliding_layers: 0,
        padding_idx: None,
    }
}

fn tiny_gemma3() -> ModelConfig {
    ModelConfig {
        family: Family::Gemma3,
        tie_embeddings: true,
        rope_local: Some(Rope { base: 10_000.0, linear_factor: 1.0 }),
        sliding_window: Some(3),
        sliding_layers: 0b01,
        padding_idx: None,
        ..tiny_qwen2_untied()
    }
}

fn same(name: String) -> String {
    name
}

#[test]
fn gpt2_f32_values_land_at_their_offsets() {
    let config = tiny_gpt2();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut tensors = model_tensors(&config, Dtype::F32, Dtype::F32, same);
    // Buffers and a tied head that the model does not read.
    tensors.push(Tensor::new(
        "transformer.h.0.attn.bias",
        Dtype::F32,
        vec![1, 1, 5, 5],
        &[1.0; 25],
    ));
    tensors.push(Tensor::new("lm_head.weight", Dtype::F32, vec![11, 8], &[-1.0; 88]));
    write(&path, &tensors);

    let files = checkpoint_files(dir.path()).unwrap();
    assert_eq!(files, [path]);
    let weights = load_weights::<f32>(&files, &ParamLayout::new(&config)).unwrap();
    assert_loaded(&weights, &config);
    // The raw store, not only the accessors: block 1's `c_fc` bias starts at its slot.
    let layout = ParamLayout::new(&config);
    let fc_bias = Param::Layer(1, LayerParam::FcBias);
    let k = layout.params().position(|p| p == fc_bias).unwrap();
    assert_eq!(weights.vectors[layout.slot(fc_bias).unwrap().offset], value(k, 0));
}

#[test]
fn half_precision_files_convert_into_every_store_type() {
    let config = tiny_gpt2();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write(&path, &model_tensors(&config, Dtype::BF16, Dtype::F16, same));
    let layout = ParamLayout::new(&config);
    let files = [path];
    assert_loaded(&load_weights::<f32>(&files, &layout).unwrap(), &config);
    assert_loaded(&load_weights::<bf16>(&files, &layout).unwrap(), &config);
    assert_loaded(&load_weights::<f16>(&files, &layout).unwrap(), &config);

    let path = dir.path().join("f16.safetensors");
    write(&path, &model_tensors(&config, Dtype::F16, Dtype::BF16, same));
    assert_loaded(&load_weights::<bf16>(&[path], &layout).unwrap(), &config);
}

#[test]
fn f32_to_bf16_rounds_to_nearest() {
    let config = tiny_gpt2();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut tensors = model_tensors(&config, Dtype::F32, Dtype::F32, same);
    // 1 + 3·2^-9 lies between bf16's neighbours 1 and 1 + 2^-7, nearer the latter.
    let wte = &mut tensors[0];
    assert_eq!(wte.name, "transformer.wte.weight");
    wte.bytes[..4].copy_from_slice(&(1.0f32 + 3.0 / 512.0).to_le_bytes());
    write(&path, &tensors);
    let layout = ParamLayout::new(&config);
    let weights = load_weights::<bf16>(&[path], &layout).unwrap();
    let wte = weights.as_weights().matrix(&layout, Param::Global(GlobalParam::Embed));
    assert_eq!(wte[0].to_f32(), 1.0 + 1.0 / 128.0);
}

/// `tensors` split into two shards (every third tensor in the first), written in reverse so
/// the listing order is not the shard order by accident; returns the two paths.
fn write_two_shards(dir: &Path, tensors: Vec<Tensor>, names: [&str; 2]) -> [PathBuf; 2] {
    let (first, second): (Vec<_>, Vec<_>) =
        tensors.into_iter().enumerate().partition(|(k, _)| k % 3 == 0);
    let strip = |v: Vec<(usize, Tensor)>| v.into_iter().map(|(_, t)| t).collect::<Vec<_>>();
    let paths = names.map(|name| dir.join(name));
    write(&paths[1], &strip(second));
    write(&paths[0], &strip(first));
    paths
}

/// A model.safetensors.index.json putting each tensor in the file that holds it.
fn write_index(dir: &Path, shards: &[PathBuf]) {
    let mut map = serde_json::Map::new();
    for shard in shards {
        let bytes = std::fs::read(shard).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for name in file.names() {
            let shard_name = shard.file_name().unwrap().to_str().unwrap();
            map.insert(name.to_string(), shard_name.into());
        }
    }
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_checkpoints_load_like_one_file() {
    let config = tiny_gpt2();
    let dir = tempfile::tempdir().unwrap();
    let tensors = model_tensors(&config, Dtype::F32, Dtype::BF16, same);
    let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let shards = write_two_shards(dir.path(), tensors, names);

    // Found by their names alone …
    let files = checkpoint_files(dir.path()).unwrap();
    assert_eq!(files, shards);
    let weights = load_weights::<f32>(&files, &ParamLayout::new(&config)).unwrap();
    assert_loaded(&weights, &config);
    // … and through the index.
    write_index(dir.path(), &shards);
    assert_eq!(checkpoint_files(dir.path()).unwrap(), shards);
}

/// The index decides which files are read, whatever their names.
#[test]
fn the_index_names_the_shards() {
    let config = tiny_gpt2();
    let dir = tempfile::tempdir().unwrap();
    let tensors = model_tensors(&config, Dtype::BF16, Dtype::F32, same);
    let shards = write_two_shards(dir.path(), tensors, ["a.safetensors", "b.safetensors"]);
    // A stray file the index does not name is not read.
    write(&dir.path().join("c.safetensors"), &[Tensor::new("junk", Dtype::F32, vec![1], &[0.0])]);
    write_index(dir.path(), &shards);
    let files = checkpoint_files(dir.path()).unwrap();
    assert_eq!(files, shards);
    assert_loaded(&load_weights::<bf16>(&files, &ParamLayout::new(&config)).unwrap(), &config);
}

#[test]
fn a_bad_index_is_refused_naming_it() {
    let config = tiny_gpt2();
    let dir = tempfile::tempdir().unwrap();
    let tensors = model_tensors(&config, Dtype::F32, Dtype::F32, same);
    let shards = write_two_shards(dir.path(), tensors, ["a.safetensors", "b.safetensors"]);
    write_index(dir.path(), &shards);
    let index = dir.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    let one_line = |err: &Error| {
        let message = err.to_string();
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(message.starts_with(&index.display().to_string()), "{message}");
        message
    };

    // A file the index names is missing.
    std::fs::rename(&shards[1], dir.path().join("elsewhere")).unwrap();
    let err = checkpoint_files(dir.path()).unwrap_err();
    assert!(matches!(&err, Error::Checkpoint { path, .. } if *path == index), "{err:?}");
    assert!(one_line(&err).contains("names b.safetensors, which is not in"), "{err}");
    std::fs::rename(dir.path().join("elsewhere"), &shards[1]).unwrap();

    // It puts a tensor in a file that does not hold it.
    let moved = text.replace(
        r#""transformer.wte.weight":"a.safetensors""#,
        r#""transformer.wte.weight":"b.safetensors""#,
    );
    assert_ne!(moved, text);
    std::fs::write(&index, &moved).unwrap();
    let err = checkpoint_files(dir.path()).unwrap_err();
    assert!(
        one_line(&err).contains(
            "puts tensor transformer.wte.weight in b.safetensors, which does not hold it"
        ),
        "{err}"
    );

    // It is not JSON, has no weight_map, or names a path outside its directory.
    for (bad, expected) in [
        ("{\"weight_map\": ", "invalid JSON"),
        ("{\"metadata\": {}}", "weight_map: missing"),
        ("{\"weight_map\": {}}", "weight_map: names no tensors"),
        ("{\"weight_map\": {\"x\": \"../a.safetensors\"}}", "is not a .safetensors file name"),
        ("{\"weight_map\": {\"x\": 3}}", "x: not a file name"),
    ] {
        std::fs::write(&index, bad).unwrap();
        let err = checkpoint_files(dir.path()).unwrap_err();
        assert!(one_line(&err).contains(expected), "{bad}: {err}");
    }
}

#[test]
fn checkpoint_files_refuses_incomplete_directories() {
    let dir = tempfile::tempdir().unwrap();
    match checkpoint_files(dir.path()) {
        Err(Error::Checkpoint { path, problem }) => {
            assert_eq!(path, dir.path());
            assert!(problem.contains("no model.safetensors"), "{problem}");
        }
        other => panic!("expected a Checkpoint error, got {other:?}"),
    }
    let config = tiny_gpt2();
    let tensors = model_tensors(&config, Dtype::F32, Dtype::F32, same);
    write(&dir.path().join("model-00001-of-00003.safetensors"), &tensors[..3]);
    write(&dir.path().join("model-00003-of-00003.safetensors"), &tensors[3..]);
    let err = checkpoint_files(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Checkpoint { problem, .. } if problem == "shard 2 of 3 is missing")
    );
    assert!(err.to_string().starts_with(&dir.path().display().to_string()), "{err}");

    // A file is its own listing.
    let file = dir.path().join("model-00001-of-00003.safetensors");
    assert_eq!(checkpoint_files(&file).unwrap(), [file]);
}

#[test]
fn base_model_names_without_prefix_load() {
    // GPT-2 on the Hub was saved from GPT2Model: `h.0.ln_1.weight`, `wte.weight`, …
    let config = tiny_gpt2();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let bare = |n: String| n.strip_prefix("transformer.").unwrap().to_string();
    write(&path, &model_tensors(&config, Dtype::F32, Dtype::F32, bare));
    assert_loaded(&load_weights::<f32>(&[path], &ParamLayout::new(&config)).unwrap(), &config);
}

#[test]
fn untied_head_is_loaded_and_required() {
    let config = tiny_qwen2_untied();
    let layout = ParamLayout::new(&config);
    assert!(layout.slot(Param::Global(GlobalParam::LmHead)).is_some());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let tensors = model_tensors(&config, Dtype::BF16, Dtype::F32, same);
    write(&path, &tensors);
    assert_loaded(&load_weights::<bf16>(std::slice::from_ref(&path), &layout).unwrap(), &config);

    let without: Vec<_> = tensors.into_iter().filter(|t| t.name != "lm_head.weight").collect();
    write(&path, &without);
    match load_weights::<bf16>(std::slice::from_ref(&path), &layout) {
        Err(Error::MissingTensor { files, tensor }) => {
            assert_eq!(files, std::slice::from_ref(&path));
            assert_eq!(tensor, "lm_head.weight");
        }
        other => panic!("expected a MissingTensor error, got {other:?}"),
    }
}

#[test]
fn gemma3_multimodal_names_load() {
    let config = tiny_gemma3();
    let layout = ParamLayout::new(&config);
    let dir = tempfile::tempdir().unwrap();
    // transformers 4: `language_model.model.layers.0…`; 5: `model.language_model.layers.0…`.
    let renames: [fn(String) -> String; 2] =
        [|n| format!("language_model.{n}"), |n| n.replacen("model.", "model.language_model.", 1)];
    for (i, rename) in renames.into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.safetensors"));
        let mut tensors = model_tensors(&config, Dtype::BF16, Dtype::F32, rename);
        assert!(tensors[0].name.contains("language_model."), "{}", tensors[0].name);
        tensors.push(Tensor::new("vision_tower.patch.weight", Dtype::F32, vec![2], &[0.0; 2]));
        write(&path, &tensors);
        assert_loaded(&load_weights::<f32>(&[path], &layout).unwrap(), &config);
    }
}

#[test]
fn wrong_shape_names_file_and_tensor() {
    let config = tiny_gpt2();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut tensors = model_tensors(&config, Dtype::F32, Dtype::F32, same);
    // c_attn stored as a Linear ([out, in]) instead of GPT-2's Conv1D ([in, out]).
    let c_attn =
        tensors.iter_mut().find(|t| t.name == "transformer.h.1.attn.c_attn.weight").unwrap();
    assert_eq!(c_attn.shape, [8, 24]);
    c_attn.shape = vec![24, 8];
    write(&path, &tensors);
    let err =
        load_weights::<f32>(std::slice::from_ref(&path), &ParamLayout::new(&config)).unwrap_err();
    match &err {
        Error::TensorShape { path: p, tensor, expected, actual } => {
            assert_eq!(p, &path);
            assert_eq!(tensor, "transformer.h.1.attn.c_attn.weight");
            assert_eq!((expected.as_slice(), actual.as_slice()), (&[8, 24][..], &[24, 8][..]));
        }
        other => panic!("expected a TensorShape error, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "{}: tensor transformer.h.1.attn.c_attn.weight has shape [24, 8], expected [8, 24]",
            path.display()
        )
    );
}

#[test]
fn missing_tensor_names_the_files_and_tensor() {
    let config = tiny_gpt2();
    let dir = tempfile::tempdir().unwrap();
    let tensors: Vec<_> = model_tensors(&config, Dtype::F32, Dtype::F32, same)
        .into_iter()
        .filter(|t| t.name != "transformer.h.1.mlp.c_fc.bias")
        .collect();
    let one = dir.path().join("model-00001-of-00002.safetensors");
    let two = dir.path().join("model-00002-of-00002.safetensors");
    write(&one, &tensors[..5]);
    write(&two, &tensors[5..]);
    let files = checkpoint_files(dir.path()).unwrap();
    let err = load_weights::<f32>(&files, &ParamLayout::new(&config)).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { files: f, tensor } if *f == [one.clone(), two.clone()] && tensor == "transformer.h.1.mlp.c_fc.bias"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("transformer.h.1.mlp.c_fc.bias"), "{message}");
    assert!(message.contains(&one.display().to_string()), "{message}");
    assert!(message.contains(&two.display().to_string()), "{message}");
}

#[test]
fn unsupported_dtype_names_file_and_tensor() {
    let config = tiny_gpt2();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut tensors = model_tensors(&config, Dtype::F32, Dtype::F32, same);
    let ln = tensors.iter_mut().find(|t| t.name == "transformer.h.0.ln_2.weight").unwrap();
    *ln = Tensor::new(ln.name.clone(), Dtype::F64, ln.shape.clone(), &[0.5; 8]);
    write(&path, &tensors);
    let err =
        load_weights::<f32>(std::slice::from_ref(&path), &ParamLayout::new(&config)).unwrap_err();
    match &err {
        Error::TensorDtype { path: p, tensor, dtype } => {
            assert_eq!(p, &path);
            assert_eq!(tensor, "transformer.h.0.ln_2.weight");
            assert_eq!(dtype, "F64");
        }
        other => panic!("expected a TensorDtype error, got {other:?}"),
    }
    assert!(err.to_string().contains("F64"), "{err}");
}

/// A tensor that is no parameter of the configured model (a deeper model's block, a stray
/// name) is refused, naming file and tensor; the buffers transformers saves are skipped.
#[test]
fn extra_tensors_are_refused() {
    let config = tiny_gpt2();
    let layout = ParamLayout::new(&config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let tensors = model_tensors(&config, Dtype::F32, Dtype::F32, same);
    for extra in
        ["transformer.h.2.ln_1.weight", "transformer.h.0.attn.c_proj.lora_A", "score.weight"]
    {
        let mut with = tensors.clone();
        with.push(Tensor::new(extra, Dtype::F32, vec![8], &[0.0; 8]));
        write(&path, &with);
        let err = load_weights::<f32>(std::slice::from_ref(&path), &layout).unwrap_err();
        assert!(
            matches!(&err, Error::UnexpectedTensor { path: p, tensor } if *p == path && tensor == extra),
            "{extra}: {err:?}"
        );
        let message = err.to_string();
        assert_eq!(message.lines().count(), 1);
        assert!(message.starts_with(&path.display().to_string()), "{message}");
        assert!(message.contains(extra), "{message}");
    }
    // Saved buffers and a tied head are not parameters mft reads, and are not refused.
    let mut with = tensors.clone();
    with.push(Tensor::new("transformer.h.1.attn.masked_bias", Dtype::F32, vec![1], &[0.0]));
    with.push(Tensor::new("lm_head.weight", Dtype::F32, vec![11, 8], &[0.0; 88]));
    write(&path, &with);
    assert_loaded(&load_weights::<f32>(std::slice::from_ref(&path), &layout).unwrap(), &config);
    // A vision tower is skipped only in Gemma 3.
    let mut with = tensors;
    with.push(Tensor::new("vision_tower.patch.weight", Dtype::F32, vec![2], &[0.0; 2]));
    write(&path, &with);
    let err = load_weights::<f32>(std::slice::from_ref(&path), &layout).unwrap_err();
    assert!(matches!(err, Error::UnexpectedTensor { .. }), "{err:?}");
}

/// A file cut short anywhere (in the length prefix, the header, or the tensor data) is an
/// invalid safetensors file naming the file: never a crash, never zeros read past the end.
#[test]
fn truncated_files_are_refused() {
    let config = tiny_gpt2();
    let layout = ParamLayout::new(&config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write(&path, &model_tensors(&config, Dtype::F32, Dtype::F32, same));
    let whole = std::fs::read(&path).unwrap();
    let header = u64::from_le_bytes(whole[..8].try_into().unwrap()) as usize;
    for cut in [0, 5, 8, 8 + header / 2, 8 + header, 8 + header + 4, whole.len() - 1] {
        std::fs::write(&path, &whole[..cut]).unwrap();
        match load_weights::<f32>(std::slice::from_ref(&path), &layout) {
            Err(Error::Safetensors { path: p, .. }) => assert_eq!(p, path, "cut at {cut}"),
            other => panic!("cut at {cut}: expected a Safetensors error, got {other:?}"),
        }
    }
    // And a file with bytes past its last tensor.
    let mut longer = whole.clone();
    longer.extend_from_slice(&[0; 4]);
    std::fs::write(&path, &longer).unwrap();
    assert!(matches!(
        load_weights::<f32>(std::slice::from_ref(&path), &layout),
        Err(Error::Safetensors { .. })
    ));
}

/// Matrices stored in the element type used stay in the mapped file; others are converted.
#[test]
fn matrices_stored_as_used_are_not_copied() {
    let config = tiny_qwen2_untied();
    let layout = ParamLayout::new(&config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write(&path, &model_tensors(&config, Dtype::BF16, Dtype::F32, same));
    let files = [path];
    let mapped = load_weights::<bf16>(&files, &layout).unwrap();
    assert_eq!(mapped.mapped_bytes(), layout.matrix_len() * 2);
    assert_eq!(mapped.matrix_store(), None, "the matrices are not gathered into a store");
    assert_loaded(&mapped, &config);
    let converted = load_weights::<f32>(&files, &layout).unwrap();
    assert_eq!(converted.mapped_bytes(), 0);
    assert_loaded(&converted, &config);
    // Gathering them into one writable store (full fine-tuning) keeps every value in place.
    let mut gathered = mapped;
    let (matrices, _) = gathered.stores_mut(&layout);
    assert_eq!(matrices.len(), layout.matrix_len());
    assert_eq!(gathered.mapped_bytes(), 0);
    assert_loaded(&gathered, &config);
    // Paged loading keeps only the position table; gathering reads the rest from the file.
    let paging = mft_models::Paging::BlocksAndEmbeddings;
    let mut paged = load_weights_paged::<bf16>(&files, &layout, paging).unwrap();
    assert!(paged.paged().is_some());
    assert_eq!(paged.mapped_bytes(), 0);
    let (matrices, _) = paged.stores_mut(&layout);
    assert_eq!(matrices.len(), layout.matrix_len());
    assert!(paged.paged().is_none());
    assert_loaded(&paged, &config);
}

#[test]
fn corrupt_and_absent_files_are_named() {
    let config = tiny_gpt2();
    let layout = ParamLayout::new(&config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, b"\x10\0\0\0\0\0\0\0{\"a\": not json}").unwrap();
    match load_weights::<f32>(std::slice::from_ref(&path), &layout) {
        Err(Error::Safetensors { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected a Safetensors error, got {other:?}"),
    }
    let absent = dir.path().join("absent.safetensors");
    match load_weights::<f32>(std::slice::from_ref(&absent), &layout) {
        Err(Error::Io { path: p, .. }) => assert_eq!(p, absent),
        other => panic!("expected an Io error, got {other:?}"),
    }
}

// --- adapters --------------------------------------------------------------------------------

fn gpt2_lora() -> (ModelConfig, LoraLayout) {
    let config = tiny_gpt2();
    let targets = LoraTargets::from_module_names(Family::Gpt2, ["c_attn", "c_proj"]).unwrap();
    let lora = LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, rslora: false, targets };
    (config, LoraLayout::new(&config, &lora))
}

/// Every adapter tensor of `layout`, the `k`-th holding `value(k, ·)`, named `rename(name)`.
fn adapter_tensors(
    layout: &LoraLayout,
    dtype: Dtype,
    rename: impl Fn(String) -> String,
) -> Vec<Tensor> {
    let rank = layout.config().rank;
    layout
        .tensors()
        .enumerate()
        .map(|(k, (layer, param, is_b))| {
            let slot = layout.slot(layer, param).unwrap();
            let shape =
                if is_b { vec![slot.out_features, rank] } else { vec![rank, slot.in_features] };
            let values: Vec<f32> = (0..shape.iter().product()).map(|i| value(k, i)).collect();
            Tensor::new(rename(layout.name(layer, param, is_b).to_string()), dtype, shape, &values)
        })
        .collect()
}

#[test]
fn adapters_land_at_their_offsets() {
    let (_, layout) = gpt2_lora();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter_model.safetensors");
    let tensors = adapter_tensors(&layout, Dtype::BF16, same);
    assert_eq!(tensors[0].name, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");
    assert_eq!(tensors.len(), 2 * 3 * 2);
    write(&path, &tensors);
    let buffer = load_adapters(&path, &layout).unwrap();
    assert_eq!(buffer.len(), layout.len());
    let mut covered = 0;
    for (k, (layer, param, is_b)) in layout.tensors().enumerate() {
        let range = layout.range(layer, param, is_b);
        covered += range.len();
        for (i, v) in buffer[range].iter().enumerate() {
            assert_eq!(*v, value(k, i), "{}[{i}]", layout.name(layer, param, is_b));
        }
    }
    assert_eq!(covered, layout.len());
}

#[test]
fn adapter_defects_name_file_and_tensor() {
    let (_, layout) = gpt2_lora();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter_model.safetensors");
    let mut tensors = adapter_tensors(&layout, Dtype::F32, same);
    let name = "base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight";
    let b = tensors.iter_mut().find(|t| t.name == name).unwrap();
    assert_eq!(b.shape, [8, 2]);
    b.shape = vec![2, 8];
    write(&path, &tensors);
    match load_adapters(&path, &layout) {
        Err(Error::TensorShape { path: p, tensor, expected, actual }) => {
            assert_eq!(p, path);
            assert_eq!(tensor, name);
            assert_eq!((expected, actual), (vec![8, 2], vec![2, 8]));
        }
        other => panic!("expected a TensorShape error, got {other:?}"),
    }

    tensors.retain(|t| t.name != name);
    write(&path, &tensors);
    match load_adapters(&path, &layout) {
        Err(Error::MissingTensor { files, tensor }) => {
            assert_eq!(files, std::slice::from_ref(&path));
            assert_eq!(tensor, name);
        }
        other => panic!("expected a MissingTensor error, got {other:?}"),
    }
}

#[test]
fn gemma3_multimodal_adapter_names_load() {
    let config = tiny_gemma3();
    let targets = LoraTargets::from_module_names(Family::Gemma3, ["q_proj", "down_proj"]).unwrap();
    let lora = LoraConfig { rank: 3, alpha: 3.0, dropout: 0.1, rslora: true, targets };
    let layout = LoraLayout::new(&config, &lora);
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("adapter_model.safetensors");
    let rename = |n: String| {
        n.replacen("base_model.model.model.", "base_model.model.model.language_model.", 1)
    };
    let tensors = adapter_tensors(&layout, Dtype::F32, rename);
    assert!(tensors[0].name.starts_with("base_model.model.model.language_model.layers.0."));
    write(&path, &tensors);
    let buffer = load_adapters(&path, &layout).unwrap();
    let (layer, param, is_b) = layout.tensors().last().unwrap();
    let k = layout.tensors().count() - 1;
    assert_eq!(buffer[layout.range(layer, param, is_b)].last(), Some(&value(k, 3 * 8 - 1)));
}
