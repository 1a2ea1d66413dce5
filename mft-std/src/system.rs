//! What this machine offers mft: architecture, the ISAs the kernels can use, the SVE vector length,
//! and a quick check of each supported ISA's kernels against the portable scalar ones.

use mft_kernels::{Isa, VectorKernels, sve_vector_bits};

/// A description of the machine as the kernels see it.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemInfo {
    /// `target_arch` of this build.
    pub arch: &'static str,
    /// Every ISA with kernels this CPU can run.
    pub supported: Vec<Isa>,
    /// The ISA the kernels use by default.
    pub best: Isa,
    /// SVE vector length in bits, where SVE is available.
    pub sve_vector_bits: Option<usize>,
    /// Logical CPUs available to this process.
    pub threads: usize,
}

impl SystemInfo {
    /// Probe the machine.
    pub fn probe() -> Self {
        SystemInfo {
            arch: std::env::consts::ARCH,
            supported: Isa::supported().collect(),
            best: Isa::best(),
            sve_vector_bits: sve_vector_bits(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// One ISA's result in [`self_check`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IsaCheck {
    /// The ISA checked.
    pub isa: Isa,
    /// Whether its `dot` and `axpy` equal the scalar kernels' on an exactly representable input.
    pub passed: bool,
}

/// Run every supported ISA's vector kernels on a small input whose results are exact in f32 and
/// compare them with the scalar kernels' results. A failure means a miscompiled or broken ISA path.
pub fn self_check() -> Vec<IsaCheck> {
    // Small integers: every product and partial sum is exact, so every ISA must agree bit for bit.
    let x: Vec<f32> = (0..67).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
    let y: Vec<f32> = (0..67).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
    let reference = VectorKernels::for_isa(Isa::Scalar).expect("scalar is always supported");
    let expected_dot = reference.dot(&x, &y);
    let mut expected_axpy = y.clone();
    reference.axpy(3.0, &x, &mut expected_axpy);
    Isa::supported()
        .filter_map(VectorKernels::for_isa)
        .map(|k| {
            let mut out = y.clone();
            k.axpy(3.0, &x, &mut out);
            IsaCheck { isa: k.isa(), passed: k.dot(&x, &y) == expected_dot && out == expected_axpy }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_a_supported_best_isa() {
        let info = SystemInfo::probe();
        assert!(info.supported.contains(&Isa::Scalar));
        assert!(info.supported.contains(&info.best));
        assert_eq!(info.sve_vector_bits.is_some(), info.supported.contains(&Isa::Sve));
        assert!(info.threads >= 1);
    }

    #[test]
    fn self_check_covers_every_supported_isa_and_passes() {
        let checks = self_check();
        let isas: Vec<Isa> = checks.iter().map(|c| c.isa).collect();
        assert_eq!(isas, Isa::supported().collect::<Vec<_>>());
        assert!(checks.iter().all(|c| c.passed), "{checks:?}");
    }
}
