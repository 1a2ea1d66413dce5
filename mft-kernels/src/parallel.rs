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

/// Splits `0..items` into at most `parallel.threads()` contiguous ranges of at least `min_items`
/// items each (one range when `items` is small) and runs `task` on each range.
pub fn for_each_range(
    parallel: &dyn Parallel,
    items: usize,
    min_items: usize,
    task: impl Fn(core::ops::Range<usize>) + Sync,
) {
    if items == 0 {
        return;
    }
    let parts = parallel.threads().max(1).min(items.div_ceil(min_items.max(1)));
    let per_part = items.div_ceil(parts);
    let parts = items.div_ceil(per_part);
    if parts == 1 {
        task(0..items);
        return;
    }
    parallel.run(parts, &|p| task(p * per_part..items.min((p + 1) * per_part)));
}

/// A mutable slice shared by the tasks of one [`Parallel`] run, each of which takes a disjoint
/// part with [`SharedSlice::part`].
pub struct SharedSlice<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: core::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the slice is only reached through `part`, whose contract forbids overlapping parts; the
// elements are `Send`, so handing parts to other threads is sound.
unsafe impl<T: Send> Sync for SharedSlice<'_, T> {}
// SAFETY: as for `Sync`.
unsafe impl<T: Send> Send for SharedSlice<'_, T> {}

impl<'a, T> SharedSlice<'a, T> {
    /// Shares `slice` (mutably borrowed for `'a`).
    pub fn new(slice: &'a mut [T]) -> Self {
        SharedSlice {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: core::marker::PhantomData,
        }
    }

    /// Length of the whole slice.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the whole slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `range` of the slice.
    ///
    /// # Panics
    /// If `range` is out of bounds or reversed.
    ///
    /// # Safety
    /// No two parts alive at the same time may overlap (tasks of one run take disjoint ranges).
    #[allow(clippy::mut_from_ref)] // disjointness is the caller's contract, as for split_at_mut
    pub unsafe fn part(&self, range: core::ops::Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "SharedSlice::part: {range:?} out of 0..{}",
            self.len
        );
        // SAFETY: in bounds (checked), and the caller guarantees no overlapping part is alive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}
