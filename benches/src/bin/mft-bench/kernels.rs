//! The kernel rows of `mft-bench`: our GEMM's GFLOP/s at GPT-2-small shapes (forward, and the
//! two backward products of the MLP's first layer) on one thread and on `--threads`, each next
//! to the FMA peak measured on as many threads in the same run.
//!
//! Every GEMM is checked before it is timed: sampled entries of C against a float64 dot product
//! of A's row and B's column. A wrong result stops the benchmark; it is never timed.

use std::time::Instant;

use mft_benches::peak::FmaPeak;
use mft_benches::random_values;
use mft_kernels::{Gemm, Mat, MatMut, Parallel, Sequential};
use mft_std::ThreadPool;
use serde_json::{Value, json};

use crate::Options;
use crate::machine::{self, Pinning};

/// Largest accepted `max |C − reference| / max |reference|` over the sampled entries.
const TOLERANCE: f64 = 1e-3;

/// Which product of a linear layer.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// `Y = X·W`.
    Forward,
    /// `dX = dY·Wᵀ`.
    BackwardData,
    /// `dW = Xᵀ·dY`.
    BackwardWeight,
}

/// One GEMM row: a layer of GPT-2 small and one of its products.
#[derive(Debug, Clone, Copy)]
struct Shape {
    layer: &'static str,
    op: Op,
    tokens: usize,
    k_in: usize,
    n_out: usize,
}

impl Shape {
    /// `(m, n, k)`: C is m×n, the inner dimension k.
    fn mnk(&self) -> (usize, usize, usize) {
        match self.op {
            Op::Forward => (self.tokens, self.n_out, self.k_in),
            Op::BackwardData => (self.tokens, self.k_in, self.n_out),
            Op::BackwardWeight => (self.k_in, self.n_out, self.tokens),
        }
    }

    fn name(&self) -> String {
        let tag = match self.op {
            Op::Forward => "fwd",
            Op::BackwardData => "dX",
            Op::BackwardWeight => "dW",
        };
        format!("{} {tag}", self.layer)
    }

    fn formula(&self) -> &'static str {
        match self.op {
            Op::Forward => "A·B",
            Op::BackwardData => "A·Bᵀ",
            Op::BackwardWeight => "Aᵀ·B",
        }
    }

    fn flops(&self) -> f64 {
        let (m, n, k) = self.mnk();
        2.0 * (m * n * k) as f64
    }
}

/// The shapes measured: GPT-2 small at 512 tokens, or (quick) two small ones.
fn shapes(quick: bool) -> Vec<Shape> {
    let s = |layer, op, tokens, k_in, n_out| Shape { layer, op, tokens, k_in, n_out };
    if quick {
        return vec![
            s("attn.c_proj", Op::Forward, 32, 768, 768),
            s("mlp.c_fc", Op::BackwardWeight, 32, 768, 768),
        ];
    }
    vec![
        s("attn.c_attn", Op::Forward, 512, 768, 2304),
        s("attn.c_proj", Op::Forward, 512, 768, 768),
        s("mlp.c_fc", Op::Forward, 512, 768, 3072),
        s("mlp.c_proj", Op::Forward, 512, 3072, 768),
        s("mlp.c_fc", Op::BackwardData, 512, 768, 3072),
        s("mlp.c_fc", Op::BackwardWeight, 512, 768, 3072),
    ]
}

/// A shape's operands as the layer stores them, and C.
struct Problem {
    shape: Shape,
    /// X or dY (tokens × K or tokens × N), row-major.
    a: Vec<f32>,
    /// W (K × N) or dY (tokens × N), row-major.
    b: Vec<f32>,
    c: Vec<f32>,
    scratch: Vec<f32>,
}

impl Problem {
    fn new(shape: Shape) -> Problem {
        let (m, n, k) = shape.mnk();
        Problem {
            shape,
            a: random_values(m * k, 0x9e37_79b9_7f4a_7c15),
            b: random_values(k * n, 0xd1b5_4a32_d192_ed03),
            c: vec![f32::NAN; m * n],
            scratch: Vec::new(),
        }
    }

