//! Full fine-tuning inside a memory budget: the blocks' weights and gradients, and the
//! optimizer state of every matrix, kept in a scratch file and paged in as a step needs them.
//!
//! The scratch file holds, in f32: the blocks' weights (the matrix store from the first block
//! on), their gradients, and for each optimizer state tensor (AdamW's two moments, SGD's
//! momentum buffer) the state of the whole matrix store. What stays in memory is small beside
//! them: the global matrices (embeddings, an untied head) and their gradients, and the vectors
//! with their gradients and optimizer state.
//!
//! A step reads each block's weights through [`PagedBlocks`] (forward, then backward); in the
//! backward, [`GradientPages`] hands the model the block's gradient (zero, or what the step's
//! earlier micro-batches left in the file), and stores it back once the block is done, summing
//! its squares per matrix on the way. The gradient norm is then the sum, tensor by tensor in
//! the layout's order, of those sums: the very terms an unpaged step adds
//! ([`full_grad_norm`]). [`FullPaging::update`] finally streams the matrix store through the
//! optimizer chunk by chunk (the update is element-wise), writing weights and state back. So a
//! paged run computes every value exactly as an unpaged one does, and ends bit for bit where it
//! would.
//!
//! The scratch file is made anew when a trainer starts (from the loaded weights, then from a
//! checkpoint when resuming) and removed when it ends: it never outlives a run, so a run killed
//! mid-step resumes from its last checkpoint and never reads a half-written scratch file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use mft_core::Element;
use mft_kernels::{Kernels, Parallel};
use mft_models::params::LAYER_PARAMS;
use mft_models::{LayerParam, Param, ParamLayout};

use crate::error::{Error, Result};
use crate::hf::ModelWeights;
use crate::paging::{PagedBlocks, Piece};

/// Elements the optimizer pass streams at a time (per tensor: weights, gradients, each state).
pub(crate) const UPDATE_CHUNK: usize = 1 << 18;

/// Bytes of an f32.
const F32: u64 = 4;

/// The scratch file: created with a name of its own, removed when dropped.
#[derive(Debug)]
struct Scratch {
    path: PathBuf,
    file: File,
}

