//! Puts events from several rings back into time order.
//!
//! Each ring is filled by one CPU (or, for the lifecycle ring, by all of
//! them, in commit order), so events arrive nearly sorted. The orderer holds
//! them for [`HOLD_NS`] and releases them oldest first; an event that arrives
//! after a younger one was released is still written (never dropped) and
//! counted in `late`.

use std::{cmp::Reverse, collections::BinaryHeap};

use tracelog::Event;

/// How long events wait for stragglers from other rings. Invariant: longer
/// than the daemon's drain interval plus the longest time between an eBPF
/// program taking its timestamp and committing its record.
pub const HOLD_NS: u64 = 50_000_000;

struct Held(Event, u64);

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.0.time_ns, self.1) == (o.0.time_ns, o.1)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0.time_ns, self.1).cmp(&(o.0.time_ns, o.1))
    }
}

#[derive(Default)]
pub struct Orderer {
    heap: BinaryHeap<Reverse<Held>>,
    arrivals: u64,
    released_until: u64,
    /// Events that arrived after a younger event had been released.
    pub late: u64,
}

impl std::fmt::Debug for Orderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orderer")
            .field("held", &self.heap.len())
            .field("late", &self.late)
            .finish()
    }
}

impl Orderer {
    pub fn push(&mut self, e: Event) {
        if e.time_ns < self.released_until {
            self.late += 1;
        }
        self.arrivals += 1;
        self.heap.push(Reverse(Held(e, self.arrivals)));
    }

    /// Releases, in time order, every event older than `now_ns - HOLD_NS`
    /// (everything when `now_ns` is `u64::MAX`).
    pub fn release(&mut self, now_ns: u64, mut sink: impl FnMut(Event)) {
        let limit = now_ns.saturating_sub(HOLD_NS);
        while self
            .heap
            .peek()
            .is_some_and(|Reverse(h)| h.0.time_ns <= limit || now_ns == u64::MAX)
        {
            let Reverse(Held(e, _)) = self.heap.pop().expect("peeked");
            self.released_until = self.released_until.max(e.time_ns);
            sink(e);
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracelog::EventKind;

    fn ev(t: u64) -> Event {
        Event {
            seq: 0,
            epoch: 0,
            time_ns: t,
            cpu: 0,
            pid: 1,
            tid: 1,
            kind: EventKind::EpochMark { epoch: 0 },
        }
    }

    #[test]
    fn order_releases_in_time_order_after_hold() {
        let mut o = Orderer::default();
        for t in [5, 3, 9, 1] {
            o.push(ev(t * 1000));
        }
        let mut got = Vec::new();
        o.release(HOLD_NS + 4000, |e| got.push(e.time_ns));
        assert_eq!(got, vec![1000, 3000]);
        o.push(ev(2000));
        o.release(u64::MAX, |e| got.push(e.time_ns));
        assert_eq!(got, vec![1000, 3000, 2000, 5000, 9000]);
        assert_eq!(o.late, 1);
    }
}
