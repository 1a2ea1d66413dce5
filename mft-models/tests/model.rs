//! Whole-model properties that need no reference: parameter counts of the published shapes,
//! checkpointing changes nothing, a zero-B adapter changes nothing, bad input is refused, and
//! 30 AdamW steps on one batch learn it.

use mft_kernels::{AdamW, IGNORE_INDEX, Kernels, Sequential};
use mft_models::params::LAYER_PARAMS;
use mft_models::rng::Counter;
use mft_models::{
    Adapters, Batch, BlockSource, Family, GlobalParam, Gradients, LayerParam, LoraConfig,
    LoraLayout, LoraTargets, Matrices, Model, ModelConfig, Page, Paging, Param, Purpose, Rope,
    StepOptions, Weights,
};

/// A small config of each family, with GQA, a window shorter than the sequence and an untied
/// head where the family allows it.
fn tiny(family: Family) -> ModelConfig {
    let mut c = match family {
        Family::Gpt2 => ModelConfig::gpt2_with(32, 2, 4),
        Family::Qwen2 => ModelConfig::qwen2_5_0_5b(),
        Family::Gemma3 => ModelConfig::gemma3_270m(),
    };
    c.vocab = 96;
    c.hidden = 32;
    c.layers = 3;
    c.max_positions = 64;
    if family != Family::Gpt2 {
        c.heads = 4;
        c.kv_heads = 2;
        c.head_dim = if family == Family::Gemma3 { 16 } else { 8 };
        c.intermediate = 48;
        c.attention_scale = 1.0 / (c.head_dim as f32).sqrt();
        c.rope = Some(Rope { base: 10_000.0, linear_factor: 1.0 });
    }
    if family == Family::Qwen2 {
        c.tie_embeddings = false;
    }
    if family == Family::Gemma3 {
        c.sliding_window = Some(5);
        c.sliding_layers = 0b101;
    }
    c
}

fn random(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let rng = Counter::new(seed, &[]);
    (0..len).map(|i| (2.0 * rng.uniform(i as u64) - 1.0) * scale).collect()
}

struct Setup {
    model: Model,
    matrices: Vec<f32>,
    vectors: Vec<f32>,
    ids: Vec<u32>,
    targets: Vec<i32>,
    batch: usize,
    seq: usize,
}

fn setup(family: Family, seed: u64) -> Setup {
    let model = Model::new(tiny(family)).unwrap();
    let layout = *model.layout();
    let matrices = random(layout.matrix_len(), seed, 0.2);
    let vectors: Vec<f32> =
        random(layout.vector_len(), seed + 1, 0.1).iter().map(|v| 1.0 + v).collect();
    let (batch, seq) = (2, 12);
    let rng = Counter::new(seed + 2, &[]);
    let ids: Vec<u32> = (0..batch * seq).map(|i| (rng.bits(i as u64) % 96) as u32).collect();
    let mut targets: Vec<i32> = ids.iter().skip(1).map(|&i| i as i32).collect();
    targets.push(IGNORE_INDEX);
    targets[seq - 1] = IGNORE_INDEX;
    targets[3] = IGNORE_INDEX;
    Setup { model, matrices, vectors, ids, targets, batch, seq }
}

impl Setup {
    fn batch(&self) -> Batch<'_> {
        Batch { input_ids: &self.ids, targets: &self.targets, batch: self.batch, seq: self.seq }
    }

    fn weights(&self) -> Weights<'_, f32> {
        Weights::new(&self.matrices, &self.vectors)
    }

    /// Loss and full gradients.
    fn full_step(&self, checkpointed_blocks: usize) -> (f32, Vec<f32>, Vec<f32>) {
        let k = Kernels::best();
        let layout = self.model.layout();
        let mut gm = vec![0.0; layout.matrix_len()];
        let mut gv = vec![0.0; layout.vector_len()];
        let purpose = Purpose::Train { checkpointed_blocks };
        let len = self.model.workspace_len(&k, None, self.batch, self.seq, purpose, 1);
        let mut ws = vec![f32::NAN; len];
        let grads = Gradients::Full { matrices: &mut gm, vectors: &mut gv };
        let options = StepOptions { checkpointed_blocks, ..StepOptions::default() };
        let loss = self
            .model
            .train_step(
                &k,
                self.weights(),
                None,
                grads,
                &self.batch(),
                options,
                &mut ws,
                &Sequential,
            )
            .unwrap();
        (loss.loss, gm, gv)
    }
}

