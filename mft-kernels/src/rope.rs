//! Rotary position embeddings (RoPE) in Hugging Face's rotate-half layout, forward and backward,
//! and the cos/sin table they read.
//!
//! For a head of `d` elements and `h = d/2`, frequencies `inv_freq[i] = base^(−2i/d)` (divided
//! by a linear scaling factor where the model has one), and the angle `θ_i = pos·inv_freq[i]`:
//! - forward: `y[i] = x[i]·cos θ_i − x[i+h]·sin θ_i`, `y[i+h] = x[i+h]·cos θ_i + x[i]·sin θ_i`
//!   for `i < h` (a rotation of each pair `(x[i], x[i+h])` by `θ_i`);
//! - backward: the transpose, i.e. the inverse rotation of the gradient:
//!   `dx[i] = dy[i]·cos θ_i + dy[i+h]·sin θ_i`, `dx[i+h] = dy[i+h]·cos θ_i − dy[i]·sin θ_i`.
//!
//! Both work in place on `x` laid out `[tokens, n_heads, head_dim]`, with one position per token.
//!
//! # The table, and matching Hugging Face
//! [`Kernels::rope_fill_table`] fills, once per (head_dim, base, factor), `max_positions` rows of
//! `[cos θ_0 … cos θ_(h−1), sin θ_0 … sin θ_(h−1)]`. Transformers computes the angles in float32:
//! `inv_freq = 1 / base ** (arange(0, d, 2).float() / d)` (then `/ factor` for linear scaling)
//! and `θ = pos.float() · inv_freq`, and takes cos and sin of that float32 angle. Beyond small
//! positions, the float32 rounding of `θ` (up to `pos·2⁻²⁴` radians) dominates every other error,
//! so the table reproduces those float32 steps exactly: the exponent `2i/d` and the product
//! `pos·inv_freq` are f32 operations, `base^e` is evaluated in f64 with `libm::pow` and rounded to
//! f32 (PyTorch's float32 pow is within an ulp of that), `1/…` and `/ factor` are f32 divisions.
//! Only cos and sin are then evaluated in f64 (`libm::sincos`) on the f32 angle and rounded,
//! which is within an ulp of PyTorch's float32 `cos`/`sin`. The rotation itself does the same
//! f32 operations as transformers' `q·cos + rotate_half(q)·sin` (no fused multiply-add), so with
//! equal tables the forward agrees bit for bit.

use crate::kernels::Kernels;
use crate::parallel::min_rows_per_task;
use crate::parallel::{Parallel, SharedSlice, for_each_range};

/// Rotates every head of every token of `x` by its token's angles from `table`; `INVERSE`
/// rotates by the negated angles (the backward).
#[inline(always)]
fn rotate_tokens<const INVERSE: bool>(
    x: &mut [f32],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    table: &[f32],
) {
    let half = head_dim / 2;
    for (token, &pos) in x.chunks_exact_mut(n_heads * head_dim).zip(positions) {
        let (cos, sin) = table[pos as usize * head_dim..][..head_dim].split_at(half);
        for head in token.chunks_exact_mut(head_dim) {
            let (x1, x2) = head.split_at_mut(half);
            for (((a, b), &c), &s) in x1.iter_mut().zip(x2.iter_mut()).zip(cos).zip(sin) {
                let (u, v) = (*a, *b);
                if INVERSE {
                    *a = u * c + v * s;
                    *b = v * c - u * s;
                } else {
                    *a = u * c - v * s;
                    *b = v * c + u * s;
                }
            }
        }
    }
}

impl Kernels {
    /// Floats of a RoPE table for heads of `head_dim` and positions `0..max_positions`.
    pub fn rope_table_len(head_dim: usize, max_positions: usize) -> usize {
        head_dim * max_positions
    }

