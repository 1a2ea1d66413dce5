//! One transformer block, forward and backward, for every family:
//!
//! ```text
//! a  = norm1(x)
//! q, k, v = a·Wq, a·Wk, a·Wv            (GPT-2: one fused c_attn; Qwen: with biases)
//! q, k = q_norm(q), k_norm(k)           (Gemma)
//! q, k = rope(q), rope(k)               (Qwen, Gemma; Gemma's sliding layers use the local base)
//! o  = attention(q, k, v)               (causal, GQA, Gemma's sliding layers windowed)
//! p  = o·Wo                             (Gemma: then post_attention_layernorm)
//! x1 = x + p
//! b  = norm2(x1)
//! g  = gelu(b·Wfc)   or   act(b·Wgate) ⊙ b·Wup   (GPT-2 / GeGLU for Gemma, SwiGLU for Qwen)
//! m  = g·Wdown                          (Gemma: then post_feedforward_layernorm)
//! out = x1 + m
//! ```
//!
//! `Saved` holds what the backward reads; `a`, `b` and `g` are cheap to recompute from it and
//! are not kept. `Work` is the scratch one block needs, reused by every block.

use mft_kernels::{AttentionGrads, AttentionInputs, AttentionShape, GemmRhs, Kernels, RmsNormForm};

use crate::carve::Carver;
use crate::config::{Family, ModelConfig};
use crate::lora::{LoraLayout, mask_words};
use crate::ops::{Ctx, Gradients, Norm, NormKind, Proj, add_assign};
use crate::params::{LayerParam, Param};

/// The sizes of one step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) family: Family,
    pub(crate) batch: usize,
    pub(crate) seq: usize,
    /// Tokens in the batch.
    pub(crate) n: usize,
    pub(crate) hidden: usize,
    pub(crate) q_dim: usize,
    pub(crate) kv_dim: usize,
    pub(crate) inter: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    /// LoRA rank (0 without adapters).
    pub(crate) rank: usize,
    /// Adapters per block.
    pub(crate) adapters: usize,
    /// Whether LoRA dropout needs a buffer for the dropped input.
    pub(crate) dropout: bool,
    /// Words of one block's recorded dropout masks (all adapters).
    pub(crate) mask_words: usize,
}

impl Dims {
    pub(crate) fn new(
        config: &ModelConfig,
        lora: Option<&LoraLayout>,
        batch: usize,
        seq: usize,
    ) -> Dims {
        let n = batch * seq;
        let mask_words = lora.map_or(0, |l| {
            l.config()
                .targets
                .params(config.family)
                .map(|p| mask_words(n * p.features(config).map_or(0, |f| f.0)))
                .sum()
        });
        let (rank, adapters, dropout) = match lora {
            Some(l) => (
                l.config().rank,
                l.config().targets.params(config.family).count(),
                l.config().dropout > 0.0,
            ),
            None => (0, 0, false),
        };
        Dims {
            family: config.family,
            batch,
            seq,
            n: batch * seq,
            hidden: config.hidden,
            q_dim: config.q_dim(),
            kv_dim: config.kv_dim(),
            inter: config.intermediate,
            heads: config.heads,
            kv_heads: config.kv_heads,
            rank,
            adapters,
            dropout,
            mask_words,
        }
    }

    fn gemma(&self) -> bool {
        self.family == Family::Gemma3
    }

    fn layer_norm(&self) -> bool {
        self.family == Family::Gpt2
    }

    /// The widest projection input.
    fn max_in(&self) -> usize {
        self.hidden.max(self.q_dim).max(self.inter)
    }
}

