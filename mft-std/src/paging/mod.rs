//! Paged frozen weights, read from the checkpoint files while the step computes: the std side
//! of [`mft_core::Pager`] and [`mft_models::BlockSource`].
//!
//! [`PagedBlocks`] knows where every block's matrices are in the safetensors files (and, when
//! the embeddings are paged too, where the token embedding and the head are) and owns the
//! pager's two slots, allocated once. For a step, [`PagedBlocks::run`] starts an I/O thread
//! that reads each page of the model's schedule ([`mft_models::Model::page_schedule`]: a
//! block's matrices, or a vocabulary chunk of the head's rows) with `pread` straight into a
//! slot, converting from the stored type when it differs from the one used, one page ahead of
//! the model. The token embedding's rows of the batch's ids are read when the step asks for
//! them. Nothing is memory-mapped, so the page cache does not count as (or hide) the
//! process's memory.
//!
//! Full fine-tuning pages more: see [`full`].

pub mod full;

use std::fs::File;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::mpsc;

use mft_core::{DType, Element, Pager, PagerError, ShardStore};
use mft_kernels::Parallel;
use mft_models::params::LAYER_PARAMS;
use mft_models::{BlockSource, Page, Paging, Param, ParamLayout};

use crate::error::{Error, Result};
use crate::hf::checkpoint::read_converted;
use full::GradientPages;

/// Slot offsets are multiples of this (a cache line; enough for every element type).
const ALIGN: usize = 64;

/// One paged matrix in a checkpoint file.
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub(crate) param: Param,
    /// Index into [`PagedBlocks`]' files.
    pub(crate) file: usize,
    /// Where its bytes start in the file.
    pub(crate) offset: u64,
    /// Its stored element type.
    pub(crate) stored: DType,
    pub(crate) elements: usize,
}

impl Piece {
    /// Reads `dst.len()` elements from element `first` on, converted to `T`.
    fn read<T: Element>(
        &self,
        files: &[(PathBuf, File)],
        first: usize,
        dst: &mut [T],
    ) -> Result<()> {
        let (path, file) = &files[self.file];
        let offset = self.offset + (first * self.stored.size_bytes()) as u64;
        read_converted(file, offset, self.stored, dst, path)
    }
}

/// The token embedding and the head (the same tensor when tied), paged.
#[derive(Debug, Clone)]
pub(crate) struct PagedEmbeddings {
    pub(crate) embed: Piece,
    pub(crate) head: Piece,
    pub(crate) hidden: usize,
}

/// Where each paged matrix is, and the two slots pages are read into.
pub struct PagedBlocks<T> {
    files: Vec<(PathBuf, File)>,
    /// Per block, its matrices and their byte offsets in a slot.
    blocks: Vec<Vec<(Piece, usize)>>,
    /// Per block, the bytes it fills in a slot.
    block_bytes: Vec<usize>,
    embeddings: Option<PagedEmbeddings>,
    /// The two slots, in 8-byte words (so that every element type is aligned).
    slots: [Vec<u64>; 2],
    /// One row of the token embedding, as stored in `T` (widened from here).
    embedding_row: Vec<T>,
    /// The blocks' gradients, in full fine-tuning.
    gradients: Option<GradientPages>,
    reads: usize,
}

impl<T: Element> PagedBlocks<T> {
    /// Blocks whose matrices are `pieces[layer]`, and the paged embeddings if any, in `files`.
    /// The slots fit the largest block.
    pub(crate) fn new(
        files: Vec<(PathBuf, File)>,
        pieces: Vec<Vec<Piece>>,
        embeddings: Option<PagedEmbeddings>,
    ) -> PagedBlocks<T> {
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
        let row = embeddings.as_ref().map_or(0, |e| e.hidden);
        PagedBlocks {
            files,
            blocks,
            block_bytes,
            embeddings,
            slots: [vec![0; slot_words], vec![0; slot_words]],
            embedding_row: vec![T::default(); row],
            gradients: None,
            reads: 0,
        }
    }

