//! Embedding lookup and scatter-add against f64 references written here: f32, f16 and bf16
//! tables, overwrite and accumulate, repeated ids in the backward, finite differences, threaded
//! runs against sequential ones, and the shape and id checks. Every test runs on every ISA the
//! CPU has.

mod common;

use common::{ScopedThreads, assert_close, every_isa, finite_difference, values, widen};
use mft_core::Element;
use mft_kernels::embedding::WriteMode;
use mft_kernels::{Kernels, Parallel, Sequential, bf16, f16};
use proptest::prelude::*;

/// Token ids in `0..vocab` from `seed`, with repeats.
fn ids(seed: u64, len: usize, vocab: usize) -> Vec<u32> {
    values(seed, len, 1.0)
        .iter()
        .map(|v| ((v + 1.0) / 2.0 * vocab as f32) as u32 % vocab as u32)
        .collect()
}

/// The lookup in f64 from an already widened table.
fn lookup_ref(
    table: &[f64],
    ids: &[u32],
    dim: usize,
    scale: f64,
    out0: Option<&[f32]>,
) -> Vec<f64> {
    let mut out = Vec::new();
    for (r, &id) in ids.iter().enumerate() {
        for j in 0..dim {
            let base = out0.map_or(0.0, |o| o[r * dim + j] as f64);
            out.push(base + scale * table[id as usize * dim + j]);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn forward<T: Element + Sync>(
    k: &Kernels,
    table: &[T],
    ids: &[u32],
    dim: usize,
    scale: f32,
    mode: WriteMode,
    out0: &[f32],
    par: &dyn Parallel,
) -> Vec<f32> {
    let mut out = out0.to_vec();
    k.embedding_forward(table, ids, dim, scale, mode, &mut out, par);
    out
}

fn backward(
    k: &Kernels,
    dy: &[f32],
    ids: &[u32],
    dim: usize,
    scale: f32,
    d0: &[f32],
    par: &dyn Parallel,
) -> Vec<f32> {
    let mut d_table = d0.to_vec();
    k.embedding_backward(dy, ids, dim, scale, &mut d_table, par);
    d_table
}

fn odd_dims() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 3, 17, 63, 65, 130])
}

fn modes() -> impl Strategy<Value = WriteMode> {
    prop::sample::select(vec![WriteMode::Overwrite, WriteMode::Accumulate])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn forward_matches_f64_for_every_table_type(
        dim in odd_dims(),
        vocab in 1usize..12,
        tokens in 0usize..6,
        mode in modes(),
        scale in -3.0f32..30.0,
        seed: u64,
    ) {
        let table = values(seed, vocab * dim, 1.0);
        let table_f16: Vec<f16> = table.iter().map(|&v| f16::from_f32(v)).collect();
        let table_bf16: Vec<bf16> = table.iter().map(|&v| bf16::from_f32(v)).collect();
        let ids = ids(seed ^ 1, tokens, vocab);
        let out0 = values(seed ^ 2, tokens * dim, 1.0);
        let base = (mode == WriteMode::Accumulate).then_some(&out0[..]);
        let s = scale as f64;
        let want = lookup_ref(&widen(&table), &ids, dim, s, base);
        let f16_wide: Vec<f64> = table_f16.iter().map(|v| v.to_f64()).collect();
        let want_f16 = lookup_ref(&f16_wide, &ids, dim, s, base);
        let bf16_wide: Vec<f64> = table_bf16.iter().map(|v| v.to_f64()).collect();
        let want_bf16 = lookup_ref(&bf16_wide, &ids, dim, s, base);
        for k in every_isa() {
            let isa = k.isa();
            // One product and at most one sum, each rounded once (|table|, |out0| ≤ 1).
            let abs = 1.2e-7 * (1.0 + s.abs());
            let got = forward(&k, &table, &ids, dim, scale, mode, &out0, &Sequential);
            assert_close(&format!("{isa} f32 table"), &got, &want, abs, 0.0);
            let got = forward(&k, &table_f16, &ids, dim, scale, mode, &out0, &Sequential);
            assert_close(&format!("{isa} f16 table"), &got, &want_f16, abs, 0.0);
            let got = forward(&k, &table_bf16, &ids, dim, scale, mode, &out0, &Sequential);
            assert_close(&format!("{isa} bf16 table"), &got, &want_bf16, abs, 0.0);
        }
    }

    /// Repeated ids add up, rows of the table no id names are untouched, the gradient
    /// accumulates onto what was there.
    #[test]
    fn backward_matches_f64_scatter_add(
        dim in odd_dims(),
        vocab in 1usize..12,
        tokens in 0usize..20,
        scale in -3.0f32..30.0,
        seed: u64,
    ) {
        let ids = ids(seed, tokens, vocab);
        let dy = values(seed ^ 1, tokens * dim, 1.0);
        let d0 = values(seed ^ 2, vocab * dim, 1.0);
        let mut want = widen(&d0);
        for (r, &id) in ids.iter().enumerate() {
            for j in 0..dim {
                want[id as usize * dim + j] += scale as f64 * dy[r * dim + j] as f64;
            }
        }
        for k in every_isa() {
            let got = backward(&k, &dy, &ids, dim, scale, &d0, &Sequential);
            assert_close(&format!("{} d_table", k.isa()), &got, &want, 1e-5, 1e-5);
        }
    }

    /// The backward is the gradient of `L = Σ r·out` with respect to the table.
    #[test]
    fn backward_matches_finite_differences(
        dim in prop::sample::select(vec![1usize, 2, 5]),
        vocab in 1usize..6,
        tokens in 1usize..8,
        seed: u64,
    ) {
        let scale = 1.7f32;
        let table = values(seed, vocab * dim, 1.0);
        let ids = ids(seed ^ 1, tokens, vocab);
        let r = values(seed ^ 2, tokens * dim, 1.0);
        let rd = widen(&r);
        let want = finite_difference(&widen(&table), 1e-3, |t| {
            lookup_ref(t, &ids, dim, scale as f64, None).iter().zip(&rd).map(|(y, r)| y * r).sum()
        });
        for k in every_isa() {
            let got = backward(&k, &r, &ids, dim, scale, &vec![0.0; vocab * dim], &Sequential);
            assert_close(&format!("{} d_table", k.isa()), &got, &want, 1e-5, 1e-5);
        }
    }
}

