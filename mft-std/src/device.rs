//! Where a run's GEMMs go: `--device cpu` (the default) or `--device cuda`.
//!
//! `cuda` needs a build with the `cuda` feature (`cargo build --release -p mft-std --features
//! cuda`); without it, asking for it is an error. With it, the GPU backend
//! (`mft_kernels::cuda::CudaGemm`) is started once per process; when it cannot start (no NVIDIA
//! driver, no cuBLAS, no device) the run continues on the CPU and [`Selected::notice`] says why,
//! in one line, for the caller to print.

use mft_kernels::GemmOffload;

use crate::error::Result;

/// The device a run's GEMMs are offered to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The CPU kernels only.
    #[default]
    Cpu,
    /// An NVIDIA GPU through cuBLAS (builds with the `cuda` feature), falling back to the CPU.
    Cuda,
}

/// What [`select`] settled on.
#[derive(Debug, Clone, Default)]
pub struct Selected {
    /// The backend to install in the kernels (`None`: the CPU only).
    pub offload: Option<&'static dyn GemmOffload>,
    /// A line for stderr when the device asked for is not used (`cuda: …; running on the CPU`).
    pub notice: Option<String>,
    /// The GPU's name, when one is used.
    pub device_name: Option<String>,
}

/// Whether this build can offload to CUDA (the `cuda` feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// The backend of `device`.
///
/// # Errors
/// `--device cuda` in a build without the `cuda` feature.
pub fn select(device: Device) -> Result<Selected> {
    match device {
        Device::Cpu => Ok(Selected::default()),
        Device::Cuda => cuda(),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Selected> {
    Err(crate::error::Error::Training {
        problem: "--device cuda: this mft was built without CUDA support; rebuild it with \
                  `--features cuda` (cargo build --release -p mft-std --features cuda)"
            .into(),
    })
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Selected> {
    use mft_kernels::cuda::{CudaError, CudaGemm};
    use std::sync::OnceLock;
    // One backend per process (a context and resident weights); later runs share it.
    static BACKEND: OnceLock<core::result::Result<&'static CudaGemm, CudaError>> = OnceLock::new();
    let started = BACKEND.get_or_init(|| CudaGemm::new(0).map(|g| &*Box::leak(Box::new(g))));
    Ok(match started {
        Ok(gemm) => Selected {
            offload: Some(*gemm as &'static dyn GemmOffload),
            notice: None,
            device_name: Some(gemm.device_name().to_string()),
        },
        Err(e) => Selected {
            offload: None,
            notice: Some(format!("cuda: {e}; running on the CPU")),
            device_name: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_needs_no_backend() {
        let s = select(Device::Cpu).unwrap();
        assert!(s.offload.is_none() && s.notice.is_none());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_an_error_naming_the_flag_and_the_rebuild() {
        let e = select(Device::Cuda).unwrap_err().to_string();
        assert!(e.starts_with("--device cuda:") && e.contains("--features cuda"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_with_the_feature_starts_or_says_why_not_in_one_line() {
        let s = select(Device::Cuda).unwrap();
        match (&s.offload, &s.notice) {
            (Some(_), None) => assert!(s.device_name.is_some()),
            (None, Some(notice)) => {
                assert!(notice.starts_with("cuda: ") && notice.ends_with("; running on the CPU"));
                assert!(!notice.contains('\n'), "{notice}");
            }
            _ => panic!("a backend or a notice, not both or neither: {s:?}"),
        }
    }
}
