//! [`Parallel`]: how a kernel splits its work across threads without knowing what runs them.
//!
//! The kernels are `no_std`, so they cannot spawn threads; a caller that has threads (mft-std's
//! pool, a host runtime's workers) implements this trait. [`Sequential`] runs everything on the
//! calling thread and needs nothing.
//!
//! Also here: how the row-wise kernels split their rows into tasks ([`for_each_range`], with a
//! minimum task size so small inputs stay on one thread), and how they reduce across rows. A
//! parameter gradient (a bias, a norm weight) sums over every row; each task sums its rows into
//! its own zeroed *partial* of the caller's scratch, and the partials are then added into the
//! gradient in task order. No two tasks write the same memory, and the result depends on how many
//! tasks there were (the summation order changes the rounding), never on how they were
//! scheduled. Scratch is `threads · width` floats for a gradient of `width` columns.

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
    let (parts, per_part) = split_rows(parallel.threads(), items, min_items);
    if parts == 0 {
        return;
    }
    if parts == 1 {
        task(0..items);
        return;
    }
    parallel.run(parts, &|p| task(p * per_part..items.min((p + 1) * per_part)));
}

/// Elements a task should have at least: below this, handing work to another thread costs
/// about as much as doing it (these loops run at several floats per nanosecond).
pub(crate) const MIN_TASK_ELEMENTS: usize = 16 * 1024;

/// Rows of `row_len` elements a task should have at least (one or more).
pub(crate) fn min_rows_per_task(row_len: usize) -> usize {
    (MIN_TASK_ELEMENTS / row_len.max(1)).max(1)
}

/// `rows` split into `(parts, rows_per_part)`, the way [`for_each_range`] splits them: at most
/// `threads` parts of at least `min_rows` rows (one part when `rows` is small).
fn split_rows(threads: usize, rows: usize, min_rows: usize) -> (usize, usize) {
    if rows == 0 {
        return (0, 0);
    }
    let parts = threads.max(1).min(rows.div_ceil(min_rows.max(1)));
    let per_part = rows.div_ceil(parts);
    (rows.div_ceil(per_part), per_part)
}

/// Splits `0..rows` into tasks of at least `min_rows` rows and runs `task(rows, partial)` on
/// each, where `partial` is the task's own zeroed `width` floats of `scratch`. Returns how many
/// partials were written (at most `parallel.threads()`), for [`add_partials`].
///
/// The caller has checked that `scratch` holds `parallel.threads().max(1) · width` floats.
pub(crate) fn for_each_range_with_partials(
    parallel: &dyn Parallel,
    rows: usize,
    min_rows: usize,
    width: usize,
    scratch: &mut [f32],
    task: impl Fn(core::ops::Range<usize>, &mut [f32]) + Sync,
) -> usize {
    let (parts, per_part) = split_rows(parallel.threads(), rows, min_rows);
    let partials = SharedSlice::new(&mut scratch[..parts * width]);
    let run_part = |p: usize| {
        // SAFETY: task `p` takes only partial `p`; the partials of different tasks are disjoint.
        let partial = unsafe { partials.part(p * width..(p + 1) * width) };
        partial.fill(0.0);
        task(p * per_part..rows.min((p + 1) * per_part), partial);
    };
    match parts {
        0 => {}
        1 => run_part(0),
        _ => parallel.run(parts, &run_part),
    }
    parts
}

/// `out[j] += Σ_p partials[p·stride + offset + j]` for the first `parts` partials, in order.
#[inline(always)]
pub(crate) fn add_partials(
    partials: &[f32],
    parts: usize,
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    for p in 0..parts {
        let partial = &partials[p * stride + offset..][..out.len()];
        for (o, v) in out.iter_mut().zip(partial) {
            *o += v;
        }
    }
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
