//! The fused LM head + cross-entropy of every supported ISA against a naive f64 implementation
//! that materializes all the logits: forward (loss, valid count, log-sum-exp) and backward
//! (`d_hidden` written, `d_weight` accumulated) through all three entry points, over odd shapes,
//! chunk sizes that cross the vocabulary's boundaries (1, 7, 64, more than the vocabulary),
//! ignored tokens, all tokens ignored, f16/bf16 heads and logits large enough to overflow a naive
//! exp; the reference's gradients themselves against central finite differences of its loss;
//! threads against one thread; the scratch bound at GPT-2 shapes; and the panics on bad input.

mod common;

use common::{ScopedThreads, assert_close, every_isa, finite_difference, values, widen};
use mft_kernels::loss::{IGNORE_INDEX, LmHeadLoss, LossValue};
use mft_kernels::{GemmRhs, Kernels, Parallel, Sequential, bf16, f16};
use proptest::prelude::*;

/// One problem: hidden states, a head weight of element type `T`, labels, and the chunk.
#[derive(Debug, Clone)]
struct Problem<T> {
    shape: LmHeadLoss,
    hidden: Vec<f32>,
    weight: Vec<T>,
    labels: Vec<i32>,
}

impl<T: GemmRhs> Problem<T> {
    /// Values in `[-scale, scale)`; every `ignore_every`-th token (from the second) is ignored
    /// (0: none).
    fn new(
        (tokens, hidden, vocab): (usize, usize, usize),
        chunk: usize,
        seed: u64,
        ignore_every: usize,
        scale: f32,
    ) -> Self {
        let labels = values(seed ^ 0x51, tokens, 1.0)
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                if ignore_every > 0 && i % ignore_every == 1 {
                    IGNORE_INDEX
                } else {
                    (((u + 1.0) / 2.0 * vocab as f32) as usize).min(vocab - 1) as i32
                }
            })
            .collect();
        Problem {
            shape: LmHeadLoss::new(tokens, hidden, vocab).with_chunk(chunk),
            hidden: values(seed, tokens * hidden, scale),
            weight: values(seed ^ 0xabc, vocab * hidden, scale)
                .into_iter()
                .map(T::from_f32)
                .collect(),
            labels,
        }
    }

    /// The weight as the kernels see it (half precision widened exactly), in f64.
    fn weight_f64(&self) -> Vec<f64> {
        self.weight.iter().map(|w| w.to_f32() as f64).collect()
    }

    fn dims(&self) -> (usize, usize, usize) {
        (self.shape.tokens(), self.shape.hidden(), self.shape.vocab())
    }
}

/// The naive reference: every logit materialized, in f64.
struct Reference {
    lse: Vec<f64>,
    loss: f64,
    valid: usize,
    d_hidden: Vec<f64>,
    d_weight: Vec<f64>,
}

/// Logits `[tokens, vocab]` and their per-row log-sum-exp, in f64.
fn logits_and_lse(
    hidden: &[f64],
    weight: &[f64],
    (t, h, v): (usize, usize, usize),
) -> (Vec<f64>, Vec<f64>) {
    let mut logits = vec![0.0; t * v];
    for i in 0..t {
        for j in 0..v {
            logits[i * v + j] = (0..h).map(|k| hidden[i * h + k] * weight[j * h + k]).sum();
        }
    }
    let lse = (0..t)
        .map(|i| {
            let row = &logits[i * v..(i + 1) * v];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            m + row.iter().map(|l| (l - m).exp()).sum::<f64>().ln()
        })
        .collect();
    (logits, lse)
}

/// The mean loss over valid tokens (0 when none), in f64.
fn reference_loss(
    hidden: &[f64],
    weight: &[f64],
    labels: &[i32],
    dims: (usize, usize, usize),
) -> f64 {
    let v = dims.2;
    let (logits, lse) = logits_and_lse(hidden, weight, dims);
    let valid: Vec<usize> = (0..dims.0).filter(|&i| labels[i] != IGNORE_INDEX).collect();
    if valid.is_empty() {
        return 0.0;
    }
    valid.iter().map(|&i| lse[i] - logits[i * v + labels[i] as usize]).sum::<f64>()
        / valid.len() as f64
}

