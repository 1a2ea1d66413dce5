//! GEMM offload to an NVIDIA GPU through cuBLAS (feature `cuda`).
//!
//! [`CudaGemm`] implements [`GemmOffload`]: a product with an f32 `B` runs as `cublasSgemm`, one
//! with an f16 or bf16 `B` (frozen weights) as `cublasGemmEx` with f32 accumulation and an f32
//! `C`. cuBLAS's `GemmEx` takes both inputs in one type, so for a half-precision `B` the
//! activations `A` are rounded to that type on the host before the transfer (mixed precision,
//! as autocast frameworks do; the CPU path widens `B` instead, so results differ in the last
//! bits of the rounding). Row-major strided operands map onto column-major cuBLAS calls by
//! swapping the operands ([`layout`]); a layout cuBLAS cannot read, or a product too small to
//! be worth the transfers, is declined and runs on the CPU.
//!
//! Frozen weights registered with [`GemmOffload::keep_resident`] stay on the device while they
//! fit its free memory ([`resident`]); every other operand is uploaded for each product, and `C`
//! is downloaded into a staging buffer and copied out only once the product has succeeded, so a
//! device error leaves `C` untouched and the product falls back to the CPU (the error is kept:
//! [`CudaGemm::failures`]).
//!
//! The driver, cuBLAS and NVRTC libraries are loaded at run time (cudarc's dynamic loading,
//! bindings pinned to the CUDA 12.2 API), so the crate builds without a CUDA toolkit;
//! [`CudaGemm::new`] checks that the libraries load before touching the driver (cudarc panics on
//! a missing library) and returns a [`CudaError`] the caller reports before continuing on the
//! CPU.
//!
//! **Unverified on a GPU.** This module was written and unit-tested (its layout arithmetic and
//! residency bookkeeping) on machines without an NVIDIA driver; the calls into the driver and
//! cuBLAS have not yet run on a GPU. Attention and the fused loss's elementwise work stay on
//! the CPU (NVRTC kernels for them are not written yet).

pub mod layout;
pub mod resident;

use std::string::{String, ToString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::vec::Vec;

use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};

use crate::gemm::{GemmOffload, Mat, MatMut, OffloadRhs, RhsData};
use layout::{CublasGemm, View};
use resident::{Elem, ResidentSet};

/// Products smaller than this many multiply-adds (`m·n·k`) stay on the CPU, where they finish
/// before their operands would have crossed the bus. A starting point, not yet tuned on a GPU.
pub const DEFAULT_MIN_WORK: u64 = 1 << 21;

/// Free device memory [`CudaGemm::keep_resident`] leaves for the per-product buffers.
pub const RESERVED_BYTES: usize = 512 << 20;

/// Why the CUDA backend is not available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaError {
    /// The driver library (`libcuda.so` / `nvcuda.dll`) does not load: no NVIDIA driver.
    NoDriver,
    /// cuBLAS (`libcublas.so.12` / `cublas64_12.dll`) does not load: no CUDA 12 runtime
    /// libraries on the library path.
    NoCublas,
    /// The driver or cuBLAS refused to start (no device, a driver too old, …).
    Init(String),
}

impl core::fmt::Display for CudaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CudaError::NoDriver => {
                write!(f, "the NVIDIA driver library (libcuda.so.1 / nvcuda.dll) does not load")
            }
            CudaError::NoCublas => write!(
                f,
                "the cuBLAS library of CUDA 12 (libcublas.so.12 / cublas64_12.dll) does not load"
            ),
            CudaError::Init(problem) => write!(f, "{problem}"),
        }
    }
}

impl core::error::Error for CudaError {}

/// A device copy of a frozen slice.
#[derive(Debug)]
enum Buffer {
    F32(CudaSlice<f32>),
    /// f16 or bf16 bits.
    Half(CudaSlice<u16>),
}

/// The device, its stream, the cuBLAS handle and the resident weights; behind one lock.
struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    resident: ResidentSet<Buffer>,
    /// Host staging: C downloaded before it is copied out.
    staging: Vec<f32>,
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("resident_slices", &self.resident.len())
            .field("resident_bytes", &self.resident.used())
            .finish_non_exhaustive()
    }
}

