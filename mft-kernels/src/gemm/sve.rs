//! aarch64 SVE micro-kernel, vector-length agnostic: an `8 × 2·VL` tile (8, 16, 32 … columns at
//! 128, 256, 512 … bits) held in 16 accumulators, z16–z31. Each depth step loads two B vectors,
//! loads the 8 A values as two replicated quadwords (`ld1rqw`) and issues 16 `fmla (indexed)`, so
//! the A values never need a broadcast of their own. The tile width is read once, at run time.
//!
//! Written with `asm!` in a small leaf function rather than C with `arm_sve.h` through `cc`:
//! stable Rust has the `sve` target feature and its run-time detection but not the intrinsics,
//! and `asm!` keeps the crate pure Rust, so it builds for bare-metal targets (`aarch64-unknown-none`)
//! and cross-compiles without an SVE-capable C toolchain.
//!
//! Only z0–z7 and z16–z31 are used, so none of the callee-saved `d8`–`d15` need saving.

use core::arch::asm;

use super::MicroKernel;

const MR: usize = 8;

/// The SVE micro-kernel for this CPU's vector length: `mr = 8`, `nr = 2 ×` floats per vector.
///
/// At the largest vector length SVE allows (2048 bits) the tile is 8 × 128 = 1024 floats, within
/// [`super::MAX_TILE`].
///
/// # Safety
/// The CPU must support SVE.
pub(super) unsafe fn kernel() -> MicroKernel {
    // SAFETY: the caller guarantees SVE.
    let floats = unsafe { crate::vector::sve::vector_bytes() } / 4;
    let nr = 2 * floats;
    // About 384 columns of B per block (sized for L2), rounded down to whole tiles (384 itself
    // for every power-of-two vector length up to 1024 bits).
    let nc = (384 / nr).max(1) * nr;
    MicroKernel { mr: MR, nr, kc: 256, mc: 1024, nc, run: tile, short: None, strided_a: None }
}

