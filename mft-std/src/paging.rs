//! Frozen block matrices paged in from the checkpoint files, one block at a time, while the
//! step computes: the std side of [`mft_core::Pager`] and [`mft_models::BlockSource`].
//!
//! [`PagedBlocks`] knows where every block's matrices are in the safetensors files and owns the
//! pager's two slots (each the size of the largest block, allocated once). For a step,
//! [`PagedBlocks::run`] starts an I/O thread that reads each block with `pread` straight into a
//! slot (converting from the stored type when it differs from the one used), one block ahead
//! of the model, in the order of [`mft_models::Model::block_schedule`]. Blocks are read, not
//! memory-mapped, so the page cache does not count as (or hide) the process's memory.

use std::fs::File;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::mpsc;

use mft_core::{DType, Element, Pager, PagerError, ShardStore};
use mft_models::params::LAYER_PARAMS;
use mft_models::{BlockSource, LayerParam, Param, ParamLayout};

use crate::error::{Error, Result};
use crate::hf::checkpoint::read_converted;

/// Slot offsets are multiples of this (a cache line; enough for every element type).
const ALIGN: usize = 64;

/// One block matrix in a checkpoint file.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub(crate) param: LayerParam,
    /// Index into [`PagedBlocks`]' files.
    pub(crate) file: usize,
    /// Where its bytes start in the file.
    pub(crate) offset: u64,
    /// Its stored element type.
    pub(crate) stored: DType,
    pub(crate) elements: usize,
}

/// Where each block's matrices are, and the two slots they are paged into.
pub struct PagedBlocks<T> {
    files: Vec<(PathBuf, File)>,
    /// Per block, its matrices and their byte offsets in a slot.
    blocks: Vec<Vec<(Piece, usize)>>,
    /// Per block, the bytes it fills in a slot.
    block_bytes: Vec<usize>,
    /// The two slots, in 8-byte words (so that every element type is aligned).
    slots: [Vec<u64>; 2],
    reads: usize,
    _element: PhantomData<T>,
}

impl<T: Element> PagedBlocks<T> {
    /// Blocks whose matrices are `pieces[layer]`, in `files`.
    pub(crate) fn new(files: Vec<(PathBuf, File)>, pieces: Vec<Vec<Piece>>) -> PagedBlocks<T> {
        let size = T::DTYPE.size_bytes();
        let mut block_bytes = Vec::with_capacity(pieces.len());
        let blocks: Vec<Vec<(Piece, usize)>> = pieces
            .into_iter()
            .map(|block| {
                let mut at = 0;
                let placed = block
                    .into_iter()
                    .map(|piece| {
                        let here = at;
                        at = (at + piece.elements * size).next_multiple_of(ALIGN);
                        (piece, here)
                    })
                    .collect();
                block_bytes.push(at);
                placed
            })
            .collect();
        let slot_words = block_bytes.iter().max().copied().unwrap_or(0).div_ceil(8);
        PagedBlocks {
            files,
            blocks,
            block_bytes,
            slots: [vec![0; slot_words], vec![0; slot_words]],
            reads: 0,
            _element: PhantomData,
        }
    }

    /// Bytes of the two slots together: what paging keeps resident of the blocks.
    pub fn slot_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.len() * 8).sum()
    }

    /// Block reads so far (every step reads each block once forward and, but for the last,
    /// once backward).
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// Runs `step` with a [`BlockSource`] that pages the blocks in the order of `schedule`,
    /// reading on an I/O thread one block ahead; `step` returns the model's result.
    ///
    /// # Errors
    /// A block that cannot be read (naming its file), or the model's error.
    pub fn run<R>(
        &mut self,
        schedule: &[usize],
        step: impl FnOnce(&mut dyn BlockSource<T>) -> mft_models::Result<R>,
    ) -> Result<R> {
        let PagedBlocks { files, blocks, block_bytes, slots, reads, .. } = self;
        let [a, b] = slots;
        let slots: [&mut [u8]; 2] = [bytemuck::cast_slice_mut(a), bytemuck::cast_slice_mut(b)];
        let (files, blocks) = (&*files, &*blocks);
        std::thread::scope(|scope| {
            let (requests, jobs) = mpsc::channel::<(usize, &mut [u8])>();
            let (finished, done) = mpsc::channel();
            scope.spawn(move || {
                for (block, slot) in jobs {
                    let result = read_block::<T>(files, &blocks[block], slot).map(|()| block);
                    if finished.send((result, slot)).is_err() {
                        break;
                    }
                }
            });
            let store = ThreadStore { requests, done, block_bytes };
            let pager = Pager::new(store, schedule, slots).map_err(pager_error)?;
            let mut source = Source { pager, blocks, failure: None, _element: PhantomData };
            let result = step(&mut source);
            let Source { pager, failure, .. } = source;
            *reads += pager.reads();
            // Waits for a read still in flight; dropping the store ends the I/O thread.
            let finished = pager.finish().map_err(pager_error);
            match (result, failure) {
                (Err(mft_models::Error::Paging { .. }), Some(failure)) => Err(failure),
                (Err(e), _) => Err(Error::Training { problem: e.to_string() }),
                (Ok(value), _) => finished.map(|_store| value),
            }
        })
    }

    /// Reads every block's matrices into `store`, the flat matrix store of `layout`.
    pub(crate) fn read_into_store(&self, layout: &ParamLayout, store: &mut [T]) -> Result<()> {
        for (layer, block) in self.blocks.iter().enumerate() {
            for (piece, _) in block {
                let slot = layout.slot(Param::Layer(layer, piece.param)).expect("a block matrix");
                let (path, file) = &self.files[piece.file];
                read_converted(file, piece.offset, piece.stored, &mut store[slot.range()], path)?;
            }
        }
        Ok(())
    }
}

