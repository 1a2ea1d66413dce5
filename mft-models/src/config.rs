//! Model configurations as plain structs: one [`ModelConfig`] describes GPT-2, Gemma 3 and
//! Qwen 2.5 alike (the [`Family`] selects the block recipe), with presets for the published
//! shapes. Reading Hugging Face's config.json into it belongs to mft-std.

use crate::error::{Error, Result};

/// The model families mft trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// GPT-2: learned positions, LayerNorm, GELU-tanh MLP, fused `c_attn` in Conv1D layout
    /// (`[in, out]`), biases everywhere, tied head.
    Gpt2,
    /// Qwen 2.5 (`model_type` qwen2): GQA, q/k/v biases, RMSNorm, SwiGLU, RoPE.
    Qwen2,
    /// Gemma 3 text (`gemma3_text`, and the text part of `gemma3`): GQA, q/k norms, four
    /// RMSNorms per block in the `1 + w` form, √hidden-scaled embeddings, sliding-window and
    /// global layers with their own RoPE bases, GeGLU, tied head.
    Gemma3,
}

impl Family {
    /// The family of a Hugging Face `model_type`, or `None` for one mft does not support
    /// (gemma2, llama, …): the caller reports it by name.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        match model_type {
            "gpt2" => Some(Family::Gpt2),
            "qwen2" => Some(Family::Qwen2),
            "gemma3_text" | "gemma3" => Some(Family::Gemma3),
            _ => None,
        }
    }

    /// The `model_type` this family writes.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Qwen2 => "qwen2",
            Family::Gemma3 => "gemma3_text",
        }
    }
}

/// The rotary embedding of one kind of layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// Frequency base θ.
    pub base: f32,
    /// Linear position scaling (`rope_scaling: {rope_type: linear, factor}`); 1 for none.
    pub linear_factor: f32,
}

/// The most layers a config may have (the sliding-layer set is a 128-bit mask).
pub const MAX_LAYERS: usize = 128;

/// Everything the forward and backward need to know about a model's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelConfig {
    /// Which block recipe.
    pub family: Family,
    /// Vocabulary size.
    pub vocab: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (equal to `heads` without GQA).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate: usize,
    /// Longest sequence (GPT-2: rows of the position table).
    pub max_positions: usize,
    /// Epsilon of every norm.
    pub norm_eps: f32,
    /// Whether the LM head is the token embedding (GPT-2 and Gemma always; Qwen by config).
    pub tie_embeddings: bool,
    /// Attention scores are multiplied by this (`1/√head_dim`; Gemma: `query_pre_attn_scalar^-½`).
    pub attention_scale: f32,
    /// RoPE of global (full-attention) layers; `None` for GPT-2.
    pub rope: Option<Rope>,
    /// RoPE of sliding-window layers (Gemma's `rope_local_base_freq`).
    pub rope_local: Option<Rope>,
    /// Keys a sliding-window query sees, itself included (`sliding_window`).
    pub sliding_window: Option<usize>,
    /// Bit `l` set: layer `l` uses the sliding window (Gemma's `layer_types`).
    pub sliding_layers: u128,
    /// The token whose embedding row gets no gradient from the input side (`pad_token_id`,
    /// which Qwen 2 and Gemma 3 pass to `nn.Embedding` as `padding_idx`).
    pub padding_idx: Option<u32>,
}

/// The largest width [`ModelConfig::validate`] accepts: vocabulary, hidden and MLP widths,
/// positions, and the query (or key) heads' width together.
pub const MAX_WIDTH: usize = 1 << 24;

impl ModelConfig {
    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Whether layer `layer` attends through the sliding window.
    pub fn is_sliding(&self, layer: usize) -> bool {
        layer < MAX_LAYERS && self.sliding_layers >> layer & 1 == 1 && self.sliding_window.is_some()
    }

