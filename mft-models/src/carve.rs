//! Carving one flat f32 buffer into named pieces, or measuring how much the same carving needs.
//!
//! The memory plan and the step carve with the same functions: in measuring mode every piece is
//! an empty slice and only the count grows, so the plan's sizes cannot drift from what the step
//! actually uses.

/// Hands out consecutive pieces of a buffer (or, measuring, only counts them).
#[derive(Debug)]
pub(crate) struct Carver<'a> {
    rest: &'a mut [f32],
    used: usize,
    measuring: bool,
}

impl<'a> Carver<'a> {
    /// A carver over `buffer`.
    pub(crate) fn new(buffer: &'a mut [f32]) -> Carver<'a> {
        Carver { rest: buffer, used: 0, measuring: false }
    }

    /// A carver that only counts.
    pub(crate) fn measuring() -> Carver<'a> {
        Carver { rest: &mut [], used: 0, measuring: true }
    }

    /// The next `len` floats (empty when measuring).
    ///
    /// # Panics
    /// If the buffer is too short: callers check its length against the measured size first.
    pub(crate) fn take(&mut self, len: usize) -> &'a mut [f32] {
        self.used += len;
        if self.measuring {
            return &mut [];
        }
        let rest = core::mem::take(&mut self.rest);
        let (head, tail) = rest.split_at_mut(len);
        self.rest = tail;
        head
    }

    /// `len` floats if `wanted`, else an empty slice (counted as nothing).
    pub(crate) fn take_if(&mut self, wanted: bool, len: usize) -> &'a mut [f32] {
        self.take(if wanted { len } else { 0 })
    }

    /// Floats handed out so far.
    pub(crate) fn used(&self) -> usize {
        self.used
    }
}
