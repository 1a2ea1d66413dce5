//! [`Arena`]: a bump region over memory the caller owns.
//!
//! The core never calls the global allocator. A caller (a static buffer, a `Vec`, an mmap, a region
//! handed over by a host runtime) gives the arena a `&mut [MaybeUninit<u8>]`; the arena hands out
//! aligned, typed, non-overlapping slices of it and can carve sub-arenas for separate lifetimes
//! (parameters, optimizer state, per-step scratch).
//!
//! Allocation takes `&self`, so many allocations can be alive at once; every one borrows the arena.
//! Rewinding takes `&mut self`, so the borrow checker proves that nothing allocated after the mark
//! is still in use when its memory is handed out again. A training step's scratch therefore lives in
//! a [`Scope`] (or between [`Arena::mark`] and [`Arena::rewind`]) and is freed in one move.
//!
//! ```
//! use std::mem::MaybeUninit;
//! use mft_core::Arena;
//!
//! let mut region = vec![MaybeUninit::<u8>::uninit(); 1 << 20]; // or a static, an mmap, a host's buffer
//! let root = Arena::new(&mut region);
//! let params = root.carve(512 << 10)?;          // lives as long as `root`
//! let mut scratch = root.carve(256 << 10)?;     // rewound every step
//! let weights = params.alloc_tensor::<f32>(&[64, 64])?;
//! for _step in 0..3 {
//!     let step = scratch.scope();               // everything allocated in `step` is freed at its end
//!     let tmp = step.alloc_zeroed::<f32>(4096)?;
//!     assert_eq!(tmp.len(), 4096);
//! }
//! assert_eq!(weights.dims(), &[64, 64]);
//! assert_eq!(scratch.used(), 0);
//! assert!(scratch.high_water_mark() >= 4096 * 4);
//! # Ok::<(), mft_core::Error>(())
//! ```
// Allocation hands out `&mut` slices from `&self`: each is a region disjoint from every other live
// one (that is the point of a bump arena), so the pattern clippy warns about is sound here.
#![allow(clippy::mut_from_ref)]

use core::cell::Cell;
use core::marker::PhantomData;
use core::mem::{MaybeUninit, align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::tensor::{Layout, TensorViewMut};

/// Alignment of every allocation unless a larger one is asked for: one cache line, and wide enough
/// for any SIMD load (AVX-512, SVE up to 512 bits).
pub const DEFAULT_ALIGN: usize = 64;

/// A bump allocator over a caller-provided byte region.
///
/// `used` counts bytes from the start of the region, alignment padding included; the high-water
/// mark is the largest `used` ever reached (until [`Arena::reset_high_water_mark`]).
pub struct Arena<'buf> {
    base: NonNull<u8>,
    capacity: usize,
    used: Cell<usize>,
    high_water: Cell<usize>,
    _region: PhantomData<&'buf mut [MaybeUninit<u8>]>,
}

// SAFETY: an arena has exclusive access to its region (it was built from a `&mut` borrow or carved
// from a disjoint part of a parent). Moving it to another thread moves that exclusive access; it is
// not `Sync` (the counters are `Cell`s), and it cannot move while any allocation borrows it.
unsafe impl Send for Arena<'_> {}

/// A saved arena state, to [`Arena::rewind`] to later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    base: usize,
    used: usize,
}

impl Mark {
    /// Bytes in use when the mark was taken.
    pub fn used(&self) -> usize {
        self.used
    }
}

impl<'buf> Arena<'buf> {
    /// An arena over `region`. Nothing is written to it until allocations are initialized.
    pub fn new(region: &'buf mut [MaybeUninit<u8>]) -> Self {
        let capacity = region.len();
        Arena {
            base: NonNull::from(region).cast(),
            capacity,
            used: Cell::new(0),
            high_water: Cell::new(0),
            _region: PhantomData,
        }
    }

    /// An arena over an initialized byte buffer (for example a `static mut [u8; N]`).
    pub fn from_bytes(region: &'buf mut [u8]) -> Self {
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and every byte pattern the arena may
        // leave behind (it only ever writes initialized values) is a valid `u8`.
        let region = unsafe { &mut *(region as *mut [u8] as *mut [MaybeUninit<u8>]) };
        Arena::new(region)
    }

