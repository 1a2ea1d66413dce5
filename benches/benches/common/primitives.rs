//! The training primitives measured by `cargo xtask bench kernels` next to the GEMM: causal
//! attention forward + backward at GPT-2 small's geometry, and the fused LM head +
//! cross-entropy at GPT-2's and Gemma 3's vocabulary sizes.
//!
//! Each problem owns its buffers and says how much work one call does, counted as the products
//! the issue names (so a rate is comparable with the GEMM's):
//! - attention: the six products over the causally visible scores (forward `Q·Kᵀ`, `P·V`;
//!   backward `Pᵀ·dO`, `dO·Vᵀ`, `dS·K`, `dSᵀ·Q`), `2·head_dim` FLOPs per visible score each; the
//!   backward's recomputation of `Q·Kᵀ` and the elementwise work are not counted;
//! - the loss: `2·tokens·hidden·vocab` per useful product: 3 with the head's gradient (logits,
//!   `d_hidden`, `d_weight`; on the shape a trained head gets, token blocks where the vocabulary
//!   allows, which run exactly those 3, else the chunk path, which runs a 4th, recomputing the
//!   logits), 2 without it (a frozen head, as in LoRA).

use std::hint::black_box;

use mft_kernels::{
    AttentionGrads, AttentionInputs, AttentionShape, IGNORE_INDEX, Kernels, LmHeadLoss, Parallel,
};

use super::random_values;

/// Attention forward + backward on one `(batch 4, 12 heads, head_dim 64, seq)` problem.
pub struct AttentionBench {
    shape: AttentionShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    out: Vec<f32>,
    lse: Vec<f32>,
    d_out: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    scratch: Vec<f32>,
}

impl AttentionBench {
    /// GPT-2 small's attention (batch 4, 12 heads, head_dim 64) at `seq` tokens.
    pub fn gpt2(kernels: &Kernels, seq: usize, threads: usize) -> Self {
        let shape = AttentionShape::new(4, seq, 12, 12, 64);
        let scratch = kernels
            .attention_forward_scratch_len(&shape, threads)
            .max(kernels.attention_backward_scratch_len(&shape, threads));
        AttentionBench {
            shape,
            q: random_values(shape.q_len(), 11),
            k: random_values(shape.kv_len(), 12),
            v: random_values(shape.kv_len(), 13),
            out: vec![0.0; shape.q_len()],
            lse: vec![0.0; shape.lse_len()],
            d_out: random_values(shape.q_len(), 14),
            dq: vec![0.0; shape.q_len()],
            dk: vec![0.0; shape.kv_len()],
            dv: vec![0.0; shape.kv_len()],
            scratch: vec![0.0; scratch],
        }
    }

    /// The shape.
    pub fn shape(&self) -> &AttentionShape {
        &self.shape
    }

    /// Scratch floats the larger of forward and backward asks for.
    pub fn scratch_len(&self) -> usize {
        self.scratch.len()
    }

    /// Counted FLOPs of one forward + backward (see the module docs).
    pub fn flops(&self) -> f64 {
        6.0 * 2.0 * self.shape.head_dim as f64 * self.shape.visible_pairs() as f64
    }

    /// One forward and one backward.
    pub fn run(&mut self, kernels: &Kernels, parallel: &dyn Parallel) {
        let x = AttentionInputs { q: &self.q, k: &self.k, v: &self.v, key_mask: None };
        kernels.attention_forward(
            &self.shape,
            x,
            &mut self.out,
            &mut self.lse,
            &mut self.scratch,
            parallel,
        );
        let grads = AttentionGrads { dq: &mut self.dq, dk: &mut self.dk, dv: &mut self.dv };
        kernels.attention_backward(
            &self.shape,
            x,
            &self.out,
            &self.lse,
            &self.d_out,
            grads,
            &mut self.scratch,
            parallel,
        );
        black_box((&self.dq, &self.dk, &self.dv));
    }
}

/// Which fused-loss call a sample makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossMode {
    /// Forward + backward with the head's gradient (full fine-tuning).
    Full,
    /// Forward + backward without it (a frozen head, as in LoRA).
    FrozenHead,
}

