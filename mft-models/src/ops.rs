//! The pieces a block is made of, over mft-kernels: projections (Hugging Face Linear or GPT-2
//! Conv1D layout, optional bias, optional LoRA adapter), norms (LayerNorm or either RMSNorm),
//! and the step context they share. Each has a forward and a backward; parameter gradients
//! accumulate (`+=`), input gradients are overwritten unless the caller asks to accumulate.

use mft_kernels::{
    GemmRhs, Kernels, Mat, MatMut, Parallel, RmsNormForm, Sequential, SharedSlice, for_each_range,
};

use crate::config::{Family, ModelConfig};
use crate::lora::{DropoutMask, LoraLayout, RecordedMask};
use crate::params::{LayerParam, Param, ParamLayout, Weights};

/// Trained adapters: their layout and the flat buffer of `A`s and `B`s.
#[derive(Debug, Clone, Copy)]
pub struct Adapters<'a> {
    /// Where each adapter lives.
    pub layout: &'a LoraLayout,
    /// The adapters ([`LoraLayout::len`] floats).
    pub weights: &'a [f32],
}

/// Where gradients go.
#[derive(Debug)]
pub enum Gradients<'g> {
    /// Full fine-tuning: gradients of every parameter, in the [`ParamLayout`] stores (`+=`).
    Full {
        /// Gradients of the matrix store.
        matrices: &'g mut [f32],
        /// Gradients of the vector store.
        vectors: &'g mut [f32],
    },
    /// LoRA: gradients of the adapters only, in the [`LoraLayout`] buffer (`+=`).
    Lora(&'g mut [f32]),
    /// Full fine-tuning while block `layer` of a step whose blocks' gradients are paged runs:
    /// `globals` holds the global matrices' gradients (the matrix store's part before the
    /// blocks), `block` the block's matrix gradients ([`ParamLayout::block_matrices`]), and
    /// `vectors` the whole vector store's.
    Block {
        /// Gradients of the global matrices.
        globals: &'g mut [f32],
        /// The block.
        layer: usize,
        /// Gradients of its matrices.
        block: &'g mut [f32],
        /// Gradients of the vector store.
        vectors: &'g mut [f32],
    },
}

impl Gradients<'_> {
    /// The gradient of a full-fine-tuning parameter, if gradients are full.
    pub(crate) fn param(&mut self, layout: &ParamLayout, param: Param) -> Option<&mut [f32]> {
        let slot = layout.slot(param)?;
        match self {
            Gradients::Full { matrices, vectors } => {
                let store = if slot.matrix { matrices } else { vectors };
                Some(&mut store[slot.range()])
            }
            Gradients::Block { globals, layer, block, vectors } => match param {
                _ if !slot.matrix => Some(&mut vectors[slot.range()]),
                Param::Global(_) => Some(&mut globals[slot.range()]),
                Param::Layer(l, _) => {
                    assert_eq!(l, *layer, "gradients of block {l} asked while block {layer} runs");
                    let start = slot.offset - layout.block_matrices(l).start;
                    Some(&mut block[start..start + slot.len])
                }
            },
            Gradients::Lora(_) => None,
        }
    }

    /// The gradients of two distinct vector parameters at once (a norm's weight and bias).
    pub(crate) fn two_vectors(
        &mut self,
        layout: &ParamLayout,
        first: Param,
        second: Param,
    ) -> Option<(&mut [f32], &mut [f32])> {
        let (Gradients::Full { vectors, .. } | Gradients::Block { vectors, .. }) = self else {
            return None;
        };
        let (a, b) = (layout.slot(first)?.range(), layout.slot(second)?.range());
        assert!(a.end <= b.start, "parameters are taken in store order");
        let (head, tail) = vectors.split_at_mut(b.start);
        Some((&mut head[a], &mut tail[..b.end - b.start]))
    }

    /// The gradients of an adapter's `A` and `B`, if gradients are LoRA's and it has one.
    pub(crate) fn adapter(
        &mut self,
        lora: &LoraLayout,
        layer: usize,
        param: LayerParam,
    ) -> Option<(&mut [f32], &mut [f32])> {
        let Gradients::Lora(buffer) = self else { return None };
        lora.slot(layer, param)?;
        let (a, b) = (lora.range(layer, param, false), lora.range(layer, param, true));
        let (head, tail) = buffer.split_at_mut(b.start);
        Some((&mut head[a], &mut tail[..b.end - b.start]))
    }

    /// Whether the base model's parameters are trained.
    pub(crate) fn is_full(&self) -> bool {
        matches!(self, Gradients::Full { .. } | Gradients::Block { .. })
    }
}

