//! The in-memory timer: a min-heap of due instants. Entries may be stale (a cue changed after its
//! entry was pushed); the store decides, when an entry comes due, whether it still means anything.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::clock::Millis;

/// What a timer entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// A cue's next tick.
    Cue,
    /// An execution's next retry.
    Retry,
    /// An execution's outcome deadline.
    Deadline,
    /// The end of a worker's lease on a claim.
    Lease,
    /// The end of the window in which a worker execution must be claimed.
    Claim,
    /// The time by which a worker must be heard from again (id: owner, U+001F, worker id).
    Silence,
}

impl TimerKind {
    /// Whether an entry of this kind may be committed ahead of its instant (and released at it):
    /// starting work may, declaring it late may not. These kinds sort first at equal instants.
    pub fn may_act_ahead(self) -> bool {
        matches!(self, TimerKind::Cue | TimerKind::Retry)
    }
}

/// One entry: at `at`, do `kind` for `id`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub at: Millis,
    pub kind: TimerKind,
    pub id: String,
}

/// The heap.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    /// An empty heap with room for `n` entries.
    pub fn with_capacity(n: usize) -> Timers {
        Timers {
            heap: BinaryHeap::with_capacity(n),
        }
    }

    /// Adds an entry.
    pub fn push(&mut self, t: Timer) {
        self.heap.push(Reverse(t));
    }

    /// The earliest instant, if any.
    pub fn peek_at(&self) -> Option<Millis> {
        self.heap.peek().map(|t| t.0.at)
    }

    /// The earliest instant and what it is for, if any.
    pub fn peek(&self) -> Option<(Millis, TimerKind)> {
        self.heap.peek().map(|t| (t.0.at, t.0.kind))
    }

    /// Removes and returns up to `max` entries due at or before `at` that may be acted on ahead
    /// of their instant (cue ticks and retries; never deadlines, leases or claim windows),
    /// earliest first. Stops at the first other entry: at equal instants those sort last, so
    /// none is skipped over.
    pub fn pop_ahead(&mut self, at: Millis, max: usize) -> Vec<Timer> {
        let mut out = Vec::new();
        while out.len() < max
            && self
                .heap
                .peek()
                .is_some_and(|t| t.0.at <= at && t.0.kind.may_act_ahead())
        {
            if let Some(Reverse(t)) = self.heap.pop() {
                out.push(t);
            }
        }
        out
    }

    /// Drops the ticks of these cues (deleted: their entries would only come due to find
    /// nothing). Entries of other kinds are left to find their execution gone.
    pub fn forget_cues(&mut self, ids: &[String]) {
        if !ids.is_empty() {
            self.heap
                .retain(|t| !(t.0.kind == TimerKind::Cue && ids.contains(&t.0.id)));
        }
    }

    /// Removes and returns up to `max` entries due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Millis, max: usize) -> Vec<Timer> {
        let mut out = Vec::new();
        while out.len() < max && self.heap.peek().is_some_and(|t| t.0.at <= now) {
            if let Some(Reverse(t)) = self.heap.pop() {
                out.push(t);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_due_entries_in_order() {
        let mut t = Timers::default();
        for (at, id) in [(30, "c"), (10, "a"), (20, "b"), (40, "d")] {
            t.push(Timer {
                at,
                kind: TimerKind::Cue,
                id: id.into(),
            });
        }
        let due: Vec<_> = t.pop_due(30, 10).into_iter().map(|t| t.id).collect();
        assert_eq!(due, ["a", "b", "c"]);
        assert_eq!(t.peek_at(), Some(40));
    }

    #[test]
    fn forgets_the_ticks_of_deleted_cues_only() {
        let mut t = Timers::default();
        for (at, kind, id) in [
            (10, TimerKind::Cue, "gone"),
            (20, TimerKind::Cue, "kept"),
            (30, TimerKind::Retry, "gone"),
        ] {
            t.push(Timer {
                at,
                kind,
                id: id.into(),
            });
        }
        t.forget_cues(&["gone".to_string()]);
        let left: Vec<_> = t
            .pop_due(100, 10)
            .into_iter()
            .map(|t| (t.kind, t.id))
            .collect();
        assert_eq!(
            left,
            [
                (TimerKind::Cue, "kept".to_string()),
                (TimerKind::Retry, "gone".to_string())
            ]
        );
    }

    #[test]
    fn pops_ahead_up_to_the_first_deadline() {
        let mut t = Timers::default();
        for (at, kind, id) in [
            (10, TimerKind::Deadline, "d"),
            (10, TimerKind::Cue, "a"),
            (10, TimerKind::Retry, "r"),
            (20, TimerKind::Cue, "b"),
        ] {
            t.push(Timer {
                at,
                kind,
                id: id.into(),
            });
        }
        let ahead: Vec<_> = t.pop_ahead(10, 10).into_iter().map(|t| t.id).collect();
        assert_eq!(ahead, ["a", "r"]);
        assert_eq!(t.peek(), Some((10, TimerKind::Deadline)));
        assert!(t.pop_ahead(20, 10).is_empty());
    }
}
