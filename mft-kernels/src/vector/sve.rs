//! aarch64 SVE vector kernels, vector-length agnostic: a `whilelo` predicate covers the tail, so
//! one loop is correct at every vector length from 128 to 2048 bits.
//!
//! Written with `asm!` in small leaf functions rather than C with `arm_sve.h` through `cc`:
//! stable Rust has the `sve` target feature and its run-time detection but not the intrinsics,
//! and `asm!` keeps the crate pure Rust, so it builds for bare-metal targets (`aarch64-unknown-none`)
//! and cross-compiles without an SVE-capable C toolchain.

use core::arch::asm;

/// Bytes in one SVE vector register (16 to 256).
///
/// # Safety
/// The CPU must support SVE.
#[target_feature(enable = "sve")]
pub(crate) unsafe fn vector_bytes() -> usize {
    let bytes: usize;
    // SAFETY: `cntb` only reads the vector length; the caller guarantees SVE.
    unsafe { asm!("cntb {bytes}", bytes = out(reg) bytes, options(pure, nomem, nostack)) };
    bytes
}

/// # Safety
/// The CPU must support SVE; `a` and `b` must have equal lengths.
#[target_feature(enable = "sve")]
pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let sum: f32;
    // SAFETY: loads are predicated by `whilelo i < n`, so no lane past either slice is read.
    unsafe {
        asm!(
            "mov {i}, #0",
            "mov z0.s, #0",
            "whilelo p0.s, {i}, {n}",
            "b.none 2f",
            "1:",
            "ld1w {{ z1.s }}, p0/z, [{a}, {i}, lsl #2]",
            "ld1w {{ z2.s }}, p0/z, [{b}, {i}, lsl #2]",
            "fmla z0.s, p0/m, z1.s, z2.s",
            "incw {i}",
            "whilelo p0.s, {i}, {n}",
            "b.first 1b",
            "2:",
            "ptrue p1.s",
            "faddv {sum:s}, p1, z0.s",
            a = in(reg) a.as_ptr(),
            b = in(reg) b.as_ptr(),
            n = in(reg) a.len(),
            i = out(reg) _,
            sum = lateout(vreg) sum,
            out("v0") _, out("v1") _, out("v2") _, out("p0") _, out("p1") _,
            options(readonly, nostack),
        );
    }
    sum
}

/// # Safety
/// The CPU must support SVE; `x` and `y` must have equal lengths.
#[target_feature(enable = "sve")]
pub(super) unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    // SAFETY: loads and stores are predicated by `whilelo i < n`, so no lane past either slice is
    // touched.
    unsafe {
        asm!(
            "mov {i}, #0",
            "mov z3.s, {alpha:s}",
            "whilelo p0.s, {i}, {n}",
            "b.none 2f",
            "1:",
            "ld1w {{ z1.s }}, p0/z, [{x}, {i}, lsl #2]",
            "ld1w {{ z2.s }}, p0/z, [{y}, {i}, lsl #2]",
            "fmla z2.s, p0/m, z1.s, z3.s",
            "st1w {{ z2.s }}, p0, [{y}, {i}, lsl #2]",
            "incw {i}",
            "whilelo p0.s, {i}, {n}",
            "b.first 1b",
            "2:",
            x = in(reg) x.as_ptr(),
            y = in(reg) y.as_mut_ptr(),
            n = in(reg) x.len(),
            alpha = in(vreg) alpha,
            i = out(reg) _,
            out("v1") _, out("v2") _, out("v3") _, out("p0") _,
            options(nostack),
        );
    }
}
