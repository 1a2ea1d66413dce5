//! Paged frozen weights: a step that asks for each block's matrices right before the block
//! runs, and optionally for the head's rows one vocabulary chunk at a time, so that they need
//! not all be in memory at once.
//!
//! [`Model::train_step_paged`](crate::Model::train_step_paged) and
//! [`Model::loss_paged`](crate::Model::loss_paged) take a [`BlockSource`] and ask it for the
//! [`Page`]s that [`Model::page_schedule`](crate::Model::page_schedule) lists, in that order:
//! every block forward, then (when the source pages the embeddings) the head's vocabulary
//! chunks, then, for a training step, every block backward, last to first (a recomputed block is
//! asked for once, for its recomputation and its backward together). A source that pages the
//! embeddings also supplies the token embedding's rows of the batch's ids when the step starts.
//! What the source does not supply (the position table, every vector, and the embeddings when
//! they are not paged) stays in the [`crate::Weights`] the step is given.

use crate::params::{GlobalParam, LAYER_PARAMS, Param};

/// A part of the frozen weights a paged step asks its [`BlockSource`] for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Page {
    /// Block `layer`'s matrices.
    Block(usize),
    /// The head's rows `first..first + rows` (the tied embedding, or the untied `lm_head`).
    Head {
        /// First vocabulary entry.
        first: usize,
        /// Entries.
        rows: usize,
    },
    /// The token embedding's rows of the batch's ids (asked for when the step starts, outside
    /// the schedule).
    EmbeddingRows,
}

/// Which of the frozen matrices a [`BlockSource`] supplies instead of the step's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// None: every matrix is in the weights.
    Off,
    /// The blocks' matrices.
    Blocks,
    /// The blocks' matrices, the token embedding and the head.
    BlocksAndEmbeddings,
}

impl Paging {
    /// Whether `param`'s matrix comes from the source.
    pub fn covers(self, param: Param) -> bool {
        match (self, param) {
            (Paging::Off, _) => false,
            (_, Param::Layer(..)) => true,
            (Paging::Blocks, Param::Global(_)) => false,
            (Paging::BlocksAndEmbeddings, Param::Global(g)) => {
                matches!(g, GlobalParam::Embed | GlobalParam::LmHead)
            }
        }
    }
}

/// Hands over the frozen matrices one part at a time.
pub trait BlockSource<T> {
    /// Block `layer`'s matrices, indexed by [`crate::LayerParam`] (`as usize`), each
    /// [`crate::params::Slot::len`] elements long; entries of parameters the family does not
    /// have are empty. They stay valid until the next call.
    ///
    /// # Errors
    /// `Err(())` when the block cannot be supplied; the source keeps the reason, and the step
    /// fails with [`crate::Error::Paging`].
    #[allow(clippy::result_unit_err)] // The reason stays with the (std) source.
    fn block(&mut self, layer: usize) -> Result<[&[T]; LAYER_PARAMS], ()>;

    /// Whether this source also keeps the blocks' matrix gradients (full fine-tuning with
    /// paged blocks): a training step then asks for each block's backward through
    /// [`BlockSource::block_with_gradients`] instead of [`BlockSource::block`].
    fn pages_gradients(&self) -> bool {
        false
    }

    /// Block `layer`'s matrices, as [`BlockSource::block`] gives them, and the gradient of its
    /// matrices ([`crate::ParamLayout::block_matrices`]`(layer)` long) for the backward to
    /// accumulate into: zero, or what the optimizer step's earlier micro-batches left in it.
    /// The source takes the gradient back (to keep it) at its next call or when the step ends.
    /// Only called when [`BlockSource::pages_gradients`].
    ///
    /// # Errors
    /// As [`BlockSource::block`].
    #[allow(clippy::result_unit_err, clippy::type_complexity)] // as `block`
    fn block_with_gradients(
        &mut self,
        layer: usize,
    ) -> Result<([&[T]; LAYER_PARAMS], &mut [f32]), ()> {
        let _ = layer;
        Err(())
    }

    /// Whether the token embedding and the head come from this source too (through
    /// [`BlockSource::head_rows`] and [`BlockSource::embedding_rows`]); by default they are in
    /// the step's weights.
    fn pages_embeddings(&self) -> bool {
        false
    }

    /// The head's rows `first..first + rows` (`rows × hidden` elements), asked for in the order
    /// of the schedule; valid until the next call. Only called when
    /// [`BlockSource::pages_embeddings`].
    ///
    /// # Errors
    /// As [`BlockSource::block`].
    #[allow(clippy::result_unit_err)] // The reason stays with the (std) source.
    fn head_rows(&mut self, first: usize, rows: usize, hidden: usize) -> Result<&[T], ()> {
        let _ = (first, rows, hidden);
        Err(())
    }

    /// Writes the token embedding's row of each of `ids`, widened to f32, into `out`
    /// (`ids.len() × hidden`). Only called when [`BlockSource::pages_embeddings`].
    ///
    /// # Errors
    /// As [`BlockSource::block`].
    #[allow(clippy::result_unit_err)] // The reason stays with the (std) source.
    fn embedding_rows(&mut self, ids: &[u32], hidden: usize, out: &mut [f32]) -> Result<(), ()> {
        let _ = (ids, hidden, out);
        Err(())
    }
}

impl Paging {
    /// What `source` (if any) supplies.
    pub(crate) fn of<T>(source: Option<&dyn BlockSource<T>>) -> Paging {
        match source {
            None => Paging::Off,
            Some(s) if s.pages_embeddings() => Paging::BlocksAndEmbeddings,
            Some(_) => Paging::Blocks,
        }
    }
}

/// The head's rows as the fused loss reads them: from the step's weights, or paged in from a
/// source, which remembers the chunk last asked for, to name it when the source fails.
pub(crate) enum Head<'a, 'd, T> {
    Resident(&'a [T]),
    Paged { source: &'a mut (dyn BlockSource<T> + 'd), last: Page },
}

impl<T> Head<'_, '_, T> {
    /// The error of a failed read.
    pub(crate) fn error(&self) -> crate::Error {
        match self {
            Head::Paged { last, .. } => crate::Error::Paging { page: *last },
            Head::Resident(_) => unreachable!("rows in memory are always there"),
        }
    }
}

impl<T> mft_kernels::HeadRows<T> for Head<'_, '_, T> {
    fn rows(&mut self, first: usize, rows: usize, hidden: usize) -> Result<&[T], ()> {
        match self {
            Head::Resident(weight) => weight.rows(first, rows, hidden),
            Head::Paged { source, last } => {
                *last = Page::Head { first, rows };
                source.head_rows(first, rows, hidden)
            }
        }
    }
}
