//! criterion benchmarks of our GEMM against the `gemm`, `matrixmultiply` and `faer` crates at the
//! GPT-2-small shapes (512 tokens; forward X·W, backward dY·Wᵀ and Xᵀ·dY of every linear layer),
//! on 1 and 2 threads, and the machine's FMA peak on 1 and 2 threads. Throughput is in FLOPs
//! (criterion prints them as "elem/s").
//!
//! `matrixmultiply` reads its thread count once per process from `MATMUL_NUM_THREADS`; this bench
//! sets it to 1 when unset, so it appears in the 1-thread groups only. Run with
//! `MATMUL_NUM_THREADS=2 cargo bench -p mft-benches --bench gemm -- _t2` for its 2-thread figures.
//! For ratios measured side by side in one run, use `cargo xtask bench kernels` instead.
#![allow(missing_docs)] // criterion's macros generate undocumented items

#[path = "common/mod.rs"]
mod common;

use std::time::Duration;

use common::{Impl, Problem, Runner, Shape};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use mft_benches::peak::FmaPeak;

/// Thread counts measured.
const THREADS: [usize; 2] = [1, 2];

fn gemm_shapes(c: &mut Criterion) {
    let mm_threads = common::matrixmultiply_threads().unwrap_or(1);
    for shape in Shape::all(true) {
        let mut problem = Problem::new(shape);
        for threads in THREADS {
            let mut runner = Runner::new(threads);
            let mut group = c.benchmark_group(format!("gemm_{}_t{threads}", shape.id()));
            group.sample_size(10);
            group.sampling_mode(SamplingMode::Flat);
            group.warm_up_time(Duration::from_millis(300));
            // About ten calls at ~100 GFLOP/s, at least a second: the LM-head shapes are
            // ~40 GFLOP a call.
            let seconds = (shape.flops() / 100e9 * 10.0 / threads as f64).max(1.0);
            group.measurement_time(Duration::from_secs_f64(seconds));
            group.throughput(Throughput::Elements(shape.flops() as u64));
            for which in Impl::ALL {
                if which == Impl::MatrixMultiply && threads != mm_threads {
                    continue;
                }
                let Problem { a, b, c: out, .. } = &mut problem;
                group.bench_function(BenchmarkId::from_parameter(which.name()), |bench| {
                    bench.iter(|| runner.run(which, &shape, a, b, out))
                });
            }
            group.finish();
        }
    }
}

fn fma_peak(c: &mut Criterion) {
    let peak = FmaPeak::detect();
    let iters = peak.calibrate(Duration::from_millis(10));
    let mut group = c.benchmark_group(format!("fma_peak_{}", peak.isa()));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    for threads in THREADS {
        group.throughput(Throughput::Elements((peak.flops(iters) * threads as f64) as u64));
        group.bench_function(BenchmarkId::new("threads", threads), |bench| {
            bench.iter(|| peak.time(iters, threads))
        });
    }
    group.finish();
}

criterion_group!(benches, fma_peak, gemm_shapes);

fn main() {
    if common::matrixmultiply_threads().is_none() {
        // SAFETY: no other thread exists yet (criterion and the pools start below), so nothing
        // reads the environment concurrently.
        unsafe { std::env::set_var("MATMUL_NUM_THREADS", "1") };
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