#[test]
fn published_shapes_have_their_published_parameter_counts() {
    for (name, expected) in [
        ("gpt2", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("qwen2.5-0.5b", 494_032_768),
        ("gemma3-270m", 268_098_176),
        ("gemma3-1b", 999_885_952),
    ] {
        let model = Model::new(ModelConfig::preset(name).unwrap()).unwrap();
        assert_eq!(model.layout().numel(), expected, "{name}");
    }
}

#[test]
fn checkpointing_gives_the_same_loss_and_gradients() {
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let s = setup(family, 7);
        let (loss, gm, gv) = s.full_step(0);
        assert!(loss.is_finite() && loss > 0.0, "{family:?}: loss {loss}");
        assert!(gm.iter().any(|&g| g != 0.0) && gv.iter().all(|g| g.is_finite()));
        // 1 of 3 blocks recomputes in the last block's area; 2 and 3 (and more than there are)
        // in a dedicated one.
        for k in [1, 2, 3, 9] {
            let (loss_c, gm_c, gv_c) = s.full_step(k);
            assert_eq!(loss, loss_c, "{family:?}, {k} checkpointed blocks");
            assert_eq!(gm, gm_c, "{family:?}, {k} checkpointed blocks: matrix gradients");
            assert_eq!(gv, gv_c, "{family:?}, {k} checkpointed blocks: vector gradients");
        }
    }
}

#[test]
fn thirty_adamw_steps_learn_one_batch() {
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let mut s = setup(family, 11);
        let k = Kernels::best();
        let n = s.model.layout().numel();
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let hyper = AdamW { lr: 1e-2, weight_decay: 0.0, ..AdamW::default() };
        let mut losses = Vec::new();
        for step in 1..=30 {
            let (loss, gm, gv) = s.full_step(0);
            losses.push(loss);
            let split = s.matrices.len();
            k.adamw_step(
                &hyper,
                step,
                &mut s.matrices,
                &gm,
                &mut m[..split],
                &mut v[..split],
                &Sequential,
            );
            k.adamw_step(
                &hyper,
                step,
                &mut s.vectors,
                &gv,
                &mut m[split..],
                &mut v[split..],
                &Sequential,
            );
        }
        let last = s.full_step(0).0;
        assert!(
            last < 0.2 * losses[0],
            "{family:?}: loss went {} → {last} ({losses:?})",
            losses[0]
        );
    }
}

#[test]
fn zero_b_adapters_leave_the_loss_unchanged() {
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let s = setup(family, 3);
        let k = Kernels::best();
        let names: &[&str] = if family == Family::Gpt2 {
            &["c_attn", "c_proj", "c_fc"]
        } else {
            &["q_proj", "v_proj", "down_proj", "gate_proj"]
        };
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.1,
            rslora: false,
            targets: LoraTargets::from_module_names(family, names.iter().copied()).unwrap(),
        };
        let layout = LoraLayout::new(s.model.config(), &lora);
        let mut adapters = vec![0.0; layout.len()];
        layout.init(5, &mut adapters);
        let mut grads = vec![0.0; layout.len()];
        let len = s.model.workspace_len(
            &k,
            Some(&layout),
            s.batch,
            s.seq,
            Purpose::Train { checkpointed_blocks: 0 },
            1,
        );
        let mut ws = vec![0.0; len];
        let a = Adapters { layout: &layout, weights: &adapters };
        let loss = s
            .model
            .train_step(
                &k,
                s.weights(),
                Some(a),
                Gradients::Lora(&mut grads),
                &s.batch(),
                StepOptions::default(),
                &mut ws,
                &Sequential,
            )
            .unwrap();
        let (base, _, _) = s.full_step(0);
        assert!((loss.loss - base).abs() <= 1e-6 * base, "{family:?}: {} vs {base}", loss.loss);
        // With B = 0 only the B gradients are non-zero.
        for (layer, param, is_b) in layout.tensors() {
            let g = &grads[layout.range(layer, param, is_b)];
            assert_eq!(
                g.iter().any(|&x| x != 0.0),
                is_b,
                "{family:?} layer {layer} {param:?} B={is_b}"
            );
        }
    }
}