    /// Keeps the blocks' gradients in `gradients` too (full fine-tuning).
    pub(crate) fn with_gradients(mut self, gradients: GradientPages) -> PagedBlocks<T> {
        self.gradients = Some(gradients);
        self
    }

    /// The blocks' gradients, when they are paged.
    pub(crate) fn gradients(&self) -> Option<&GradientPages> {
        self.gradients.as_ref()
    }

    /// The blocks' gradients, when they are paged, to change.
    pub(crate) fn gradients_mut(&mut self) -> Option<&mut GradientPages> {
        self.gradients.as_mut()
    }

    /// Reads block `layer`'s matrices, converted to `T`, into `out` (the block's part of the
    /// matrix store, [`ParamLayout::block_matrices`]).
    pub(crate) fn read_block_into(
        &self,
        layout: &ParamLayout,
        layer: usize,
        out: &mut [T],
    ) -> Result<()> {
        let start = layout.block_matrices(layer).start;
        for (piece, _) in &self.blocks[layer] {
            let slot = layout.slot(piece.param).expect("a paged matrix");
            let at = slot.offset - start;
            piece.read(&self.files, 0, &mut out[at..at + slot.len])?;
        }
        Ok(())
    }

    /// What is paged: the blocks, or the blocks and the embeddings.
    pub fn paging(&self) -> Paging {
        if self.embeddings.is_some() { Paging::BlocksAndEmbeddings } else { Paging::Blocks }
    }