    /// Fills `table` (positions `0..table.len() / head_dim`) with the cos and sin of RoPE's
    /// angles for frequency base `base` (θ, `rope_theta`) and linear scaling `linear_factor`
    /// (1 for none; transformers' `rope_type: "linear"` divides the frequencies by it). See the
    /// module docs for how this matches transformers' float32 computation.
    ///
    /// # Panics
    /// If `head_dim` is 0 or odd, `table.len()` is not a multiple of it, `base` is not finite
    /// and positive, or `linear_factor` is not finite and positive.
    pub fn rope_fill_table(table: &mut [f32], head_dim: usize, base: f32, linear_factor: f32) {
        const WHAT: &str = "rope_fill_table";
        check_head_dim(WHAT, head_dim);
        assert!(
            table.len().is_multiple_of(head_dim),
            "{WHAT}: table has {} elements, not a multiple of head_dim {head_dim}",
            table.len()
        );
        assert!(base.is_finite() && base > 0.0, "{WHAT}: base {base} is not finite and positive");
        assert!(
            linear_factor.is_finite() && linear_factor > 0.0,
            "{WHAT}: linear_factor {linear_factor} is not finite and positive"
        );
        let half = head_dim / 2;
        for i in 0..half {
            let exponent = (2 * i) as f32 / head_dim as f32;
            let power = libm::pow(base as f64, exponent as f64) as f32;
            let inv_freq = 1.0 / power / linear_factor;
            for (pos, row) in table.chunks_exact_mut(head_dim).enumerate() {
                let angle = pos as f32 * inv_freq;
                let (sin, cos) = libm::sincos(angle as f64);
                row[i] = cos as f32;
                row[half + i] = sin as f32;
            }
        }
    }

    /// RoPE forward, in place: rotates each head of `x` (`[tokens, n_heads, head_dim]`, tokens =
    /// `positions.len()`) by the angles of its token's position, read from a `table` filled by
    /// [`Kernels::rope_fill_table`] for the same `head_dim`.
    ///
    /// # Panics
    /// If `head_dim` is 0 or odd, `x` is not `positions.len() × n_heads × head_dim`, `table.len()`
    /// is not a multiple of `head_dim`, or a position is beyond the table (checked before
    /// anything is written).
    pub fn rope_forward(
        &self,
        x: &mut [f32],
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        table: &[f32],
        parallel: &dyn Parallel,
    ) {
        self.rope::<false>("rope_forward", x, positions, n_heads, head_dim, table, parallel);
    }

    /// RoPE backward, in place: turns the gradient of the rotated output into the gradient of
    /// the input by the inverse rotation (the transpose). Same layout and table as
    /// [`Kernels::rope_forward`].
    ///
    /// # Panics
    /// As [`Kernels::rope_forward`].
    pub fn rope_backward(
        &self,
        dx: &mut [f32],
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        table: &[f32],
        parallel: &dyn Parallel,
    ) {
        self.rope::<true>("rope_backward", dx, positions, n_heads, head_dim, table, parallel);
    }

    #[allow(clippy::too_many_arguments)] // the public signature plus the caller's name
    fn rope<const INVERSE: bool>(
        &self,
        what: &str,
        x: &mut [f32],
        positions: &[u32],
        n_heads: usize,
        head_dim: usize,
        table: &[f32],
        parallel: &dyn Parallel,
    ) {
        check_head_dim(what, head_dim);
        let token_len = n_heads * head_dim;
        assert!(
            x.len() == positions.len() * token_len,
            "{what}: x has {} elements, {} positions × {n_heads} heads × head_dim {head_dim} is {}",
            x.len(),
            positions.len(),
            positions.len() * token_len
        );
        assert!(
            table.len().is_multiple_of(head_dim),
            "{what}: table has {} elements, not a multiple of head_dim {head_dim}",
            table.len()
        );
        let max_positions = table.len() / head_dim;
        if let Some(&bad) = positions.iter().find(|&&p| p as usize >= max_positions) {
            panic!("{what}: position {bad} out of range for a table of {max_positions} positions");
        }
        if token_len == 0 {
            return;
        }
        let x = SharedSlice::new(x);
        for_each_range(parallel, positions.len(), min_rows_per_task(token_len), |tokens| {
            // SAFETY: the token ranges of one run are disjoint.
            let x = unsafe { x.part(tokens.start * token_len..tokens.end * token_len) };
            let positions = &positions[tokens];
            crate::vectorize::vectorized!(
                self.isa(),
                rotate_tokens::<INVERSE>(x, positions, n_heads, head_dim, table)
            );
        });
    }
}

/// Panics unless `head_dim` is positive and even.
fn check_head_dim(what: &str, head_dim: usize) {
    assert!(
        head_dim > 0 && head_dim.is_multiple_of(2),
        "{what}: head_dim {head_dim} is not positive and even"
    );
}