    /// Total bytes managed.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes handed out so far, alignment padding included.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Bytes still free (an allocation may need some of them for alignment padding).
    pub fn remaining(&self) -> usize {
        self.capacity - self.used.get()
    }

    /// The largest value [`Arena::used`] has reached.
    pub fn high_water_mark(&self) -> usize {
        self.high_water.get()
    }

    /// Restart high-water tracking from the current use (for example after planning allocations).
    pub fn reset_high_water_mark(&mut self) {
        self.high_water.set(self.used.get());
    }

    /// The current state, for a later [`Arena::rewind`].
    pub fn mark(&self) -> Mark {
        Mark { base: self.base.as_ptr().addr(), used: self.used.get() }
    }

    /// Free everything allocated since `mark` was taken. Taking `&mut self` proves those
    /// allocations are no longer borrowed. The high-water mark is kept.
    ///
    /// Fails with [`Error::StaleMark`] for a mark from another arena or from a state that a
    /// previous rewind already discarded.
    pub fn rewind(&mut self, mark: Mark) -> Result<()> {
        let used = self.used.get();
        if mark.base != self.base.as_ptr().addr() || mark.used > used {
            return Err(Error::StaleMark { mark: mark.used, used });
        }
        self.used.set(mark.used);
        Ok(())
    }

    /// A scope whose allocations are all freed when it is dropped. It dereferences to the arena,
    /// so allocation, nested scopes and carving work inside it as outside.
    pub fn scope(&mut self) -> Scope<'_, 'buf> {
        let mark = self.mark();
        Scope { arena: self, mark }
    }

    /// Reserve `bytes` at an address aligned to `align`; the core of every allocation.
    fn reserve(&self, bytes: usize, align: usize) -> Result<NonNull<u8>> {
        if !align.is_power_of_two() {
            return Err(Error::InvalidAlignment { align });
        }
        let used = self.used.get();
        let remaining = self.capacity - used;
        let next_addr = self.base.as_ptr().addr().wrapping_add(used);
        let padding = next_addr.wrapping_neg() & (align - 1);
        let needed = padding.checked_add(bytes).filter(|&n| n <= remaining);
        let Some(needed) = needed else {
            return Err(Error::OutOfMemory {
                requested: bytes,
                align,
                remaining,
                capacity: self.capacity,
            });
        };
        let new_used = used + needed;
        self.used.set(new_used);
        if new_used > self.high_water.get() {
            self.high_water.set(new_used);
        }
        // SAFETY: `used + padding + bytes <= capacity`, so the offset stays inside the region.
        Ok(unsafe { self.base.add(used + padding) })
    }