#[test]
fn a_short_workspace_is_refused() {
    let s = setup(Family::Gpt2, 1);
    let k = Kernels::best();
    let layout = s.model.layout();
    let (mut gm, mut gv) = (vec![0.0; layout.matrix_len()], vec![0.0; layout.vector_len()]);
    let len = s.model.workspace_len(
        &k,
        None,
        s.batch,
        s.seq,
        Purpose::Train { checkpointed_blocks: 0 },
        1,
    );
    let mut ws = vec![0.0; len - 1];
    let err = s
        .model
        .train_step(
            &k,
            s.weights(),
            None,
            Gradients::Full { matrices: &mut gm, vectors: &mut gv },
            &s.batch(),
            StepOptions::default(),
            &mut ws,
            &Sequential,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("workspace holds {} elements, the memory plan needs {len}", len - 1)
    );
}

/// The LoRA gradient with dropout on (which the golden fixtures cannot cover: PyTorch's masks
/// are not reproducible here) against central finite differences of the loss with the same
/// masks, at the largest gradient elements of every family.
#[test]
fn lora_gradients_with_dropout_match_finite_differences() {
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let s = setup(family, 21);
        let k = Kernels::best();
        let names: &[&str] = if family == Family::Gpt2 {
            &["c_attn", "c_proj"]
        } else {
            &["k_proj", "o_proj", "up_proj"]
        };
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.3,
            rslora: family == Family::Qwen2,
            targets: LoraTargets::from_module_names(family, names.iter().copied()).unwrap(),
        };
        let layout = LoraLayout::new(s.model.config(), &lora);
        let adapters = random(layout.len(), 77, 0.3);
        let len = s.model.workspace_len(
            &k,
            Some(&layout),
            s.batch,
            s.seq,
            Purpose::Train { checkpointed_blocks: 0 },
            1,
        );
        let mut ws = vec![0.0; len];
        let options = StepOptions { dropout_seed: 1234, ..StepOptions::default() };
        let mut loss_and_grads = |adapters: &[f32]| {
            let mut grads = vec![0.0; layout.len()];
            let a = Adapters { layout: &layout, weights: adapters };
            let loss = s
                .model
                .train_step(
                    &k,
                    s.weights(),
                    Some(a),
                    Gradients::Lora(&mut grads),
                    &s.batch(),
                    options,
                    &mut ws,
                    &Sequential,
                )
                .unwrap();
            (loss.loss as f64, grads)
        };
        let (_, grads) = loss_and_grads(&adapters);
        let mut order: Vec<usize> = (0..grads.len()).collect();
        order.sort_by(|&a, &b| grads[b].abs().total_cmp(&grads[a].abs()));
        for &i in &order[..6] {
            let h = 1e-2f32;
            let mut plus = adapters.clone();
            plus[i] += h;
            let mut minus = adapters.clone();
            minus[i] -= h;
            let numeric = (loss_and_grads(&plus).0 - loss_and_grads(&minus).0) / (2.0 * h as f64);
            let analytic = grads[i] as f64;
            assert!(
                (numeric - analytic).abs() <= 0.02 * analytic.abs(),
                "{family:?} element {i}: analytic {analytic}, numeric {numeric}"
            );
        }
    }
}

/// `padding_idx` (Qwen and Gemma's `pad_token_id`): the padding token's embedding row takes no
/// gradient from the input side, as `nn.Embedding(padding_idx=…)` does; nothing else changes.
#[test]
fn the_padding_row_gets_no_input_gradient() {
    let mut s = setup(Family::Qwen2, 5);
    let pad = s.ids[0];
    let (_, plain, _) = s.full_step(0);
    let mut config = *s.model.config();
    config.padding_idx = Some(pad);
    s.model = Model::new(config).unwrap();
    let (_, padded, _) = s.full_step(0);
    let h = config.hidden;
    // Qwen's head is untied here, so the embedding's only gradient is the input side's.
    let row = pad as usize * h..(pad as usize + 1) * h;
    assert!(plain[row.clone()].iter().any(|&g| g != 0.0));
    assert!(padded[row.clone()].iter().all(|&g| g == 0.0));
    let embed = config.vocab * h;
    for i in (0..embed).filter(|i| !row.contains(i)) {
        assert_eq!(plain[i], padded[i], "element {i} of the embedding gradient");
    }
    assert_eq!(plain[embed..], padded[embed..]);
}