impl<T> std::fmt::Debug for PagedBlocks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedBlocks")
            .field("blocks", &self.blocks.len())
            .field("slot_bytes", &(self.slots[0].len() * 8))
            .finish()
    }
}

/// Reads `block`'s matrices into `slot` at their offsets.
fn read_block<T: Element>(
    files: &[(PathBuf, File)],
    block: &[(Piece, usize)],
    slot: &mut [u8],
) -> Result<()> {
    let size = T::DTYPE.size_bytes();
    for (piece, at) in block {
        let (path, file) = &files[piece.file];
        let bytes = &mut slot[*at..*at + piece.elements * size];
        read_converted::<T>(
            file,
            piece.offset,
            piece.stored,
            bytemuck::cast_slice_mut(bytes),
            path,
        )?;
    }
    Ok(())
}

/// The pager's store: requests go to the I/O thread, filled slots come back in order.
struct ThreadStore<'s> {
    requests: mpsc::Sender<(usize, &'s mut [u8])>,
    done: mpsc::Receiver<(Result<usize>, &'s mut [u8])>,
    block_bytes: &'s [usize],
}

impl<'s> ShardStore<'s> for ThreadStore<'s> {
    type Error = Error;

    fn submit(&mut self, shard: usize, slot: &'s mut [u8]) -> Result<()> {
        self.requests.send((shard, slot)).map_err(|_| io_thread_gone())
    }

    fn wait(&mut self) -> Result<(usize, &'s mut [u8])> {
        let (result, slot) = self.done.recv().map_err(|_| io_thread_gone())?;
        Ok((result?, slot))
    }

    fn shard_len(&self, shard: usize) -> usize {
        self.block_bytes[shard]
    }
}

fn io_thread_gone() -> Error {
    Error::Training { problem: "the paging I/O thread stopped".into() }
}

fn pager_error(e: PagerError<Error>) -> Error {
    match e {
        PagerError::Store(e) => e,
        other => Error::Training { problem: format!("paging: {other}") },
    }
}

/// The model's view: each block's matrices as slices of the current slot.
struct Source<'s, 'b, T> {
    pager: Pager<'s, ThreadStore<'s>>,
    blocks: &'b [Vec<(Piece, usize)>],
    /// Why the last `block` call failed.
    failure: Option<Error>,
    _element: PhantomData<T>,
}

impl<T: Element> BlockSource<T> for Source<'_, '_, T> {
    fn block(&mut self, layer: usize) -> std::result::Result<[&[T]; LAYER_PARAMS], ()> {
        let (shard, bytes) = match self.pager.advance() {
            Ok(current) => current,
            Err(e) => {
                self.failure = Some(pager_error(e));
                return Err(());
            }
        };
        if shard != layer {
            self.failure = Some(Error::Training {
                problem: format!(
                    "paging: the model asked for block {layer}, block {shard} was next"
                ),
            });
            return Err(());
        }
        let size = T::DTYPE.size_bytes();
        let mut matrices: [&[T]; LAYER_PARAMS] = [&[]; LAYER_PARAMS];
        for (piece, at) in &self.blocks[layer] {
            matrices[piece.param as usize] =
                bytemuck::cast_slice(&bytes[*at..*at + piece.elements * size]);
        }
        Ok(matrices)
    }
}
