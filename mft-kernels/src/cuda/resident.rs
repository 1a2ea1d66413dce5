//! Which host slices have a copy on the device: a map from host address ranges to device
//! buffers, with a byte budget. Pure bookkeeping (generic over the buffer type), so it is tested
//! without a GPU.
//!
//! Only slices the caller registered as frozen are ever here ([`super::CudaGemm`] never caches
//! an operand on its own): an operand is recognised by its address, so a copy of memory that
//! could change would silently go stale.

use std::collections::BTreeMap;

/// The element type of a resident slice (a product's `B` must match it to use the copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    /// f32.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

impl Elem {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::F32 => 4,
            Elem::F16 | Elem::Bf16 => 2,
        }
    }
}

#[derive(Debug)]
struct Entry<H> {
    bytes: usize,
    elem: Elem,
    buffer: H,
}

/// Device copies of host slices, keyed by the host slice's first address.
#[derive(Debug)]
pub struct ResidentSet<H> {
    entries: BTreeMap<usize, Entry<H>>,
    used: usize,
    budget: usize,
}

/// Why a slice was not made resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It overlaps a slice already resident.
    Overlaps,
    /// It would take the set past its byte budget.
    OverBudget,
    /// It is empty.
    Empty,
}

impl<H> ResidentSet<H> {
    /// An empty set that holds at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        ResidentSet { entries: BTreeMap::new(), used: 0, budget }
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Slices held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a slice of `bytes` bytes would fit the budget now.
    pub fn fits(&self, bytes: usize) -> bool {
        self.used.checked_add(bytes).is_some_and(|u| u <= self.budget)
    }

    /// Checks that `[addr, addr + bytes)` may be added (call before making the device copy).
    pub fn check(&self, addr: usize, bytes: usize) -> Result<(), Refused> {
        if bytes == 0 {
            return Err(Refused::Empty);
        }
        if !self.fits(bytes) {
            return Err(Refused::OverBudget);
        }
        let end = addr.checked_add(bytes).ok_or(Refused::Overlaps)?;
        let before = self.entries.range(..end).next_back();
        if before.is_some_and(|(&start, e)| start + e.bytes > addr) {
            return Err(Refused::Overlaps);
        }
        Ok(())
    }

    /// Adds the copy `buffer` of the host slice `[addr, addr + bytes)` of `elem` elements.
    pub fn insert(
        &mut self,
        addr: usize,
        bytes: usize,
        elem: Elem,
        buffer: H,
    ) -> Result<(), Refused> {
        self.check(addr, bytes)?;
        self.entries.insert(addr, Entry { bytes, elem, buffer });
        self.used += bytes;
        Ok(())
    }

    /// The copy holding all of `[addr, addr + bytes)` as `elem` elements, and the element
    /// offset of `addr` in it.
    pub fn find(&self, addr: usize, bytes: usize, elem: Elem) -> Option<(&H, usize)> {
        let (&start, entry) = self.entries.range(..=addr).next_back()?;
        let offset = addr - start;
        let inside = entry.elem == elem
            && offset.is_multiple_of(elem.size())
            && offset.checked_add(bytes).is_some_and(|end| end <= entry.bytes);
        inside.then_some((&entry.buffer, offset / elem.size()))
    }

    /// Removes the copy registered at `addr`, returning its buffer.
    pub fn remove(&mut self, addr: usize) -> Option<H> {
        let entry = self.entries.remove(&addr)?;
        self.used -= entry.bytes;
        Some(entry.buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_inside_a_resident_slice_are_found_with_their_offset() {
        let mut set = ResidentSet::new(1000);
        set.insert(4000, 400, Elem::F32, "w").unwrap();
        assert_eq!(set.find(4000, 400, Elem::F32), Some((&"w", 0)));
        assert_eq!(set.find(4040, 80, Elem::F32), Some((&"w", 10)));
        // Past the end, before the start, another type, a misaligned address.
        assert_eq!(set.find(4040, 400, Elem::F32), None);
        assert_eq!(set.find(3996, 8, Elem::F32), None);
        assert_eq!(set.find(4000, 400, Elem::Bf16), None);
        assert_eq!(set.find(4002, 4, Elem::F32), None);
        assert_eq!(set.used(), 400);
    }

    #[test]
    fn overlaps_and_the_budget_are_refused_and_removal_frees() {
        let mut set = ResidentSet::new(1000);
        set.insert(4000, 400, Elem::F32, 1).unwrap();
        assert_eq!(set.insert(4396, 8, Elem::F32, 2), Err(Refused::Overlaps));
        assert_eq!(set.insert(3996, 8, Elem::F32, 2), Err(Refused::Overlaps));
        assert_eq!(set.insert(3000, 2000, Elem::F32, 2), Err(Refused::OverBudget));
        assert_eq!(set.insert(9000, 0, Elem::F32, 2), Err(Refused::Empty));
        set.insert(4400, 600, Elem::F16, 3).unwrap();
        assert_eq!(set.insert(8000, 4, Elem::F32, 4), Err(Refused::OverBudget));
        assert_eq!(set.len(), 2);
        assert_eq!(set.remove(4000), Some(1));
        assert_eq!(set.remove(4000), None);
        assert_eq!(set.find(4000, 4, Elem::F32), None);
        assert_eq!(set.used(), 600);
        set.insert(8000, 4, Elem::F32, 4).unwrap();
        assert_eq!(set.find(4400, 600, Elem::F16), Some((&3, 0)));
    }
}