/// One LoRA step (dropout on) on `matrices` as the frozen matrix store.
fn lora_step<T: mft_kernels::GemmRhs>(
    s: &Setup,
    layout: &LoraLayout,
    adapters: &[f32],
    matrices: &[T],
) -> (f32, Vec<f32>) {
    lora_step_with(s, layout, adapters, Matrices::Store(matrices), 0).unwrap()
}

fn lora_step_checkpointed<T: mft_kernels::GemmRhs>(
    s: &Setup,
    layout: &LoraLayout,
    adapters: &[f32],
    matrices: &[T],
    checkpointed_blocks: usize,
) -> (f32, Vec<f32>) {
    lora_step_with(s, layout, adapters, Matrices::Store(matrices), checkpointed_blocks).unwrap()
}

fn lora_step_with<T: mft_kernels::GemmRhs>(
    s: &Setup,
    layout: &LoraLayout,
    adapters: &[f32],
    matrices: Matrices<'_, T>,
    checkpointed_blocks: usize,
) -> Result<(f32, Vec<f32>), mft_models::Error> {
    let k = Kernels::best();
    let len = s.model.workspace_len(
        &k,
        Some(layout),
        s.batch,
        s.seq,
        Purpose::Train { checkpointed_blocks },
        1,
    );
    let mut ws = vec![0.0; len];
    let mut grads = vec![0.0; layout.len()];
    let a = Adapters { layout, weights: adapters };
    let options = StepOptions { checkpointed_blocks, dropout_seed: 3, ..StepOptions::default() };
    let weights = Weights { matrices, vectors: &s.vectors };
    let loss = s.model.train_step(
        &k,
        weights,
        Some(a),
        Gradients::Lora(&mut grads),
        &s.batch(),
        options,
        &mut ws,
        &Sequential,
    )?;
    Ok((loss.loss, grads))
}

/// Matrices handed over one slice per parameter (as memory-mapped checkpoints are) give the
/// step of the flat store bit for bit; a table entry of the wrong size is refused.
#[test]
fn matrices_in_a_table_give_the_step_of_the_store() {
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let s = setup(family, 23);
        let names = if family == Family::Gpt2 { ["c_attn"] } else { ["q_proj"] };
        let params = s.model.layout();
        let lora = LoraConfig {
            rank: 2,
            alpha: 4.0,
            dropout: 0.0,
            rslora: false,
            targets: LoraTargets::from_module_names(family, [names[0]]).unwrap(),
        };
        let layout = LoraLayout::new(s.model.config(), &lora);
        let adapters = random(layout.len(), 4, 0.2);
        // Each matrix in its own allocation, in reverse order, so nothing relies on adjacency.
        let mut owned: Vec<(usize, Vec<f32>)> = params
            .params()
            .filter_map(|p| {
                let slot = params.slot(p).unwrap();
                slot.matrix.then(|| (params.table_index(p), s.matrices[slot.range()].to_vec()))
            })
            .collect();
        owned.reverse();
        let mut table: Vec<&[f32]> = vec![&[]; params.table_len()];
        for (index, values) in &owned {
            table[*index] = values;
        }
        let expected = lora_step(&s, &layout, &adapters, &s.matrices);
        let got = lora_step_with(&s, &layout, &adapters, Matrices::Table(&table), 0).unwrap();
        assert_eq!(got, expected, "{family:?}");
        let (index, values) = &owned[0];
        table[*index] = &values[1..];
        let err = lora_step_with(&s, &layout, &adapters, Matrices::Table(&table), 0).unwrap_err();
        assert!(matches!(err, mft_models::Error::BufferSize { .. }), "{family:?}: {err:?}");
        assert!(lora_step_with(&s, &layout, &adapters, Matrices::Table(&table[1..]), 0).is_err());
    }
}