fn reference<T: GemmRhs>(p: &Problem<T>, d_loss: f64) -> Reference {
    let dims @ (t, h, v) = p.dims();
    let hidden = widen(&p.hidden);
    let weight = p.weight_f64();
    let (logits, lse) = logits_and_lse(&hidden, &weight, dims);
    let valid = p.labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
    let loss = reference_loss(&hidden, &weight, &p.labels, dims);
    let mut d_hidden = vec![0.0; t * h];
    let mut d_weight = vec![0.0; v * h];
    if valid > 0 {
        let g = d_loss / valid as f64;
        for i in 0..t {
            if p.labels[i] == IGNORE_INDEX {
                continue;
            }
            for j in 0..v {
                let onehot = if j == p.labels[i] as usize { 1.0 } else { 0.0 };
                let dl = g * ((logits[i * v + j] - lse[i]).exp() - onehot);
                for k in 0..h {
                    d_hidden[i * h + k] += dl * weight[j * h + k];
                    d_weight[j * h + k] += dl * hidden[i * h + k];
                }
            }
        }
    }
    Reference { lse, loss, valid, d_hidden, d_weight }
}

/// Tolerances: (absolute, relative) for the loss and lse, and for the gradients.
#[derive(Clone, Copy)]
struct Tolerance {
    value: (f64, f64),
    grad: (f64, f64),
}

const TOLERANCE: Tolerance = Tolerance { value: (2e-5, 2e-6), grad: (2e-6, 1e-4) };

/// What each entry point produced.
struct Outputs {
    value: LossValue,
    d_hidden: Vec<f32>,
    d_weight: Option<Vec<f32>>,
}

/// The initial contents of `d_weight` (gradients accumulate onto them).
fn initial_d_weight(len: usize) -> Vec<f32> {
    values(0xd3, len, 0.25)
}

/// Runs forward then backward (`separate`) or forward_backward, with or without `d_weight`.
/// Scratch and `d_hidden` start as NaN: neither's old contents may leak into the results.
fn run<T: GemmRhs>(
    k: &Kernels,
    p: &Problem<T>,
    d_loss: f32,
    separate: bool,
    with_d_weight: bool,
    parallel: &dyn Parallel,
) -> (Outputs, Option<Vec<f32>>) {
    let (t, h, v) = p.dims();
    let mut scratch = vec![f32::NAN; p.shape.scratch_len(k, parallel.threads())];
    let mut d_hidden = vec![f32::NAN; t * h];
    let mut d_weight = with_d_weight.then(|| initial_d_weight(v * h));
    let (value, lse) = if separate {
        let mut lse = vec![f32::NAN; t];
        let value = k.lm_head_loss_forward(
            &p.shape,
            &p.hidden,
            &p.weight,
            &p.labels,
            &mut lse,
            &mut scratch,
            parallel,
        );
        scratch.fill(f32::NAN);
        k.lm_head_loss_backward(
            &p.shape,
            &p.hidden,
            &p.weight,
            &p.labels,
            &lse,
            d_loss,
            &mut d_hidden,
            d_weight.as_deref_mut(),
            &mut scratch,
            parallel,
        );
        (value, Some(lse))
    } else {
        let value = k.lm_head_loss_forward_backward(
            &p.shape,
            &p.hidden,
            &p.weight,
            &p.labels,
            d_loss,
            &mut d_hidden,
            d_weight.as_deref_mut(),
            &mut scratch,
            parallel,
        );
        (value, None)
    };
    (Outputs { value, d_hidden, d_weight }, lse)
}

