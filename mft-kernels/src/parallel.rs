//! [`Parallel`]: how a kernel splits its work across threads without knowing what runs them.
//!
//! The kernels are `no_std`, so they cannot spawn threads; a caller that has threads (mft-std's
//! pool, a host runtime's workers) implements this trait. [`Sequential`] runs everything on the
//! calling thread and needs nothing.

/// Runs independent tasks, possibly concurrently.
///
/// # Safety
/// Kernels hand each task index a disjoint part of their output and scratch and rely on
/// [`Parallel::run`] calling `task(i)` exactly once per index, and on every call having returned
/// when `run` returns. An implementation that calls an index twice, or returns early, would let
/// two tasks write the same memory.
pub unsafe trait Parallel: Sync {
    /// How many tasks can run at once; kernels split their work into about this many parts.
    fn threads(&self) -> usize;

    /// Call `task(i)` exactly once for every `i` in `0..tasks`, in any order and on any threads,
    /// and return when every call has returned.
    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync));
}

/// Everything on the calling thread, in order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;

// SAFETY: each index is run once, in order, before `run` returns.
unsafe impl Parallel for Sequential {
    fn threads(&self) -> usize {
        1
    }

    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        for i in 0..tasks {
            task(i);
        }
    }
}
