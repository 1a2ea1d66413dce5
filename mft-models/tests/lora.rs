//! LoRA's pieces on their own: PEFT-style target matching, adapter names and layout, PEFT's
//! initialisation, and the dropout mask's statistics and backward.

use mft_kernels::Sequential;
use mft_models::lora::{DropoutMask, RecordedMask, mask_words};
use mft_models::{Error, Family, LayerParam, LoraConfig, LoraLayout, LoraTargets, ModelConfig};

fn gpt2_lora(names: &[&str]) -> LoraLayout {
    let targets = LoraTargets::from_module_names(Family::Gpt2, names.iter().copied()).unwrap();
    let lora = LoraConfig { rank: 8, alpha: 16.0, dropout: 0.0, rslora: false, targets };
    LoraLayout::new(&ModelConfig::gpt2(), &lora)
}

#[test]
fn targets_match_module_names_as_peft_does() {
    let c_proj = LoraTargets::from_module_names(Family::Gpt2, ["c_proj"]).unwrap();
    assert!(c_proj.contains(LayerParam::O) && c_proj.contains(LayerParam::Down));
    assert!(!c_proj.contains(LayerParam::Qkv));
    let attn_only = LoraTargets::from_module_names(Family::Gpt2, ["attn.c_proj"]).unwrap();
    assert!(attn_only.contains(LayerParam::O) && !attn_only.contains(LayerParam::Down));
    let qwen = LoraTargets::from_module_names(Family::Qwen2, ["q_proj", "down_proj"]).unwrap();
    assert_eq!(qwen.params(Family::Qwen2).collect::<Vec<_>>(), [LayerParam::Q, LayerParam::Down]);
    // A name selecting nothing is an error, not a silent no-op ("proj" is not a module).
    for bad in ["c_attn_typo", "proj", "q_proj"] {
        let err = LoraTargets::from_module_names(Family::Gpt2, [bad]).unwrap_err();
        assert_eq!(err, Error::UnknownLoraTarget { family: "gpt2" }, "{bad}");
    }
}

#[test]
fn adapters_have_peft_names_shapes_and_a_dense_layout() {
    let layout = gpt2_lora(&["c_attn", "c_proj"]);
    let names: Vec<String> =
        layout.tensors().take(6).map(|(l, p, b)| layout.name(l, p, b).to_string()).collect();
    assert_eq!(
        names,
        [
            "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
            "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
            "base_model.model.transformer.h.0.attn.c_proj.lora_A.weight",
            "base_model.model.transformer.h.0.attn.c_proj.lora_B.weight",
            "base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight",
            "base_model.model.transformer.h.0.mlp.c_proj.lora_B.weight",
        ]
    );
    // A [8, 768] then B [2304, 8] for c_attn; A [8, 3072] for mlp.c_proj; ranges tile the buffer.
    assert_eq!(layout.range(0, LayerParam::Qkv, false), 0..8 * 768);
    assert_eq!(layout.range(0, LayerParam::Qkv, true).len(), 2304 * 8);
    assert_eq!(layout.range(0, LayerParam::Down, false).len(), 8 * 3072);
    let mut next = 0;
    for (l, p, b) in layout.tensors() {
        let r = layout.range(l, p, b);
        assert_eq!(r.start, next);
        next = r.end;
    }
    assert_eq!(next, layout.len());
    // GPT-2 small, r = 8 on c_attn and both c_proj: 12 · 8 · (768+2304 + 768+768 + 3072+768).
    assert_eq!(layout.len(), 12 * 8 * (768 + 2304 + 768 + 768 + 3072 + 768));
}