/// Frozen weights in bf16 or f16 are widened exactly while packing, so a LoRA step on them
/// equals the step on f32 weights holding the same (rounded) values.
#[test]
fn half_precision_frozen_weights_give_the_step_of_their_f32_values() {
    use mft_kernels::{bf16, f16};
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let s = setup(family, 17);
        let names: &[&str] =
            if family == Family::Gpt2 { &["c_attn", "c_fc"] } else { &["q_proj", "up_proj"] };
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            dropout: 0.1,
            rslora: false,
            targets: LoraTargets::from_module_names(family, names.iter().copied()).unwrap(),
        };
        let layout = LoraLayout::new(s.model.config(), &lora);
        let adapters = random(layout.len(), 8, 0.2);
        let bf16s: Vec<bf16> = s.matrices.iter().map(|&v| bf16::from_f32(v)).collect();
        let bf16_values: Vec<f32> = bf16s.iter().map(|v| v.to_f32()).collect();
        let (loss, grads) = lora_step(&s, &layout, &adapters, &bf16s);
        assert_eq!(
            (loss, grads),
            lora_step(&s, &layout, &adapters, &bf16_values),
            "{family:?} bf16"
        );
        let f16s: Vec<f16> = s.matrices.iter().map(|&v| f16::from_f32(v)).collect();
        let f16_values: Vec<f32> = f16s.iter().map(|v| v.to_f32()).collect();
        let (loss, grads) = lora_step(&s, &layout, &adapters, &f16s);
        assert_eq!((loss, grads), lora_step(&s, &layout, &adapters, &f16_values), "{family:?} f16");
        // And the rounding is real: the step differs from the one on the unrounded weights.
        assert_ne!(loss, lora_step(&s, &layout, &adapters, &s.matrices).0, "{family:?}");
        // Recomputed blocks draw the same dropout masks.
        let plain = lora_step(&s, &layout, &adapters, &s.matrices);
        for k in [1, 3] {
            let checkpointed = lora_step_checkpointed(&s, &layout, &adapters, &s.matrices, k);
            assert_eq!(plain, checkpointed, "{family:?}: LoRA, {k} checkpointed blocks");
        }
    }
}

/// The memory plan: its workspace figures are the step's, checkpointing trades saved
/// activations for recomputed FLOPs, bf16 halves the frozen matrices.
#[test]
fn the_memory_plan_adds_up() {
    use mft_core::DType;
    use mft_models::{MemoryPlan, Mode};
    let model = Model::new(ModelConfig::gpt2()).unwrap();
    let k = Kernels::best();
    let targets = LoraTargets::from_module_names(Family::Gpt2, ["c_attn", "c_proj"]).unwrap();
    let lora = LoraConfig { rank: 8, alpha: 16.0, dropout: 0.05, rslora: false, targets };
    let layout = LoraLayout::new(model.config(), &lora);
    let f32_mode = Mode::Lora { config: lora, frozen: DType::F32 };
    let plain = MemoryPlan::new(&model, &k, &f32_mode, 4, 128, 0, 2);
    let ckpt = MemoryPlan::new(&model, &k, &f32_mode, 4, 128, 12, 2);
    let workspace = model.workspace_len(
        &k,
        Some(&layout),
        4,
        128,
        Purpose::Train { checkpointed_blocks: 0 },
        2,
    );
    assert_eq!(plain.saved_activation_bytes + plain.scratch_bytes, 4 * workspace);
    assert_eq!(plain.parameter_bytes, 4 * 124_439_808);
    assert_eq!(plain.trainable_params, layout.len());
    assert_eq!((plain.gradient_bytes, plain.optimizer_bytes), (4 * layout.len(), 8 * layout.len()));
    // Checkpointing keeps one [tokens, hidden] input per block.
    assert_eq!(ckpt.saved_activation_bytes, 4 * 12 * 512 * 768);
    assert!(ckpt.total_bytes() < plain.total_bytes());
    assert_eq!(plain.recompute_flops, 0);
    // The recomputation is the blocks' forward: the forward without the LM head.
    assert_eq!(ckpt.recompute_flops, plain.forward_flops - 2 * 512 * 50257 * 768);
    // Five of twelve blocks: they keep their inputs, recompute in the last block's area (no
    // scratch added), and five twelfths of the blocks' forward comes again.
    let five = MemoryPlan::new(&model, &k, &f32_mode, 4, 128, 5, 2);
    let per_block = plain.saved_activation_bytes / 12;
    assert_eq!(five.saved_activation_bytes, 5 * 4 * 512 * 768 + 7 * per_block);
    assert_eq!(five.scratch_bytes, plain.scratch_bytes);
    assert_eq!(five.recompute_flops * 12, ckpt.recompute_flops * 5);
    let bf16 = MemoryPlan::new(
        &model,
        &k,
        &Mode::Lora { config: lora, frozen: DType::BF16 },
        4,
        128,
        0,
        2,
    );
    let layout_params = model.layout();
    assert_eq!(
        bf16.parameter_bytes,
        2 * layout_params.matrix_len() + 4 * layout_params.vector_len()
    );
    let full = MemoryPlan::new(&model, &k, &Mode::Full, 4, 128, 0, 2);
    assert_eq!(full.optimizer_bytes, 8 * 124_439_808);
    assert!(full.backward_flops > plain.backward_flops);
}