    /// Bytes of the two slots together: what paging keeps resident of the paged matrices.
    pub fn slot_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.len() * 8).sum()
    }

    /// Pages read into a slot so far. A training step reads each block forward and backward
    /// (the last block only once when it stays in its slot, with nothing paged between its
    /// forward and its backward) and, when the embeddings are paged, each chunk of the head once
    /// between them.
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// The pages of a step of the model over `tokens` tokens (batch × seq), in order (see
    /// [`mft_models::Model::page_schedule`]).
    pub fn schedule(&self, model: &mft_models::Model, training: bool, tokens: usize) -> Vec<Page> {
        model.page_schedule(training, tokens, self.embeddings.is_some()).collect()
    }

    /// Bytes `page` fills in a slot.
    fn page_bytes(&self, page: Page) -> usize {
        match page {
            Page::Block(layer) => self.block_bytes[layer],
            Page::Head { rows, .. } => {
                let hidden = self.embeddings.as_ref().map_or(0, |e| e.hidden);
                rows * hidden * T::DTYPE.size_bytes()
            }
            Page::EmbeddingRows => 0,
        }
    }

    /// Runs `step` with a [`BlockSource`] that pages in the order of `schedule` (the model's
    /// [`mft_models::Model::page_schedule`]), reading on an I/O thread one page ahead; `step`
    /// returns the model's result.
    ///
    /// # Errors
    /// A page that cannot be read (naming its file), or the model's error.
    pub fn run<R>(
        &mut self,
        schedule: &[Page],
        step: impl FnOnce(&mut dyn BlockSource<T>) -> mft_models::Result<R>,
    ) -> Result<R> {
        self.run_with(schedule, &mft_kernels::Sequential, step)
    }

    /// [`PagedBlocks::run`] for a step that also pages the blocks' gradients (when they are
    /// paged): `parallel` sums their squares as each block's gradient is stored.
    ///
    /// # Errors
    /// As [`PagedBlocks::run`]; a gradient that cannot be read or written (naming the file).
    pub fn run_with<R>(
        &mut self,
        schedule: &[Page],
        parallel: &dyn Parallel,
        step: impl FnOnce(&mut dyn BlockSource<T>) -> mft_models::Result<R>,
    ) -> Result<R> {
        // Shards are the distinct pages, numbered as first scheduled.
        let mut pages: Vec<Page> = Vec::new();
        let order: Vec<usize> = schedule
            .iter()
            .map(|page| {
                pages.iter().position(|p| p == page).unwrap_or_else(|| {
                    pages.push(*page);
                    pages.len() - 1
                })
            })
            .collect();
        let shard_bytes: Vec<usize> = pages.iter().map(|&p| self.page_bytes(p)).collect();
        let need = shard_bytes.iter().max().copied().unwrap_or(0).div_ceil(8);
        if self.slots[0].len() < need {
            self.slots = [vec![0; need], vec![0; need]];
        }
        let PagedBlocks {
            files, blocks, embeddings, slots, embedding_row, gradients, reads, ..
        } = self;
        let [a, b] = slots;
        let slots: [&mut [u8]; 2] = [bytemuck::cast_slice_mut(a), bytemuck::cast_slice_mut(b)];
        let (files, blocks, embeddings) = (&*files, &*blocks, embeddings.as_ref());
        let pages = &pages;
        std::thread::scope(|scope| {
            let (requests, jobs) = mpsc::channel::<(usize, &mut [u8])>();
            let (finished, done) = mpsc::channel();
            scope.spawn(move || {
                for (shard, slot) in jobs {
                    let result = match pages[shard] {
                        Page::Block(layer) => read_block::<T>(files, &blocks[layer], slot),
                        Page::Head { first, rows } => {
                            let head = &embeddings.expect("head pages only when paged").head;
                            let hidden = embeddings.map_or(0, |e| e.hidden);
                            let bytes = &mut slot[..rows * hidden * T::DTYPE.size_bytes()];
                            head.read::<T>(files, first * hidden, bytemuck::cast_slice_mut(bytes))
                        }
                        Page::EmbeddingRows => Ok(()),
                    };
                    if finished.send((result.map(|()| shard), slot)).is_err() {
                        break;
                    }
                }
            });
            let store = ThreadStore { requests, done, shard_bytes: &shard_bytes };
            let pager = Pager::new(store, &order, slots).map_err(pager_error)?;
            let mut source = Source {
                pager,
                pages,
                blocks,
                files,
                embeddings,
                embedding_row,
                gradients: gradients.as_mut(),
                parallel,
                failure: None,
                _element: PhantomData,
            };
            let result = step(&mut source);
            let Source { pager, mut failure, gradients, .. } = source;
            // The last block's gradient is still in its slot.
            if let (Some(gradients), Ok(_)) = (gradients, &result)
                && let Err(e) = gradients.store(parallel)
            {
                failure.get_or_insert(e);
            }
            let result = match (result, &failure) {
                (Ok(_), Some(_)) => Err(mft_models::Error::Paging { page: Page::EmbeddingRows }),
                (result, _) => result,
            };
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

    /// Reads every paged matrix into `store`, the flat matrix store of `layout`.
    pub(crate) fn read_into_store(&self, layout: &ParamLayout, store: &mut [T]) -> Result<()> {
        let pieces = self.blocks.iter().flatten().map(|(piece, _)| piece);
        let embeddings = self.embeddings.iter().flat_map(|e| [&e.embed, &e.head]);
        for piece in pieces.chain(embeddings) {
            let slot = layout.slot(piece.param).expect("a paged matrix");
            piece.read(&self.files, 0, &mut store[slot.range()])?;
        }
        Ok(())
    }
}

impl<T> std::fmt::Debug for PagedBlocks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagedBlocks")
            .field("blocks", &self.blocks.len())
            .field("embeddings", &self.embeddings.is_some())
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
        let bytes = &mut slot[*at..*at + piece.elements * size];
        piece.read::<T>(files, 0, bytemuck::cast_slice_mut(bytes))?;
    }
    Ok(())
}

/// A block's matrices in the slot `bytes` it was read into.
fn block_matrices<'a, T: Element>(
    block: &[(Piece, usize)],
    bytes: &'a [u8],
) -> [&'a [T]; LAYER_PARAMS] {
    let size = T::DTYPE.size_bytes();
    let mut matrices: [&[T]; LAYER_PARAMS] = [&[]; LAYER_PARAMS];
    for (piece, at) in block {
        let Param::Layer(_, p) = piece.param else { unreachable!("block pieces are layers'") };
        matrices[p as usize] = bytemuck::cast_slice(&bytes[*at..*at + piece.elements * size]);
    }
    matrices
}

