//! Paging: shards (a block's frozen weights, say) read into a fixed set of slots in exactly the
//! order a step will need them, the next one read while the current one is in use.
//!
//! A step's order is known before it starts (blocks forward, then backward), so there is no
//! cache to guess with: a [`Pager`] owns two slots from the caller's memory, walks a
//! *schedule* of shard ids, and while the caller works on the current shard the store fills
//! the other slot with the next *different* shard of the schedule (a shard scheduled twice in a
//! row, like the last block at the turn from forward to backward, is read once).
//!
//! The [`ShardStore`] does the reading. Slots travel to it by value (`&mut [u8]`) and come back
//! filled, so a store may read on another thread (mft-std's does, with `pread`) while the
//! pager's caller computes, without any shared mutable memory.

/// Reads shards into slots; see the module docs.
pub trait ShardStore<'s> {
    /// What can go wrong while reading.
    type Error;

    /// Starts filling `slot` with shard `shard` (its first [`ShardStore::shard_len`] bytes).
    /// The slot comes back from [`ShardStore::wait`]; reads complete in submission order.
    fn submit(&mut self, shard: usize, slot: &'s mut [u8]) -> Result<(), Self::Error>;

    /// Blocks until the oldest submitted read is done; returns its shard and its slot.
    fn wait(&mut self) -> Result<(usize, &'s mut [u8]), Self::Error>;

    /// Bytes of shard `shard` (at most the slot size).
    fn shard_len(&self, shard: usize) -> usize;
}

/// What stops a [`Pager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagerError<E> {
    /// The store failed.
    Store(E),
    /// The schedule is used up: the caller asked for more shards than it lists.
    ScheduleEnded {
        /// Shards in the schedule.
        len: usize,
    },
    /// The store returned another shard than the one the schedule put next (a store bug).
    OutOfOrder {
        /// The shard expected.
        expected: usize,
        /// The shard returned.
        got: usize,
    },
    /// A shard larger than a slot, or a schedule naming no shard at all.
    Slot {
        /// The shard.
        shard: usize,
        /// Its bytes.
        len: usize,
        /// Bytes of a slot.
        slot: usize,
    },
}

impl<E: core::fmt::Display> core::fmt::Display for PagerError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PagerError::Store(e) => write!(f, "reading a shard: {e}"),
            PagerError::ScheduleEnded { len } => {
                write!(f, "the paging schedule of {len} shards is used up")
            }
            PagerError::OutOfOrder { expected, got } => {
                write!(f, "the shard store returned shard {got} where shard {expected} was next")
            }
            PagerError::Slot { shard, len, slot } => {
                write!(f, "shard {shard} has {len} bytes, more than a slot's {slot}")
            }
        }
    }
}

impl<E: core::fmt::Debug + core::fmt::Display> core::error::Error for PagerError<E> {}