#[test]
fn initialisation_is_kaiming_uniform_for_a_and_zero_for_b() {
    let layout = gpt2_lora(&["c_attn", "mlp.c_proj"]);
    let mut buffer = vec![f32::NAN; layout.len()];
    layout.init(42, &mut buffer);
    for (l, p, is_b) in layout.tensors() {
        let values = &buffer[layout.range(l, p, is_b)];
        if is_b {
            assert!(values.iter().all(|&v| v == 0.0));
            continue;
        }
        let fan_in = if p == LayerParam::Down { 3072.0f32 } else { 768.0 };
        let bound = 1.0 / fan_in.sqrt();
        assert!(values.iter().all(|v| v.abs() <= bound), "{p:?}: a value exceeds ±{bound}");
        // Uniform on ±bound: mean ≈ 0, variance ≈ bound²/3.
        let n = values.len() as f32;
        let mean = values.iter().sum::<f32>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        assert!(mean.abs() < 0.05 * bound, "{p:?}: mean {mean}");
        assert!((var / (bound * bound / 3.0) - 1.0).abs() < 0.05, "{p:?}: variance {var}");
    }
    let mut again = vec![0.0; layout.len()];
    layout.init(42, &mut again);
    assert_eq!(buffer, again, "the same seed gives the same adapters");
    layout.init(43, &mut again);
    assert_ne!(buffer, again, "another seed gives other adapters");
}

#[test]
fn rslora_scales_by_the_square_root_of_the_rank() {
    let targets = LoraTargets::from_module_names(Family::Qwen2, ["q_proj"]).unwrap();
    let plain = LoraConfig { rank: 16, alpha: 8.0, dropout: 0.0, rslora: false, targets };
    assert_eq!(plain.scaling(), 0.5);
    assert_eq!(LoraConfig { rslora: true, ..plain }.scaling(), 2.0);
    assert!(LoraConfig { dropout: 1.0, ..plain }.validate().is_err());
    assert!(LoraConfig { rank: 0, ..plain }.validate().is_err());
    // Found by fuzzing adapter_config.json: a rank this large overflowed the layout's sizes.
    assert!(LoraConfig { rank: usize::MAX, ..plain }.validate().is_err());
    assert!(LoraConfig { rank: (1 << 24) + 1, ..plain }.validate().is_err());
    assert!(LoraConfig { rank: 1 << 24, ..plain }.validate().is_ok());
}

#[test]
fn dropout_drops_about_p_scales_the_rest_and_its_backward_is_the_same_mask() {
    let n = 200_000;
    let x: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32).collect();
    for p in [0.05f32, 0.1, 0.5] {
        let mask = DropoutMask::new(p, 9, 3, LayerParam::Q);
        let mut y = vec![0.0; n];
        mask.apply(&x, &mut y, &Sequential);
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f32 / n as f32;
        let sigma = (p * (1.0 - p) / n as f32).sqrt();
        assert!((dropped - p).abs() < 5.0 * sigma, "p {p}: dropped {dropped}");
        for (&a, &b) in x.iter().zip(&y) {
            assert!(b == 0.0 || (b - a / (1.0 - p)).abs() <= 1e-6 * b, "kept values are scaled");
        }
        // The backward adds mask·g: with g = x it reproduces the forward exactly.
        let mut acc = vec![0.0; n];
        mask.accumulate(&x, &mut acc, &Sequential);
        assert_eq!(acc, y);
        // Recorded in forward, replayed in backward: the same mask bit for bit.
        let mut bits = vec![0u32; mask_words(n)];
        let mut recorded = vec![0.0; n];
        mask.apply_recording(&x, &mut recorded, &mut bits, &Sequential);
        assert_eq!(recorded, y);
        let replay = RecordedMask::new(&bits, p);
        let mut replayed = vec![0.0; n];
        replay.apply(&x, &mut replayed, &Sequential);
        assert_eq!(replayed, y);
        let mut acc = vec![0.0; n];
        replay.accumulate(&x, &mut acc, &Sequential);
        assert_eq!(acc, y);
        // Another step's seed draws another mask.
        let mut z = vec![0.0; n];
        DropoutMask::new(p, 10, 3, LayerParam::Q).apply(&x, &mut z, &Sequential);
        assert_ne!(y, z);
    }
}