/// What a block's backward reads, saved by its forward.
pub(crate) struct Saved<'a> {
    /// Block input `[n, hidden]`.
    pub(crate) x: &'a mut [f32],
    mean1: &'a mut [f32],
    rstd1: &'a mut [f32],
    /// Queries, keys, values as attention saw them (after norms and RoPE).
    q: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    /// Gemma: queries and keys before their norms, and the norms' statistics.
    q_raw: &'a mut [f32],
    k_raw: &'a mut [f32],
    q_rstd: &'a mut [f32],
    k_rstd: &'a mut [f32],
    /// Attention output `[n, q_dim]` and its log-sum-exp.
    o: &'a mut [f32],
    lse: &'a mut [f32],
    /// Gemma: the output projection before post_attention_layernorm.
    p_raw: &'a mut [f32],
    pa_rstd: &'a mut [f32],
    /// `x + p`.
    x1: &'a mut [f32],
    mean2: &'a mut [f32],
    rstd2: &'a mut [f32],
    /// GPT-2: `b·Wfc` before GELU; GLU: the gate projection.
    f: &'a mut [f32],
    /// GLU: the up projection.
    up: &'a mut [f32],
    /// Gemma: the down projection before post_feedforward_layernorm.
    m_raw: &'a mut [f32],
    pf_rstd: &'a mut [f32],
    /// `dropout(x)·Aᵀ` of each adapter of the block, `[n, rank]` each.
    lora_u: &'a mut [f32],
    /// The dropout mask of each adapter's input, one bit per element (as u32 words).
    lora_mask: &'a mut [f32],
}

impl<'a> Saved<'a> {
    /// The same buffers, borrowed for a shorter while.
    pub(crate) fn reborrow(&mut self) -> Saved<'_> {
        Saved {
            x: &mut *self.x,
            mean1: &mut *self.mean1,
            rstd1: &mut *self.rstd1,
            q: &mut *self.q,
            k: &mut *self.k,
            v: &mut *self.v,
            q_raw: &mut *self.q_raw,
            k_raw: &mut *self.k_raw,
            q_rstd: &mut *self.q_rstd,
            k_rstd: &mut *self.k_rstd,
            o: &mut *self.o,
            lse: &mut *self.lse,
            p_raw: &mut *self.p_raw,
            pa_rstd: &mut *self.pa_rstd,
            x1: &mut *self.x1,
            mean2: &mut *self.mean2,
            rstd2: &mut *self.rstd2,
            f: &mut *self.f,
            up: &mut *self.up,
            m_raw: &mut *self.m_raw,
            pf_rstd: &mut *self.pf_rstd,
            lora_u: &mut *self.lora_u,
            lora_mask: &mut *self.lora_mask,
        }
    }

    /// Carves (or measures) one block's saved activations.
    pub(crate) fn carve(c: &mut Carver<'a>, d: &Dims) -> Saved<'a> {
        let (n, h, g) = (d.n, d.hidden, d.gemma());
        let glu = d.family != Family::Gpt2;
        Saved {
            x: c.take(n * h),
            mean1: c.take_if(d.layer_norm(), n),
            rstd1: c.take(n),
            q: c.take(n * d.q_dim),
            k: c.take(n * d.kv_dim),
            v: c.take(n * d.kv_dim),
            q_raw: c.take_if(g, n * d.q_dim),
            k_raw: c.take_if(g, n * d.kv_dim),
            q_rstd: c.take_if(g, n * d.heads),
            k_rstd: c.take_if(g, n * d.kv_heads),
            o: c.take(n * d.q_dim),
            lse: c.take(n * d.heads),
            p_raw: c.take_if(g, n * h),
            pa_rstd: c.take_if(g, n),
            x1: c.take(n * h),
            mean2: c.take_if(d.layer_norm(), n),
            rstd2: c.take(n),
            f: c.take(n * d.inter),
            up: c.take_if(glu, n * d.inter),
            m_raw: c.take_if(g, n * h),
            pf_rstd: c.take_if(g, n),
            lora_u: c.take(d.adapters * n * d.rank),
            lora_mask: c.take_if(d.dropout, d.mask_words),
        }
    }
}