/// What every operation of one step shares.
pub(crate) struct Ctx<'a, T> {
    pub(crate) kernels: &'a Kernels,
    pub(crate) parallel: &'a dyn Parallel,
    pub(crate) config: &'a ModelConfig,
    pub(crate) layout: &'a ParamLayout,
    pub(crate) weights: Weights<'a, T>,
    pub(crate) adapters: Option<Adapters<'a>>,
    /// `Some(seed)` while training with LoRA dropout; `None` in evaluation.
    pub(crate) dropout_seed: Option<u64>,
    pub(crate) batch: usize,
    pub(crate) seq: usize,
}

impl<T> Ctx<'_, T> {
    /// Tokens in the batch.
    pub(crate) fn tokens(&self) -> usize {
        self.batch * self.seq
    }
}

/// A projection of block `layer`: its weight, layout and sizes.
#[derive(Clone, Copy)]
pub(crate) struct Proj {
    pub(crate) layer: usize,
    pub(crate) param: LayerParam,
    pub(crate) bias: Option<LayerParam>,
    pub(crate) in_features: usize,
    pub(crate) out_features: usize,
    /// GPT-2's Conv1D (`[in, out]`) rather than Linear (`[out, in]`).
    pub(crate) conv1d: bool,
}

impl Proj {
    /// The projection `param` of block `layer` in `config`'s family.
    pub(crate) fn new(config: &ModelConfig, layer: usize, param: LayerParam) -> Proj {
        let (in_features, out_features) = param.features(config).expect("a projection");
        let bias = match param {
            LayerParam::Qkv => Some(LayerParam::QkvBias),
            LayerParam::Q => Some(LayerParam::QBias),
            LayerParam::K => Some(LayerParam::KBias),
            LayerParam::V => Some(LayerParam::VBias),
            LayerParam::O => Some(LayerParam::OBias),
            LayerParam::Fc => Some(LayerParam::FcBias),
            LayerParam::Down => Some(LayerParam::DownBias),
            _ => None,
        }
        .filter(|b| b.in_family(config.family));
        Proj {
            layer,
            param,
            bias,
            in_features,
            out_features,
            conv1d: config.family == Family::Gpt2,
        }
    }

    fn weight_param(&self) -> Param {
        Param::Layer(self.layer, self.param)
    }