impl Scratch {
    fn create(dir: &Path, bytes: u64) -> Result<Scratch> {
        crate::fsio::create_dir_all(dir)?;
        remove_orphans(dir);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        for attempt in 0u32.. {
            let path = dir.join(format!("mft-scratch-{}-{attempt}.bin", std::process::id()));
            match File::options().read(true).write(true).create_new(true).open(&path) {
                Ok(file) => {
                    let scratch = Scratch { path, file };
                    // Sparse: the optimizer state starts as zeros without being written.
                    scratch.file.set_len(bytes).map_err(io(&scratch.path))?;
                    return Ok(scratch);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(Error::Io { path, source }),
            }
        }
        unreachable!("some attempt's name is free")
    }

    fn read(&self, at: u64, out: &mut [f32]) -> Result<()> {
        read_f32s(&self.file, &self.path, at, out)
    }

    fn write(&self, at: u64, values: &[f32]) -> Result<()> {
        write_f32s(&self.file, &self.path, at, values)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the scratch files in `dir` of processes that are gone (killed before they could
/// remove theirs): nothing reads them, and they are large.
fn remove_orphans(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("mft-scratch-"))
            .and_then(|n| n.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        if pid != std::process::id() && !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn read_f32s(file: &File, path: &Path, at: u64, out: &mut [f32]) -> Result<()> {
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
    file.read_exact_at(bytes, at)
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    if cfg!(target_endian = "big") {
        out.iter_mut().for_each(|v| *v = f32::from_bits(u32::from_le(v.to_bits())));
    }
    Ok(())
}

fn write_f32s(file: &File, path: &Path, at: u64, values: &[f32]) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if cfg!(target_endian = "big") {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        return file.write_all_at(&bytes, at).map_err(io);
    }
    file.write_all_at(bytemuck::cast_slice(values), at).map_err(io)
}

/// The blocks' gradients in the scratch file, one block in memory at a time.
#[derive(Debug)]
pub(crate) struct GradientPages {
    file: File,
    path: PathBuf,
    /// Where block 0's gradient starts in the file.
    at: u64,
    /// Elements of one block's matrices.
    block_len: usize,
    /// The matrices of a block: `(LayerParam index, offset in the block, elements)`.
    matrices: Vec<(usize, usize, usize)>,
    slot: Vec<f32>,
    /// The block whose gradient is in `slot`, not stored yet.
    pending: Option<usize>,
    /// Whether the file holds this step's gradients so far (later micro-batches add to them).
    pub(crate) accumulate: bool,
    /// Σg² of each block matrix's gradient as last stored, by layer and [`LayerParam`] index.
    sums: Vec<[f64; LAYER_PARAMS]>,
    kernels: Kernels,
}

impl GradientPages {
    /// Block `layer`'s gradient into the slot: zero, or (accumulating) as the file has it. The
    /// block before it is stored first.
    pub(crate) fn load(&mut self, layer: usize, parallel: &dyn Parallel) -> Result<()> {
        self.store(parallel)?;
        if self.accumulate {
            let at = self.at + (layer * self.block_len) as u64 * F32;
            read_f32s(&self.file, &self.path, at, &mut self.slot)?;
        } else {
            self.slot.fill(0.0);
        }
        self.pending = Some(layer);
        Ok(())
    }

    /// The slot, holding the block last loaded.
    pub(crate) fn slot(&mut self) -> &mut [f32] {
        &mut self.slot
    }

    /// Stores the slot's block (if one is pending), after summing its squares.
    pub(crate) fn store(&mut self, parallel: &dyn Parallel) -> Result<()> {
        let Some(layer) = self.pending.take() else { return Ok(()) };
        for &(p, offset, len) in &self.matrices {
            self.sums[layer][p] =
                self.kernels.sum_of_squares_of(&self.slot[offset..offset + len], parallel);
        }
        let at = self.at + (layer * self.block_len) as u64 * F32;
        write_f32s(&self.file, &self.path, at, &self.slot)
    }

    /// Starts an optimizer step: nothing stored yet, every sum zero.
    pub(crate) fn begin_step(&mut self) {
        self.accumulate = false;
        self.pending = None;
        self.sums.iter_mut().for_each(|s| s.fill(0.0));
    }

    /// Σg² of block matrix `param`'s gradient as last stored.
    fn sum(&self, layer: usize, param: LayerParam) -> f64 {
        self.sums[layer][param as usize]
    }
}

/// The part of full fine-tuning's state that lives in the scratch file (see the module docs).
#[derive(Debug)]
pub struct FullPaging {
    scratch: Scratch,
    layout: ParamLayout,
    /// Where the blocks' weights, their gradients and each state tensor start in the file.
    weights_at: u64,
    grads_at: u64,
    state_at: Vec<u64>,
}

impl FullPaging {
    /// Moves the blocks' matrices of `weights` into a new scratch file in `dir`, with room for
    /// their gradients and `state_tensors` optimizer state tensors of the matrix store (zero).
    /// Returns the paging and the weights the trainer keeps: the global matrices in a store,
    /// the vectors, and the blocks paged in from the scratch file, gradients included.
    ///
    /// # Errors
    /// The scratch file cannot be made or written; the weights' files cannot be read.
    pub(crate) fn create<T: Element>(
        dir: &Path,
        layout: &ParamLayout,
        state_tensors: usize,
        weights: &ModelWeights<T>,
    ) -> Result<(FullPaging, ModelWeights<T>)> {
        assert_eq!(T::DTYPE, mft_core::DType::F32, "full fine-tuning trains f32 weights");
        let globals = layout.global_matrix_len();
        let blocks = layout.matrix_len() - globals;
        let weights_at = 0;
        let grads_at = blocks as u64 * F32;
        let state_at: Vec<u64> = (0..state_tensors)
            .map(|i| 2 * grads_at + (i * layout.matrix_len()) as u64 * F32)
            .collect();
        let bytes = 2 * grads_at + (state_tensors * layout.matrix_len()) as u64 * F32;
        let scratch = Scratch::create(dir, bytes)?;
        let paging = FullPaging { scratch, layout: *layout, weights_at, grads_at, state_at };

        let mut block = vec![T::default(); layout.block_matrices(0).len()];
        let mut values = vec![0.0f32; block.len()];
        for layer in 0..layout.layers() {
            weights.read_block(layout, layer, &mut block)?;
            values.iter_mut().zip(&block).for_each(|(v, b)| *v = b.to_f32());
            paging.scratch.write(paging.block_at(paging.weights_at, layer), &values)?;
        }
        drop(block);
        let global_store = weights.read_globals(layout)?;
        let kept = ModelWeights::from_stores(global_store, weights.vectors.clone())
            .with_paged(paging.paged_blocks(values)?);
        Ok((paging, kept))
    }

    /// Where block `layer`'s part starts in the region at `region` (weights or gradients).
    fn block_at(&self, region: u64, layer: usize) -> u64 {
        region + (layer * self.layout.block_matrices(0).len()) as u64 * F32
    }

    /// The blocks' weights as [`PagedBlocks`] over the scratch file, with their gradients.
    /// `slot` (a block long) becomes the gradients' slot.
    fn paged_blocks<T: Element>(&self, slot: Vec<f32>) -> Result<PagedBlocks<T>> {
        let layout = &self.layout;
        let io = |source| Error::Io { path: self.scratch.path.clone(), source };
        let weights_file = self.scratch.file.try_clone().map_err(io)?;
        let grads_file = self.scratch.file.try_clone().map_err(io)?;
        let first = layout.global_matrix_len();
        let pieces: Vec<Vec<Piece>> = (0..layout.layers())
            .map(|layer| {
                LayerParam::ALL
                    .iter()
                    .filter_map(|&p| {
                        let param = Param::Layer(layer, p);
                        let slot = layout.slot(param).filter(|s| s.matrix)?;
                        Some(Piece {
                            param,
                            file: 0,
                            offset: self.weights_at + (slot.offset - first) as u64 * F32,
                            stored: mft_core::DType::F32,
                            elements: slot.len,
                        })
                    })
                    .collect()
            })
            .collect();
        let block_start = layout.block_matrices(0).start;
        let matrices = LayerParam::ALL
            .iter()
            .filter_map(|&p| {
                let slot = layout.slot(Param::Layer(0, p)).filter(|s| s.matrix)?;
                Some((p as usize, slot.offset - block_start, slot.len))
            })
            .collect();
        let gradients = GradientPages {
            file: grads_file,
            path: self.scratch.path.clone(),
            at: self.grads_at,
            block_len: slot.len(),
            matrices,
            slot,
            pending: None,
            accumulate: false,
            sums: vec![[0.0; LAYER_PARAMS]; layout.layers()],
            kernels: Kernels::best(),
        };
        let files = vec![(self.scratch.path.clone(), weights_file)];
        Ok(PagedBlocks::new(files, pieces, None).with_gradients(gradients))
    }

    /// Reads elements `range` of the matrix store's weights into `out`: the global matrices from
    /// `globals` (the store's first part, kept in memory), the blocks' from the file.
    pub(crate) fn read_weights(
        &self,
        globals: &[f32],
        range: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        self.split(range, out, |part, at, out| match part {
            Part::Globals => {
                out.copy_from_slice(&globals[at..at + out.len()]);
                Ok(())
            }
            Part::Blocks => self.scratch.read(self.weights_at + at as u64 * F32, out),
        })
    }

    /// Writes elements `range` of the matrix store's weights (see [`FullPaging::read_weights`]).
    pub(crate) fn write_weights(
        &self,
        globals: &mut [f32],
        range: std::ops::Range<usize>,
        values: &[f32],
    ) -> Result<()> {
        let mut values = values;
        let globals_len = self.layout.global_matrix_len();
        if range.start < globals_len {
            let end = range.end.min(globals_len);
            let (head, tail) = values.split_at(end - range.start);
            globals[range.start..end].copy_from_slice(head);
            values = tail;
        }
        if !values.is_empty() {
            let first = range.start.max(globals_len) - globals_len;
            self.scratch.write(self.weights_at + first as u64 * F32, values)?;
        }
        Ok(())
    }

    /// Reads elements `range` of state tensor `i` of the matrix store into `out`.
    pub(crate) fn read_state(
        &self,
        i: usize,
        range: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<()> {
        self.scratch.read(self.state_at[i] + range.start as u64 * F32, out)
    }

    /// Writes elements `range` of state tensor `i` of the matrix store.
    pub(crate) fn write_state(
        &self,
        i: usize,
        range: std::ops::Range<usize>,
        values: &[f32],
    ) -> Result<()> {
        self.scratch.write(self.state_at[i] + range.start as u64 * F32, values)
    }

    /// Calls `each` for the parts of `range` in the globals and in the blocks, with the offset
    /// into that part and `out`'s matching piece.
    fn split(
        &self,
        range: std::ops::Range<usize>,
        out: &mut [f32],
        mut each: impl FnMut(Part, usize, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let globals_len = self.layout.global_matrix_len();
        let mut out = out;
        if range.start < globals_len {
            let end = range.end.min(globals_len);
            let (head, tail) = out.split_at_mut(end - range.start);
            each(Part::Globals, range.start, head)?;
            out = tail;
        }
        if !out.is_empty() {
            each(Part::Blocks, range.start.max(globals_len) - globals_len, out)?;
        }
        Ok(())
    }

    /// One optimizer step over the matrix store, `UPDATE_CHUNK` elements at a time: weights
    /// (the globals in `globals`, the blocks' from the file), gradients (the globals' in
    /// `global_grads`, the blocks' from the file, or zero when `grads_stored` is false: no
    /// micro-batch of the step scored a token), scaled by `clip` when given, and the state
    /// from the file. `update` is the optimizer's element-wise step over one chunk.
    ///
    /// # Errors
    /// The scratch file cannot be read or written.
    #[allow(clippy::too_many_arguments)] // the stores, and what to do with them
    pub(crate) fn update(
        &self,
        kernels: &Kernels,
        parallel: &dyn Parallel,
        globals: &mut [f32],
        global_grads: &mut [f32],
        grads_stored: bool,
        clip: Option<f32>,
        mut update: impl FnMut(&mut [f32], &[f32], &mut [&mut [f32]]),
    ) -> Result<()> {
        let len = self.layout.matrix_len();
        let globals_len = self.layout.global_matrix_len();
        if let Some(c) = clip {
            kernels.scale(global_grads, c, parallel);
        }
        let chunk = UPDATE_CHUNK.min(len.max(1));
        let mut params = vec![0.0f32; chunk];
        let mut grads = vec![0.0f32; chunk];
        let mut state: Vec<Vec<f32>> = vec![vec![0.0; chunk]; self.state_at.len()];
        // Chunks never straddle the globals' end, so each is all in memory or all in the file.
        let ranges = chunks(0..globals_len, chunk).chain(chunks(globals_len..len, chunk));
        for range in ranges {
            let n = range.len();
            for (i, s) in state.iter_mut().enumerate() {
                self.read_state(i, range.clone(), &mut s[..n])?;
            }
            let mut views: Vec<&mut [f32]> = state.iter_mut().map(|s| &mut s[..n]).collect();
            if range.start < globals_len {
                update(&mut globals[range.clone()], &global_grads[range.clone()], &mut views);
            } else {
                let first = range.start - globals_len;
                let (p, g) = (&mut params[..n], &mut grads[..n]);
                self.scratch.read(self.weights_at + first as u64 * F32, p)?;
                if grads_stored {
                    self.scratch.read(self.grads_at + first as u64 * F32, g)?;
                    if let Some(c) = clip {
                        kernels.scale(g, c, parallel);
                    }
                } else {
                    g.fill(0.0);
                }
                update(p, g, &mut views);
                self.scratch.write(self.weights_at + first as u64 * F32, p)?;
            }
            for (i, s) in state.iter().enumerate() {
                self.write_state(i, range.clone(), &s[..n])?;
            }
        }
        Ok(())
    }

    /// Bytes of the scratch file.
    pub fn scratch_bytes(&self) -> u64 {
        2 * self.grads_at + (self.state_at.len() * self.layout.matrix_len()) as u64 * F32
    }
}

/// Which part of the matrix store.
enum Part {
    Globals,
    Blocks,
}

/// `range` in consecutive pieces of at most `chunk`.
fn chunks(
    range: std::ops::Range<usize>,
    chunk: usize,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    range.clone().step_by(chunk).map(move |start| start..(start + chunk).min(range.end))
}

/// The L2 norm of full fine-tuning's gradients: the square root of the sum, parameter by
/// parameter in the layout's order, of each gradient's Σg²
/// ([`Kernels::sum_of_squares_of`]). `matrices` holds the matrix store's gradients (all of
/// them, or with `paged` only the globals'); `paged` gives the blocks' sums as stored.
pub(crate) fn full_grad_norm(
    layout: &ParamLayout,
    kernels: &Kernels,
    parallel: &dyn Parallel,
    matrices: &[f32],
    vectors: &[f32],
    paged: Option<&GradientPages>,
) -> f32 {
    let mut sum = 0.0f64;
    for param in layout.params() {
        let slot = layout.slot(param).expect("params() lists the layout's parameters");
        sum += match (param, paged) {
            (Param::Layer(layer, p), Some(pages)) if slot.matrix => pages.sum(layer, p),
            _ => {
                let store = if slot.matrix { matrices } else { vectors };
                kernels.sum_of_squares_of(&store[slot.range()], parallel)
            }
        };
    }
    sum.sqrt() as f32
}