/// The scratch of one block's forward and backward.
pub(crate) struct Work<'a> {
    /// A norm's output (`a`, `p`, `b`), `[n, hidden]`.
    a: &'a mut [f32],
    /// GPT-2: the fused q/k/v projection and its gradient, `[n, 3·hidden]`.
    qkv: &'a mut [f32],
    /// The MLP activation `g`, `[n, inter]`.
    g: &'a mut [f32],
    /// An adapter's dropped-out input, `[n, widest input]`.
    dropped: &'a mut [f32],
    mean: &'a mut [f32],
    rstd: &'a mut [f32],
    dh1: &'a mut [f32],
    dh2: &'a mut [f32],
    di1: &'a mut [f32],
    di2: &'a mut [f32],
    di3: &'a mut [f32],
    dq: &'a mut [f32],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
    d_o: &'a mut [f32],
    dq2: &'a mut [f32],
    dk2: &'a mut [f32],
    du: &'a mut [f32],
    /// Takes the weight gradients of frozen norms.
    discard: &'a mut [f32],
}

impl<'a> Work<'a> {
    /// Carves (or measures) one block's scratch; `backward` adds the gradient buffers.
    pub(crate) fn carve(c: &mut Carver<'a>, d: &Dims, backward: bool) -> Work<'a> {
        let (n, h, g, b) = (d.n, d.hidden, d.gemma(), backward);
        let glu = d.family != Family::Gpt2;
        Work {
            a: c.take(n * h),
            qkv: c.take_if(d.family == Family::Gpt2, n * 3 * h),
            g: c.take(n * d.inter),
            dropped: c.take_if(d.dropout, n * d.max_in()),
            mean: c.take(n),
            rstd: c.take(n),
            dh1: c.take_if(b, n * h),
            dh2: c.take_if(b, n * h),
            di1: c.take_if(b, n * d.inter),
            di2: c.take_if(b, n * d.inter),
            di3: c.take_if(b && glu, n * d.inter),
            dq: c.take_if(b, n * d.q_dim),
            dk: c.take_if(b, n * d.kv_dim),
            dv: c.take_if(b, n * d.kv_dim),
            d_o: c.take_if(b, n * d.q_dim),
            dq2: c.take_if(b && g, n * d.q_dim),
            dk2: c.take_if(b && g, n * d.kv_dim),
            du: c.take_if(b, n * d.rank),
            discard: c.take_if(b, 2 * h.max(d.inter)),
        }
    }
}

impl Work<'_> {
    /// The buffer that takes the weight gradients of frozen norms.
    pub(crate) fn discard_mut(&mut self) -> &mut [f32] {
        self.discard
    }
}

/// Floats of kernel scratch a block needs (GEMM packing, attention tiles, partial sums).
pub(crate) fn kernel_scratch_len(
    kernels: &Kernels,
    config: &ModelConfig,
    d: &Dims,
    threads: usize,
) -> usize {
    let widest = d.n.max(3 * d.hidden).max(d.inter).max(d.q_dim).max(d.rank);
    let gemm = kernels.gemm().scratch_len(widest, widest, widest, threads);
    let mut attention = 0;
    for window in [None, config.sliding_window] {
        let shape = attention_shape(config, d, window);
        attention = attention
            .max(kernels.attention_forward_scratch_len(&shape, threads))
            .max(kernels.attention_backward_scratch_len(&shape, threads));
    }
    let reductions =
        Kernels::layer_norm_backward_scratch_len(d.hidden.max(config.head_dim), threads)
            .max(Kernels::bias_add_backward_scratch_len(3 * d.hidden.max(d.inter), threads));
    gemm.max(attention).max(reductions)
}

fn attention_shape(config: &ModelConfig, d: &Dims, window: Option<usize>) -> AttentionShape {
    AttentionShape::new(d.batch, d.seq, config.heads, config.kv_heads, config.head_dim)
        .with_window(window)
        .with_scale(config.attention_scale)
}

