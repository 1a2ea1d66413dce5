//! The machine's FMA peak: independent chains of fused multiply-adds in the widest vectors the
//! CPU has, timed on one or more threads. The benchmarks report GEMM throughput as a fraction of
//! it, measured in the same run (`benches/kernels.rs`, `benches/gemm.rs`, and the phone
//! benchmark `mft-bench`).

use std::hint::black_box;
use std::time::{Duration, Instant};

/// The machine's FMA peak: independent chains of fused multiply-adds in the widest vectors this
/// CPU has, enough of them to cover the FMA units' latency times their throughput.
#[derive(Debug, Clone, Copy)]
pub struct FmaPeak {
    isa: &'static str,
    flops_per_iter: f64,
    chains: unsafe fn(u64),
}

/// Independent accumulators per loop on AVX-512 (32 registers; latency 4 × 2 units needs 8).
#[cfg(target_arch = "x86_64")]
const AVX512_CHAINS: usize = 16;
/// Independent accumulators on AVX2 (16 registers: 12 chains, the two factors, two spare).
#[cfg(target_arch = "x86_64")]
const AVX2_CHAINS: usize = 12;
/// Independent accumulators on NEON (32 registers).
#[cfg(target_arch = "aarch64")]
const NEON_CHAINS: usize = 16;
/// Independent accumulators for the portable fallback.
const SCALAR_CHAINS: usize = 16;

impl FmaPeak {
    /// The widest FMA this CPU runs: AVX-512F, AVX2+FMA, NEON, else a portable multiply-add.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return FmaPeak {
                    isa: "avx512",
                    flops_per_iter: (AVX512_CHAINS * 16 * 2) as f64,
                    chains: chains_avx512,
                };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return FmaPeak {
                    isa: "avx2",
                    flops_per_iter: (AVX2_CHAINS * 8 * 2) as f64,
                    chains: chains_avx2,
                };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                return FmaPeak {
                    isa: "neon",
                    flops_per_iter: (NEON_CHAINS * 4 * 2) as f64,
                    chains: chains_neon,
                };
            }
        }
        FmaPeak { isa: "scalar", flops_per_iter: (SCALAR_CHAINS * 2) as f64, chains: chains_scalar }
    }

    /// The instruction set the loop uses.
    pub fn isa(&self) -> &'static str {
        self.isa
    }

    /// Floating-point operations of `iters` loop iterations on one thread.
    pub fn flops(&self, iters: u64) -> f64 {
        self.flops_per_iter * iters as f64
    }

    /// Run `iters` iterations on each of `threads` threads at once; the wall time of it all.
    pub fn time(&self, iters: u64, threads: usize) -> Duration {
        let chains = self.chains;
        let start = Instant::now();
        std::thread::scope(|scope| {
            for _ in 1..threads {
                // SAFETY: `detect` chose `chains` for an instruction set this CPU supports.
                scope.spawn(move || unsafe { chains(black_box(iters)) });
            }
            // SAFETY: as above.
            unsafe { chains(black_box(iters)) }
        });
        start.elapsed()
    }

    /// GFLOP/s of `iters` iterations on each of `threads` threads.
    pub fn gflops(&self, iters: u64, threads: usize) -> f64 {
        let seconds = self.time(iters, threads).as_secs_f64();
        self.flops(iters) * threads as f64 / seconds / 1e9
    }

    /// Iterations that take about `target` on one thread.
    pub fn calibrate(&self, target: Duration) -> u64 {
        let mut iters = 1 << 14;
        loop {
            let took = self.time(iters, 1);
            if took >= Duration::from_millis(20) || iters >= 1 << 40 {
                let scale = target.as_secs_f64() / took.as_secs_f64().max(1e-9);
                return ((iters as f64 * scale) as u64).max(1);
            }
            iters *= 4;
        }
    }
}

/// `iters` rounds of `AVX512_CHAINS` independent `acc = acc·x + y` chains, 16 lanes each.
///
/// # Safety
/// The CPU supports AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_avx512(iters: u64) {
    use std::arch::x86_64::{_mm512_fmadd_ps, _mm512_set1_ps};
    // x < 1 and y > 0: every chain converges to y / (1 − x), far from overflow and subnormals.
    let x = _mm512_set1_ps(black_box(0.999));
    let y = _mm512_set1_ps(black_box(0.001));
    let mut acc = [_mm512_set1_ps(black_box(0.0)); AVX512_CHAINS];
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    black_box(acc);
}

/// `iters` rounds of `AVX2_CHAINS` independent `acc = acc·x + y` chains, 8 lanes each.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2(iters: u64) {
    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_set1_ps};
    let x = _mm256_set1_ps(black_box(0.999));
    let y = _mm256_set1_ps(black_box(0.001));
    let mut acc = [_mm256_set1_ps(black_box(0.0)); AVX2_CHAINS];
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    black_box(acc);
}

/// `iters` rounds of `NEON_CHAINS` independent `acc = y + acc·x` chains, 4 lanes each.
///
/// # Safety
/// The CPU supports NEON.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn chains_neon(iters: u64) {
    use std::arch::aarch64::{vdupq_n_f32, vfmaq_f32};
    let x = vdupq_n_f32(black_box(0.999));
    let y = vdupq_n_f32(black_box(0.001));
    let mut acc = [vdupq_n_f32(black_box(0.0)); NEON_CHAINS];
    for _ in 0..iters {
        for a in &mut acc {
            *a = vfmaq_f32(y, *a, x);
        }
    }
    black_box(acc);
}

/// `iters` rounds of `SCALAR_CHAINS` independent multiply-add chains (no FMA instruction is
/// assumed: a multiply and an add, two FLOPs).
///
/// # Safety
/// None needed; `unsafe` only to share the signature of the SIMD loops.
unsafe fn chains_scalar(iters: u64) {
    let x = black_box(0.999f32);
    let y = black_box(0.001f32);
    let mut acc = [black_box(0.0f32); SCALAR_CHAINS];
    for _ in 0..iters {
        for a in &mut acc {
            *a = *a * x + y;
        }
    }
    black_box(acc);
}