    /// The RoPE of layer `layer`, if the family uses RoPE.
    pub fn rope_of(&self, layer: usize) -> Option<Rope> {
        if self.is_sliding(layer) { self.rope_local.or(self.rope) } else { self.rope }
    }

    /// The factor token embeddings are multiplied by (Gemma: √hidden, rounded to f32 as
    /// transformers does in float32).
    pub fn embedding_scale(&self) -> f32 {
        match self.family {
            Family::Gemma3 => libm::sqrtf(self.hidden as f32),
            Family::Gpt2 | Family::Qwen2 => 1.0,
        }
    }

    /// Checks that the numbers describe a model the kernels can run, naming the first field
    /// (by its config.json name) that does not.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, problem| Err(Error::InvalidConfig { field, problem });
        let positive = [
            ("vocab_size", self.vocab),
            ("hidden_size", self.hidden),
            ("num_hidden_layers", self.layers),
            ("num_attention_heads", self.heads),
            ("num_key_value_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate_size", self.intermediate),
            ("max_position_embeddings", self.max_positions),
        ];
        for (field, value) in positive {
            if value == 0 {
                return invalid(field, "must be positive");
            }
        }
        if self.layers > MAX_LAYERS {
            return invalid("num_hidden_layers", "more than 128 layers");
        }
        // Widths bounded so that every tensor's element count, and their sum, fit in 64 bits.
        let widths = [
            ("vocab_size", self.vocab),
            ("hidden_size", self.hidden),
            ("intermediate_size", self.intermediate),
            ("max_position_embeddings", self.max_positions),
            ("head_dim", self.heads.saturating_mul(self.head_dim)),
            ("head_dim", self.kv_heads.saturating_mul(self.head_dim)),
        ];
        for (field, value) in widths {
            if value > MAX_WIDTH {
                return invalid(field, "a width beyond 2^24 (16777216): no model is that large");
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return invalid("num_key_value_heads", "does not divide num_attention_heads");
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return invalid("layer_norm_epsilon", "must be finite and positive");
        }
        if !(self.attention_scale.is_finite() && self.attention_scale > 0.0) {
            return invalid("query_pre_attn_scalar", "must give a finite positive scale");
        }
        if self.sliding_window == Some(0) {
            return invalid("sliding_window", "must be positive");
        }
        for rope in [self.rope, self.rope_local].into_iter().flatten() {
            if !(rope.base.is_finite() && rope.base > 0.0) {
                return invalid("rope_theta", "must be finite and positive");
            }
            if !(rope.linear_factor.is_finite() && rope.linear_factor > 0.0) {
                return invalid("rope_scaling.factor", "must be finite and positive");
            }
        }
        match self.family {
            Family::Gpt2 => {
                if self.rope.is_some() || self.kv_heads != self.heads {
                    return invalid("model_type", "GPT-2 has neither RoPE nor GQA");
                }
                if self.q_dim() != self.hidden {
                    return invalid("n_head", "does not divide n_embd");
                }
                if !self.tie_embeddings {
                    return invalid("tie_word_embeddings", "GPT-2's head is the token embedding");
                }
            }
            Family::Qwen2 | Family::Gemma3 => {
                if self.rope.is_none() {
                    return invalid("rope_theta", "missing");
                }
                if !self.head_dim.is_multiple_of(2) {
                    return invalid("head_dim", "RoPE needs an even head width");
                }
            }
        }
        if self.family == Family::Gemma3 && !self.tie_embeddings {
            return invalid("tie_word_embeddings", "Gemma 3's head is the token embedding");
        }
        Ok(())
    }