impl LossMode {
    /// Both modes.
    pub const ALL: [LossMode; 2] = [LossMode::Full, LossMode::FrozenHead];

    /// Name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            LossMode::Full => "full",
            LossMode::FrozenHead => "frozen head (LoRA)",
        }
    }

    /// Useful products counted per call.
    pub fn useful_products(self) -> f64 {
        match self {
            LossMode::Full => 3.0,
            LossMode::FrozenHead => 2.0,
        }
    }
}

/// The fused LM head + cross-entropy on one `tokens × hidden × vocab` problem.
pub struct LossBench {
    name: &'static str,
    /// The shape as a frozen head runs it (vocabulary chunks).
    shape: LmHeadLoss,
    /// The shape planned for a trained head (token blocks where the vocabulary allows).
    trained: LmHeadLoss,
    hidden: Vec<f32>,
    weight: Vec<f32>,
    labels: Vec<i32>,
    d_hidden: Vec<f32>,
    d_weight: Vec<f32>,
    scratch: Vec<f32>,
}

impl LossBench {
    /// GPT-2's head: 512 tokens × 768 × 50257.
    pub fn gpt2(kernels: &Kernels, threads: usize) -> Self {
        LossBench::new("gpt2", kernels, 512, 768, 50257, threads)
    }

    /// Gemma 3 270M's head: 512 tokens × 640 × 262144.
    pub fn gemma(kernels: &Kernels, threads: usize) -> Self {
        LossBench::new("gemma3-270m", kernels, 512, 640, 262_144, threads)
    }

    fn new(
        name: &'static str,
        kernels: &Kernels,
        tokens: usize,
        hidden: usize,
        vocab: usize,
        threads: usize,
    ) -> Self {
        let shape = LmHeadLoss::new(tokens, hidden, vocab);
        let trained = shape.with_token_blocks();
        // Weights of a trained model's scale (logits of a few units); every 17th token ignored.
        let weight = random_values(vocab * hidden, 21).into_iter().map(|w| 0.1 * w).collect();
        let labels = (0..tokens)
            .map(|i| if i % 17 == 16 { IGNORE_INDEX } else { ((i * 7919) % vocab) as i32 })
            .collect();
        let scratch =
            shape.scratch_len(kernels, threads).max(trained.scratch_len(kernels, threads));
        LossBench {
            name,
            shape,
            trained,
            hidden: random_values(tokens * hidden, 22),
            weight,
            labels,
            d_hidden: vec![0.0; tokens * hidden],
            d_weight: vec![0.0; vocab * hidden],
            scratch: vec![0.0; scratch],
        }
    }

    /// The model the shape comes from.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The shape `mode` runs.
    pub fn shape(&self, mode: LossMode) -> &LmHeadLoss {
        match mode {
            LossMode::Full => &self.trained,
            LossMode::FrozenHead => &self.shape,
        }
    }

    /// Scratch floats the loss asks for in `mode` on `threads` threads.
    pub fn scratch_len(&self, mode: LossMode, kernels: &Kernels, threads: usize) -> usize {
        self.shape(mode).scratch_len(kernels, threads)
    }

    /// Counted FLOPs of one call in `mode` (see the module docs).
    pub fn flops(&self, mode: LossMode) -> f64 {
        let s = self.shape(mode);
        mode.useful_products() * 2.0 * s.tokens() as f64 * s.hidden() as f64 * s.vocab() as f64
    }

    /// One forward + backward in `mode`.
    pub fn run(&mut self, mode: LossMode, kernels: &Kernels, parallel: &dyn Parallel) {
        let d_weight = match mode {
            LossMode::Full => Some(&mut self.d_weight[..]),
            LossMode::FrozenHead => None,
        };
        let shape = match mode {
            LossMode::Full => &self.trained,
            LossMode::FrozenHead => &self.shape,
        };
        black_box(kernels.lm_head_loss_forward_backward(
            shape,
            &self.hidden,
            &self.weight,
            &self.labels,
            1.0,
            &mut self.d_hidden,
            d_weight,
            &mut self.scratch,
            parallel,
        ));
    }
}
