//! Parameters: which tensors a family has, their shapes, their Hugging Face names, and where
//! each lives in the two flat buffers a model's weights are kept in.
//!
//! Weights are split by how the kernels read them: **matrices** (embeddings and projection
//! weights, the GEMM operands) may be f32, f16 or bf16; **vectors** (norm weights and biases)
//! are always f32. Each store is one flat buffer; gradients use the same layout in f32. Every
//! tensor keeps Hugging Face's own layout (Linear `[out, in]`, GPT-2's Conv1D `[in, out]`), so a
//! checkpoint loads by copying and a gradient compares element by element.

use core::fmt;

use crate::config::{Family, ModelConfig};

/// A tensor of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LayerParam {
    /// Norm before attention (GPT-2 `ln_1`, others `input_layernorm`).
    Norm1,
    /// Its bias (GPT-2).
    Norm1Bias,
    /// GPT-2's fused query/key/value projection `attn.c_attn`, Conv1D `[hidden, 3·hidden]`.
    Qkv,
    /// Its bias, `[3·hidden]`.
    QkvBias,
    /// `self_attn.q_proj`, `[q_dim, hidden]`.
    Q,
    /// Its bias (Qwen).
    QBias,
    /// `self_attn.k_proj`, `[kv_dim, hidden]`.
    K,
    /// Its bias (Qwen).
    KBias,
    /// `self_attn.v_proj`, `[kv_dim, hidden]`.
    V,
    /// Its bias (Qwen).
    VBias,
    /// Gemma's per-head query norm `self_attn.q_norm`, `[head_dim]`.
    QNorm,
    /// Gemma's per-head key norm `self_attn.k_norm`, `[head_dim]`.
    KNorm,
    /// Attention output projection (GPT-2 `attn.c_proj` `[hidden, hidden]` Conv1D, others
    /// `self_attn.o_proj` `[hidden, q_dim]`).
    O,
    /// Its bias (GPT-2).
    OBias,
    /// Gemma's norm of the attention output, `post_attention_layernorm`.
    PostAttentionNorm,
    /// Norm before the MLP (GPT-2 `ln_2`, Qwen `post_attention_layernorm`, Gemma
    /// `pre_feedforward_layernorm`).
    Norm2,
    /// Its bias (GPT-2).
    Norm2Bias,
    /// GPT-2's `mlp.c_fc`, Conv1D `[hidden, intermediate]`.
    Fc,
    /// Its bias.
    FcBias,
    /// `mlp.gate_proj`, `[intermediate, hidden]`.
    Gate,
    /// `mlp.up_proj`, `[intermediate, hidden]`.
    Up,
    /// MLP output projection (GPT-2 `mlp.c_proj` Conv1D `[intermediate, hidden]`, others
    /// `mlp.down_proj` `[hidden, intermediate]`).
    Down,
    /// Its bias (GPT-2).
    DownBias,
    /// Gemma's norm of the MLP output, `post_feedforward_layernorm`.
    PostFeedforwardNorm,
}

/// Number of [`LayerParam`] variants.
pub const LAYER_PARAMS: usize = LayerParam::PostFeedforwardNorm as usize + 1;

impl LayerParam {
    /// Every variant, in declaration order.
    pub const ALL: [LayerParam; LAYER_PARAMS] = [
        LayerParam::Norm1,
        LayerParam::Norm1Bias,
        LayerParam::Qkv,
        LayerParam::QkvBias,
        LayerParam::Q,
        LayerParam::QBias,
        LayerParam::K,
        LayerParam::KBias,
        LayerParam::V,
        LayerParam::VBias,
        LayerParam::QNorm,
        LayerParam::KNorm,
        LayerParam::O,
        LayerParam::OBias,
        LayerParam::PostAttentionNorm,
        LayerParam::Norm2,
        LayerParam::Norm2Bias,
        LayerParam::Fc,
        LayerParam::FcBias,
        LayerParam::Gate,
        LayerParam::Up,
        LayerParam::Down,
        LayerParam::DownBias,
        LayerParam::PostFeedforwardNorm,
    ];