/// Walks a schedule of shards with two slots: the current shard, and the next one being read.
pub struct Pager<'s, S: ShardStore<'s>> {
    store: S,
    schedule: &'s [usize],
    /// Schedule index of the current shard (`None` before the first [`Pager::advance`]).
    position: Option<usize>,
    current: Option<(usize, &'s mut [u8])>,
    /// Schedule index of the shard being read, if any.
    in_flight: Option<usize>,
    /// Slots neither current nor being read.
    spare: [Option<&'s mut [u8]>; 2],
    slot_len: usize,
    reads: usize,
}

impl<'s, S: ShardStore<'s>> Pager<'s, S> {
    /// A pager over `schedule` with two slots of equal size; starts reading the first shard.
    ///
    /// # Errors
    /// A scheduled shard larger than the slots; the store's error.
    pub fn new(
        mut store: S,
        schedule: &'s [usize],
        slots: [&'s mut [u8]; 2],
    ) -> Result<Pager<'s, S>, PagerError<S::Error>> {
        let [a, b] = slots;
        let slot_len = a.len().min(b.len());
        if let Some(&shard) = schedule.iter().find(|&&s| store.shard_len(s) > slot_len) {
            return Err(PagerError::Slot { shard, len: store.shard_len(shard), slot: slot_len });
        }
        let mut in_flight = None;
        let mut spare = [Some(a), Some(b)];
        if let Some(&shard) = schedule.first() {
            store.submit(shard, spare[0].take().expect("set above")).map_err(PagerError::Store)?;
            in_flight = Some(0);
        }
        Ok(Pager {
            store,
            schedule,
            position: None,
            current: None,
            in_flight,
            spare,
            slot_len,
            reads: usize::from(in_flight.is_some()),
        })
    }

    /// Moves to the next shard of the schedule and returns its bytes: waits for its read if it
    /// is not resident yet, then starts reading the following different shard into the slot
    /// it frees.
    ///
    /// # Errors
    /// The schedule is used up; the store failed or returned shards out of order.
    pub fn advance(&mut self) -> Result<(usize, &[u8]), PagerError<S::Error>> {
        let index = self.position.map_or(0, |p| p + 1);
        let Some(&shard) = self.schedule.get(index) else {
            return Err(PagerError::ScheduleEnded { len: self.schedule.len() });
        };
        self.position = Some(index);
        let resident = matches!(&self.current, Some((s, _)) if *s == shard);
        if !resident {
            debug_assert_eq!(self.in_flight.map(|i| self.schedule[i]), Some(shard));
            // Whatever `wait` says, that read is no longer in flight.
            self.in_flight = None;
            let (got, slot) = self.store.wait().map_err(PagerError::Store)?;
            if got != shard {
                return Err(PagerError::OutOfOrder { expected: shard, got });
            }
            if let Some((_, old)) = self.current.replace((shard, slot)) {
                self.put_spare(old);
            }
        }
        // Prefetch the next shard that differs from the current one, unless it is on its way.
        if self.in_flight.is_none()
            && let Some(next) =
                (index + 1..self.schedule.len()).find(|&i| self.schedule[i] != shard)
        {
            let slot = self.take_spare();
            self.store.submit(self.schedule[next], slot).map_err(PagerError::Store)?;
            self.in_flight = Some(next);
            self.reads += 1;
        }
        let (shard, slot) = self.current.as_ref().expect("made current above");
        let len = self.store.shard_len(*shard);
        Ok((*shard, &slot[..len]))
    }

    /// Shard reads started so far.
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// Bytes of one slot.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// The store back, once a read still in flight has finished (the slots are the caller's
    /// again when the pager is gone).
    ///
    /// # Errors
    /// The store failed finishing the read in flight.
    pub fn finish(mut self) -> Result<S, PagerError<S::Error>> {
        if self.in_flight.take().is_some() {
            self.store.wait().map_err(PagerError::Store)?;
        }
        Ok(self.store)
    }

    fn take_spare(&mut self) -> &'s mut [u8] {
        let slot = self.spare.iter_mut().find(|s| s.is_some());
        slot.and_then(Option::take).expect("a slot is spare when none is in flight")
    }

    fn put_spare(&mut self, slot: &'s mut [u8]) {
        let empty = self.spare.iter_mut().find(|s| s.is_none()).expect("two slots in all");
        *empty = Some(slot);
    }
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    /// A store that fills shard `s` with the byte `s` (shard `s` is `s + 1` bytes long) and
    /// records every submit and wait.
    struct Fake<'s> {
        queue: Vec<(usize, &'s mut [u8])>,
        log: Vec<&'static str>,
        submitted: Vec<usize>,
    }