    /// The weight as the right operand of `x·W` (`in × out`).
    fn operand<'w, T>(&self, weight: &'w [T]) -> Mat<'w, T> {
        let (i, o) = (self.in_features, self.out_features);
        if self.conv1d {
            Mat::row_major(weight, i, o, o)
        } else {
            Mat::row_major(weight, o, i, i).t()
        }
    }

    /// The step's adapters, if this projection carries one.
    fn adapter<'a>(&self, adapters: Option<Adapters<'a>>) -> Option<Adapters<'a>> {
        adapters.filter(|a| a.layout.slot(self.layer, self.param).is_some())
    }

    /// Whether its backward needs its input (to form a weight or adapter gradient).
    pub(crate) fn needs_input<T>(&self, ctx: &Ctx<'_, T>, grads: &Gradients<'_>) -> bool {
        grads.is_full() || self.adapter(ctx.adapters).is_some()
    }

    /// `y = x·W (+ b) (+ scaling·dropout(x)·Aᵀ·Bᵀ)`, saving `u = dropout(x)·Aᵀ` in `u` when the
    /// projection carries an adapter. `dropped` holds `dropout(x)` when dropout is on, and
    /// `mask` records which elements it kept (for the backward).
    #[allow(clippy::too_many_arguments)] // operands, saved state and two scratch buffers
    pub(crate) fn forward<T: GemmRhs>(
        &self,
        ctx: &Ctx<'_, T>,
        x: &[f32],
        y: &mut [f32],
        u: &mut [f32],
        mask: &mut [u32],
        dropped: &mut [f32],
        scratch: &mut [f32],
    ) {
        let (k, par, n) = (ctx.kernels, ctx.parallel, ctx.tokens());
        let (i, o) = (self.in_features, self.out_features);
        let w = ctx.weights.matrix(ctx.layout, self.weight_param());
        let x_mat = Mat::row_major(x, n, i, i);
        let y_mat = MatMut::row_major(y, n, o, o);
        k.gemm().run(1.0, x_mat, self.operand(w), 0.0, y_mat, scratch, par);
        if let Some(bias) = self.bias {
            k.bias_add_forward(
                y,
                ctx.weights.vector(ctx.layout, Param::Layer(self.layer, bias)),
                par,
            );
        }
        if let Some(adapters) = self.adapter(ctx.adapters) {
            let r = adapters.layout.config().rank;
            let input = self.dropout_input(ctx, adapters, x, dropped, Mask::Record(mask));
            let (a, b) = self.adapter_tensors(adapters);
            let input_rows = |rows: core::ops::Range<usize>| {
                Mat::row_major(&input[rows.start * i..rows.end * i], rows.len(), i, i)
            };
            let a_t = Mat::row_major(a, r, i, i).t();
            thin_gemm(k, par, 1.0, &input_rows, n, a_t, 0.0, &mut u[..n * r], scratch);
            let scaling = adapters.layout.config().scaling();
            let y_mat = MatMut::row_major(y, n, o, o);
            k.gemm().run(
                scaling,
                Mat::row_major(u, n, r, r),
                Mat::row_major(b, o, r, r).t(),
                1.0,
                y_mat,
                scratch,
                par,
            );
        }
    }

    /// The adapter's input: `x`, or `dropout(x)` written to `dropped` while training (drawing
    /// and recording the mask in forward, replaying it in backward).
    fn dropout_input<'x, T>(
        &self,
        ctx: &Ctx<'_, T>,
        adapters: Adapters<'_>,
        x: &'x [f32],
        dropped: &'x mut [f32],
        mask: Mask<'_>,
    ) -> &'x [f32] {
        let p = adapters.layout.config().dropout;
        match ctx.dropout_seed {
            Some(seed) if p > 0.0 => {
                let dropped = &mut dropped[..x.len()];
                match mask {
                    Mask::Record(bits) => DropoutMask::new(p, seed, self.layer, self.param)
                        .apply_recording(x, dropped, bits, ctx.parallel),
                    Mask::Replay(bits) => {
                        RecordedMask::new(bits, p).apply(x, dropped, ctx.parallel)
                    }
                }
                dropped
            }
            _ => x,
        }
    }

    fn adapter_tensors<'w>(&self, adapters: Adapters<'w>) -> (&'w [f32], &'w [f32]) {
        let l = adapters.layout;
        (
            &adapters.weights[l.range(self.layer, self.param, false)],
            &adapters.weights[l.range(self.layer, self.param, true)],
        )
    }

    /// From `dy`: `dx = dy·Wᵀ (+ adapter path)` (written, or added with `accumulate`), and the
    /// gradients `grads` asks for: the weight and bias (full), or the adapter's `A` and `B`
    /// (LoRA). `x` is the forward's input (needed only when [`Proj::needs_input`]), `u` the
    /// saved adapter product, `mask` the forward's recorded dropout mask; `du` and `dropped` are
    /// scratch.
    #[allow(clippy::too_many_arguments)] // gradients in and out, saved state, scratch
    pub(crate) fn backward<T: GemmRhs>(
        &self,
        ctx: &Ctx<'_, T>,
        grads: &mut Gradients<'_>,
        x: &[f32],
        u: &[f32],
        mask: &[u32],
        dy: &[f32],
        dx: &mut [f32],
        accumulate: bool,
        du: &mut [f32],
        dropped: &mut [f32],
        scratch: &mut [f32],
    ) {
        let (k, par, n) = (ctx.kernels, ctx.parallel, ctx.tokens());
        let (i, o) = (self.in_features, self.out_features);
        let w = ctx.weights.matrix(ctx.layout, self.weight_param());
        let dy_mat = Mat::row_major(dy, n, o, o);
        let beta = if accumulate { 1.0 } else { 0.0 };
        k.gemm().run(
            1.0,
            dy_mat,
            self.operand(w).t(),
            beta,
            MatMut::row_major(dx, n, i, i),
            scratch,
            par,
        );
        if let Some(dw) = grads.param(ctx.layout, self.weight_param()) {
            let x_mat = Mat::row_major(x, n, i, i);
            if self.conv1d {
                k.gemm().run(
                    1.0,
                    x_mat.t(),
                    dy_mat,
                    1.0,
                    MatMut::row_major(dw, i, o, o),
                    scratch,
                    par,
                );
            } else {
                k.gemm().run(
                    1.0,
                    dy_mat.t(),
                    x_mat,
                    1.0,
                    MatMut::row_major(dw, o, i, i),
                    scratch,
                    par,
                );
            }
        }
        if let Some(bias) = self.bias
            && let Some(db) = grads.param(ctx.layout, Param::Layer(self.layer, bias))
        {
            k.bias_add_backward(dy, db, scratch, par);
        }
        let Some(adapters) = self.adapter(ctx.adapters) else {
            return;
        };
        let r = adapters.layout.config().rank;
        let scaling = adapters.layout.config().scaling();
        let (a, b) = self.adapter_tensors(adapters);
        // du = scaling·dy·B, the gradient of u = dropout(x)·Aᵀ.
        let du = &mut du[..n * r];
        let dy_rows = |rows: core::ops::Range<usize>| {
            Mat::row_major(&dy[rows.start * o..rows.end * o], rows.len(), o, o)
        };
        thin_gemm(k, par, scaling, &dy_rows, n, Mat::row_major(b, o, r, r), 0.0, du, scratch);
        if let Some((da, db)) = grads.adapter(adapters.layout, self.layer, self.param) {
            // dB += scaling·dyᵀ·u: rows of dyᵀ are columns of dy.
            let dy_columns = |cols: core::ops::Range<usize>| {
                Mat::row_major(&dy[cols.start..], n, cols.len(), o).t()
            };
            let u_mat = Mat::row_major(u, n, r, r);
            thin_gemm(k, par, scaling, &dy_columns, o, u_mat, 1.0, db, scratch);
            let input = self.dropout_input(ctx, adapters, x, dropped, Mask::Replay(mask));
            let du_mat = Mat::row_major(&*du, n, r, r);
            k.gemm().run(
                1.0,
                du_mat.t(),
                Mat::row_major(input, n, i, i),
                1.0,
                MatMut::row_major(da, r, i, i),
                scratch,
                par,
            );
        }
        // dx += du·A·mask: the mask's gradient is the mask itself.
        let p = adapters.layout.config().dropout;
        let du_mat = Mat::row_major(&*du, n, r, r);
        match ctx.dropout_seed {
            Some(_) if p > 0.0 => {
                let through = &mut dropped[..n * i];
                k.gemm().run(
                    1.0,
                    du_mat,
                    Mat::row_major(a, r, i, i),
                    0.0,
                    MatMut::row_major(through, n, i, i),
                    scratch,
                    par,
                );
                RecordedMask::new(mask, p).accumulate(through, dx, ctx.parallel);
            }
            _ => {
                k.gemm().run(
                    1.0,
                    du_mat,
                    Mat::row_major(a, r, i, i),
                    1.0,
                    MatMut::row_major(dx, n, i, i),
                    scratch,
                    par,
                );
            }
        }
    }
}