    /// Whether the family has this tensor.
    pub fn in_family(self, family: Family) -> bool {
        use LayerParam::*;
        match family {
            Family::Gpt2 => matches!(
                self,
                Norm1
                    | Norm1Bias
                    | Qkv
                    | QkvBias
                    | O
                    | OBias
                    | Norm2
                    | Norm2Bias
                    | Fc
                    | FcBias
                    | Down
                    | DownBias
            ),
            Family::Qwen2 => matches!(
                self,
                Norm1 | Q | QBias | K | KBias | V | VBias | O | Norm2 | Gate | Up | Down
            ),
            Family::Gemma3 => matches!(
                self,
                Norm1
                    | Q
                    | K
                    | V
                    | QNorm
                    | KNorm
                    | O
                    | PostAttentionNorm
                    | Norm2
                    | Gate
                    | Up
                    | Down
                    | PostFeedforwardNorm
            ),
        }
    }

    /// Whether it is a projection weight (kept in the matrix store) rather than a vector.
    pub fn is_matrix(self) -> bool {
        use LayerParam::*;
        matches!(self, Qkv | Q | K | V | O | Fc | Gate | Up | Down)
    }

    /// The projection's `(in_features, out_features)`, for matrices.
    pub fn features(self, config: &ModelConfig) -> Option<(usize, usize)> {
        use LayerParam::*;
        let (h, i) = (config.hidden, config.intermediate);
        Some(match self {
            Qkv => (h, 3 * h),
            Q => (h, config.q_dim()),
            K | V => (h, config.kv_dim()),
            O => (config.q_dim(), h),
            Fc | Gate | Up => (h, i),
            Down => (i, h),
            _ => return None,
        })
    }

    /// Elements of the tensor.
    pub fn numel(self, config: &ModelConfig) -> usize {
        use LayerParam::*;
        if let Some((inp, out)) = self.features(config) {
            return inp * out;
        }
        match self {
            Norm1 | Norm1Bias | OBias | PostAttentionNorm | Norm2 | Norm2Bias | DownBias
            | PostFeedforwardNorm => config.hidden,
            QkvBias => 3 * config.hidden,
            QBias => config.q_dim(),
            KBias | VBias => config.kv_dim(),
            QNorm | KNorm => config.head_dim,
            FcBias => config.intermediate,
            _ => unreachable!("matrices are sized above"),
        }
    }

    /// The name after the block prefix, without `.weight`/`.bias` (the module path PEFT
    /// targets), e.g. `attn.c_attn` or `self_attn.q_proj`.
    pub fn module_path(self, family: Family) -> &'static str {
        use LayerParam::*;
        match (family, self) {
            (Family::Gpt2, Norm1 | Norm1Bias) => "ln_1",
            (Family::Gpt2, Qkv | QkvBias) => "attn.c_attn",
            (Family::Gpt2, O | OBias) => "attn.c_proj",
            (Family::Gpt2, Norm2 | Norm2Bias) => "ln_2",
            (Family::Gpt2, Fc | FcBias) => "mlp.c_fc",
            (Family::Gpt2, Down | DownBias) => "mlp.c_proj",
            (_, Norm1) => "input_layernorm",
            (_, Q | QBias) => "self_attn.q_proj",
            (_, K | KBias) => "self_attn.k_proj",
            (_, V | VBias) => "self_attn.v_proj",
            (_, QNorm) => "self_attn.q_norm",
            (_, KNorm) => "self_attn.k_norm",
            (_, O | OBias) => "self_attn.o_proj",
            (Family::Qwen2, Norm2) => "post_attention_layernorm",
            (_, PostAttentionNorm) => "post_attention_layernorm",
            (_, Norm2) => "pre_feedforward_layernorm",
            (_, Gate) => "mlp.gate_proj",
            (_, Up) => "mlp.up_proj",
            (_, Down | DownBias) => "mlp.down_proj",
            (_, PostFeedforwardNorm) => "post_feedforward_layernorm",
            (_, Norm1Bias | Norm2Bias | Qkv | QkvBias | Fc | FcBias) => "unused",
        }
    }

    /// Whether the tensor is a bias (named `.bias`).
    pub fn is_bias(self) -> bool {
        use LayerParam::*;
        matches!(
            self,
            Norm1Bias | QkvBias | QBias | KBias | VBias | OBias | Norm2Bias | FcBias | DownBias
        )
    }
}