/// Checks all four ways of running (separate or fused, with or without `d_weight`) against the
/// reference.
fn check<T: GemmRhs>(k: &Kernels, p: &Problem<T>, d_loss: f32, tol: Tolerance) {
    let want = reference(p, d_loss as f64);
    let (_, h, v) = p.dims();
    let initial = widen(&initial_d_weight(v * h));
    let want_d_weight: Vec<f64> = initial.iter().zip(&want.d_weight).map(|(a, b)| a + b).collect();
    for separate in [true, false] {
        for with_d_weight in [true, false] {
            let what = format!(
                "{} {} {} d_weight, {:?}",
                k.isa(),
                if separate { "forward+backward" } else { "forward_backward" },
                if with_d_weight { "with" } else { "without" },
                p.shape
            );
            let (got, lse) = run(k, p, d_loss, separate, with_d_weight, &Sequential);
            assert_eq!(got.value.valid_tokens, want.valid, "{what}: valid tokens");
            let (abs, rel) = tol.value;
            assert_close(&format!("{what}: loss"), &[got.value.loss], &[want.loss], abs, rel);
            if let Some(lse) = lse {
                assert_close(&format!("{what}: lse"), &lse, &want.lse, abs, rel);
            }
            let (abs, rel) = tol.grad;
            assert_close(&format!("{what}: d_hidden"), &got.d_hidden, &want.d_hidden, abs, rel);
            if let Some(d_weight) = got.d_weight {
                assert_close(&format!("{what}: d_weight"), &d_weight, &want_d_weight, abs, rel);
            }
        }
    }
}

fn chunk_choice(vocab: usize, which: usize) -> usize {
    [1, 7, 64, vocab + 5][which]
}

/// No token blocks, blocks of 1 or 5 tokens, or one block of every token.
fn token_block_choice(tokens: usize, which: usize) -> usize {
    [0, 1, 5, tokens][which]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn f32_head_matches_the_materialized_reference(
        tokens in 1usize..40,
        hidden in 1usize..70,
        vocab in 1usize..300,
        which in 0usize..4,
        ignore_every in 0usize..4,
        block in 0usize..4,
        seed in any::<u64>(),
    ) {
        let chunk = chunk_choice(vocab, which);
        let mut p = Problem::<f32>::new((tokens, hidden, vocab), chunk, seed, ignore_every, 1.0);
        p.shape = p.shape.with_token_block(token_block_choice(tokens, block));
        for k in every_isa() {
            check(&k, &p, 0.75, TOLERANCE);
        }
    }

    #[test]
    fn half_precision_heads_match_the_reference(
        tokens in 1usize..24,
        hidden in 1usize..40,
        vocab in 1usize..200,
        which in 0usize..4,
        seed in any::<u64>(),
    ) {
        let chunk = chunk_choice(vocab, which);
        let p = Problem::<f16>::new((tokens, hidden, vocab), chunk, seed, 3, 1.0);
        let q = Problem::<bf16>::new((tokens, hidden, vocab), chunk, seed, 3, 1.0);
        for k in every_isa() {
            check(&k, &p, 1.0, TOLERANCE);
            check(&k, &q, 1.0, TOLERANCE);
        }
    }
}

#[test]
fn a_single_chunk_or_a_chunk_per_entry_give_the_same_results() {
    for chunk in [1, 2, 5, 64, 1000] {
        for block in [0, 1, 4, 9] {
            let mut p = Problem::<f32>::new((9, 33, 71), chunk, 7, 4, 1.0);
            p.shape = p.shape.with_token_block(block);
            for k in every_isa() {
                check(&k, &p, 1.0, TOLERANCE);
            }
        }
    }
}

#[test]
fn logits_beyond_the_range_of_exp_stay_finite() {
    // Values up to ±6 over 64 features: logits in the hundreds, where exp(l) overflows f32.
    let p = Problem::<f32>::new((11, 64, 97), 16, 99, 5, 6.0);
    let want = reference(&p, 1.0);
    let largest = want.lse.iter().cloned().fold(0.0, f64::max);
    assert!(largest > 150.0, "the test needs large logits (largest lse {largest})");
    // The loss is hundreds of nats: compare relatively; gradients are g·(p − y)·W with |W| ≤ 6.
    let tol = Tolerance { value: (1e-3, 1e-5), grad: (2e-5, 1e-4) };
    for k in every_isa() {
        check(&k, &p, 1.0, tol);
        let blocks = Problem { shape: p.shape.with_token_block(4), ..p.clone() };
        check(&k, &blocks, 1.0, tol);
        check_full_on_threads(&k, &blocks, 2, tol);
    }
}

