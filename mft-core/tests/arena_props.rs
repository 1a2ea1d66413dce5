//! Properties of the arena over random sequences of allocations, marks and rewinds: alignment
//! always holds, live allocations never overlap, a rewind restores the exact state, and the
//! high-water mark is exactly the largest use ever reached.

use std::mem::MaybeUninit;

use mft_core::{Arena, DEFAULT_ALIGN, Error};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// `len` elements of 1, 2, 4 or 8 bytes at alignment `2^align_log2` (at least the default).
    Alloc {
        len: usize,
        elem_log2: u32,
        align_log2: u32,
    },
    Mark,
    /// Rewind to the mark at this index (modulo the number of marks held).
    Rewind(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..200, 0u32..4, 0u32..9)
            .prop_map(|(len, elem_log2, align_log2)| Op::Alloc { len, elem_log2, align_log2 }),
        2 => Just(Op::Mark),
        2 => any::<usize>().prop_map(Op::Rewind),
    ]
}

/// One allocation as an address range.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

fn alloc_span(arena: &Arena, len: usize, elem_log2: u32, align: usize) -> Result<Span, Error> {
    let span = |ptr: *const u8, bytes: usize| Span { start: ptr.addr(), end: ptr.addr() + bytes };
    Ok(match elem_log2 {
        0 => span(arena.alloc_uninit_aligned::<u8>(len, align)?.as_ptr().cast(), len),
        1 => span(arena.alloc_uninit_aligned::<u16>(len, align)?.as_ptr().cast(), len * 2),
        2 => span(arena.alloc_uninit_aligned::<f32>(len, align)?.as_ptr().cast(), len * 4),
        _ => span(arena.alloc_uninit_aligned::<u64>(len, align)?.as_ptr().cast(), len * 8),
    })
}

proptest! {
    #[test]
    fn arena_invariants_hold(
        ops in prop::collection::vec(op(), 1..80),
        capacity in 0usize..6000,
        misalign in 0usize..64,
    ) {
        // Start the region at an arbitrary offset so padding depends on the base address.
        let mut backing = vec![MaybeUninit::<u8>::uninit(); capacity + 64];
        let mut arena = Arena::new(&mut backing[misalign..misalign + capacity]);
        let base = arena.mark();
        let base_addr = {
            // An empty arena hands out its first byte-aligned byte at the region start.
            let probe = arena.alloc_uninit_aligned::<u8>(1, 1);
            let addr = probe.map(|s| s.as_ptr().addr()).ok();
            arena.rewind(base).unwrap();
            addr
        };
        arena.reset_high_water_mark();

        let mut live: Vec<Span> = Vec::new();
        // Marks held, each with the number of live allocations and the use when it was taken.
        let mut marks: Vec<(mft_core::Mark, usize, usize)> = Vec::new();
        let mut max_used = 0;

        for op in ops {
            match op {
                Op::Alloc { len, elem_log2, align_log2 } => {
                    let align = DEFAULT_ALIGN.max(1 << align_log2);
                    let before = arena.used();
                    match alloc_span(&arena, len, elem_log2, align) {
                        Ok(span) => {
                            if span.end > span.start {
                                prop_assert_eq!(span.start % align, 0, "misaligned allocation");
                                let base_addr = base_addr.expect("a non-empty allocation fits");
                                prop_assert!(span.start >= base_addr);
                                prop_assert!(span.end <= base_addr + capacity);
                                prop_assert_eq!(arena.used(), span.end - base_addr);
                                for other in &live {
                                    prop_assert!(span.end <= other.start || other.end <= span.start,
                                        "{:?} overlaps {:?}", span, other);
                                }
                                live.push(span);
                            } else {
                                prop_assert_eq!(arena.used(), before, "empty request consumed memory");
                            }
                        }
                        Err(Error::OutOfMemory { requested, remaining, align: a, capacity: c }) => {
                            prop_assert_eq!(requested, len << elem_log2);
                            prop_assert_eq!(remaining, capacity - before);
                            prop_assert_eq!(a, align);
                            prop_assert_eq!(c, capacity);
                            prop_assert_eq!(arena.used(), before, "failed request changed the arena");
                        }
                        Err(other) => prop_assert!(false, "unexpected error {other}"),
                    }
                }
                Op::Mark => marks.push((arena.mark(), live.len(), arena.used())),
                Op::Rewind(pick) => {
                    if marks.is_empty() {
                        continue;
                    }
                    let index = pick % marks.len();
                    let (mark, live_then, used_then) = marks[index];
                    arena.rewind(mark).unwrap();
                    prop_assert_eq!(arena.used(), used_then);
                    live.truncate(live_then);
                    marks.truncate(index + 1);
                }
            }
            max_used = max_used.max(arena.used());
            prop_assert_eq!(arena.high_water_mark(), max_used);
        }
    }

    /// Rewinding to a mark and repeating the same requests gives the same addresses and the same
    /// use: the arena's state after a rewind is exactly its state at the mark.
    #[test]
    fn rewind_then_replay_is_identical(
        prefix in prop::collection::vec((1usize..100, 0u32..4, 0u32..9), 0..10),
        body in prop::collection::vec((0usize..100, 0u32..4, 0u32..9), 1..20),
        misalign in 0usize..64,
    ) {
        let mut backing = vec![MaybeUninit::<u8>::uninit(); 1 << 16];
        let mut arena = Arena::new(&mut backing[misalign..]);
        let run = |arena: &Arena, reqs: &[(usize, u32, u32)]| -> Vec<(usize, usize)> {
            reqs.iter()
                .map(|&(len, e, a)| {
                    let span = alloc_span(arena, len, e, DEFAULT_ALIGN.max(1 << a)).unwrap();
                    (span.start, arena.used())
                })
                .collect()
        };
        run(&arena, &prefix);
        let mark = arena.mark();
        let first = run(&arena, &body);
        let peak = arena.high_water_mark();
        arena.rewind(mark).unwrap();
        prop_assert_eq!(arena.used(), mark.used());
        let second = run(&arena, &body);
        prop_assert_eq!(first, second);
        prop_assert_eq!(arena.high_water_mark(), peak);
    }
}