/// A tensor of the model outside the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlobalParam {
    /// Token embedding `[vocab, hidden]` (also the head when tied).
    Embed,
    /// GPT-2's learned positions `[max_positions, hidden]`.
    Positions,
    /// The final norm's weight.
    FinalNorm,
    /// Its bias (GPT-2).
    FinalNormBias,
    /// An untied LM head `[vocab, hidden]`.
    LmHead,
}

impl GlobalParam {
    /// Every variant.
    pub const ALL: [GlobalParam; 5] = [
        GlobalParam::Embed,
        GlobalParam::Positions,
        GlobalParam::FinalNorm,
        GlobalParam::FinalNormBias,
        GlobalParam::LmHead,
    ];

    /// Whether the model has this tensor.
    pub fn in_model(self, config: &ModelConfig) -> bool {
        match self {
            GlobalParam::Embed | GlobalParam::FinalNorm => true,
            GlobalParam::Positions | GlobalParam::FinalNormBias => config.family == Family::Gpt2,
            GlobalParam::LmHead => !config.tie_embeddings,
        }
    }

    /// Whether it is kept in the matrix store.
    pub fn is_matrix(self) -> bool {
        matches!(self, GlobalParam::Embed | GlobalParam::Positions | GlobalParam::LmHead)
    }

    /// Elements of the tensor.
    pub fn numel(self, config: &ModelConfig) -> usize {
        match self {
            GlobalParam::Embed | GlobalParam::LmHead => config.vocab * config.hidden,
            GlobalParam::Positions => config.max_positions * config.hidden,
            GlobalParam::FinalNorm | GlobalParam::FinalNormBias => config.hidden,
        }
    }
}

/// Any parameter tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Param {
    /// Outside the blocks.
    Global(GlobalParam),
    /// Of block `layer`.
    Layer(usize, LayerParam),
}

impl Param {
    /// Its Hugging Face name (as in model.safetensors), displayed without allocating.
    pub fn name(self, family: Family) -> ParamName {
        ParamName { family, param: self }
    }
}

/// A parameter's Hugging Face name; `Display` writes it.
#[derive(Debug, Clone, Copy)]
pub struct ParamName {
    family: Family,
    param: Param,
}

impl fmt::Display for ParamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let gpt2 = self.family == Family::Gpt2;
        match self.param {
            Param::Global(g) => f.write_str(match (gpt2, g) {
                (true, GlobalParam::Embed) => "transformer.wte.weight",
                (true, GlobalParam::Positions) => "transformer.wpe.weight",
                (true, GlobalParam::FinalNorm) => "transformer.ln_f.weight",
                (true, GlobalParam::FinalNormBias) => "transformer.ln_f.bias",
                (false, GlobalParam::Embed) => "model.embed_tokens.weight",
                (false, GlobalParam::FinalNorm) => "model.norm.weight",
                (_, GlobalParam::LmHead) => "lm_head.weight",
                (false, GlobalParam::Positions | GlobalParam::FinalNormBias) => "unused",
            }),
            Param::Layer(layer, p) => {
                let prefix = if gpt2 { "transformer.h" } else { "model.layers" };
                let suffix = if p.is_bias() { "bias" } else { "weight" };
                write!(f, "{prefix}.{layer}.{}.{suffix}", p.module_path(self.family))
            }
        }
    }
}

/// Where one tensor lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// In the matrix store (else the vector store).
    pub matrix: bool,
    /// First element.
    pub offset: usize,
    /// Elements.
    pub len: usize,
}

impl Slot {
    /// The tensor's range in its store.
    pub fn range(&self) -> core::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// Offsets of every tensor in the two stores: the globals first, then block after block with
/// the same layout (a block's tensor is at `block base + layer · block stride`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamLayout {
    family: Family,
    layers: usize,
    globals: [Option<Slot>; 5],
    /// Offset of each block tensor within a block (None: not in the family).
    in_block: [Option<Slot>; LAYER_PARAMS],
    /// Where block 0 starts in the (matrix, vector) stores.
    block_base: (usize, usize),
    /// Elements of one block in the (matrix, vector) stores.
    block_stride: (usize, usize),
    /// Total elements of the (matrix, vector) stores.
    totals: (usize, usize),
}

