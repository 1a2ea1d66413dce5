//! Counter-based random numbers: the value at a (key, index) pair is a hash, so a dropout mask
//! can be regenerated in backward instead of stored, threads can fill disjoint ranges, and LoRA
//! initialisation does not depend on the order tensors are visited. Written here rather than
//! taken from a crate because the usual generators (rand's) are sequential streams, and this
//! needs random access; the mixing function is SplitMix64's finaliser.

/// SplitMix64's finaliser: a bijective mix of 64 bits.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stream of random numbers addressed by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    key: u64,
}

impl Counter {
    /// The stream of `seed` for the object `parts` identify (layer, tensor, step, …).
    pub fn new(seed: u64, parts: &[u64]) -> Counter {
        let key = parts.iter().fold(mix(seed ^ 0x6d66_742d_726e_6721), |k, &p| {
            mix(k ^ p.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        });
        Counter { key }
    }

    /// 64 random bits at `index`.
    #[inline(always)]
    pub fn bits(&self, index: u64) -> u64 {
        mix(self.key ^ mix(index.wrapping_add(0x9e37_79b9_7f4a_7c15)))
    }

    /// A uniform number in `[0, 1)` at `index` (24 random bits: every f32 step in range).
    #[inline(always)]
    pub fn uniform(&self, index: u64) -> f32 {
        (self.bits(index) >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
}