/// The norms, projections and shapes of block `layer`.
struct Block {
    layer: usize,
    family: Family,
    norm1: Norm,
    norm2: Norm,
    q_norm: Norm,
    k_norm: Norm,
    post_attention: Norm,
    post_feedforward: Norm,
    shape: AttentionShape,
    head_dim: usize,
}

impl Block {
    fn new(config: &ModelConfig, d: &Dims, layer: usize) -> Block {
        let kind = NormKind::of(config.family);
        let p = |param| Param::Layer(layer, param);
        let gpt2 = config.family == Family::Gpt2;
        let rms = |param| Norm {
            kind: NormKind::Rms(RmsNormForm::OnePlusWeight),
            weight: p(param),
            bias: None,
        };
        let window = config.is_sliding(layer).then_some(config.sliding_window).flatten();
        Block {
            layer,
            family: config.family,
            norm1: Norm {
                kind,
                weight: p(LayerParam::Norm1),
                bias: gpt2.then_some(p(LayerParam::Norm1Bias)),
            },
            norm2: Norm {
                kind,
                weight: p(LayerParam::Norm2),
                bias: gpt2.then_some(p(LayerParam::Norm2Bias)),
            },
            q_norm: rms(LayerParam::QNorm),
            k_norm: rms(LayerParam::KNorm),
            post_attention: rms(LayerParam::PostAttentionNorm),
            post_feedforward: rms(LayerParam::PostFeedforwardNorm),
            shape: attention_shape(config, d, window),
            head_dim: config.head_dim,
        }
    }

    fn proj(&self, config: &ModelConfig, param: LayerParam) -> Proj {
        Proj::new(config, self.layer, param)
    }

    /// The words of `lora_mask` that belong to `param`'s adapter (empty without, or without
    /// dropout).
    fn mask_range<T>(&self, ctx: &Ctx<'_, T>, param: LayerParam) -> core::ops::Range<usize> {
        let Some(adapters) = ctx.adapters else { return 0..0 };
        let lora = adapters.layout.config();
        if lora.dropout == 0.0 || ctx.dropout_seed.is_none() || !lora.targets.contains(param) {
            return 0..0;
        }
        let words =
            |p: LayerParam| mask_words(ctx.tokens() * p.features(ctx.config).map_or(0, |f| f.0));
        let start = lora.targets.params(self.family).take_while(|&p| p != param).map(words).sum();
        start..start + words(param)
    }

    /// The `[n, rank]` slice of `lora_u` that belongs to `param`'s adapter (empty without).
    fn u_range<T>(&self, ctx: &Ctx<'_, T>, param: LayerParam) -> core::ops::Range<usize> {
        let Some(adapters) = ctx.adapters else { return 0..0 };
        let config = adapters.layout.config();
        let Some(index) = config.targets.params(self.family).position(|p| p == param) else {
            return 0..0;
        };
        let len = ctx.tokens() * config.rank;
        index * len..(index + 1) * len
    }
}