/// GEMMs through cuBLAS on one GPU. See the module documentation.
#[derive(Debug)]
pub struct CudaGemm {
    device: Mutex<Device>,
    name: String,
    min_work: u64,
    failures: AtomicUsize,
    first_failure: OnceLock<String>,
}

/// Whether the driver and cuBLAS libraries load (without creating a context).
pub fn libraries_present() -> Result<(), CudaError> {
    // SAFETY: loading a shared library runs its initialisers; the NVIDIA libraries are the
    // ones this module is meant to load.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    // SAFETY: as above.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(CudaError::NoCublas);
    }
    Ok(())
}

impl CudaGemm {
    /// The backend on GPU `ordinal` (0: the first), declining products below
    /// [`DEFAULT_MIN_WORK`].
    ///
    /// # Errors
    /// The driver or cuBLAS library does not load, there is no such device, or the driver
    /// refuses to start.
    pub fn new(ordinal: usize) -> Result<CudaGemm, CudaError> {
        libraries_present()?;
        // cudarc panics on a symbol the loaded library lacks (a driver older than the pinned
        // API); keep that a reported error rather than an abort of the caller.
        let started = std::panic::catch_unwind(|| start(ordinal)).unwrap_or_else(|_| {
            Err(CudaError::Init("the CUDA driver is missing a symbol".into()))
        })?;
        let (device, name) = started;
        Ok(CudaGemm {
            device: Mutex::new(device),
            name,
            min_work: DEFAULT_MIN_WORK,
            failures: AtomicUsize::new(0),
            first_failure: OnceLock::new(),
        })
    }

    /// The same backend declining products of fewer than `min_work` multiply-adds.
    pub fn with_min_work(self, min_work: u64) -> Self {
        CudaGemm { min_work, ..self }
    }

    /// The device's name, as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// Products that failed on the device (and ran on the CPU instead), and the first failure.
    pub fn failures(&self) -> (usize, Option<&str>) {
        (self.failures.load(Ordering::Relaxed), self.first_failure.get().map(String::as_str))
    }

    /// Bytes of frozen weights resident on the device.
    pub fn resident_bytes(&self) -> usize {
        self.device.lock().map_or(0, |d| d.resident.used())
    }

    fn failed(&self, problem: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let _ = self.first_failure.set(problem);
    }
}

/// Creates the context, stream and cuBLAS handle of GPU `ordinal`.
fn start(ordinal: usize) -> Result<(Device, String), CudaError> {
    let init =
        |what: &str, e: &dyn core::fmt::Display| CudaError::Init(std::format!("{what}: {e}"));
    let count = CudaContext::device_count().map_err(|e| init("cuInit / cuDeviceGetCount", &e))?;
    if ordinal >= count.max(0) as usize {
        return Err(CudaError::Init(std::format!(
            "no CUDA device {ordinal} (the driver sees {count})"
        )));
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| init("creating the CUDA context", &e))?;
    let name = ctx.name().unwrap_or_else(|_| std::format!("CUDA device {ordinal}"));
    let stream = ctx.default_stream();
    let blas = CudaBlas::new(stream.clone()).map_err(|e| init("starting cuBLAS", &e))?;
    let (free, _total) = ctx.mem_get_info().map_err(|e| init("reading free device memory", &e))?;
    let budget = free.saturating_sub(RESERVED_BYTES);
    Ok((
        Device { ctx, stream, blas, resident: ResidentSet::new(budget), staging: Vec::new() },
        name,
    ))
}

fn view<T>(m: &Mat<'_, T>) -> View {
    View { rows: m.rows(), cols: m.cols(), row_stride: m.row_stride(), col_stride: m.col_stride() }
}

/// A device error as one line.
fn err(what: &str, e: impl core::fmt::Display) -> String {
    std::format!("{what}: {e}")
}

impl Device {
    /// Uploads `host` to a new device buffer.
    fn upload<T: cudarc::driver::DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, String> {
        self.stream.clone_htod(host).map_err(|e| err("copy to the device", e))
    }