    /// A (m×k) as a view of what is stored.
    fn a_view(&self) -> Mat<'_, f32> {
        let (m, _, k) = self.shape.mnk();
        match self.shape.op {
            Op::Forward | Op::BackwardData => Mat::row_major(&self.a, m, k, k),
            // Xᵀ: X is tokens (k) × K (m).
            Op::BackwardWeight => Mat::row_major(&self.a, k, m, m).t(),
        }
    }

    /// B (k×n) as a view of what is stored.
    fn b_view(&self) -> Mat<'_, f32> {
        let (_, n, k) = self.shape.mnk();
        match self.shape.op {
            Op::Forward | Op::BackwardWeight => Mat::row_major(&self.b, k, n, n),
            // Wᵀ: W is K (n) × N (k).
            Op::BackwardData => Mat::row_major(&self.b, n, k, k).t(),
        }
    }

    fn a_at(&self, i: usize, p: usize) -> f32 {
        let (m, _, k) = self.shape.mnk();
        match self.shape.op {
            Op::Forward | Op::BackwardData => self.a[i * k + p],
            Op::BackwardWeight => self.a[p * m + i],
        }
    }

    fn b_at(&self, p: usize, j: usize) -> f32 {
        let (_, n, k) = self.shape.mnk();
        match self.shape.op {
            Op::Forward | Op::BackwardWeight => self.b[p * n + j],
            Op::BackwardData => self.b[j * k + p],
        }
    }

    /// `C = A·B` with our GEMM.
    fn run(&mut self, gemm: &Gemm, parallel: &dyn Parallel) {
        let (m, n, k) = self.shape.mnk();
        let needed = gemm.scratch_len(m, n, k, parallel.threads());
        if self.scratch.len() < needed {
            self.scratch.resize(needed, 0.0);
        }
        let mut c = std::mem::take(&mut self.c);
        let mut scratch = std::mem::take(&mut self.scratch);
        gemm.run(
            1.0,
            self.a_view(),
            self.b_view(),
            0.0,
            MatMut::row_major(&mut c, m, n, n),
            &mut scratch,
            parallel,
        );
        self.c = c;
        self.scratch = scratch;
    }

    /// The error of 64 sampled entries of C against float64 dot products.
    fn check(&self) -> f64 {
        let (m, n, k) = self.shape.mnk();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let (mut worst, mut scale) = (0f64, 0f64);
        for _ in 0..64 {
            let (i, j) = (next(m), next(n));
            let want: f64 =
                (0..k).map(|p| f64::from(self.a_at(i, p)) * f64::from(self.b_at(p, j))).sum();
            let got = f64::from(self.c[i * n + j]);
            let diff = (got - want).abs();
            worst = if diff.is_nan() { f64::INFINITY } else { worst.max(diff) };
            scale = scale.max(want.abs());
        }
        if scale == 0.0 { worst } else { worst / scale }
    }
}

/// Median, least and greatest.
fn stats(samples: &[f64]) -> (f64, f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    (median, sorted[0], sorted[n - 1])
}

/// The `kernels` object of the document.
pub fn run(o: &Options, pinning: &Pinning) -> Result<Value, String> {
    let gemm = Gemm::best();
    let peak = FmaPeak::detect();
    let runs = if o.quick { 3 } else { 5 };
    let peak_seconds = if o.quick { 0.02 } else { 0.2 };
    let iters = peak.calibrate(std::time::Duration::from_secs_f64(peak_seconds));
    let mut thread_counts = vec![1];
    if o.threads > 1 {
        thread_counts.push(o.threads);
    }
    let mut rows = Vec::new();
    for &threads in &thread_counts {
        // One thread runs on the profile's fastest core when it names one.
        let single = (threads == 1 && pinning.applied).then_some(o.single_cpu).flatten();
        if let Some(cpu) = single {
            machine::set_affinity(&[cpu]).map_err(|e| format!("pinning to core {cpu}: {e}"))?;
        }
        let pool = (threads > 1).then(|| ThreadPool::new(threads)).transpose();
        let pool = pool.map_err(|e| format!("a pool of {threads} threads: {e}"))?;
        let parallel: &dyn Parallel = match &pool {
            Some(pool) => pool,
            None => &Sequential,
        };
        let peaks: Vec<f64> = (0..3).map(|_| peak.gflops(iters, threads)).collect();
        let (peak_gflops, _, _) = stats(&peaks);
        eprintln!(
            "mft-bench: FMA peak ({}) on {threads} thread(s): {peak_gflops:.1} GFLOP/s",
            peak.isa()
        );
        rows.push(json!({
            "name": "fma_peak", "threads": threads, "cpu": single, "gflops": peak_gflops,
            "gflops_min": stats(&peaks).1, "gflops_max": stats(&peaks).2, "runs": peaks.len(),
        }));
        for shape in shapes(o.quick) {
            let mut problem = Problem::new(shape);
            problem.run(&gemm, parallel);
            let error = problem.check();
            if error.is_nan() || error > TOLERANCE {
                return Err(format!(
                    "GEMM {} ({}, {:?}) on {threads} thread(s) is wrong: relative error {error:e} \
                     against float64 (tolerance {TOLERANCE:e}); not timed",
                    shape.name(),
                    shape.formula(),
                    shape.mnk()
                ));
            }
            let samples: Vec<f64> = (0..runs)
                .map(|_| {
                    let start = Instant::now();
                    problem.run(&gemm, parallel);
                    shape.flops() / start.elapsed().as_secs_f64() / 1e9
                })
                .collect();
            let (median, min, max) = stats(&samples);
            let (m, n, k) = shape.mnk();
            eprintln!(
                "mft-bench: GEMM {} {m}×{n}×{k} on {threads} thread(s): {median:.1} GFLOP/s \
                 ({:.0}% of peak)",
                shape.name(),
                100.0 * median / peak_gflops
            );
            rows.push(json!({
                "name": format!("gemm {}", shape.name()), "op": shape.formula(),
                "m": m, "n": n, "k": k, "threads": threads, "cpu": single,
                "gflops": median, "gflops_min": min, "gflops_max": max, "runs": runs,
                "of_peak": median / peak_gflops, "max_rel_error": error,
            }));
        }
        if single.is_some() {
            machine::set_affinity(&pinning.cpus).map_err(|e| format!("re-pinning: {e}"))?;
        }
    }
    Ok(json!({ "gemm_isa": gemm.isa().name(), "peak_isa": peak.isa(), "rows": rows }))
}