/// # Safety
/// See [`super::MicroKernelFn`] (the tile is `8 × 2·VL`); the CPU must support SVE.
#[target_feature(enable = "sve")]
unsafe fn tile(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    // Rows of C are `ldc` floats apart; the asm steps by bytes.
    let ldc_bytes = ldc * 4;
    // With beta == 0, C is stored without ever being loaded (it may hold NaN).
    let load_c = usize::from(beta != 0.0);
    // SAFETY: the caller guarantees SVE and that `a` holds `kc·8` floats, `b` holds `kc·2·VL`
    // floats and `c` is valid for reads and writes of 8 rows of `2·VL` floats, `ldc` apart. Each
    // depth step reads 8 floats of `a` (two quadwords) and two vectors of `b`; the epilogue
    // touches exactly two vectors per row of C, and loads them only when `beta != 0`. All loads
    // and stores use an all-true predicate, so every lane is inside the full tile.
    unsafe {
        asm!(
            "ptrue p0.s",
            "mov z16.s, #0",
            "mov z17.s, #0",
            "mov z18.s, #0",
            "mov z19.s, #0",
            "mov z20.s, #0",
            "mov z21.s, #0",
            "mov z22.s, #0",
            "mov z23.s, #0",
            "mov z24.s, #0",
            "mov z25.s, #0",
            "mov z26.s, #0",
            "mov z27.s, #0",
            "mov z28.s, #0",
            "mov z29.s, #0",
            "mov z30.s, #0",
            "mov z31.s, #0",
            "cbz {kc}, 2f",
            // Depth loop: z2, z3 = B row k; z0 = A rows 0–3, z1 = A rows 4–7 (each quadword
            // replicated across the vector); row i of the tile lives in z(16+2i), z(17+2i).
            "1:",
            "ld1w {{ z2.s }}, p0/z, [{b}]",
            "ld1w {{ z3.s }}, p0/z, [{b}, #1, mul vl]",
            "ld1rqw {{ z0.s }}, p0/z, [{a}]",
            "ld1rqw {{ z1.s }}, p0/z, [{a}, #16]",
            "fmla z16.s, z2.s, z0.s[0]",
            "fmla z17.s, z3.s, z0.s[0]",
            "fmla z18.s, z2.s, z0.s[1]",
            "fmla z19.s, z3.s, z0.s[1]",
            "fmla z20.s, z2.s, z0.s[2]",
            "fmla z21.s, z3.s, z0.s[2]",
            "fmla z22.s, z2.s, z0.s[3]",
            "fmla z23.s, z3.s, z0.s[3]",
            "fmla z24.s, z2.s, z1.s[0]",
            "fmla z25.s, z3.s, z1.s[0]",
            "fmla z26.s, z2.s, z1.s[1]",
            "fmla z27.s, z3.s, z1.s[1]",
            "fmla z28.s, z2.s, z1.s[2]",
            "fmla z29.s, z3.s, z1.s[2]",
            "fmla z30.s, z2.s, z1.s[3]",
            "fmla z31.s, z3.s, z1.s[3]",
            "add {a}, {a}, #32",
            "addvl {b}, {b}, #2",
            "subs {kc}, {kc}, #1",
            "b.ne 1b",
            "2:",
            // Scale by alpha: z4 = alpha in every lane.
            "mov z4.s, {alpha:w}",
            "fmul z16.s, z16.s, z4.s",
            "fmul z17.s, z17.s, z4.s",
            "fmul z18.s, z18.s, z4.s",
            "fmul z19.s, z19.s, z4.s",
            "fmul z20.s, z20.s, z4.s",
            "fmul z21.s, z21.s, z4.s",
            "fmul z22.s, z22.s, z4.s",
            "fmul z23.s, z23.s, z4.s",
            "fmul z24.s, z24.s, z4.s",
            "fmul z25.s, z25.s, z4.s",
            "fmul z26.s, z26.s, z4.s",
            "fmul z27.s, z27.s, z4.s",
            "fmul z28.s, z28.s, z4.s",
            "fmul z29.s, z29.s, z4.s",
            "fmul z30.s, z30.s, z4.s",
            "fmul z31.s, z31.s, z4.s",
            "cbnz {load_c}, 3f",
            // beta == 0: store without reading C.
            "st1w {{ z16.s }}, p0, [{c}]",
            "st1w {{ z17.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "st1w {{ z18.s }}, p0, [{c}]",
            "st1w {{ z19.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "st1w {{ z20.s }}, p0, [{c}]",
            "st1w {{ z21.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "st1w {{ z22.s }}, p0, [{c}]",
            "st1w {{ z23.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "st1w {{ z24.s }}, p0, [{c}]",
            "st1w {{ z25.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "st1w {{ z26.s }}, p0, [{c}]",
            "st1w {{ z27.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "st1w {{ z28.s }}, p0, [{c}]",
            "st1w {{ z29.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "st1w {{ z30.s }}, p0, [{c}]",
            "st1w {{ z31.s }}, p0, [{c}, #1, mul vl]",
            "b 4f",
            // beta != 0: C = alpha·acc + beta·C, row by row (z5 = beta, z6/z7 = old C).
            "3:",
            "mov z5.s, {beta:w}",
            "ld1w {{ z6.s }}, p0/z, [{c}]",
            "ld1w {{ z7.s }}, p0/z, [{c}, #1, mul vl]",
            "fmla z16.s, p0/m, z6.s, z5.s",
            "fmla z17.s, p0/m, z7.s, z5.s",
            "st1w {{ z16.s }}, p0, [{c}]",
            "st1w {{ z17.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "ld1w {{ z6.s }}, p0/z, [{c}]",
            "ld1w {{ z7.s }}, p0/z, [{c}, #1, mul vl]",
            "fmla z18.s, p0/m, z6.s, z5.s",
            "fmla z19.s, p0/m, z7.s, z5.s",
            "st1w {{ z18.s }}, p0, [{c}]",
            "st1w {{ z19.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "ld1w {{ z6.s }}, p0/z, [{c}]",
            "ld1w {{ z7.s }}, p0/z, [{c}, #1, mul vl]",
            "fmla z20.s, p0/m, z6.s, z5.s",
            "fmla z21.s, p0/m, z7.s, z5.s",
            "st1w {{ z20.s }}, p0, [{c}]",
            "st1w {{ z21.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "ld1w {{ z6.s }}, p0/z, [{c}]",
            "ld1w {{ z7.s }}, p0/z, [{c}, #1, mul vl]",
            "fmla z22.s, p0/m, z6.s, z5.s",
            "fmla z23.s, p0/m, z7.s, z5.s",
            "st1w {{ z22.s }}, p0, [{c}]",
            "st1w {{ z23.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "ld1w {{ z6.s }}, p0/z, [{c}]",
            "ld1w {{ z7.s }}, p0/z, [{c}, #1, mul vl]",
            "fmla z24.s, p0/m, z6.s, z5.s",
            "fmla z25.s, p0/m, z7.s, z5.s",
            "st1w {{ z24.s }}, p0, [{c}]",
            "st1w {{ z25.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "ld1w {{ z6.s }}, p0/z, [{c}]",
            "ld1w {{ z7.s }}, p0/z, [{c}, #1, mul vl]",
            "fmla z26.s, p0/m, z6.s, z5.s",
            "fmla z27.s, p0/m, z7.s, z5.s",
            "st1w {{ z26.s }}, p0, [{c}]",
            "st1w {{ z27.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "ld1w {{ z6.s }}, p0/z, [{c}]",
            "ld1w {{ z7.s }}, p0/z, [{c}, #1, mul vl]",
            "fmla z28.s, p0/m, z6.s, z5.s",
            "fmla z29.s, p0/m, z7.s, z5.s",
            "st1w {{ z28.s }}, p0, [{c}]",
            "st1w {{ z29.s }}, p0, [{c}, #1, mul vl]",
            "add {c}, {c}, {ldc}",
            "ld1w {{ z6.s }}, p0/z, [{c}]",
            "ld1w {{ z7.s }}, p0/z, [{c}, #1, mul vl]",
            "fmla z30.s, p0/m, z6.s, z5.s",
            "fmla z31.s, p0/m, z7.s, z5.s",
            "st1w {{ z30.s }}, p0, [{c}]",
            "st1w {{ z31.s }}, p0, [{c}, #1, mul vl]",
            "4:",
            kc = inout(reg) kc => _,
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            c = inout(reg) c => _,
            ldc = in(reg) ldc_bytes,
            alpha = in(reg) alpha.to_bits(),
            beta = in(reg) beta.to_bits(),
            load_c = in(reg) load_c,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            out("p0") _,
            options(nostack),
        );
    }
}