/// Gradient accumulation weighted by tokens: the two rows of a batch as two micro-batches, each
/// weighted by its share of the scored tokens, accumulate the gradient of the whole batch.
#[test]
fn micro_batches_weighted_by_tokens_add_up_to_the_whole_batch() {
    let k = Kernels::best();
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let s = setup(family, 11);
        let (whole_loss, whole_m, whole_v) = s.full_step(0);
        let layout = s.model.layout();
        let (mut gm, mut gv) = (vec![0.0; layout.matrix_len()], vec![0.0; layout.vector_len()]);
        let seq = s.seq;
        let scored = |row: usize| {
            s.targets[row * seq..(row + 1) * seq].iter().filter(|&&t| t != IGNORE_INDEX).count()
        };
        let total = (scored(0) + scored(1)) as f32;
        assert_ne!(scored(0), scored(1), "the rows should score different token counts");
        let len =
            s.model.workspace_len(&k, None, 1, seq, Purpose::Train { checkpointed_blocks: 0 }, 1);
        let mut ws = vec![0.0; len];
        let mut weighted_loss = 0.0;
        for row in 0..2 {
            let batch = Batch {
                input_ids: &s.ids[row * seq..(row + 1) * seq],
                targets: &s.targets[row * seq..(row + 1) * seq],
                batch: 1,
                seq,
            };
            let options =
                StepOptions { loss_weight: scored(row) as f32 / total, ..StepOptions::default() };
            let grads = Gradients::Full { matrices: &mut gm, vectors: &mut gv };
            let loss = s
                .model
                .train_step(&k, s.weights(), None, grads, &batch, options, &mut ws, &Sequential)
                .unwrap();
            weighted_loss += loss.loss * scored(row) as f32 / total;
        }
        assert!((weighted_loss - whole_loss).abs() <= 1e-5 * whole_loss, "{family:?} loss");
        for (what, got, want) in [("matrices", &gm, &whole_m), ("vectors", &gv, &whole_v)] {
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * scale + 1e-4 * w.abs(),
                    "{family:?} {what}[{i}]: accumulated {g}, whole batch {w}"
                );
            }
        }
    }
}

/// Evaluation: `Model::loss` is the training step's loss (no dropout) and the cross-entropy of
/// `Model::logits`.
#[test]
fn evaluation_loss_matches_the_step_and_the_logits() {
    let k = Kernels::best();
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let s = setup(family, 5);
        let (step_loss, _, _) = s.full_step(0);
        let len = s.model.workspace_len(&k, None, s.batch, s.seq, Purpose::Logits, 1);
        let mut ws = vec![f32::NAN; len];
        let eval = s.model.loss(&k, s.weights(), None, &s.batch(), &mut ws, &Sequential).unwrap();
        assert!((eval.loss - step_loss).abs() <= 1e-6 * step_loss, "{family:?}");
        let vocab = s.model.config().vocab;
        let mut logits = vec![0.0; s.batch * s.seq * vocab];
        s.model
            .logits(
                &k,
                s.weights(),
                None,
                &s.ids,
                s.batch,
                s.seq,
                &mut logits,
                &mut ws,
                &Sequential,
            )
            .unwrap();
        let (mut sum, mut count) = (0.0f64, 0);
        for (row, &t) in logits.chunks_exact(vocab).zip(&s.targets) {
            if t == IGNORE_INDEX {
                continue;
            }
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            sum += lse - row[t as usize] as f64;
            count += 1;
        }
        assert_eq!(eval.valid_tokens, count);
        let reference = (sum / count as f64) as f32;
        assert!(
            (eval.loss - reference).abs() <= 1e-5 * reference,
            "{family:?}: {} vs {reference}",
            eval.loss
        );
    }
}