/// Forward of block `layer`: reads `saved.x`, fills the rest of `saved`, writes `out`.
/// `rope` is the layer's cos/sin table (empty for GPT-2), `positions` each token's position.
#[allow(clippy::too_many_arguments)] // context, block, activations, scratch, RoPE
pub(crate) fn forward<T: GemmRhs>(
    ctx: &Ctx<'_, T>,
    d: &Dims,
    layer: usize,
    s: &mut Saved<'_>,
    out: &mut [f32],
    w: &mut Work<'_>,
    scratch: &mut [f32],
    rope: &[f32],
    positions: &[u32],
) {
    let (kernels, par, config) = (ctx.kernels, ctx.parallel, ctx.config);
    let blk = Block::new(config, d, layer);
    let gemma = blk.family == Family::Gemma3;
    blk.norm1.forward(ctx, s.x, w.a, s.mean1, s.rstd1);
    let mut project =
        |param: LayerParam, x: &[f32], y: &mut [f32], lora_u: &mut [f32], lora_mask: &mut [f32]| {
            let u = &mut lora_u[blk.u_range(ctx, param)];
            let mask =
                &mut bytemuck::cast_slice_mut::<f32, u32>(lora_mask)[blk.mask_range(ctx, param)];
            blk.proj(config, param).forward(ctx, x, y, u, mask, w.dropped, scratch);
        };
    if blk.family == Family::Gpt2 {
        project(LayerParam::Qkv, w.a, w.qkv, s.lora_u, s.lora_mask);
        split_qkv(w.qkv, d.hidden, s.q, s.k, s.v);
    } else {
        let (q_out, k_out) =
            if gemma { (&mut *s.q_raw, &mut *s.k_raw) } else { (&mut *s.q, &mut *s.k) };
        project(LayerParam::Q, w.a, q_out, s.lora_u, s.lora_mask);
        project(LayerParam::K, w.a, k_out, s.lora_u, s.lora_mask);
        project(LayerParam::V, w.a, s.v, s.lora_u, s.lora_mask);
        if gemma {
            blk.q_norm.forward(ctx, s.q_raw, s.q, &mut [], s.q_rstd);
            blk.k_norm.forward(ctx, s.k_raw, s.k, &mut [], s.k_rstd);
        }
        kernels.rope_forward(s.q, positions, d.heads, blk.head_dim, rope, par);
        kernels.rope_forward(s.k, positions, d.kv_heads, blk.head_dim, rope, par);
    }
    let inputs = AttentionInputs { q: s.q, k: s.k, v: s.v, key_mask: None };
    kernels.attention_forward(&blk.shape, inputs, s.o, s.lse, scratch, par);
    let mut project =
        |param: LayerParam, x: &[f32], y: &mut [f32], lora_u: &mut [f32], lora_mask: &mut [f32]| {
            let u = &mut lora_u[blk.u_range(ctx, param)];
            let mask =
                &mut bytemuck::cast_slice_mut::<f32, u32>(lora_mask)[blk.mask_range(ctx, param)];
            blk.proj(config, param).forward(ctx, x, y, u, mask, w.dropped, scratch);
        };
    if gemma {
        project(LayerParam::O, s.o, s.p_raw, s.lora_u, s.lora_mask);
        blk.post_attention.forward(ctx, s.p_raw, w.a, &mut [], s.pa_rstd);
    } else {
        project(LayerParam::O, s.o, w.a, s.lora_u, s.lora_mask);
    }
    s.x1.copy_from_slice(s.x);
    add_assign(s.x1, w.a, par);
    blk.norm2.forward(ctx, s.x1, w.a, s.mean2, s.rstd2);
    match blk.family {
        Family::Gpt2 => {
            project(LayerParam::Fc, w.a, s.f, s.lora_u, s.lora_mask);
            kernels.gelu_tanh_forward(s.f, w.g, par);
        }
        Family::Qwen2 | Family::Gemma3 => {
            project(LayerParam::Gate, w.a, s.f, s.lora_u, s.lora_mask);
            project(LayerParam::Up, w.a, s.up, s.lora_u, s.lora_mask);
            activate(kernels, blk.family, s.f, s.up, w.g, par);
        }
    }
    if gemma {
        project(LayerParam::Down, w.g, s.m_raw, s.lora_u, s.lora_mask);
        blk.post_feedforward.forward(ctx, s.m_raw, out, &mut [], s.pf_rstd);
    } else {
        project(LayerParam::Down, w.g, out, s.lora_u, s.lora_mask);
    }
    add_assign(out, s.x1, par);
}

/// GeGLU (Gemma) or SwiGLU (Qwen): `g = act(gate) ⊙ up`.
fn activate(
    kernels: &Kernels,
    family: Family,
    gate: &[f32],
    up: &[f32],
    g: &mut [f32],
    par: &dyn mft_kernels::Parallel,
) {
    match family {
        Family::Gemma3 => kernels.geglu_forward(gate, up, g, par),
        _ => kernels.swiglu_forward(gate, up, g, par),
    }
}

