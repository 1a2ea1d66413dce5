//! Causal self-attention, forward + backward, at GPT-2 small's geometry (batch 4, 12 heads,
//! head_dim 64) for T = 128, 512, 1024 on 1 and 2 threads, side by side with our GEMM.
//!
//! Work counted: the six products over the visible (causal) scores only — forward `Q·Kᵀ` and
//! `P·V`, backward `Pᵀ·dO`, `dO·Vᵀ`, `dS·K`, `dSᵀ·Q` — `2·head_dim` FLOPs each per visible
//! score (`T(T+1)/2` per head). The backward's recomputation of `Q·Kᵀ`, the masked halves of the
//! diagonal tiles and the softmax are not counted. The reference is our GEMM on the same
//! threads, measured in the same run, interleaved sample by sample with the attention: a
//! 512×512×64 `A·Bᵀ` product (one head's `Q·Kᵀ` at T = 512, the size of the attention's
//! products) and, for context, GPT-2's `c_attn` (512×2304×768, `A·B`).
//!
//! `cargo bench -p mft-benches --bench attention [-- --reps N --seq 128,512 --threads 1,2
//! --no-gemm]`: prints, per row, the median
//! time of a forward + backward and its range, the counted GFLOP/s (median and range), the same
//! for the GEMMs, and the ratio of the medians.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use mft_kernels::attention::{AttentionGrads, AttentionInputs, AttentionShape};
use mft_kernels::{Gemm, Kernels, Mat, MatMut, Parallel, Sequential};
use mft_std::ThreadPool;

use common::{Stats, random_values};

/// One attention problem with its buffers.
struct Attention {
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

impl Attention {
    fn new(kern: &Kernels, shape: AttentionShape, threads: usize) -> Self {
        let scratch = kern
            .attention_forward_scratch_len(&shape, threads)
            .max(kern.attention_backward_scratch_len(&shape, threads));
        Attention {
            shape,
            q: random_values(shape.q_len(), 1),
            k: random_values(shape.kv_len(), 2),
            v: random_values(shape.kv_len(), 3),
            out: vec![0.0; shape.q_len()],
            lse: vec![0.0; shape.lse_len()],
            d_out: random_values(shape.q_len(), 4),
            dq: vec![0.0; shape.q_len()],
            dk: vec![0.0; shape.kv_len()],
            dv: vec![0.0; shape.kv_len()],
            scratch: vec![0.0; scratch],
        }
    }

    /// Counted FLOPs of the forward (2 products) and the backward (4).
    fn flops(&self) -> (f64, f64) {
        let per_product = 2.0 * self.shape.head_dim as f64 * self.shape.visible_pairs() as f64;
        (2.0 * per_product, 4.0 * per_product)
    }

    /// Seconds of one forward and one backward.
    fn run(&mut self, kern: &Kernels, parallel: &dyn Parallel) -> (f64, f64) {
        let x = AttentionInputs { q: &self.q, k: &self.k, v: &self.v, key_mask: None };
        let start = Instant::now();
        kern.attention_forward(
            &self.shape,
            x,
            &mut self.out,
            &mut self.lse,
            &mut self.scratch,
            parallel,
        );
        let forward = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let grads = AttentionGrads { dq: &mut self.dq, dk: &mut self.dk, dv: &mut self.dv };
        kern.attention_backward(
            &self.shape,
            x,
            &self.out,
            &self.lse,
            &self.d_out,
            grads,
            &mut self.scratch,
            parallel,
        );
        let backward = start.elapsed().as_secs_f64();
        black_box((&self.dq, &self.dk, &self.dv));
        (forward, backward)
    }
}

/// One GEMM problem, `C (m×n) = A (m×k) · B`, with B given as `Bᵀ` (n×k) when `b_transposed`.
struct GemmProblem {
    m: usize,
    n: usize,
    k: usize,
    b_transposed: bool,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    scratch: Vec<f32>,
    name: &'static str,
}

impl GemmProblem {
    fn new(gemm: &Gemm, (m, n, k): (usize, usize, usize), b_t: bool, name: &'static str) -> Self {
        GemmProblem {
            m,
            n,
            k,
            b_transposed: b_t,
            a: random_values(m * k, 5),
            b: random_values(k * n, 6),
            c: vec![0.0; m * n],
            scratch: vec![0.0; gemm.scratch_len(m, n, k, 2)],
            name,
        }
    }

    fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }

    fn run(&mut self, gemm: &Gemm, parallel: &dyn Parallel) {
        let (m, n, k) = (self.m, self.n, self.k);
        let b = if self.b_transposed {
            Mat::row_major(&self.b, n, k, k).t()
        } else {
            Mat::row_major(&self.b, k, n, n)
        };
        let c = MatMut::row_major(&mut self.c, m, n, n);
        gemm.run(1.0, Mat::row_major(&self.a, m, k, k), b, 0.0, c, &mut self.scratch, parallel);
        black_box(&self.c);
    }