    impl<'s> ShardStore<'s> for Fake<'s> {
        type Error = &'static str;
        fn submit(&mut self, shard: usize, slot: &'s mut [u8]) -> Result<(), &'static str> {
            slot[..=shard].fill(shard as u8);
            self.queue.push((shard, slot));
            self.submitted.push(shard);
            self.log.push("submit");
            Ok(())
        }
        fn wait(&mut self) -> Result<(usize, &'s mut [u8]), &'static str> {
            self.log.push("wait");
            if self.queue.is_empty() { Err("nothing in flight") } else { Ok(self.queue.remove(0)) }
        }
        fn shard_len(&self, shard: usize) -> usize {
            shard + 1
        }
    }

    fn fake<'s>() -> Fake<'s> {
        Fake { queue: Vec::new(), log: Vec::new(), submitted: Vec::new() }
    }

    /// A step over 4 blocks: forward 0..3, backward 3..0; the last block is read once.
    #[test]
    fn walks_forward_then_backward_reading_each_shard_ahead() {
        let schedule = [0, 1, 2, 3, 3, 2, 1, 0];
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        let mut pager = Pager::new(fake(), &schedule, [&mut a, &mut b]).unwrap();
        let mut seen = Vec::new();
        for _ in 0..schedule.len() {
            let (shard, bytes) = pager.advance().unwrap();
            assert_eq!(bytes.len(), shard + 1);
            assert!(bytes.iter().all(|&v| v as usize == shard), "{shard}: {bytes:?}");
            seen.push(shard);
        }
        assert_eq!(seen, schedule);
        assert_eq!(pager.advance().unwrap_err(), PagerError::ScheduleEnded { len: 8 });
        assert_eq!(pager.reads(), 7);
        let store = pager.finish().unwrap();
        assert_eq!(store.submitted, [0, 1, 2, 3, 2, 1, 0]);
    }

    /// The next shard is submitted before the caller gets the current one: always exactly one
    /// read ahead, never more.
    #[test]
    fn prefetches_exactly_one_shard() {
        let schedule = [4, 2, 5];
        let (mut a, mut b) = ([0u8; 6], [0u8; 6]);
        let mut pager = Pager::new(fake(), &schedule, [&mut a, &mut b]).unwrap();
        assert_eq!(pager.store.submitted, [4]);
        assert_eq!(pager.advance().unwrap().0, 4);
        assert_eq!(pager.store.submitted, [4, 2]);
        assert_eq!(pager.advance().unwrap().0, 2);
        assert_eq!(pager.store.submitted, [4, 2, 5]);
        assert_eq!(pager.advance().unwrap().0, 5);
        assert_eq!(pager.store.log, ["submit", "wait", "submit", "wait", "submit", "wait"]);
    }

    #[test]
    fn refuses_shards_larger_than_a_slot_and_out_of_order_stores() {
        let (mut a, mut b) = ([0u8; 3], [0u8; 3]);
        let err = Pager::new(fake(), &[1, 3], [&mut a, &mut b]).err().unwrap();
        assert_eq!(err, PagerError::Slot { shard: 3, len: 4, slot: 3 });
        assert_eq!(std::format!("{err}"), "shard 3 has 4 bytes, more than a slot's 3");

        let (mut a, mut b) = ([0u8; 3], [0u8; 3]);
        let mut pager = Pager::new(fake(), &[0, 1], [&mut a, &mut b]).unwrap();
        pager.store.queue[0].0 = 2; // The store mislabels the first read.
        assert_eq!(pager.advance().unwrap_err(), PagerError::OutOfOrder { expected: 0, got: 2 });
    }

    #[test]
    fn finish_waits_for_the_read_in_flight_and_an_empty_schedule_reads_nothing() {
        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        let pager = Pager::new(fake(), &[], [&mut a, &mut b]).unwrap();
        assert!(pager.finish().unwrap().submitted.is_empty());

        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        let mut pager = Pager::new(fake(), &[0, 1, 2], [&mut a, &mut b]).unwrap();
        pager.advance().unwrap(); // 1 is in flight now.
        let store = pager.finish().unwrap();
        assert!(store.queue.is_empty());
        assert_eq!(store.log, ["submit", "wait", "submit", "wait"]);
    }

    /// A failed read is not waited for again (that would block forever on a threaded store).
    #[test]
    fn a_failed_read_is_not_in_flight_any_more() {
        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        let mut pager = Pager::new(fake(), &[0, 1], [&mut a, &mut b]).unwrap();
        pager.store.queue.clear(); // The read is lost: `wait` fails.
        assert_eq!(pager.advance().unwrap_err(), PagerError::Store("nothing in flight"));
        let store = pager.finish().unwrap();
        assert_eq!(store.log, ["submit", "wait"]);
    }
}
