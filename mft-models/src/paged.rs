//! Paged frozen weights: a step that asks for each block's matrices right before the block
//! runs, so they need not all be in memory at once.
//!
//! [`Model::train_step_paged`](crate::Model::train_step_paged) and
//! [`Model::loss_paged`](crate::Model::loss_paged) take a [`BlockSource`] and call it once per
//! block run, in the order [`Model::block_schedule`](crate::Model::block_schedule) lists
//! (forward, then backward for a training step; a recomputed block is asked for once, for its
//! recomputation and its backward together). The matrices outside the blocks (embeddings, an
//! untied head) and every vector stay in the [`crate::Weights`] the step is given.

use crate::params::LAYER_PARAMS;

/// Hands over one block's frozen matrices at a time.
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
}