#[test]
fn confidently_predicted_labels_keep_their_small_gradients_accurate() {
    // Each hidden state points along its label's weight row: the label's logit is tens above
    // the others, p(label) is within 1e-8 of 1 and the gradients are below 1e-9. The fused
    // LoRA path subtracts the label's weight row from the probability-weighted rows at the end
    // (a cancellation); its absolute error must stay at f32 rounding of g·|W|, as the separate
    // backward's does (its p − 1 is rounded in f32 as well).
    let mut p = Problem::<f32>::new((13, 48, 150), 32, 77, 0, 1.0);
    let (_, h, _) = p.dims();
    for (i, row) in p.hidden.chunks_exact_mut(h).enumerate() {
        let y = p.labels[i] as usize;
        for (x, &w) in row.iter_mut().zip(&p.weight[y * h..(y + 1) * h]) {
            *x = 3.0 * w + 0.1 * *x;
        }
    }
    let want = reference(&p, 1.0);
    assert!(want.loss < 1e-6, "the labels should be predicted confidently (loss {})", want.loss);
    // |W| ≤ 1; g = 1/13: a few f32 epsilons of g·|W| is about 1e-8.
    let tol = Tolerance { value: (1e-6, 1e-5), grad: (1e-7, 1e-3) };
    for k in every_isa() {
        check(&k, &p, 1.0, tol);
        let blocks = Problem { shape: p.shape.with_token_block(5), ..p.clone() };
        check(&k, &blocks, 1.0, tol);
        check_full_on_threads(&k, &blocks, 2, tol);
    }
}

#[test]
fn all_tokens_ignored_give_zero_loss_and_zero_gradients() {
    let mut p = Problem::<f32>::new((6, 10, 30), 7, 3, 0, 1.0);
    p.labels.fill(IGNORE_INDEX);
    for k in every_isa() {
        for separate in [true, false] {
            for with_d_weight in [true, false] {
                let (got, lse) = run(&k, &p, 1.0, separate, with_d_weight, &Sequential);
                assert_eq!(got.value, LossValue { loss: 0.0, valid_tokens: 0 }, "{}", k.isa());
                assert!(got.d_hidden.iter().all(|&d| d == 0.0), "{}: d_hidden not zero", k.isa());
                if let Some(d_weight) = got.d_weight {
                    assert_eq!(
                        d_weight,
                        initial_d_weight(30 * 10),
                        "{}: d_weight changed",
                        k.isa()
                    );
                }
                if let Some(lse) = lse {
                    // The log-sum-exp is still saved for every row.
                    let want = reference(&p, 1.0).lse;
                    assert_close("lse", &lse, &want, 1e-5, 1e-6);
                }
            }
        }
    }
}

#[test]
fn reference_gradients_match_finite_differences() {
    // Validates the analytic reference the other tests compare against.
    let p = Problem::<f32>::new((4, 5, 6), 6, 11, 3, 1.0);
    let dims @ (_, h, v) = p.dims();
    let (hidden, weight) = (widen(&p.hidden), p.weight_f64());
    let want = reference(&p, 1.0);
    let fd_hidden =
        finite_difference(&hidden, 1e-6, |x| reference_loss(x, &weight, &p.labels, dims));
    let fd_weight =
        finite_difference(&weight, 1e-6, |w| reference_loss(&hidden, w, &p.labels, dims));
    for (got, fd) in
        want.d_hidden.iter().zip(&fd_hidden).chain(want.d_weight.iter().zip(&fd_weight))
    {
        assert!((got - fd).abs() < 1e-8, "reference gradient {got} vs finite difference {fd}");
    }
    assert_eq!(fd_weight.len(), v * h);
}