    /// GFLOP/s of one sample: enough calls to last about 30 ms.
    fn sample(&mut self, gemm: &Gemm, parallel: &dyn Parallel) -> f64 {
        let start = Instant::now();
        self.run(gemm, parallel);
        let one = start.elapsed().as_secs_f64();
        let calls = ((0.03 / one.max(1e-9)).ceil() as usize).clamp(1, 10_000);
        let start = Instant::now();
        for _ in 0..calls {
            self.run(gemm, parallel);
        }
        self.flops() * calls as f64 / start.elapsed().as_secs_f64() / 1e9
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut reps = 9;
    let mut seqs = vec![128, 512, 1024];
    let mut thread_counts = vec![1, 2];
    let mut with_gemm = true;
    let list = |value: Option<String>| -> Vec<usize> {
        let value = value.expect("a comma-separated list");
        value.split(',').map(|v| v.trim().parse().expect("a number")).collect()
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reps" => reps = args.next().and_then(|r| r.parse().ok()).expect("--reps N"),
            "--seq" => seqs = list(args.next()),
            "--threads" => thread_counts = list(args.next()),
            "--no-gemm" => with_gemm = false,
            _ => {}
        }
    }
    let kern = Kernels::best();
    let gemm = *kern.gemm();
    println!(
        "causal attention fwd+bwd, batch 4, 12 heads, head_dim 64 ({} kernels, tiles {}×{})",
        kern.isa(),
        mft_kernels::attention::BR,
        mft_kernels::attention::BC
    );
    println!(
        "{reps} interleaved samples per row; median (min–max). GFLOP/s count only the 6 products \
         over visible scores"
    );
    for &threads in &thread_counts {
        let pool = (threads > 1).then(|| ThreadPool::new(threads).expect("thread pool"));
        let parallel: &dyn Parallel = match &pool {
            Some(pool) => pool,
            None => &Sequential,
        };
        let mut gemms = if with_gemm {
            vec![
                GemmProblem::new(&gemm, (512, 512, 64), true, "512×512×64 A·Bᵀ"),
                GemmProblem::new(&gemm, (512, 2304, 768), false, "512×2304×768 A·B (c_attn)"),
            ]
        } else {
            Vec::new()
        };
        for &seq in &seqs {
            let shape = AttentionShape::new(4, seq, 12, 12, 64);
            let mut attn = Attention::new(&kern, shape, threads);
            let (fwd_flops, bwd_flops) = attn.flops();
            attn.run(&kern, parallel); // warm up
            let (mut fwd, mut bwd, mut total) = (Vec::new(), Vec::new(), Vec::new());
            let mut gemm_rates = vec![Vec::new(); gemms.len()];
            for _ in 0..reps {
                // Enough calls that a sample lasts at least ~30 ms.
                let (mut f_sum, mut b_sum, mut calls) = (0.0, 0.0, 0);
                while f_sum + b_sum < 0.03 || calls == 0 {
                    let (f, b) = attn.run(&kern, parallel);
                    f_sum += f;
                    b_sum += b;
                    calls += 1;
                }
                let n = calls as f64;
                fwd.push(fwd_flops * n / f_sum / 1e9);
                bwd.push(bwd_flops * n / b_sum / 1e9);
                total.push((f_sum + b_sum) / n);
                for (g, rates) in gemms.iter_mut().zip(&mut gemm_rates) {
                    rates.push(g.sample(&gemm, parallel));
                }
            }
            let time = Stats::of(&total);
            let rate: Vec<f64> = total.iter().map(|t| (fwd_flops + bwd_flops) / t / 1e9).collect();
            let rate = Stats::of(&rate);
            let (fwd, bwd) = (Stats::of(&fwd), Stats::of(&bwd));
            println!(
                "\n{threads} thread(s), T = {seq}: fwd+bwd {:.2} ms ({:.2}–{:.2}), \
                 {:.1} GFLOP/s ({:.1}–{:.1}) [fwd {:.1}, bwd {:.1}]",
                time.median * 1e3,
                time.min * 1e3,
                time.max * 1e3,
                rate.median,
                rate.min,
                rate.max,
                fwd.median,
                bwd.median
            );
            for (g, rates) in gemms.iter().zip(&gemm_rates) {
                let s = Stats::of(rates);
                println!(
                    "  GEMM {}: {:.1} GFLOP/s ({:.1}–{:.1}); attention ÷ GEMM = {:.2}",
                    g.name,
                    s.median,
                    s.min,
                    s.max,
                    rate.median / s.median
                );
            }
        }
    }
}