/// A dropout mask's bits: written by the forward, read by the backward.
enum Mask<'m> {
    Record(&'m mut [u32]),
    Replay(&'m [u32]),
}

/// Which normalisation a norm tensor applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormKind {
    /// LayerNorm with a bias (GPT-2).
    Layer,
    /// RMSNorm of either form.
    Rms(RmsNormForm),
}

impl NormKind {
    /// The kind of norm `family` uses.
    pub(crate) fn of(family: Family) -> NormKind {
        match family {
            Family::Gpt2 => NormKind::Layer,
            Family::Qwen2 => NormKind::Rms(RmsNormForm::Weight),
            Family::Gemma3 => NormKind::Rms(RmsNormForm::OnePlusWeight),
        }
    }
}

/// A norm: its weight (and bias) parameters, applied over rows of `dim`.
#[derive(Clone, Copy)]
pub(crate) struct Norm {
    pub(crate) kind: NormKind,
    pub(crate) weight: Param,
    pub(crate) bias: Option<Param>,
}

impl Norm {
    /// `y = norm(x)`, saving `mean` (LayerNorm only) and `rstd` per row.
    pub(crate) fn forward<T>(
        &self,
        ctx: &Ctx<'_, T>,
        x: &[f32],
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) {
        let (k, par, eps) = (ctx.kernels, ctx.parallel, ctx.config.norm_eps);
        let w = ctx.weights.vector(ctx.layout, self.weight);
        match self.kind {
            NormKind::Layer => {
                let b = ctx.weights.vector(ctx.layout, self.bias.expect("LayerNorm has a bias"));
                k.layer_norm_forward(x, w, b, eps, y, mean, rstd, par);
            }
            NormKind::Rms(form) => k.rms_norm_forward(x, w, form, eps, y, rstd, par),
        }
    }