    /// Runs `call` (already planned) and writes C; on any error C is untouched.
    fn run(
        &mut self,
        call: &CublasGemm,
        alpha: f32,
        a: &Mat<'_, f32>,
        b: &OffloadRhs<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
    ) -> Result<(), String> {
        self.ctx.bind_to_thread().map_err(|e| err("binding the CUDA context", e))?;
        let c_host = &c.data_mut()[..call.c_len];
        let mut c_dev = if beta == 0.0 {
            self.stream.alloc_zeros::<f32>(call.c_len).map_err(|e| err("device allocation", e))?
        } else {
            self.upload(c_host)?
        };
        match b {
            OffloadRhs::F32(bm) => {
                let a_dev = self.upload(&a.data()[..call.a_len])?;
                let b_addr = bm.data().as_ptr() as usize;
                let uploaded;
                let (b_dev, offset) = match self.resident.find(b_addr, call.b_len * 4, Elem::F32) {
                    Some((Buffer::F32(buf), offset)) => (buf, offset),
                    _ => {
                        uploaded = self.upload(&bm.data()[..call.b_len])?;
                        (&uploaded, 0)
                    }
                };
                let (x, _rx) = b_dev.device_ptr(&self.stream);
                let (y, _ry) = a_dev.device_ptr(&self.stream);
                let (cp, _rc) =
                    cudarc::driver::DevicePtrMut::device_ptr_mut(&mut c_dev, &self.stream);
                let x = (x as usize + offset * 4) as *const f32;
                // SAFETY: the planned dimensions and leading dimensions stay inside the uploaded
                // extents (layout::plan computed them from the same views); the buffers live
                // until the stream is synchronised below.
                unsafe {
                    cudarc::cublas::result::sgemm(
                        *self.blas.handle(),
                        op(call.trans_x),
                        op(call.trans_y),
                        call.m,
                        call.n,
                        call.k,
                        &alpha,
                        x,
                        call.ld_x,
                        y as *const f32,
                        call.ld_y,
                        &beta,
                        cp as *mut f32,
                        call.ldc,
                    )
                }
                .map_err(|e| err("cublasSgemm", e))?;
            }
            OffloadRhs::F16(_) | OffloadRhs::Bf16(_) => {
                let (elem, dtype) = match b {
                    OffloadRhs::F16(_) => (Elem::F16, cudaDataType::CUDA_R_16F),
                    _ => (Elem::Bf16, cudaDataType::CUDA_R_16BF),
                };
                // A rounded to B's type (GemmEx reads both inputs in one type).
                let a_half: Vec<u16> = a.data()[..call.a_len]
                    .iter()
                    .map(|&v| match elem {
                        Elem::F16 => mft_core::f16::from_f32(v).to_bits(),
                        _ => mft_core::bf16::from_f32(v).to_bits(),
                    })
                    .collect();
                let a_dev = self.upload(&a_half)?;
                let uploaded;
                let (b_dev, offset) = match self.resident.find(b.addr(), call.b_len * 2, elem) {
                    Some((Buffer::Half(buf), offset)) => (buf, offset),
                    _ => {
                        uploaded = self.upload(&half_bits(b, call.b_len))?;
                        (&uploaded, 0)
                    }
                };
                let (x, _rx) = b_dev.device_ptr(&self.stream);
                let (y, _ry) = a_dev.device_ptr(&self.stream);
                let (cp, _rc) =
                    cudarc::driver::DevicePtrMut::device_ptr_mut(&mut c_dev, &self.stream);
                let x = (x as usize + offset * 2) as *const core::ffi::c_void;
                // SAFETY: as for sgemm; alpha and beta are f32, as CUBLAS_COMPUTE_32F requires.
                unsafe {
                    cudarc::cublas::result::gemm_ex(
                        *self.blas.handle(),
                        op(call.trans_x),
                        op(call.trans_y),
                        call.m,
                        call.n,
                        call.k,
                        (&alpha as *const f32).cast(),
                        x,
                        dtype,
                        call.ld_x,
                        y as *const core::ffi::c_void,
                        dtype,
                        call.ld_y,
                        (&beta as *const f32).cast(),
                        cp as *mut core::ffi::c_void,
                        cudaDataType::CUDA_R_32F,
                        call.ldc,
                        cublasComputeType_t::CUBLAS_COMPUTE_32F,
                        cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    )
                }
                .map_err(|e| err("cublasGemmEx", e))?;
            }
        }
        let mut staging = core::mem::take(&mut self.staging);
        staging.resize(call.c_len, 0.0);
        let copied = self
            .stream
            .memcpy_dtoh(&c_dev, &mut staging[..])
            .and_then(|()| self.stream.synchronize())
            .map_err(|e| err("copy from the device", e));
        if copied.is_ok() {
            // Only C's own elements: the gaps between its rows belong to others.
            let (m, n, ldc) = (c.rows(), c.cols(), c.row_stride());
            let out = c.data_mut();
            for i in 0..m {
                out[i * ldc..i * ldc + n].copy_from_slice(&staging[i * ldc..i * ldc + n]);
            }
        }
        self.staging = staging;
        copied
    }

