//! Fuzz the arena with arbitrary sequences of allocations, marks and rewinds; every allocation must
//! be aligned, inside the region, disjoint from the live ones, and the high-water mark exact.
#![no_main]

use std::mem::MaybeUninit;

use libfuzzer_sys::fuzz_target;
use mft_core::Arena;

fuzz_target!(|data: &[u8]| {
    let Some((&size_byte, ops)) = data.split_first() else { return };
    let capacity = size_byte as usize * 37;
    let mut region = vec![MaybeUninit::<u8>::uninit(); capacity + 63];
    let offset = ops.first().map_or(0, |b| (*b % 64) as usize);
    let mut arena = Arena::new(&mut region[offset..offset + capacity]);
    let lo = arena.mark();
    let mut live: Vec<(usize, usize)> = Vec::new();
    let mut marks: Vec<(mft_core::Mark, usize)> = vec![(lo, 0)];
    let mut max_used = 0;
    for pair in ops.chunks_exact(2) {
        let (code, arg) = (pair[0], pair[1] as usize);
        match code % 4 {
            0 | 1 => {
                let align = 1usize << (code >> 2).min(12);
                if let Ok(slice) = arena.alloc_uninit_aligned::<u8>(arg * (code as usize % 3 + 1), align) {
                    let (start, end) = (slice.as_ptr().addr(), slice.as_ptr().addr() + slice.len());
                    if end > start {
                        assert_eq!(start % align, 0);
                        assert!(live.iter().all(|&(s, e)| end <= s || e <= start), "overlap");
                        live.push((start, end));
                    }
                }
            }
            2 => marks.push((arena.mark(), live.len())),
            _ => {
                let (mark, n) = marks[arg % marks.len()];
                arena.rewind(mark).expect("marks held are never stale");
                live.truncate(n);
                marks.truncate(arg % marks.len() + 1);
            }
        }
        assert!(arena.used() <= arena.capacity());
        max_used = max_used.max(arena.used());
        assert_eq!(arena.high_water_mark(), max_used);
    }
});
