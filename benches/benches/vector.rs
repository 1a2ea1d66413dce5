//! Vector kernels per ISA against the scalar version, at a size that fits in L1.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mft_kernels::{Isa, VectorKernels};
use std::hint::black_box;

fn dot(c: &mut Criterion) {
    let n = 4096;
    let a: Vec<f32> = (0..n).map(|i| (i % 17) as f32 * 0.25).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.5).collect();
    let mut group = c.benchmark_group("dot_4096");
    group.throughput(Throughput::Elements(n as u64));
    for kernels in Isa::supported().filter_map(VectorKernels::for_isa) {
        group.bench_function(kernels.isa().name(), |bench| {
            bench.iter(|| kernels.dot(black_box(&a), black_box(&b)))
        });
    }
    group.finish();
}

criterion_group!(benches, dot);
criterion_main!(benches);