    /// Copies `data` to the device and records it as resident.
    fn keep(&mut self, data: RhsData<'_>) -> Result<bool, String> {
        let (addr, bytes) = (data.addr(), data.bytes());
        if self.resident.check(addr, bytes).is_err() {
            return Ok(false);
        }
        self.ctx.bind_to_thread().map_err(|e| err("binding the CUDA context", e))?;
        let (elem, buffer) = match data {
            RhsData::F32(s) => (Elem::F32, Buffer::F32(self.upload(s)?)),
            RhsData::F16(s) => {
                let bits: Vec<u16> = s.iter().map(|v| v.to_bits()).collect();
                (Elem::F16, Buffer::Half(self.upload(&bits)?))
            }
            RhsData::Bf16(s) => {
                let bits: Vec<u16> = s.iter().map(|v| v.to_bits()).collect();
                (Elem::Bf16, Buffer::Half(self.upload(&bits)?))
            }
        };
        self.stream.synchronize().map_err(|e| err("copy to the device", e))?;
        Ok(self.resident.insert(addr, bytes, elem, buffer).is_ok())
    }
}

/// The first `len` elements of a half-precision operand's slice, as bits.
fn half_bits(b: &OffloadRhs<'_>, len: usize) -> Vec<u16> {
    match b {
        OffloadRhs::F16(m) => m.data()[..len].iter().map(|v| v.to_bits()).collect(),
        OffloadRhs::Bf16(m) => m.data()[..len].iter().map(|v| v.to_bits()).collect(),
        OffloadRhs::F32(_) => Vec::new(),
    }
}

fn op(transpose: bool) -> cublasOperation_t {
    if transpose { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N }
}

impl GemmOffload for CudaGemm {
    fn name(&self) -> &str {
        "cuda"
    }

    fn gemm(
        &self,
        alpha: f32,
        a: Mat<'_, f32>,
        b: OffloadRhs<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
    ) -> bool {
        let b_view = match &b {
            OffloadRhs::F32(m) => view(m),
            OffloadRhs::F16(m) => view(m),
            OffloadRhs::Bf16(m) => view(m),
        };
        let Ok(call) = layout::plan(view(&a), b_view, c.row_stride(), alpha, self.min_work) else {
            return false;
        };
        let Ok(mut device) = self.device.lock() else {
            return false;
        };
        match device.run(&call, alpha, &a, &b, beta, c) {
            Ok(()) => true,
            Err(problem) => {
                drop(device);
                self.failed(problem);
                false
            }
        }
    }

    fn keep_resident(&self, data: RhsData<'_>) -> bool {
        let Ok(mut device) = self.device.lock() else {
            return false;
        };
        match device.keep(data) {
            Ok(kept) => kept,
            Err(problem) => {
                drop(device);
                self.failed(problem.to_string());
                false
            }
        }
    }

    fn release(&self, addr: usize) {
        if let Ok(mut device) = self.device.lock() {
            drop(device.resident.remove(addr));
        }
    }
}
