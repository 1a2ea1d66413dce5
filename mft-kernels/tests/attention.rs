//! Causal self-attention (`Kernels::attention_forward` / `attention_backward`) against a naive
//! f64 implementation written here (the whole score matrix, masks, softmax), on odd shapes that
//! cross the tile boundaries, with grouped-query heads, sliding windows and padding; the backward
//! also against central finite differences. Plus: threads agree with one thread, rows that see
//! no key, the scratch size is linear in the sequence length, and bad shapes panic.

mod common;

use common::{ScopedThreads, assert_close, every_isa, finite_difference, values, widen};
use mft_kernels::attention::{AttentionGrads, AttentionInputs, AttentionShape};
use mft_kernels::{Kernels, Parallel, Sequential};
use proptest::prelude::*;

/// A problem: shape, inputs, padding mask and the upstream gradient.
#[derive(Debug, Clone)]
struct Case {
    shape: AttentionShape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    mask: Option<Vec<bool>>,
    d_out: Vec<f32>,
}

/// How the padding mask is made.
#[derive(Debug, Clone, Copy)]
enum Padding {
    None,
    /// Each key is padding with probability about 1/4.
    Random,
    /// The first few keys of each sequence are padding (left padding): early queries see nothing.
    Left,
}

impl Case {
    fn new(shape: AttentionShape, padding: Padding, magnitude: f32, seed: u64) -> Case {
        let mask = match padding {
            Padding::None => None,
            Padding::Random => {
                Some(values(seed ^ 0x55, shape.mask_len(), 1.0).iter().map(|&u| u > -0.5).collect())
            }
            Padding::Left => {
                let pads = values(seed ^ 0x77, shape.batch, 1.0);
                let mut mask = vec![true; shape.mask_len()];
                for (b, u) in pads.iter().enumerate() {
                    let n = ((u.abs() * (shape.seq + 2) as f32) as usize).min(shape.seq);
                    mask[b * shape.seq..b * shape.seq + n].fill(false);
                }
                Some(mask)
            }
        };
        Case {
            shape,
            q: values(seed, shape.q_len(), magnitude),
            k: values(seed ^ 0x1111, shape.kv_len(), magnitude),
            v: values(seed ^ 0x2222, shape.kv_len(), 1.0),
            mask,
            d_out: values(seed ^ 0x3333, shape.q_len(), 1.0),
        }
    }

    fn inputs(&self) -> AttentionInputs<'_> {
        AttentionInputs { q: &self.q, k: &self.k, v: &self.v, key_mask: self.mask.as_deref() }
    }
}

/// Whether key `j` of sequence `b` is visible to query `i` (causal, window, padding).
fn visible(shape: &AttentionShape, mask: Option<&[bool]>, b: usize, i: usize, j: usize) -> bool {
    j <= i && shape.window.is_none_or(|w| i - j < w) && mask.is_none_or(|m| m[b * shape.seq + j])
}

/// Index of element `c` of head `h` at position `pos` of sequence `b` in a
/// `[batch, seq, heads, head_dim]` tensor.
fn at(shape: &AttentionShape, heads: usize, b: usize, pos: usize, h: usize, c: usize) -> usize {
    ((b * shape.seq + pos) * heads + h) * shape.head_dim + c
}

/// The probabilities of query `i` of (b, h) over all keys (0 where not visible), from the full
/// row of scores, and the row's log-sum-exp (−∞ when no key is visible).
fn reference_probs(
    shape: &AttentionShape,
    q: &[f64],
    k: &[f64],
    mask: Option<&[bool]>,
    b: usize,
    h: usize,
    i: usize,
) -> (Vec<f64>, f64) {
    let (t, d) = (shape.seq, shape.head_dim);
    let (hq, hk) = (shape.n_heads, shape.n_kv_heads);
    let g = h / (hq / hk);
    let scores: Vec<Option<f64>> = (0..t)
        .map(|j| {
            visible(shape, mask, b, i, j).then(|| {
                let dot: f64 = (0..d)
                    .map(|c| q[at(shape, hq, b, i, h, c)] * k[at(shape, hk, b, j, g, c)])
                    .sum();
                shape.scale as f64 * dot
            })
        })
        .collect();
    let m = scores.iter().flatten().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
    if m == f64::NEG_INFINITY {
        return (vec![0.0; t], f64::NEG_INFINITY);
    }
    let lse = m + scores.iter().flatten().map(|&s| (s - m).exp()).sum::<f64>().ln();
    (scores.iter().map(|s| s.map_or(0.0, |s| (s - lse).exp())).collect(), lse)
}