/// A source that hands out copies of a [`Setup`]'s block matrices (and, with `embeddings`,
/// of its embedding and head rows), recording what it was asked for (and can be told to fail
/// at one page).
struct CopiedBlocks {
    blocks: Vec<Vec<Vec<f32>>>,
    /// The token embedding and the head (the same table when tied), when they are paged.
    embeddings: Option<(Vec<f32>, Vec<f32>)>,
    head_copy: Vec<f32>,
    asked: Vec<Page>,
    fail_at: Option<Page>,
}

impl CopiedBlocks {
    fn new(s: &Setup, embeddings: bool) -> CopiedBlocks {
        let layout = s.model.layout();
        let blocks = (0..s.model.config().layers)
            .map(|layer| {
                LayerParam::ALL
                    .iter()
                    .map(|&p| match layout.slot(Param::Layer(layer, p)) {
                        Some(slot) if slot.matrix => s.matrices[slot.range()].to_vec(),
                        _ => Vec::new(),
                    })
                    .collect()
            })
            .collect();
        let table = |p: GlobalParam| {
            layout.slot(Param::Global(p)).map(|slot| s.matrices[slot.range()].to_vec())
        };
        let embeddings = embeddings.then(|| {
            let embed = table(GlobalParam::Embed).unwrap();
            let head = table(GlobalParam::LmHead).unwrap_or_else(|| embed.clone());
            (embed, head)
        });
        CopiedBlocks { blocks, embeddings, head_copy: Vec::new(), asked: Vec::new(), fail_at: None }
    }

    fn ask(&mut self, page: Page) -> Result<(), ()> {
        self.asked.push(page);
        if self.fail_at == Some(page) { Err(()) } else { Ok(()) }
    }
}

impl BlockSource<f32> for CopiedBlocks {
    fn block(&mut self, layer: usize) -> Result<[&[f32]; LAYER_PARAMS], ()> {
        self.ask(Page::Block(layer))?;
        Ok(std::array::from_fn(|p| self.blocks[layer][p].as_slice()))
    }

    fn pages_embeddings(&self) -> bool {
        self.embeddings.is_some()
    }

    fn head_rows(&mut self, first: usize, rows: usize, hidden: usize) -> Result<&[f32], ()> {
        self.ask(Page::Head { first, rows })?;
        let (_, head) = self.embeddings.as_ref().expect("asked only when paged");
        self.head_copy = head[first * hidden..(first + rows) * hidden].to_vec();
        Ok(&self.head_copy)
    }

    fn embedding_rows(&mut self, ids: &[u32], hidden: usize, out: &mut [f32]) -> Result<(), ()> {
        self.ask(Page::EmbeddingRows)?;
        let (embed, _) = self.embeddings.as_ref().expect("asked only when paged");
        for (row, &id) in out.chunks_exact_mut(hidden).zip(ids) {
            row.copy_from_slice(&embed[id as usize * hidden..(id as usize + 1) * hidden]);
        }
        Ok(())
    }
}