/// The pager's store: requests go to the I/O thread, filled slots come back in order.
struct ThreadStore<'s> {
    requests: mpsc::Sender<(usize, &'s mut [u8])>,
    done: mpsc::Receiver<(Result<usize>, &'s mut [u8])>,
    shard_bytes: &'s [usize],
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
        self.shard_bytes[shard]
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

/// The model's view: each page as slices of the current slot.
struct Source<'s, 'b, T> {
    pager: Pager<'s, ThreadStore<'s>>,
    /// The shards' pages.
    pages: &'b [Page],
    blocks: &'b [Vec<(Piece, usize)>],
    files: &'b [(PathBuf, File)],
    embeddings: Option<&'b PagedEmbeddings>,
    embedding_row: &'b mut [T],
    gradients: Option<&'b mut GradientPages>,
    parallel: &'b dyn Parallel,
    /// Why the last call failed.
    failure: Option<Error>,
    _element: PhantomData<T>,
}

impl<T: Element> Source<'_, '_, T> {
    /// The next page's bytes, which must be `wanted`.
    fn next(&mut self, wanted: Page) -> std::result::Result<&[u8], ()> {
        let failure = match self.pager.advance() {
            Ok((shard, bytes)) if self.pages[shard] == wanted => return Ok(bytes),
            Ok((shard, _)) => Error::Training {
                problem: format!(
                    "paging: the model asked for {wanted:?}, {:?} was next",
                    self.pages[shard]
                ),
            },
            Err(e) => pager_error(e),
        };
        self.failure = Some(failure);
        Err(())
    }
}

impl<T: Element> BlockSource<T> for Source<'_, '_, T> {
    fn block(&mut self, layer: usize) -> std::result::Result<[&[T]; LAYER_PARAMS], ()> {
        let blocks = self.blocks;
        let bytes = self.next(Page::Block(layer))?;
        Ok(block_matrices(&blocks[layer], bytes))
    }

    fn pages_embeddings(&self) -> bool {
        self.embeddings.is_some()
    }

    fn pages_gradients(&self) -> bool {
        self.gradients.is_some()
    }

    fn block_with_gradients(
        &mut self,
        layer: usize,
    ) -> std::result::Result<([&[T]; LAYER_PARAMS], &mut [f32]), ()> {
        let gradients = self.gradients.as_deref_mut().ok_or(())?;
        if let Err(e) = gradients.load(layer, self.parallel) {
            self.failure = Some(e);
            return Err(());
        }
        let Source { pager, pages, blocks, failure, gradients, .. } = self;
        let matrices = match pager.advance() {
            Ok((shard, bytes)) if pages[shard] == Page::Block(layer) => {
                block_matrices(&blocks[layer], bytes)
            }
            other => {
                *failure = Some(match other {
                    Ok((shard, _)) => Error::Training {
                        problem: format!(
                            "paging: the model asked for block {layer}, {:?} was next",
                            pages[shard]
                        ),
                    },
                    Err(e) => pager_error(e),
                });
                return Err(());
            }
        };
        let slot = gradients.as_deref_mut().expect("checked above").slot();
        Ok((matrices, slot))
    }

    fn head_rows(
        &mut self,
        first: usize,
        rows: usize,
        hidden: usize,
    ) -> std::result::Result<&[T], ()> {
        let bytes = self.next(Page::Head { first, rows })?;
        Ok(bytemuck::cast_slice(&bytes[..rows * hidden * T::DTYPE.size_bytes()]))
    }

    fn embedding_rows(
        &mut self,
        ids: &[u32],
        hidden: usize,
        out: &mut [f32],
    ) -> std::result::Result<(), ()> {
        let embed = &self.embeddings.ok_or(())?.embed;
        for (row, &id) in out.chunks_exact_mut(hidden).zip(ids) {
            // Read as `T`, then widened: the values a resident `T` table gives.
            if let Err(e) = embed.read(self.files, id as usize * hidden, self.embedding_row) {
                self.failure = Some(e);
                return Err(());
            }
            for (dst, src) in row.iter_mut().zip(self.embedding_row.iter()) {
                *dst = src.to_f32();
            }
        }
        Ok(())
    }
}