    /// `dx` from `dy`, accumulating the weight (and bias) gradients when training them;
    /// `discard` (at least the norm's width) takes them otherwise.
    #[allow(clippy::too_many_arguments)] // operands, saved statistics, gradients, scratch
    pub(crate) fn backward<T>(
        &self,
        ctx: &Ctx<'_, T>,
        grads: &mut Gradients<'_>,
        dy: &[f32],
        x: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dx: &mut [f32],
        discard: &mut [f32],
        scratch: &mut [f32],
    ) {
        let (k, par) = (ctx.kernels, ctx.parallel);
        let w = ctx.weights.vector(ctx.layout, self.weight);
        let dim = w.len();
        match self.kind {
            NormKind::Layer => {
                let bias = self.bias.expect("LayerNorm has a bias");
                let (dw, db) = match grads.two_vectors(ctx.layout, self.weight, bias) {
                    Some(pair) => pair,
                    None => discard[..2 * dim].split_at_mut(dim),
                };
                k.layer_norm_backward(dy, x, w, mean, rstd, dx, dw, db, scratch, par);
            }
            NormKind::Rms(form) => {
                let dw = match grads.param(ctx.layout, self.weight) {
                    Some(dw) => dw,
                    None => &mut discard[..dim],
                };
                k.rms_norm_backward(dy, x, w, form, rstd, dx, dw, scratch, par);
            }
        }
    }
}

/// `acc += x`, elementwise, split over threads.
pub(crate) fn add_assign(acc: &mut [f32], x: &[f32], parallel: &dyn Parallel) {
    assert_eq!(acc.len(), x.len(), "add_assign: lengths differ");
    let shared = SharedSlice::new(acc);
    for_each_range(parallel, x.len(), 1 << 14, |range| {
        // SAFETY: the ranges of one run are disjoint.
        let part = unsafe { shared.part(range.clone()) };
        for (a, &v) in part.iter_mut().zip(&x[range]) {
            *a += v;
        }
    });
}

/// `C = alpha·A·B + beta·C` for a thin `B` (an adapter's `rank` columns), split by rows of `A`
/// and `C` over threads. The GEMM splits by columns, which would leave all but one thread idle
/// when `B` is narrower than a register tile. `a_rows(range)` is the view of `A`'s rows
/// `range`; `C` is row-major with row stride `n`.
#[allow(clippy::too_many_arguments)] // the GEMM's operands, split
pub(crate) fn thin_gemm<'a>(
    kernels: &Kernels,
    parallel: &dyn Parallel,
    alpha: f32,
    a_rows: &(dyn Fn(core::ops::Range<usize>) -> Mat<'a, f32> + Sync),
    m: usize,
    b: Mat<'_, f32>,
    beta: f32,
    c: &mut [f32],
    scratch: &mut [f32],
) {
    let (k, n) = (b.rows(), b.cols());
    // An offload backend takes the product whole (the split below is for CPU threads).
    if kernels.gemm().offload().is_some() {
        let mut whole = MatMut::row_major(&mut *c, m, n, n);
        if kernels.gemm().try_offload(alpha, a_rows(0..m), b, beta, &mut whole) {
            return;
        }
    }
    let tasks = parallel.threads().clamp(1, m.div_ceil(64).max(1));
    let rows_per_task = m.div_ceil(tasks);
    let part_len = kernels.gemm().scratch_len(rows_per_task, n, k, 1);
    assert!(scratch.len() >= tasks * part_len, "thin_gemm: scratch too short");
    let (c, scratch) = (SharedSlice::new(c), SharedSlice::new(scratch));
    parallel.run(tasks, &|t| {
        let rows = t * rows_per_task..((t + 1) * rows_per_task).min(m);
        if rows.is_empty() {
            return;
        }
        // SAFETY: task t owns C's rows `rows` and the t-th part of the scratch.
        let (c, scratch) = unsafe {
            (c.part(rows.start * n..rows.end * n), scratch.part(t * part_len..(t + 1) * part_len))
        };
        let c = MatMut::row_major(c, rows.len(), n, n);
        kernels.gemm().run(alpha, a_rows(rows), b, beta, c, scratch, &Sequential);
    });
}