/// A step whose block matrices (and embedding and head rows) are paged in equals the plain
/// step bit for bit, asks for the pages in `page_schedule` order, and fails cleanly, naming the
/// page, when the source does.
#[test]
fn paged_blocks_give_the_step_of_resident_ones() {
    for (family, embeddings) in [Family::Gpt2, Family::Qwen2, Family::Gemma3]
        .into_iter()
        .flat_map(|f| [(f, false), (f, true)])
    {
        let s = setup(family, 29);
        let params = s.model.layout();
        let names = if family == Family::Gpt2 { ["c_attn"] } else { ["q_proj"] };
        let lora = LoraConfig {
            rank: 2,
            alpha: 4.0,
            dropout: 0.1,
            rslora: false,
            targets: LoraTargets::from_module_names(family, names).unwrap(),
        };
        let layout = LoraLayout::new(s.model.config(), &lora);
        let adapters = random(layout.len(), 5, 0.2);
        // Only the globals the source does not page in the weights: other entries empty.
        let paging = if embeddings { Paging::BlocksAndEmbeddings } else { Paging::Blocks };
        let mut table: Vec<&[f32]> = vec![&[]; params.table_len()];
        for p in params.params().filter(|&p| !paging.covers(p)) {
            let slot = params.slot(p).unwrap();
            if slot.matrix {
                table[params.table_index(p)] = &s.matrices[slot.range()];
            }
        }
        let weights = Weights { matrices: Matrices::Table(&table), vectors: &s.vectors };
        let k = Kernels::best();
        let tokens = s.batch * s.seq;
        let what = format!("{family:?}, embeddings paged: {embeddings}");
        let asked = |training| {
            let mut pages =
                embeddings.then_some(Page::EmbeddingRows).into_iter().collect::<Vec<_>>();
            pages.extend(s.model.page_schedule(training, tokens, embeddings));
            pages
        };
        for checkpointed_blocks in [0, 1] {
            let expected =
                lora_step_checkpointed(&s, &layout, &adapters, &s.matrices, checkpointed_blocks);
            let purpose = Purpose::Train { checkpointed_blocks };
            let len = s.model.workspace_len(&k, Some(&layout), s.batch, s.seq, purpose, 1);
            let mut ws = vec![0.0; len];
            let mut grads = vec![0.0; layout.len()];
            let options =
                StepOptions { checkpointed_blocks, dropout_seed: 3, ..StepOptions::default() };
            let mut source = CopiedBlocks::new(&s, embeddings);
            let loss = s
                .model
                .train_step_paged(
                    &k,
                    weights,
                    &mut source,
                    Some(Adapters { layout: &layout, weights: &adapters }),
                    Gradients::Lora(&mut grads),
                    &s.batch(),
                    options,
                    &mut ws,
                    &Sequential,
                )
                .unwrap();
            assert_eq!((loss.loss, grads), expected, "{what}, {checkpointed_blocks} ckpt");
            assert_eq!(source.asked, asked(true), "{what}");

            // Evaluation pages the blocks forward only.
            let eval_len = s.model.workspace_len(&k, None, s.batch, s.seq, Purpose::Logits, 1);
            let mut ws = vec![0.0; eval_len];
            let plain =
                s.model.loss(&k, s.weights(), None, &s.batch(), &mut ws, &Sequential).unwrap();
            let mut source = CopiedBlocks::new(&s, embeddings);
            let paged = s
                .model
                .loss_paged(&k, weights, &mut source, None, &s.batch(), &mut ws, &Sequential)
                .unwrap();
            assert_eq!(paged.loss, plain.loss, "{what}");
            assert_eq!(source.asked, asked(false), "{what}");

            let mut failures = vec![Page::Block(1)];
            if embeddings {
                failures.extend([Page::EmbeddingRows, Page::Head { first: 0, rows: 96 }]);
            }
            for page in failures {
                let mut failing = CopiedBlocks::new(&s, embeddings);
                failing.fail_at = Some(page);
                let err = s
                    .model
                    .loss_paged(&k, weights, &mut failing, None, &s.batch(), &mut ws, &Sequential)
                    .unwrap_err();
                assert_eq!(err, mft_models::Error::Paging { page }, "{what}");
            }
        }

        // A trained head cannot be paged.
        if embeddings {
            let mut source = CopiedBlocks::new(&s, true);
            let mut gm = vec![0.0; params.matrix_len()];
            let mut gv = vec![0.0; params.vector_len()];
            let len = s.model.workspace_len(
                &k,
                None,
                s.batch,
                s.seq,
                Purpose::Train { checkpointed_blocks: 0 },
                1,
            );
            let err = s
                .model
                .train_step_paged(
                    &k,
                    weights,
                    &mut source,
                    None,
                    Gradients::Full { matrices: &mut gm, vectors: &mut gv },
                    &s.batch(),
                    StepOptions::default(),
                    &mut vec![0.0; len],
                    &Sequential,
                )
                .unwrap_err();
            assert!(matches!(err, mft_models::Error::Unsupported { .. }), "{what}: {err}");
        }
    }
}

/// Widths whose products overflow 64 bits are refused by `validate` (found by fuzzing
/// config.json: `ParamLayout::new` overflowed on them).
#[test]
fn overflowing_widths_are_refused() {
    let mut wide = tiny(Family::Qwen2);
    (wide.heads, wide.kv_heads, wide.head_dim) = (1 << 32, 1, 1 << 32);
    let mut long = tiny(Family::Gpt2);
    (long.vocab, long.max_positions) = (1 << 62, 1 << 62);
    for (config, field) in [(wide, "head_dim"), (long, "vocab_size")] {
        match Model::new(config) {
            Err(mft_models::Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
        }
    }
    let mut widest = tiny(Family::Gpt2);
    widest.vocab = mft_models::config::MAX_WIDTH;
    assert!(Model::new(widest).is_ok(), "the bound itself is accepted");
}