/// GPT-2's input: token embeddings, then position embeddings added on top.
#[test]
fn token_plus_position_embeddings() {
    let (vocab, positions, dim) = (9, 6, 10);
    let wte = values(71, vocab * dim, 1.0);
    let wpe = values(72, positions * dim, 1.0);
    let tokens = [3u32, 3, 8, 0];
    let pos = [0u32, 1, 2, 5];
    let mut want = Vec::new();
    for (&t, &p) in tokens.iter().zip(&pos) {
        for j in 0..dim {
            want.push(wte[t as usize * dim + j] as f64 + wpe[p as usize * dim + j] as f64);
        }
    }
    for k in every_isa() {
        let mut out = vec![f32::NAN; tokens.len() * dim];
        k.embedding_forward(&wte, &tokens, dim, 1.0, WriteMode::Overwrite, &mut out, &Sequential);
        k.embedding_forward(&wpe, &pos, dim, 1.0, WriteMode::Accumulate, &mut out, &Sequential);
        assert_close(&format!("{}", k.isa()), &out, &want, 0.0, 6e-8);
    }
}

/// Forward rows and backward columns split across tasks: both are bit-identical to sequential
/// runs (the backward sums each column in row order whatever the split).
#[test]
fn threaded_runs_match_sequential() {
    let (vocab, tokens, dim) = (50, 300, 200);
    let table = values(81, vocab * dim, 1.0);
    let ids = ids(82, tokens, vocab);
    let dy = values(83, tokens * dim, 1.0);
    let out0 = values(84, tokens * dim, 1.0);
    let d0 = values(85, vocab * dim, 1.0);
    for k in every_isa() {
        for mode in [WriteMode::Overwrite, WriteMode::Accumulate] {
            let seq = forward(&k, &table, &ids, dim, 0.5, mode, &out0, &Sequential);
            for threads in [2, 3] {
                let thr = forward(&k, &table, &ids, dim, 0.5, mode, &out0, &ScopedThreads(threads));
                assert_eq!(seq, thr, "{} forward", k.isa());
            }
        }
        let seq = backward(&k, &dy, &ids, dim, 0.5, &d0, &Sequential);
        for threads in [2, 3] {
            let thr = backward(&k, &dy, &ids, dim, 0.5, &d0, &ScopedThreads(threads));
            assert_eq!(seq, thr, "{} backward", k.isa());
        }
    }
}

#[test]
#[should_panic(expected = "embedding_forward: token id 50 out of range for vocab 50")]
fn forward_rejects_an_out_of_range_id() {
    let table = vec![0.0f32; 50 * 4];
    let mut out = vec![0.0; 3 * 4];
    Kernels::best().embedding_forward(
        &table,
        &[1, 50, 2],
        4,
        1.0,
        WriteMode::Overwrite,
        &mut out,
        &Sequential,
    );
}

#[test]
#[should_panic(expected = "embedding_backward: token id 7 out of range for vocab 7")]
fn backward_rejects_an_out_of_range_id() {
    let mut d_table = vec![0.0f32; 7 * 4];
    Kernels::best().embedding_backward(&[0.0; 8], &[7, 0], 4, 1.0, &mut d_table, &ScopedThreads(2));
}

#[test]
#[should_panic(expected = "embedding_forward: out has 11 elements, 3 ids × dim 4 is 12")]
fn forward_rejects_a_short_output() {
    let table = vec![bf16::ZERO; 5 * 4];
    let mut out = vec![0.0; 11];
    Kernels::best().embedding_forward(
        &table,
        &[1, 2, 3],
        4,
        1.0,
        WriteMode::Overwrite,
        &mut out,
        &Sequential,
    );
}

#[test]
#[should_panic(expected = "embedding_backward: d_table has 10 elements, not a multiple of dim 4")]
fn backward_rejects_a_ragged_table() {
    let mut d_table = vec![0.0f32; 10];
    Kernels::best().embedding_backward(&[0.0; 4], &[0], 4, 1.0, &mut d_table, &Sequential);
}