    /// `len` uninitialized elements of `T`, aligned to `max(align, align_of::<T>())`.
    ///
    /// Empty requests (`len == 0` or a zero-sized `T`) consume nothing.
    pub fn alloc_uninit_aligned<T>(
        &self,
        len: usize,
        align: usize,
    ) -> Result<&mut [MaybeUninit<T>]> {
        if !align.is_power_of_two() {
            return Err(Error::InvalidAlignment { align });
        }
        let align = align.max(align_of::<T>());
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or(Error::SizeOverflow { count: len, elem_size: size_of::<T>() })?;
        let ptr = if bytes == 0 {
            // An empty slice needs only a non-null, aligned address; no memory is touched.
            NonNull::new(core::ptr::without_provenance_mut::<u8>(align))
                .expect("alignment is non-zero")
        } else {
            self.reserve(bytes, align)?
        };
        // SAFETY: `ptr` is aligned for `T` and, when `bytes > 0`, points to `bytes` bytes of the
        // region that no other live allocation covers (bump allocation never hands out a byte
        // twice until a rewind, which needs `&mut self` and so ends every borrow of earlier
        // allocations). `MaybeUninit<T>` has no validity requirement.
        Ok(unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr().cast::<MaybeUninit<T>>(), len) })
    }

    /// `len` uninitialized elements of `T`, aligned to [`DEFAULT_ALIGN`] (or more if `T` needs it).
    pub fn alloc_uninit<T>(&self, len: usize) -> Result<&mut [MaybeUninit<T>]> {
        self.alloc_uninit_aligned(len, DEFAULT_ALIGN)
    }

    /// `len` elements of `T`, all set to `value`.
    pub fn alloc_filled<T: Copy>(&self, len: usize, value: T) -> Result<&mut [T]> {
        let slots = self.alloc_uninit::<T>(len)?;
        for slot in slots.iter_mut() {
            slot.write(value);
        }
        // SAFETY: every element was initialized just above.
        Ok(unsafe { assume_init(slots) })
    }

    /// `len` elements of `T`, all-zero bytes (valid for every [`bytemuck::Zeroable`] type).
    pub fn alloc_zeroed<T: bytemuck::Zeroable>(&self, len: usize) -> Result<&mut [T]> {
        let slots = self.alloc_uninit::<T>(len)?;
        // SAFETY: writes `len * size_of::<T>()` bytes inside the allocation just made.
        unsafe { core::ptr::write_bytes(slots.as_mut_ptr(), 0, len) };
        // SAFETY: all-zero bytes are a valid `T` because `T: Zeroable`.
        Ok(unsafe { assume_init(slots) })
    }

    /// A copy of `src` in the arena.
    pub fn alloc_copy<T: Copy>(&self, src: &[T]) -> Result<&mut [T]> {
        let slots = self.alloc_uninit::<T>(src.len())?;
        for (slot, &value) in slots.iter_mut().zip(src) {
            slot.write(value);
        }
        // SAFETY: every element was initialized just above.
        Ok(unsafe { assume_init(slots) })
    }

    /// A zero-filled contiguous tensor of the given shape.
    pub fn alloc_tensor<T: Element>(&self, shape: &[usize]) -> Result<TensorViewMut<'_, T>> {
        let layout = Layout::contiguous(shape)?;
        let data = self.alloc_zeroed::<T>(layout.numel())?;
        TensorViewMut::from_slice(data, shape)
    }

    /// A sub-arena over the next `bytes` bytes (starting at a [`DEFAULT_ALIGN`] boundary).
    /// The parent counts all of them as used until it is rewound past them.
    pub fn carve(&self, bytes: usize) -> Result<Arena<'_>> {
        let region = self.alloc_uninit::<u8>(bytes)?;
        Ok(Arena::new(region))
    }
}

/// The slice as initialized elements (`MaybeUninit<T>` has `T`'s layout).
///
/// # Safety
/// Every element of `slots` holds a valid `T`.
unsafe fn assume_init<T>(slots: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: the caller guarantees every element is initialized.
    unsafe { &mut *(slots as *mut [MaybeUninit<T>] as *mut [T]) }
}

impl core::fmt::Debug for Arena<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Arena")
            .field("capacity", &self.capacity)
            .field("used", &self.used.get())
            .field("high_water_mark", &self.high_water.get())
            .finish()
    }
}

/// An [`Arena`] borrowed for one scope (a training step): dropping it rewinds the arena to where
/// it stood when the scope began.
pub struct Scope<'a, 'buf> {
    arena: &'a mut Arena<'buf>,
    mark: Mark,
}

impl<'buf> Deref for Scope<'_, 'buf> {
    type Target = Arena<'buf>;
    fn deref(&self) -> &Arena<'buf> {
        self.arena
    }
}

impl<'buf> DerefMut for Scope<'_, 'buf> {
    fn deref_mut(&mut self) -> &mut Arena<'buf> {
        self.arena
    }
}