    /// GPT-2 with `n_embd`, `n_layer`, `n_head` (vocab 50257, 1024 positions, MLP 4×).
    pub fn gpt2_with(hidden: usize, layers: usize, heads: usize) -> ModelConfig {
        ModelConfig {
            family: Family::Gpt2,
            vocab: 50257,
            hidden,
            layers,
            heads,
            kv_heads: heads,
            head_dim: hidden / heads,
            // Saturating: a config.json's absurd width is refused by `validate`, not here.
            intermediate: hidden.saturating_mul(4),
            max_positions: 1024,
            norm_eps: 1e-5,
            tie_embeddings: true,
            attention_scale: 1.0 / libm::sqrtf((hidden / heads) as f32),
            rope: None,
            rope_local: None,
            sliding_window: None,
            sliding_layers: 0,
            padding_idx: None,
        }
    }

    /// GPT-2 small (124M).
    pub fn gpt2() -> ModelConfig {
        ModelConfig::gpt2_with(768, 12, 12)
    }

    /// GPT-2 medium (355M).
    pub fn gpt2_medium() -> ModelConfig {
        ModelConfig::gpt2_with(1024, 24, 16)
    }

    /// Qwen 2.5 0.5B.
    pub fn qwen2_5_0_5b() -> ModelConfig {
        ModelConfig {
            family: Family::Qwen2,
            vocab: 151936,
            hidden: 896,
            layers: 24,
            heads: 14,
            kv_heads: 2,
            head_dim: 64,
            intermediate: 4864,
            max_positions: 32768,
            norm_eps: 1e-6,
            tie_embeddings: true,
            attention_scale: 1.0 / 8.0,
            rope: Some(Rope { base: 1_000_000.0, linear_factor: 1.0 }),
            rope_local: None,
            sliding_window: None,
            sliding_layers: 0,
            padding_idx: None,
        }
    }

    /// Gemma 3 with the shared settings of the 270M and 1B checkpoints: head_dim 256,
    /// `query_pre_attn_scalar` 256, window 512, five sliding layers then one global.
    fn gemma3_with(hidden: usize, layers: usize, intermediate: usize) -> ModelConfig {
        ModelConfig {
            family: Family::Gemma3,
            vocab: 262144,
            hidden,
            layers,
            heads: 4,
            kv_heads: 1,
            head_dim: 256,
            intermediate,
            max_positions: 32768,
            norm_eps: 1e-6,
            tie_embeddings: true,
            attention_scale: 1.0 / 16.0,
            rope: Some(Rope { base: 1_000_000.0, linear_factor: 1.0 }),
            rope_local: Some(Rope { base: 10_000.0, linear_factor: 1.0 }),
            sliding_window: Some(512),
            sliding_layers: sliding_pattern(layers, 6),
            padding_idx: Some(0),
        }
    }

    /// Gemma 3 270M.
    pub fn gemma3_270m() -> ModelConfig {
        ModelConfig::gemma3_with(640, 18, 2048)
    }

    /// Gemma 3 1B.
    pub fn gemma3_1b() -> ModelConfig {
        ModelConfig::gemma3_with(1152, 26, 6912)
    }

    /// The preset of a name the benchmarks and CLI use (`gpt2`, `gpt2-medium`, `qwen2.5-0.5b`,
    /// `gemma3-270m`, `gemma3-1b`).
    pub fn preset(name: &str) -> Option<ModelConfig> {
        match name {
            "gpt2" => Some(ModelConfig::gpt2()),
            "gpt2-medium" => Some(ModelConfig::gpt2_medium()),
            "qwen2.5-0.5b" => Some(ModelConfig::qwen2_5_0_5b()),
            "gemma3-270m" => Some(ModelConfig::gemma3_270m()),
            "gemma3-1b" => Some(ModelConfig::gemma3_1b()),
            _ => None,
        }
    }
}

/// The sliding-layer mask of Gemma 3's default `layer_types`: every `period`-th layer (1-based)
/// is global, the others slide.
pub fn sliding_pattern(layers: usize, period: usize) -> u128 {
    (0..layers.min(MAX_LAYERS)).filter(|l| (l + 1) % period != 0).fold(0, |mask, l| mask | 1 << l)
}