impl ParamLayout {
    /// The layout of `config`'s parameters.
    pub fn new(config: &ModelConfig) -> ParamLayout {
        let mut next = (0usize, 0usize);
        let place = |matrix: bool, len: usize, next: &mut (usize, usize)| {
            let cursor = if matrix { &mut next.0 } else { &mut next.1 };
            let slot = Slot { matrix, offset: *cursor, len };
            *cursor += len;
            slot
        };
        let mut globals = [None; 5];
        for (i, g) in GlobalParam::ALL.into_iter().enumerate() {
            if g.in_model(config) {
                globals[i] = Some(place(g.is_matrix(), g.numel(config), &mut next));
            }
        }
        let block_base = next;
        let mut local = (0usize, 0usize);
        let mut in_block = [None; LAYER_PARAMS];
        for p in LayerParam::ALL {
            if p.in_family(config.family) {
                in_block[p as usize] = Some(place(p.is_matrix(), p.numel(config), &mut local));
            }
        }
        let totals =
            (block_base.0 + config.layers * local.0, block_base.1 + config.layers * local.1);
        ParamLayout {
            family: config.family,
            layers: config.layers,
            globals,
            in_block,
            block_base,
            block_stride: local,
            totals,
        }
    }

    /// Elements of the matrix store.
    pub fn matrix_len(&self) -> usize {
        self.totals.0
    }

    /// Elements of the vector store.
    pub fn vector_len(&self) -> usize {
        self.totals.1
    }

    /// Parameters in all.
    pub fn numel(&self) -> usize {
        self.totals.0 + self.totals.1
    }

    /// Where `param` lives, or `None` if the model does not have it.
    pub fn slot(&self, param: Param) -> Option<Slot> {
        match param {
            Param::Global(g) => self.globals[g as usize],
            Param::Layer(layer, p) => {
                if layer >= self.layers {
                    return None;
                }
                let s = self.in_block[p as usize]?;
                let (base, stride) = if s.matrix {
                    (self.block_base.0, self.block_stride.0)
                } else {
                    (self.block_base.1, self.block_stride.1)
                };
                Some(Slot { offset: base + layer * stride + s.offset, ..s })
            }
        }
    }

    /// Elements of the matrix store before the first block: the global matrices (embeddings,
    /// an untied head).
    pub fn global_matrix_len(&self) -> usize {
        self.block_base.0
    }

    /// Where block `layer`'s matrices are in the matrix store (they are contiguous).
    pub fn block_matrices(&self, layer: usize) -> core::ops::Range<usize> {
        let start = self.block_base.0 + layer * self.block_stride.0;
        start..start + self.block_stride.0
    }

    /// Every parameter the model has, globals first, then block by block (the store order).
    pub fn params(&self) -> impl Iterator<Item = Param> + '_ {
        let globals = GlobalParam::ALL
            .into_iter()
            .filter(|g| self.globals[*g as usize].is_some())
            .map(Param::Global);
        let layers = (0..self.layers).flat_map(move |l| {
            LayerParam::ALL
                .into_iter()
                .filter(|p| self.in_block[*p as usize].is_some())
                .map(move |p| Param::Layer(l, p))
        });
        globals.chain(layers)
    }

    /// Blocks of the model.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Entries of a [`Matrices::Table`]: one per global and per block parameter kind and
    /// block, whether or not the model has it.
    pub fn table_len(&self) -> usize {
        GlobalParam::ALL.len() + self.layers * LAYER_PARAMS
    }

    /// Where `param` sits in a [`Matrices::Table`].
    pub fn table_index(&self, param: Param) -> usize {
        match param {
            Param::Global(g) => g as usize,
            Param::Layer(layer, p) => GlobalParam::ALL.len() + layer * LAYER_PARAMS + p as usize,
        }
    }

    /// The family the layout was made for.
    pub fn family(&self) -> Family {
        self.family
    }
}

// Copy whatever `T` is: both hold only references.
impl<T> Clone for Matrices<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Matrices<'_, T> {}
impl<T> Clone for Weights<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Weights<'_, T> {}

