//! Puts events from several rings back into time order.
//!
//! Each ring is filled by one CPU (or, for the lifecycle ring, by all of
//! them in commit order), so each ring's events arrive nearly sorted: the
//! orderer keeps one queue per ring, fixes the rare local inversion on
//! insert, and releases by merging the queues' heads (a k-way merge: no
//! heap, no reshuffling of events). Events are held for [`HOLD_NS`] so a
//! ring drained later can still contribute older events; one that arrives
//! after a younger one was released is still written (never dropped) and
//! counted in `late`.

use std::collections::VecDeque;

use tracelog::Event;

/// How long events wait for stragglers from other rings. Invariant: longer
/// than the daemon's drain interval plus the longest time between an eBPF
/// program taking its timestamp and committing its record.
pub const HOLD_NS: u64 = 50_000_000;

#[derive(Default)]
pub struct Orderer {
    queues: Vec<VecDeque<Event>>,
    released_until: u64,
    /// Events that arrived after a younger event had been released.
    pub late: u64,
}

impl std::fmt::Debug for Orderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orderer")
            .field("held", &self.len())
            .field("late", &self.late)
            .finish()
    }
}

impl Orderer {
    /// Adds an event read from ring `source`.
    pub fn push(&mut self, source: usize, e: Event) {
        if e.time_ns < self.released_until {
            self.late += 1;
        }
        if self.queues.len() <= source {
            self.queues.resize_with(source + 1, VecDeque::new);
        }
        let q = &mut self.queues[source];
        // Usually appended; otherwise slid back into place.
        let mut at = q.len();
        while at > 0 && q[at - 1].time_ns > e.time_ns {
            at -= 1;
        }
        q.insert(at, e);
    }

    /// Releases, in time order, every event older than `now_ns - HOLD_NS`
    /// (everything when `now_ns` is `u64::MAX`).
    pub fn release(&mut self, now_ns: u64, mut sink: impl FnMut(Event)) {
        let limit = if now_ns == u64::MAX {
            u64::MAX
        } else {
            now_ns.saturating_sub(HOLD_NS)
        };
        loop {
            let next = self
                .queues
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.front().map(|e| (e.time_ns, i)))
                .min();
            match next {
                Some((t, i)) if t <= limit => {
                    let e = self.queues[i].pop_front().expect("front exists");
                    self.released_until = self.released_until.max(t);
                    sink(e);
                }
                _ => break,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
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
    fn order_merges_rings_after_hold() {
        let mut o = Orderer::default();
        for t in [1, 5, 9] {
            o.push(0, ev(t * 1000));
        }
        for t in [3, 4] {
            o.push(1, ev(t * 1000));
        }
        o.push(0, ev(2000)); // a local inversion
        let mut got = Vec::new();
        o.release(HOLD_NS + 4000, |e| got.push(e.time_ns));
        assert_eq!(got, vec![1000, 2000, 3000, 4000]);
        o.push(1, ev(2500));
        o.release(u64::MAX, |e| got.push(e.time_ns));
        assert_eq!(got, vec![1000, 2000, 3000, 4000, 2500, 5000, 9000]);
        assert_eq!(o.late, 1);
        assert!(o.is_empty());
    }
}