/// Copies the columns of GPT-2's fused `[n, 3h]` projection into q, k, v (`[n, h]` each).
fn split_qkv(qkv: &[f32], h: usize, q: &mut [f32], k: &mut [f32], v: &mut [f32]) {
    for (i, row) in qkv.chunks_exact(3 * h).enumerate() {
        q[i * h..(i + 1) * h].copy_from_slice(&row[..h]);
        k[i * h..(i + 1) * h].copy_from_slice(&row[h..2 * h]);
        v[i * h..(i + 1) * h].copy_from_slice(&row[2 * h..]);
    }
}

/// The inverse of [`split_qkv`]: packs the q, k, v gradients into `[n, 3h]`.
fn join_qkv(q: &[f32], k: &[f32], v: &[f32], h: usize, qkv: &mut [f32]) {
    for (i, row) in qkv.chunks_exact_mut(3 * h).enumerate() {
        row[..h].copy_from_slice(&q[i * h..(i + 1) * h]);
        row[h..2 * h].copy_from_slice(&k[i * h..(i + 1) * h]);
        row[2 * h..].copy_from_slice(&v[i * h..(i + 1) * h]);
    }
}

/// Backward of block `layer`: `dx` holds the gradient of the block's output on entry and of
/// its input on return; parameter (or adapter) gradients accumulate into `grads`.
#[allow(clippy::too_many_arguments)] // context, gradients, activations, scratch, RoPE
pub(crate) fn backward<T: GemmRhs>(
    ctx: &Ctx<'_, T>,
    grads: &mut Gradients<'_>,
    d: &Dims,
    layer: usize,
    s: &mut Saved<'_>,
    dx: &mut [f32],
    w: &mut Work<'_>,
    scratch: &mut [f32],
    rope: &[f32],
    positions: &[u32],
) {
    let (kernels, par, config) = (ctx.kernels, ctx.parallel, ctx.config);
    let blk = Block::new(config, d, layer);
    let gemma = blk.family == Family::Gemma3;
    let proj = |param| blk.proj(config, param);

    // MLP.
    if gemma {
        blk.post_feedforward.backward(
            ctx,
            grads,
            dx,
            s.m_raw,
            &[],
            s.pf_rstd,
            w.dh1,
            w.discard,
            scratch,
        );
    } else {
        w.dh1.copy_from_slice(dx);
    }
    let down = proj(LayerParam::Down);
    if down.needs_input(ctx, grads) {
        match blk.family {
            Family::Gpt2 => kernels.gelu_tanh_forward(s.f, w.g, par),
            _ => activate(kernels, blk.family, s.f, s.up, w.g, par),
        }
    }
    let u = &s.lora_u[blk.u_range(ctx, LayerParam::Down)];
    let m = &bytemuck::cast_slice::<f32, u32>(s.lora_mask)[blk.mask_range(ctx, LayerParam::Down)];
    down.backward(ctx, grads, w.g, u, m, w.dh1, w.di1, false, w.du, w.dropped, scratch);
    let inputs: &[LayerParam] = match blk.family {
        Family::Gpt2 => {
            kernels.gelu_tanh_backward(w.di1, s.f, w.di2, par);
            &[LayerParam::Fc]
        }
        Family::Gemma3 => {
            kernels.geglu_backward(w.di1, s.f, s.up, w.di2, w.di3, par);
            &[LayerParam::Gate, LayerParam::Up]
        }
        Family::Qwen2 => {
            kernels.swiglu_backward(w.di1, s.f, s.up, w.di2, w.di3, par);
            &[LayerParam::Gate, LayerParam::Up]
        }
    };
    if inputs.iter().any(|&p| proj(p).needs_input(ctx, grads)) {
        blk.norm2.forward(ctx, s.x1, w.a, w.mean, w.rstd);
    }
    for (i, &param) in inputs.iter().enumerate() {
        let dy = if i == 0 { &*w.di2 } else { &*w.di3 };
        let u = &s.lora_u[blk.u_range(ctx, param)];
        let m = &bytemuck::cast_slice::<f32, u32>(s.lora_mask)[blk.mask_range(ctx, param)];
        proj(param).backward(ctx, grads, w.a, u, m, dy, w.dh2, i > 0, w.du, w.dropped, scratch);
    }
    blk.norm2.backward(ctx, grads, w.dh2, s.x1, s.mean2, s.rstd2, w.dh1, w.discard, scratch);
    add_assign(dx, w.dh1, par);

    // Attention.
    if gemma {
        blk.post_attention.backward(
            ctx,
            grads,
            dx,
            s.p_raw,
            &[],
            s.pa_rstd,
            w.dh1,
            w.discard,
            scratch,
        );
    } else {
        w.dh1.copy_from_slice(dx);
    }
    let u = &s.lora_u[blk.u_range(ctx, LayerParam::O)];
    let m = &bytemuck::cast_slice::<f32, u32>(s.lora_mask)[blk.mask_range(ctx, LayerParam::O)];
    proj(LayerParam::O)
        .backward(ctx, grads, s.o, u, m, w.dh1, w.d_o, false, w.du, w.dropped, scratch);
    let inputs = AttentionInputs { q: s.q, k: s.k, v: s.v, key_mask: None };
    let attention_grads = AttentionGrads { dq: w.dq, dk: w.dk, dv: w.dv };
    kernels.attention_backward(
        &blk.shape,
        inputs,
        s.o,
        s.lse,
        w.d_o,
        attention_grads,
        scratch,
        par,
    );
    let qkv_params: &[LayerParam] = if blk.family == Family::Gpt2 {
        &[LayerParam::Qkv]
    } else {
        kernels.rope_backward(w.dq, positions, d.heads, blk.head_dim, rope, par);
        kernels.rope_backward(w.dk, positions, d.kv_heads, blk.head_dim, rope, par);
        if gemma {
            blk.q_norm.backward(
                ctx,
                grads,
                w.dq,
                s.q_raw,
                &[],
                s.q_rstd,
                w.dq2,
                w.discard,
                scratch,
            );
            blk.k_norm.backward(
                ctx,
                grads,
                w.dk,
                s.k_raw,
                &[],
                s.k_rstd,
                w.dk2,
                w.discard,
                scratch,
            );
            w.dq.copy_from_slice(w.dq2);
            w.dk.copy_from_slice(w.dk2);
        }
        &[LayerParam::Q, LayerParam::K, LayerParam::V]
    };
    if qkv_params.iter().any(|&p| proj(p).needs_input(ctx, grads)) {
        blk.norm1.forward(ctx, s.x, w.a, w.mean, w.rstd);
    }
    if blk.family == Family::Gpt2 {
        join_qkv(w.dq, w.dk, w.dv, d.hidden, w.qkv);
        let u = &s.lora_u[blk.u_range(ctx, LayerParam::Qkv)];
        let m =
            &bytemuck::cast_slice::<f32, u32>(s.lora_mask)[blk.mask_range(ctx, LayerParam::Qkv)];
        proj(LayerParam::Qkv)
            .backward(ctx, grads, w.a, u, m, w.qkv, w.dh2, false, w.du, w.dropped, scratch);
    } else {
        for (i, &param) in qkv_params.iter().enumerate() {
            let dy = [&*w.dq, &*w.dk, &*w.dv][i];
            let u = &s.lora_u[blk.u_range(ctx, param)];
            let m = &bytemuck::cast_slice::<f32, u32>(s.lora_mask)[blk.mask_range(ctx, param)];
            proj(param).backward(ctx, grads, w.a, u, m, dy, w.dh2, i > 0, w.du, w.dropped, scratch);
        }
    }
    blk.norm1.backward(ctx, grads, w.dh2, s.x, s.mean1, s.rstd1, w.dh1, w.discard, scratch);
    add_assign(dx, w.dh1, par);
}