impl Drop for Scope<'_, '_> {
    fn drop(&mut self) {
        // Fails only if the arena was swapped out through `DerefMut` for one whose state the mark
        // does not describe; there is then nothing of this scope's to free.
        let _ = self.arena.rewind(self.mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(bytes: usize) -> std::vec::Vec<MaybeUninit<u8>> {
        std::vec![MaybeUninit::uninit(); bytes]
    }

    #[test]
    fn allocations_are_aligned_and_hold_their_values() {
        let mut buf = region(4096);
        let arena = Arena::new(&mut buf);
        let a = arena.alloc_filled::<f32>(3, 1.5).unwrap();
        let b = arena.alloc_filled::<u8>(5, 7).unwrap();
        let c = arena.alloc_zeroed::<u64>(9).unwrap();
        for ptr in [a.as_ptr().addr(), b.as_ptr().addr(), c.as_ptr().addr()] {
            assert_eq!(ptr % DEFAULT_ALIGN, 0);
        }
        a[2] = -1.0;
        b[0] = 9;
        c[8] = u64::MAX;
        assert_eq!(a, &[1.5, 1.5, -1.0]);
        assert_eq!(b, &[9, 7, 7, 7, 7]);
        assert_eq!(&c[..8], &[0; 8]);
        assert_eq!(c[8], u64::MAX);
    }

    #[test]
    fn exhaustion_is_an_error_naming_request_and_bytes_left() {
        let mut buf = region(256);
        let arena = Arena::new(&mut buf);
        let used_before = {
            arena.alloc_zeroed::<u8>(100).unwrap();
            arena.used()
        };
        let err = arena.alloc_zeroed::<f32>(1000).unwrap_err();
        let remaining = 256 - used_before;
        assert_eq!(
            err,
            Error::OutOfMemory { requested: 4000, align: 64, remaining, capacity: 256 }
        );
        let msg = std::format!("{err}");
        assert!(msg.contains("4000 bytes"), "{msg}");
        assert!(msg.contains(&std::format!("{remaining} bytes left")), "{msg}");
        // A failed request changes nothing.
        assert_eq!(arena.used(), used_before);
    }

    #[test]
    fn size_overflow_and_bad_alignment_are_errors() {
        let mut buf = region(64);
        let arena = Arena::new(&mut buf);
        assert_eq!(
            arena.alloc_uninit::<u32>(usize::MAX / 2).unwrap_err(),
            Error::SizeOverflow { count: usize::MAX / 2, elem_size: 4 }
        );
        assert_eq!(
            arena.alloc_uninit_aligned::<u8>(1, 48).unwrap_err(),
            Error::InvalidAlignment { align: 48 }
        );
        assert_eq!(arena.used(), 0);
    }

    #[test]
    fn scope_frees_its_allocations_and_keeps_earlier_ones() {
        let mut buf = region(1 << 12);
        let mut arena = Arena::new(&mut buf);
        let before = arena.used();
        {
            let step = arena.scope();
            step.alloc_zeroed::<f32>(100).unwrap();
            assert!(step.used() >= 400);
        }
        assert_eq!(arena.used(), before);
        assert!(arena.high_water_mark() >= 400);
    }

    #[test]
    fn carved_arenas_are_disjoint_and_rewind_independently() {
        let mut buf = region(1 << 12);
        let root = Arena::new(&mut buf);
        let params = root.carve(1024).unwrap();
        let mut scratch = root.carve(1024).unwrap();
        let w = params.alloc_filled::<f32>(16, 2.0).unwrap();
        for step in 0..3 {
            let s = scratch.scope();
            let tmp = s.alloc_filled::<f32>(200, step as f32).unwrap();
            assert!(tmp.iter().all(|&x| x == step as f32));
        }
        assert_eq!(scratch.used(), 0);
        assert!(w.iter().all(|&x| x == 2.0));
        assert!(root.carve(2048).is_err());
    }

    #[test]
    fn stale_and_foreign_marks_are_refused() {
        let mut buf = region(1024);
        let mut other_buf = region(1024);
        let mut arena = Arena::new(&mut buf);
        let other = Arena::new(&mut other_buf);
        let start = arena.mark();
        arena.alloc_zeroed::<u8>(10).unwrap();
        let later = arena.mark();
        arena.rewind(start).unwrap();
        assert_eq!(arena.rewind(later), Err(Error::StaleMark { mark: later.used(), used: 0 }));
        other.alloc_zeroed::<u8>(100).unwrap();
        assert!(matches!(arena.rewind(other.mark()), Err(Error::StaleMark { .. })));
    }

    #[test]
    fn empty_requests_consume_nothing() {
        let mut buf = region(0);
        let arena = Arena::new(&mut buf);
        assert!(arena.alloc_zeroed::<f32>(0).unwrap().is_empty());
        assert_eq!(arena.alloc_filled::<()>(5, ()).unwrap().len(), 5);
        assert_eq!(arena.used(), 0);
        assert!(arena.alloc_zeroed::<u8>(1).is_err());
    }
}