/// `param`'s matrix (at `slot`) in `matrices`.
fn matrix_in<'a, T>(
    matrices: &Matrices<'a, T>,
    layout: &ParamLayout,
    param: Param,
    slot: Slot,
) -> &'a [T] {
    match *matrices {
        Matrices::Store(store) => &store[slot.range()],
        Matrices::Table(table) => table[layout.table_index(param)],
        Matrices::Block { layer, block, base } => match param {
            Param::Layer(l, p) => {
                assert_eq!(l, layer, "block {l}'s matrix read while block {layer} is paged in");
                block[p as usize]
            }
            Param::Global(_) => matrix_in(base, layout, param, slot),
        },
    }
}

/// Where a model's matrices are: one flat store, or one slice per parameter (which lets a
/// caller hand the model tensors that stay where they are, such as memory-mapped checkpoint
/// files, instead of copying them into one buffer).
#[derive(Debug)]
pub enum Matrices<'a, T> {
    /// The matrix store ([`ParamLayout::matrix_len`] elements, tensors at their slots).
    Store(&'a [T]),
    /// [`ParamLayout::table_len`] slices: the matrix `param` at
    /// [`ParamLayout::table_index`]`(param)`, holding [`Slot::len`] elements; entries of
    /// vectors and of parameters the model does not have are ignored (conventionally empty).
    Table(&'a [&'a [T]]),
    /// While block `layer` runs in a paged step: its matrices (by [`LayerParam`] index, as a
    /// [`crate::BlockSource`] hands them over), the globals from `base`.
    Block {
        /// The block.
        layer: usize,
        /// Its matrices.
        block: &'a [&'a [T]; LAYER_PARAMS],
        /// Where the other matrices are.
        base: &'a Matrices<'a, T>,
    },
}

/// A model's weights as the model reads them: matrices in `T` (f32, f16 or bf16), vectors in
/// one f32 store.
#[derive(Debug)]
pub struct Weights<'a, T> {
    /// The matrices.
    pub matrices: Matrices<'a, T>,
    /// The vector store ([`ParamLayout::vector_len`] elements).
    pub vectors: &'a [f32],
}

impl<'a, T> Weights<'a, T> {
    /// Weights in the two flat stores.
    pub fn new(matrices: &'a [T], vectors: &'a [f32]) -> Weights<'a, T> {
        Weights { matrices: Matrices::Store(matrices), vectors }
    }

    /// The matrix of `param` (which must be a matrix of the model).
    pub fn matrix(&self, layout: &ParamLayout, param: Param) -> &'a [T] {
        let slot = layout.slot(param).expect("the model has this parameter");
        debug_assert!(slot.matrix);
        matrix_in(&self.matrices, layout, param, slot)
    }

    /// The vector of `param` (which must be a vector of the model).
    pub fn vector(&self, layout: &ParamLayout, param: Param) -> &'a [f32] {
        let slot = layout.slot(param).expect("the model has this parameter");
        debug_assert!(!slot.matrix);
        &self.vectors[slot.range()]
    }

    /// The first buffer whose size does not fit `layout`: `(name, expected, actual)`
    /// (`weights.matrices`, a table entry, or `weights.vectors`). A table's entries that
    /// `paging` covers come from a [`crate::BlockSource`] and are not checked.
    pub fn size_mismatch(
        &self,
        layout: &ParamLayout,
        paging: crate::Paging,
    ) -> Option<(&'static str, usize, usize)> {
        match self.matrices {
            Matrices::Block { .. } => return Some(("weights.matrices (one block's)", 0, 0)),
            // With paged blocks, a store may hold just the global matrices.
            Matrices::Store(store)
                if store.len() != layout.matrix_len()
                    && !(paging == crate::Paging::Blocks
                        && store.len() == layout.global_matrix_len()) =>
            {
                return Some(("weights.matrices", layout.matrix_len(), store.len()));
            }
            Matrices::Store(_) => {}
            Matrices::Table(table) => {
                if table.len() != layout.table_len() {
                    return Some(("weights.matrices (table)", layout.table_len(), table.len()));
                }
                for param in layout.params() {
                    if paging.covers(param) {
                        continue;
                    }
                    let slot = layout.slot(param).expect("params() lists the layout's parameters");
                    let entry = table[layout.table_index(param)].len();
                    if slot.matrix && entry != slot.len {
                        return Some(("weights.matrices (a table entry)", slot.len, entry));
                    }
                }
            }
        }
        if self.vectors.len() != layout.vector_len() {
            return Some(("weights.vectors", layout.vector_len(), self.vectors.len()));
        }
        None
    }
}