#[test]
fn gradients_match_finite_differences_of_the_f64_loss() {
    for (dims, ignore_every) in [((3, 4, 5), 0), ((5, 3, 7), 2), ((1, 1, 2), 0)] {
        let p = Problem::<f32>::new(dims, 3, 5, ignore_every, 1.0);
        let (_, h, v) = p.dims();
        let (hidden, weight) = (widen(&p.hidden), p.weight_f64());
        let fd_hidden =
            finite_difference(&hidden, 1e-6, |x| reference_loss(x, &weight, &p.labels, dims));
        let fd_weight =
            finite_difference(&weight, 1e-6, |w| reference_loss(&hidden, w, &p.labels, dims));
        let initial = widen(&initial_d_weight(v * h));
        let fd_accumulated: Vec<f64> = initial.iter().zip(&fd_weight).map(|(a, b)| a + b).collect();
        for k in every_isa() {
            for separate in [true, false] {
                for with_d_weight in [true, false] {
                    let (got, _) = run(&k, &p, 1.0, separate, with_d_weight, &Sequential);
                    let what = format!("{} {dims:?} separate={separate}", k.isa());
                    assert_close(
                        &format!("{what}: d_hidden"),
                        &got.d_hidden,
                        &fd_hidden,
                        2e-6,
                        1e-5,
                    );
                    if let Some(d_weight) = got.d_weight {
                        assert_close(
                            &format!("{what}: d_weight"),
                            &d_weight,
                            &fd_accumulated,
                            2e-6,
                            1e-5,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn threads_give_the_same_results_as_one_thread() {
    let p = Problem::<f32>::new((37, 50, 290), 64, 21, 4, 1.0);
    let q = Problem::<bf16>::new((37, 50, 290), 100, 22, 0, 1.0);
    for k in every_isa() {
        for separate in [true, false] {
            for with_d_weight in [true, false] {
                for threads in [2, 3] {
                    let (one, lse_one) = run(&k, &p, 1.0, separate, with_d_weight, &Sequential);
                    let many = ScopedThreads(threads);
                    let (got, lse) = run(&k, &p, 1.0, separate, with_d_weight, &many);
                    let what = format!("{} on {threads} threads", k.isa());
                    assert_eq!(got.value, one.value, "{what}: loss");
                    assert_eq!(lse, lse_one, "{what}: lse");
                    assert_eq!(got.d_hidden, one.d_hidden, "{what}: d_hidden");
                    assert_eq!(got.d_weight, one.d_weight, "{what}: d_weight");
                    let (one, _) = run(&k, &q, 1.0, separate, with_d_weight, &Sequential);
                    let (got, _) = run(&k, &q, 1.0, separate, with_d_weight, &many);
                    assert_eq!(got.value, one.value, "{what} (bf16): loss");
                    assert_eq!(got.d_hidden, one.d_hidden, "{what} (bf16): d_hidden");
                    assert_eq!(got.d_weight, one.d_weight, "{what} (bf16): d_weight");
                }
            }
        }
    }
}

/// Checks the fused call with `d_weight` on `threads` threads (token blocks where the shape
/// plans them: their walkers split the vocabulary) against the reference.
fn check_full_on_threads<T: GemmRhs>(k: &Kernels, p: &Problem<T>, threads: usize, tol: Tolerance) {
    let many = ScopedThreads(threads);
    let want = reference(p, 1.0);
    let (got, _) = run(k, p, 1.0, false, true, &many);
    let what = format!("{} {:?} on {threads} threads", k.isa(), p.shape);
    let (abs, rel) = tol.value;
    assert_close(&format!("{what}: loss"), &[got.value.loss], &[want.loss], abs, rel);
    let (abs, rel) = tol.grad;
    assert_close(&format!("{what}: d_hidden"), &got.d_hidden, &want.d_hidden, abs, rel);
    let initial = widen(&initial_d_weight(p.weight.len()));
    let want_d_weight: Vec<f64> = initial.iter().zip(&want.d_weight).map(|(a, b)| a + b).collect();
    let d_weight = got.d_weight.expect("d_weight");
    assert_close(&format!("{what}: d_weight"), &d_weight, &want_d_weight, abs, rel);
}

#[test]
fn token_blocks_on_threads_match_the_reference() {
    // Chunks split unevenly between the walkers (29 chunks of 10 over 2 and 3 threads), a
    // single chunk (fewer chunks than threads), and a last block shorter than the others.
    for (chunk, block) in [(10, 16), (300, 37), (64, 5)] {
        let mut p = Problem::<f32>::new((37, 50, 290), chunk, 23, 4, 1.0);
        p.shape = p.shape.with_token_block(block);
        for k in every_isa() {
            for threads in [2, 3] {
                check_full_on_threads(&k, &p, threads, TOLERANCE);
            }
        }
    }
}

#[test]
fn walkers_whose_maxima_differ_beyond_the_range_of_exp_merge_exactly() {
    // Three head rows sit about 200 above the others for every token (hidden states positive,
    // those rows shifted by 9), at the start of the vocabulary or at its end: the walker that
    // holds them sees a max far above the other walkers', whose sums must be rescaled to the
    // common max before they are added (exp of the difference underflows to 0, never overflows).
    for high_rows_at_end in [false, true] {
        let mut p = Problem::<f32>::new((13, 50, 60), 10, 31, 4, 1.0);
        let (_, h, v) = p.dims();
        p.hidden.iter_mut().for_each(|x| *x = x.abs());
        let high = if high_rows_at_end { [v - 3, v - 2, v - 1] } else { [0, 1, 2] };
        for row in high {
            p.weight[row * h..(row + 1) * h].iter_mut().for_each(|w| *w += 9.0);
        }
        let want = reference(&p, 1.0);
        let largest = want.lse.iter().cloned().fold(0.0, f64::max);
        assert!(largest > 150.0, "the test needs far-apart maxima (largest lse {largest})");
        let tol = Tolerance { value: (1e-3, 1e-5), grad: (2e-5, 1e-4) };
        for k in every_isa() {
            for block in [4, 13] {
                let q = Problem { shape: p.shape.with_token_block(block), ..p.clone() };
                for threads in [1, 2, 3] {
                    check_full_on_threads(&k, &q, threads, tol);
                }
            }
        }
    }
}

#[test]
fn trained_head_blocks_at_gpt2_shapes_fit_16_mb_and_gemma_keeps_the_chunk_path() {
    // Each thread beyond the first adds a walker's slot: 0.3 MB where the micro-kernel reads the
    // head in place, 1 MB where it packs it (SVE), so the bound holds for the 2-core machine the
    // issue measures on every ISA.
    for k in every_isa() {
        for threads in 1..=2 {
            let shape = LmHeadLoss::new(512, 768, 50257).with_token_blocks();
            assert_eq!(shape.token_block(), 64);
            let bytes = shape.scratch_len(&k, threads) * size_of::<f32>();
            assert!(bytes < 16_000_000, "{} on {threads} threads: {bytes} bytes", k.isa());
        }
    }
    // 262144 entries leave room for 12 tokens: too thin, the chunk path runs.
    let gemma = LmHeadLoss::new(512, 640, 262_144);
    assert_eq!(gemma.with_token_blocks(), gemma);
    // Fewer tokens than a block: one block of all of them.
    assert_eq!(LmHeadLoss::new(40, 768, 50257).with_token_blocks().token_block(), 40);
}

#[test]
fn scratch_at_gpt2_shapes_is_under_16_mb() {
    for k in every_isa() {
        for threads in 1..=4 {
            let floats = k.lm_head_loss_scratch_len(512, 768, 50257, threads);
            let bytes = floats * size_of::<f32>();
            assert!(bytes < 16_000_000, "{} on {threads} threads: {bytes} bytes", k.isa());
            assert_eq!(floats, LmHeadLoss::new(512, 768, 50257).scratch_len(&k, threads));
        }
        // The logits block alone, the dominant part: 512 tokens × the default chunk.
        let chunk = LmHeadLoss::new(512, 768, 50257).chunk();
        assert!((1024..=4096).contains(&chunk), "default chunk {chunk}");
    }
}

#[test]
fn chunks_are_clamped_to_the_vocabulary() {
    let shape = LmHeadLoss::new(4, 8, 10);
    assert_eq!(shape.chunk(), 10);
    assert_eq!(shape.with_chunk(1_000).chunk(), 10);
    assert_eq!(shape.with_chunk(3).chunk(), 3);
    assert_eq!((shape.tokens(), shape.hidden(), shape.vocab()), (4, 8, 10));
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("no panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn bad_labels_panic_naming_the_label() {
    let k = Kernels::best();
    for bad in [-1, -101, 30, 31, i32::MIN, i32::MAX] {
        let mut p = Problem::<f32>::new((4, 3, 30), 8, 1, 0, 1.0);
        p.labels[2] = bad;
        let msg = panic_message(|| {
            run(&k, &p, 1.0, true, true, &Sequential);
        });
        assert!(msg.contains(&format!("label {bad} of token 2")), "{msg}");
        let msg = panic_message(|| {
            run(&k, &p, 1.0, false, false, &Sequential);
        });
        assert!(msg.contains(&format!("label {bad} of token 2")), "{msg}");
    }
}

#[test]
fn mismatched_operands_panic_naming_them() {
    let k = Kernels::best();
    let p = Problem::<f32>::new((4, 3, 30), 8, 1, 0, 1.0);
    let shape = p.shape;
    let mut scratch = vec![0.0; shape.scratch_len(&k, 1)];
    let mut lse = vec![0.0; 4];
    let msg = panic_message(|| {
        k.lm_head_loss_forward(
            &shape,
            &p.hidden[1..],
            &p.weight,
            &p.labels,
            &mut lse,
            &mut scratch,
            &Sequential,
        );
    });
    assert!(msg.contains("hidden holds 11 floats"), "{msg}");
    let msg = panic_message(|| {
        k.lm_head_loss_forward(
            &shape,
            &p.hidden,
            &p.weight[3..],
            &p.labels,
            &mut lse,
            &mut scratch,
            &Sequential,
        );
    });
    assert!(msg.contains("weight holds 87 elements"), "{msg}");
    let msg = panic_message(|| {
        k.lm_head_loss_forward(
            &shape,
            &p.hidden,
            &p.weight,
            &p.labels[1..],
            &mut lse,
            &mut scratch,
            &Sequential,
        );
    });
    assert!(msg.contains("labels holds 3 entries"), "{msg}");
    let msg = panic_message(|| {
        k.lm_head_loss_forward(
            &shape,
            &p.hidden,
            &p.weight,
            &p.labels,
            &mut lse[1..],
            &mut scratch,
            &Sequential,
        );
    });
    assert!(msg.contains("lse holds 3 floats"), "{msg}");
    let short = scratch.len() - 1;
    let msg = panic_message(|| {
        k.lm_head_loss_forward(
            &shape,
            &p.hidden,
            &p.weight,
            &p.labels,
            &mut lse,
            &mut scratch[..short],
            &Sequential,
        );
    });
    assert!(msg.contains("scratch holds"), "{msg}");
    let mut d_hidden = vec![0.0; 12];
    let mut d_weight = vec![0.0; 90];
    let msg = panic_message(|| {
        k.lm_head_loss_forward_backward(
            &shape,
            &p.hidden,
            &p.weight,
            &p.labels,
            1.0,
            &mut d_hidden[1..],
            None,
            &mut scratch,
            &Sequential,
        );
    });
    assert!(msg.contains("d_hidden holds 11 floats"), "{msg}");
    let msg = panic_message(|| {
        k.lm_head_loss_backward(
            &shape,
            &p.hidden,
            &p.weight,
            &p.labels,
            &lse,
            1.0,
            &mut d_hidden,
            Some(&mut d_weight[2..]),
            &mut scratch,
            &Sequential,
        );
    });
    assert!(msg.contains("d_weight holds 88 floats"), "{msg}");
    // Nothing was written by the calls that panicked.
    assert!(d_hidden.iter().chain(&d_weight).all(|&x| x == 0.0));
}

#[test]
#[should_panic(expected = "at least one vocabulary entry")]
fn a_zero_chunk_panics() {
    let _ = LmHeadLoss::new(4, 8, 10).with_chunk(0);
}

/// A head that hands out copies of its chunks, recording which rows were asked for, and
/// fails from the `fail_at`-th call on.
struct ChunkedHead<'a, T> {
    weight: &'a [T],
    copy: Vec<T>,
    asked: Vec<(usize, usize)>,
    fail_at: usize,
}

impl<T: GemmRhs> mft_kernels::HeadRows<T> for ChunkedHead<'_, T> {
    fn rows(&mut self, first: usize, rows: usize, hidden: usize) -> Result<&[T], ()> {
        if self.asked.len() == self.fail_at {
            return Err(());
        }
        self.asked.push((first, rows));
        self.copy.clear();
        self.copy.extend_from_slice(&self.weight[first * hidden..(first + rows) * hidden]);
        Ok(&self.copy)
    }
}

/// The `_paged` calls, given the head chunk by chunk, give the same bits as the slice calls,
/// asking for each chunk once in vocabulary order; a failing head makes them return `Err`.
#[test]
fn a_paged_head_gives_the_same_bits_as_a_slice() {
    for k in every_isa() {
        for chunk in [1, 7, 64, 1000] {
            let p = Problem::<bf16>::new((9, 17, 150), chunk, 42, 3, 1.0);
            let (t, h, v) = p.dims();
            let head =
                |fail_at| ChunkedHead { weight: &p.weight, copy: vec![], asked: vec![], fail_at };
            let chunks: Vec<(usize, usize)> = (0..v)
                .step_by(p.shape.chunk())
                .map(|v0| (v0, p.shape.chunk().min(v - v0)))
                .collect();
            let mut scratch = vec![f32::NAN; p.shape.scratch_len(&k, 1)];
            let what = format!("{} chunk {chunk}", k.isa());

            let (want, _) = run(&k, &p, 0.5, false, false, &Sequential);
            let mut d_hidden = vec![f32::NAN; t * h];
            let mut paged = head(usize::MAX);
            let got = k
                .lm_head_loss_forward_backward_paged(
                    &p.shape,
                    &p.hidden,
                    &mut paged,
                    &p.labels,
                    0.5,
                    &mut d_hidden,
                    &mut scratch,
                    &Sequential,
                )
                .unwrap();
            assert_eq!(got, want.value, "{what}: loss");
            assert_eq!(d_hidden, want.d_hidden, "{what}: d_hidden");
            assert_eq!(paged.asked, chunks, "{what}: chunks asked for");

            let mut lse = vec![f32::NAN; t];
            let mut want_lse = vec![f32::NAN; t];
            let want = k.lm_head_loss_forward(
                &p.shape,
                &p.hidden,
                &p.weight,
                &p.labels,
                &mut want_lse,
                &mut scratch,
                &Sequential,
            );
            let mut paged = head(usize::MAX);
            let got = k
                .lm_head_loss_forward_paged(
                    &p.shape,
                    &p.hidden,
                    &mut paged,
                    &p.labels,
                    &mut lse,
                    &mut scratch,
                    &Sequential,
                )
                .unwrap();
            assert_eq!((got, &lse), (want, &want_lse), "{what}: forward");

            let mut failing = head(chunks.len() / 2);
            let failed = k.lm_head_loss_forward_backward_paged(
                &p.shape,
                &p.hidden,
                &mut failing,
                &p.labels,
                0.5,
                &mut d_hidden,
                &mut scratch,
                &Sequential,
            );
            assert_eq!(failed, Err(()), "{what}: a failing head");
            assert_eq!(failing.asked.len(), chunks.len() / 2, "{what}: stops at the failure");
        }
    }
}