/// The forward in f64: `(out, lse)`.
fn reference_forward(
    shape: &AttentionShape,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    mask: Option<&[bool]>,
) -> (Vec<f64>, Vec<f64>) {
    let (t, d, hq, hk) = (shape.seq, shape.head_dim, shape.n_heads, shape.n_kv_heads);
    let mut out = vec![0.0; shape.q_len()];
    let mut lse = vec![0.0; shape.lse_len()];
    for b in 0..shape.batch {
        for h in 0..hq {
            let g = h / (hq / hk);
            for i in 0..t {
                let (p, l) = reference_probs(shape, q, k, mask, b, h, i);
                lse[(b * hq + h) * t + i] = l;
                for c in 0..d {
                    out[at(shape, hq, b, i, h, c)] =
                        (0..t).map(|j| p[j] * v[at(shape, hk, b, j, g, c)]).sum();
                }
            }
        }
    }
    (out, lse)
}

/// The backward in f64 from the materialized probabilities: `(dq, dk, dv)`, with
/// `dS = P ∘ (dP − Σ P·dP)`.
fn reference_backward(case: &Case) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let shape = &case.shape;
    let (q, k, v, d_out) = (widen(&case.q), widen(&case.k), widen(&case.v), widen(&case.d_out));
    let mask = case.mask.as_deref();
    let (t, d, hq, hk) = (shape.seq, shape.head_dim, shape.n_heads, shape.n_kv_heads);
    let scale = shape.scale as f64;
    let mut dq = vec![0.0; shape.q_len()];
    let mut dk = vec![0.0; shape.kv_len()];
    let mut dv = vec![0.0; shape.kv_len()];
    for b in 0..shape.batch {
        for h in 0..hq {
            let g = h / (hq / hk);
            for i in 0..t {
                let (p, _) = reference_probs(shape, &q, &k, mask, b, h, i);
                let d_p: Vec<f64> = (0..t)
                    .map(|j| {
                        (0..d)
                            .map(|c| {
                                d_out[at(shape, hq, b, i, h, c)] * v[at(shape, hk, b, j, g, c)]
                            })
                            .sum()
                    })
                    .collect();
                let row_d: f64 = (0..t).map(|j| p[j] * d_p[j]).sum();
                for j in 0..t {
                    let ds = p[j] * (d_p[j] - row_d);
                    for c in 0..d {
                        let (qi, kj) = (at(shape, hq, b, i, h, c), at(shape, hk, b, j, g, c));
                        dq[qi] += scale * ds * k[kj];
                        dk[kj] += scale * ds * q[qi];
                        dv[kj] += p[j] * d_out[qi];
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}

/// Fresh output buffers and scratch filled with NaN, so anything left unwritten (or read before
/// being written) shows.
fn run_forward(kern: &Kernels, case: &Case, parallel: &dyn Parallel) -> (Vec<f32>, Vec<f32>) {
    let shape = &case.shape;
    let mut out = vec![f32::NAN; shape.q_len()];
    let mut lse = vec![f32::NAN; shape.lse_len()];
    let mut scratch = vec![f32::NAN; kern.attention_forward_scratch_len(shape, parallel.threads())];
    kern.attention_forward(shape, case.inputs(), &mut out, &mut lse, &mut scratch, parallel);
    (out, lse)
}

type Grads = (Vec<f32>, Vec<f32>, Vec<f32>);

fn run_backward(
    kern: &Kernels,
    case: &Case,
    out: &[f32],
    lse: &[f32],
    parallel: &dyn Parallel,
) -> Grads {
    let shape = &case.shape;
    let mut dq = vec![f32::NAN; shape.q_len()];
    let mut dk = vec![f32::NAN; shape.kv_len()];
    let mut dv = vec![f32::NAN; shape.kv_len()];
    let mut scratch =
        vec![f32::NAN; kern.attention_backward_scratch_len(shape, parallel.threads())];
    let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
    kern.attention_backward(
        shape,
        case.inputs(),
        out,
        lse,
        &case.d_out,
        grads,
        &mut scratch,
        parallel,
    );
    (dq, dk, dv)
}

/// Asserts the log-sum-exp matches, −∞ exactly where the reference has it.
#[track_caller]
fn assert_lse(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w == f64::NEG_INFINITY {
            assert_eq!(g, f32::NEG_INFINITY, "{what}[{i}]: a row that sees no key");
        } else {
            assert!(
                (g as f64 - w).abs() <= 1e-5 + 1e-5 * w.abs(),
                "{what}[{i}]: got {g}, want {w}"
            );
        }
    }
}

/// Checks the forward and backward of `case` against the f64 reference on every ISA.
fn check_case(case: &Case, parallel: &dyn Parallel) {
    let (want_out, want_lse) = reference_forward(
        &case.shape,
        &widen(&case.q),
        &widen(&case.k),
        &widen(&case.v),
        case.mask.as_deref(),
    );
    let (want_dq, want_dk, want_dv) = reference_backward(case);
    for kern in every_isa() {
        let isa = kern.isa();
        let (out, lse) = run_forward(&kern, case, parallel);
        assert_close(&format!("{isa} out"), &out, &want_out, 2e-5, 1e-4);
        assert_lse(&format!("{isa} lse"), &lse, &want_lse);
        let (dq, dk, dv) = run_backward(&kern, case, &out, &lse, parallel);
        assert_close(&format!("{isa} dq"), &dq, &want_dq, 1e-4, 1e-3);
        assert_close(&format!("{isa} dk"), &dk, &want_dk, 1e-4, 1e-3);
        assert_close(&format!("{isa} dv"), &dv, &want_dv, 1e-4, 1e-3);
    }
}

/// Sequence lengths: 1, a few, and across the 128-row tile and its split diagonal.
const SEQS: [usize; 6] = [1, 2, 7, 33, 65, 130];
/// (n_heads, n_kv_heads): multi-head, multi-query and grouped.
const HEADS: [(usize, usize); 6] = [(1, 1), (2, 2), (2, 1), (3, 1), (4, 2), (6, 3)];

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![Just(Padding::None), Just(Padding::Random), Just(Padding::Left)]
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..SEQS.len(),
        1usize..=2,
        0..HEADS.len(),
        1usize..=9,
        prop_oneof![Just(None), (1usize..=140).prop_map(Some)],
        padding(),
        prop_oneof![Just(1.0f32), Just(4.0f32)],
        any::<u64>(),
    )
        .prop_map(|(s, batch, heads, head_dim, window, padding, magnitude, seed)| {
            let (n_heads, n_kv_heads) = HEADS[heads];
            let shape = AttentionShape::new(batch, SEQS[s], n_heads, n_kv_heads, head_dim)
                .with_window(window);
            Case::new(shape, padding, magnitude, seed)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    #[test]
    fn forward_and_backward_match_the_f64_reference(case in case()) {
        check_case(&case, &Sequential);
    }

    #[test]
    fn threads_give_the_same_results_as_one(case in case(), threads in 2usize..=4) {
        let kern = Kernels::best();
        let (out, lse) = run_forward(&kern, &case, &Sequential);
        let (dq, dk, dv) = run_backward(&kern, &case, &out, &lse, &Sequential);
        let pool = ScopedThreads(threads);
        let (out_t, lse_t) = run_forward(&kern, &case, &pool);
        // Each row is computed the same way whichever task runs it.
        prop_assert_eq!(out_t.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        out.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        prop_assert_eq!(lse_t.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        lse.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        let (dq_t, dk_t, dv_t) = run_backward(&kern, &case, &out, &lse, &pool);
        prop_assert_eq!(dq_t.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        dq.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        // dk/dv of a group split between tasks are summed in another order.
        assert_close("threaded dk", &dk_t, &widen(&dk), 1e-6, 1e-5);
        assert_close("threaded dv", &dv_t, &widen(&dv), 1e-6, 1e-5);
    }
}

/// Several key blocks left of the diagonal (seq > BR + BC), with and without a window, and a
/// grouped-query split across threads.
#[test]
fn long_sequences_cross_every_block_boundary() {
    for (window, padding, seed) in
        [(None, Padding::None, 1), (Some(300), Padding::Random, 2), (Some(37), Padding::Left, 3)]
    {
        let shape = AttentionShape::new(1, 400, 2, 1, 4).with_window(window).with_scale(0.7);
        let case = Case::new(shape, padding, 2.0, seed);
        check_case(&case, &Sequential);
        check_case(&case, &ScopedThreads(3));
    }
}

/// Gemma-style: one key/value head for four query heads, a window and its own scale, on more
/// threads than (batch, head) pairs so groups are split between tasks.
#[test]
fn grouped_heads_split_between_tasks() {
    let shape = AttentionShape::new(1, 150, 4, 1, 5).with_window(Some(40)).with_scale(0.25);
    let case = Case::new(shape, Padding::None, 3.0, 9);
    for threads in [2, 3, 4, 7] {
        check_case(&case, &ScopedThreads(threads));
    }
}

/// L = Σ r·out: its gradient by central differences of the f64 reference forward.
fn finite_difference_grads(case: &Case, r: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let shape = &case.shape;
    let (q, k, v) = (widen(&case.q), widen(&case.k), widen(&case.v));
    let mask = case.mask.as_deref();
    let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
        let (out, _) = reference_forward(shape, q, k, v, mask);
        out.iter().zip(r).map(|(o, r)| o * r).sum()
    };
    let h = 1e-5;
    (
        finite_difference(&q, h, |x| loss(x, &k, &v)),
        finite_difference(&k, h, |x| loss(&q, x, &v)),
        finite_difference(&v, h, |x| loss(&q, &k, x)),
    )
}

#[test]
fn backward_matches_finite_differences() {
    let shapes = [
        (AttentionShape::new(1, 5, 2, 1, 3), Padding::None),
        (AttentionShape::new(2, 6, 2, 2, 2).with_window(Some(3)), Padding::Random),
        (AttentionShape::new(1, 7, 3, 1, 2).with_scale(1.3), Padding::Left),
    ];
    for (i, (shape, padding)) in shapes.into_iter().enumerate() {
        let case = Case::new(shape, padding, 1.5, 40 + i as u64);
        let r = widen(&case.d_out);
        let (fd_q, fd_k, fd_v) = finite_difference_grads(&case, &r);
        // The reference backward is right...
        let (ref_q, ref_k, ref_v) = reference_backward(&case);
        for (what, got, want) in [("q", &ref_q, &fd_q), ("k", &ref_k, &fd_k), ("v", &ref_v, &fd_v)]
        {
            for (j, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                assert!((g - w).abs() < 1e-7, "reference d{what}[{j}]: {g} vs {w}");
            }
        }
        // ... and so is the kernel's.
        for kern in every_isa() {
            let (out, lse) = run_forward(&kern, &case, &Sequential);
            let (dq, dk, dv) = run_backward(&kern, &case, &out, &lse, &Sequential);
            assert_close(&format!("{} dq vs differences", kern.isa()), &dq, &fd_q, 1e-5, 1e-4);
            assert_close(&format!("{} dk vs differences", kern.isa()), &dk, &fd_k, 1e-5, 1e-4);
            assert_close(&format!("{} dv vs differences", kern.isa()), &dv, &fd_v, 1e-5, 1e-4);
        }
    }
}

/// Left padding: the first queries see no key at all. Their output is 0, their log-sum-exp −∞,
/// their dq 0, and they add nothing to dk or dv (the padded keys' dk and dv are 0).
#[test]
fn rows_that_see_no_key_give_zero() {
    let shape = AttentionShape::new(2, 70, 2, 1, 3);
    let mut case = Case::new(shape, Padding::None, 1.0, 5);
    let pads = [10, 70]; // the second sequence is padding throughout
    let mut mask = vec![true; shape.mask_len()];
    for (b, &n) in pads.iter().enumerate() {
        mask[b * 70..b * 70 + n].fill(false);
    }
    case.mask = Some(mask);
    check_case(&case, &Sequential);
    for kern in every_isa() {
        for parallel in [&Sequential as &dyn Parallel, &ScopedThreads(3)] {
            let (out, lse) = run_forward(&kern, &case, parallel);
            let (dq, dk, dv) = run_backward(&kern, &case, &out, &lse, parallel);
            for (b, &n) in pads.iter().enumerate() {
                for pos in 0..n {
                    for h in 0..2 {
                        assert_eq!(lse[(b * 2 + h) * 70 + pos], f32::NEG_INFINITY);
                        let row = at(&shape, 2, b, pos, h, 0)..at(&shape, 2, b, pos, h, 0) + 3;
                        assert!(out[row.clone()].iter().all(|&x| x == 0.0), "out {b} {pos}");
                        assert!(dq[row].iter().all(|&x| x == 0.0), "dq {b} {pos}");
                    }
                    let key = at(&shape, 1, b, pos, 0, 0)..at(&shape, 1, b, pos, 0, 0) + 3;
                    assert!(dk[key.clone()].iter().all(|&x| x == 0.0), "dk {b} {pos}");
                    assert!(dv[key].iter().all(|&x| x == 0.0), "dv {b} {pos}");
                }
            }
            assert!(lse[..70].iter().skip(10).all(|l| l.is_finite()));
        }
    }
}

/// The sliding window keeps only the last `window` keys: a query whose window excludes a key
/// with a huge value must not see it.
#[test]
fn window_hides_old_keys() {
    let shape = AttentionShape::new(1, 6, 1, 1, 1).with_window(Some(2)).with_scale(1.0);
    let case = Case {
        shape,
        q: vec![1.0; 6],
        k: vec![0.0; 6],
        v: vec![1000.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        mask: None,
        d_out: vec![1.0; 6],
    };
    for kern in every_isa() {
        let (out, _) = run_forward(&kern, &case, &Sequential);
        // Equal scores: each query averages v over its window {i − 1, i}.
        let want = [1000.0, 500.5, 1.5, 2.5, 3.5, 4.5];
        assert_close(&format!("{} windowed out", kern.isa()), &out, &want, 1e-4, 1e-6);
    }
}

/// The scratch asked for grows linearly in seq, never quadratically.
#[test]
fn scratch_is_linear_in_seq() {
    for kern in every_isa() {
        for threads in [1, 4] {
            for window in [None, Some(512)] {
                let len = |seq: usize| {
                    let shape = AttentionShape::new(4, seq, 12, 12, 64).with_window(window);
                    (
                        kern.attention_forward_scratch_len(&shape, threads),
                        kern.attention_backward_scratch_len(&shape, threads),
                    )
                };
                for seq in [256, 512, 1024, 2048] {
                    let (f1, b1) = len(seq);
                    let (f2, b2) = len(2 * seq);
                    // Doubling seq at most doubles the scratch (plus a constant).
                    assert!(f2 <= 2 * f1 + 4096, "forward scratch {f1} → {f2} at seq {seq}");
                    assert!(b2 <= 2 * b1 + 4096, "backward scratch {b1} → {b2} at seq {seq}");
                }
                // At 4096 positions, each thread's part is far below one seq × seq matrix.
                let (f, b) = len(4096);
                let square = 4096 * 4096;
                assert!(f / threads * 16 < square, "forward scratch {f} on {threads} threads");
                assert!(b / threads * 8 < square, "backward scratch {b} on {threads} threads");
            }
        }
    }
}

fn forward_with(shape: AttentionShape, q_len: usize, lse_len: usize, mask: Option<&[bool]>) {
    let kern = Kernels::best();
    let q = vec![0.0; q_len];
    let kv = vec![0.0; shape.kv_len()];
    let mut out = vec![0.0; shape.q_len()];
    let mut lse = vec![0.0; lse_len];
    let mut scratch = vec![0.0; kern.attention_forward_scratch_len(&shape, 1)];
    let x = AttentionInputs { q: &q, k: &kv, v: &kv, key_mask: mask };
    kern.attention_forward(&shape, x, &mut out, &mut lse, &mut scratch, &Sequential);
}

#[test]
#[should_panic(expected = "attention_forward: q has 47 elements, the shape needs 48")]
fn short_q_panics() {
    let shape = AttentionShape::new(1, 4, 3, 1, 4);
    forward_with(shape, 47, shape.lse_len(), None);
}

#[test]
#[should_panic(expected = "attention_forward: lse has 13 elements, the shape needs 12")]
fn wrong_lse_panics() {
    let shape = AttentionShape::new(1, 4, 3, 1, 4);
    forward_with(shape, shape.q_len(), 13, None);
}

#[test]
#[should_panic(expected = "attention_forward: key_mask has 3 elements, the shape needs 4")]
fn short_mask_panics() {
    let shape = AttentionShape::new(1, 4, 3, 1, 4);
    forward_with(shape, shape.q_len(), shape.lse_len(), Some(&[true; 3]));
}

#[test]
#[should_panic(expected = "n_heads 3 is not a multiple of n_kv_heads 2")]
fn heads_not_a_multiple_of_kv_heads_panic() {
    let shape = AttentionShape::new(1, 4, 3, 2, 4);
    forward_with(shape, shape.q_len(), shape.lse_len(), None);
}

#[test]
#[should_panic(expected = "window is 0")]
fn zero_window_panics() {
    let shape = AttentionShape::new(1, 4, 1, 1, 4).with_window(Some(0));
    forward_with(shape, shape.q_len(), shape.lse_len(), None);
}

#[test]
#[should_panic(expected = "attention_backward: scratch holds 10 floats")]
fn short_backward_scratch_panics() {
    let kern = Kernels::best();
    let shape = AttentionShape::new(1, 4, 2, 1, 4);
    let case = Case::new(shape, Padding::None, 1.0, 1);
    let (out, lse) = run_forward(&kern, &case, &Sequential);
    let (mut dq, mut dk, mut dv) =
        (vec![0.0; shape.q_len()], vec![0.0; shape.kv_len()], vec![0.0; shape.kv_len()]);
    let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
    let mut scratch = vec![0.0; 10];
    kern.attention_backward(
        &shape,
        case.inputs(),
        &out,
        &lse,
        &case.d_out,
        grads,
        &mut scratch,
        &Sequential,
    );
}

#[test]
#[should_panic(expected = "attention_backward: dk has 15 elements, the shape needs 16")]
fn short_dk_panics() {
    let kern = Kernels::best();
    let shape = AttentionShape::new(1, 4, 2, 1, 4);
    let case = Case::new(shape, Padding::None, 1.0, 1);
    let (out, lse) = run_forward(&kern, &case, &Sequential);
    let (mut dq, mut dk, mut dv) =
        (vec![0.0; shape.q_len()], vec![0.0; shape.kv_len() - 1], vec![0.0; shape.kv_len()]);
    let grads = AttentionGrads { dq: &mut dq, dk: &mut dk, dv: &mut dv };
    let mut scratch = vec![0.0; kern.attention_backward_scratch_len(&shape, 1)];
    kern.attention_backward(
        &shape,
        case.inputs(),
        &out,
        &lse,
        &case.d_out,
        grads,
        &mut scratch,
        &Sequential,
    );
}
