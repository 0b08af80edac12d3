//! The working set: which extents a step uses many times (they belong on the compute
//! device) and which at most once (weights: they can live on a donor and stream through
//! the migration engine's cache), and which moves between the two get the compute device
//! holding the former.
//!
//! [`Classifier`] turns launch counts sampled at any time into classes: an extent is
//! classified once at least [`MIN_STEPS`] steps have passed since it was first seen (or
//! its last window ended); it is [`Class::Hot`] when it was used more than 1.5 times per
//! step over that window, else [`Class::Weights`]. A window that is not aligned with the
//! steps miscounts by at most one use, so an extent used once per step shows at most
//! 4 uses in 3 steps (1.33 per step) and one used twice at least 5 (1.67): three steps
//! tell them apart. [`plan_promotions`], [`plan_demotions`] and [`plan_refill`] choose
//! the moves; the shim carries them out with [`crate::MemoryManager::begin_move`] and
//! [`crate::MemoryManager::finish_move`].

use std::collections::HashMap;

/// Steps an extent is watched before it is classified.
pub const MIN_STEPS: u64 = 3;
/// Step progress is counted in units of 1/`STEP` step.
pub const STEP: u64 = 1 << 16;
/// Steps an extent stays where a move put it before it may move again.
pub const SETTLE_STEPS: u64 = 4;

/// How the observed steps use an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Used more than once per step: activations, latents, workspaces.
    Hot,
    /// Used at most once per step: weights (or not used at all).
    Weights,
    /// Not watched for long enough yet.
    Unknown,
}

impl Class {
    /// `hot`, `weights` or `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            Class::Hot => "hot",
            Class::Weights => "weights",
            Class::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Watch {
    since_step: u64,
    since_uses: u64,
    class: Class,
    uses_per_step: f64,
}

/// Classes of extents from their launch counts.
#[derive(Debug, Default)]
pub struct Classifier {
    watched: HashMap<u64, Watch>,
}

impl Classifier {
    /// An empty classifier.
    pub fn new() -> Classifier {
        Classifier::default()
    }

    /// Takes a sample at `step` (steps so far, in units of 1/[`STEP`] step) of the live
    /// extents as `(base, uses)` (launches that used each since it was created). Extents
    /// not listed are forgotten. An extent watched for [`MIN_STEPS`] steps gets its class,
    /// and the window starts again from this sample.
    pub fn sample(&mut self, step: u64, extents: &[(u64, u64)]) {
        let mut live: HashMap<u64, Watch> = HashMap::with_capacity(extents.len());
        for &(base, uses) in extents {
            let watch = match self.watched.get(&base) {
                Some(w) if uses >= w.since_uses => *w,
                _ => Watch { since_step: step, since_uses: uses, class: Class::Unknown, uses_per_step: 0.0 },
            };
            let steps = step.saturating_sub(watch.since_step);
            let watch = if steps >= MIN_STEPS * STEP {
                let per_step = (uses - watch.since_uses) as f64 * STEP as f64 / steps as f64;
                let class = if per_step > 1.5 { Class::Hot } else { Class::Weights };
                Watch { since_step: step, since_uses: uses, class, uses_per_step: per_step }
            } else {
                watch
            };
            live.insert(base, watch);
        }
        self.watched = live;
    }

    /// Classifies `base` from an exact count of its uses in the last step (the migration
    /// engine's for donor extents): its window starts again at `step` with `uses`.
    pub fn set_exact(&mut self, base: u64, uses_per_step: u64, step: u64, uses: u64) {
        let class = if uses_per_step >= 2 { Class::Hot } else { Class::Weights };
        self.watched.insert(base, Watch { since_step: step, since_uses: uses, class, uses_per_step: uses_per_step as f64 });
    }

    /// Starts every window again at `step` with the uses given (the step count was
    /// unreliable meanwhile: the application's launches stopped repeating); classes stay.
    pub fn restart_all(&mut self, step: u64, extents: &[(u64, u64)]) {
        for &(base, uses) in extents {
            match self.watched.get_mut(&base) {
                Some(watch) => {
                    watch.since_step = step;
                    watch.since_uses = uses;
                }
                None => {
                    self.watched.insert(base, Watch { since_step: step, since_uses: uses, class: Class::Unknown, uses_per_step: 0.0 });
                }
            }
        }
    }

    /// Starts the watch of `base` again (its backing moved): it keeps its class until the
    /// next window ends.
    pub fn restart(&mut self, base: u64, step: u64, uses: u64) {
        if let Some(watch) = self.watched.get_mut(&base) {
            watch.since_step = step;
            watch.since_uses = uses;
        }
    }

    /// Forgets `base` (freed, or another allocation took its address).
    pub fn forget(&mut self, base: u64) {
        self.watched.remove(&base);
    }

    /// The class of `base`.
    pub fn class(&self, base: u64) -> Class {
        self.watched.get(&base).map_or(Class::Unknown, |w| w.class)
    }

    /// Uses per step over the last full window (0 while unknown).
    pub fn uses_per_step(&self, base: u64) -> f64 {
        self.watched.get(&base).map_or(0.0, |w| w.uses_per_step)
    }
}

/// A movable extent as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// First byte.
    pub base: u64,
    /// Physical bytes (whole chunks).
    pub span: u64,
    /// Every chunk is on the compute device.
    pub local: bool,
    /// Its class.
    pub class: Class,
    /// Uses per step (for ordering).
    pub uses_per_step: f64,
    /// Moved less than [`SETTLE_STEPS`] steps ago: stays where it is.
    pub settling: bool,
}

/// A move of an extent's backing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// To the first donor tier with room.
    Demote(u64),
    /// To the compute device.
    Promote(u64),
}

/// Weights on the compute device that may leave, least used first.
fn demotable(candidates: &[Candidate]) -> Vec<&Candidate> {
    let mut weights: Vec<&Candidate> = candidates.iter().filter(|c| c.local && c.class == Class::Weights && !c.settling).collect();
    weights.sort_by(|a, b| a.uses_per_step.total_cmp(&b.uses_per_step).then(b.span.cmp(&a.span)));
    weights
}

/// The demotions that free at least `need` bytes of the compute device beyond its `free`
/// bytes, taking weights least used first and at most `batch` bytes in all; empty when
/// the weights there cannot free enough.
pub fn plan_demotions(candidates: &[Candidate], free: u64, need: u64, batch: u64) -> Vec<Move> {
    let mut moves = Vec::new();
    let mut freed = free;
    let mut moved = 0;
    for weight in demotable(candidates) {
        if freed >= need {
            break;
        }
        if moved + weight.span > batch {
            continue;
        }
        moves.push(Move::Demote(weight.base));
        freed += weight.span;
        moved += weight.span;
    }
    if freed >= need { moves } else { Vec::new() }
}

/// One batch of moves that brings hot extents living on donors to the compute device,
/// most used first: each goes into the device's `free` bytes, or into room that demoting
/// weights makes; at most `batch` bytes move in all (demotions and promotions).
pub fn plan_promotions(candidates: &[Candidate], free: u64, batch: u64) -> Vec<Move> {
    let mut hot: Vec<&Candidate> = candidates.iter().filter(|c| !c.local && c.class == Class::Hot && !c.settling).collect();
    hot.sort_by(|a, b| b.uses_per_step.total_cmp(&a.uses_per_step).then(a.base.cmp(&b.base)));
    let mut weights = demotable(candidates).into_iter();
    let mut moves = Vec::new();
    let (mut free, mut moved) = (free, 0);
    for extent in hot {
        let mut demotions = Vec::new();
        let mut room = free;
        let mut cost = extent.span;
        while room < extent.span {
            let Some(weight) = weights.next() else { break };
            demotions.push(Move::Demote(weight.base));
            room += weight.span;
            cost += weight.span;
        }
        if room < extent.span || moved + cost > batch {
            break;
        }
        moves.extend(demotions);
        moves.push(Move::Promote(extent.base));
        free = room - extent.span;
        moved += cost;
    }
    moves
}

/// Once nothing hot waits for room: weights living on a donor brought back to the
/// compute device (a weight there costs no transfer) while its free bytes stay at least
/// `margin`, most used first, at most `batch` bytes.
pub fn plan_refill(candidates: &[Candidate], free: u64, margin: u64, batch: u64) -> Vec<Move> {
    if candidates.iter().any(|c| !c.local && c.class == Class::Hot) {
        return Vec::new();
    }
    let mut weights: Vec<&Candidate> = candidates.iter().filter(|c| !c.local && c.class == Class::Weights && !c.settling).collect();
    weights.sort_by(|a, b| b.uses_per_step.total_cmp(&a.uses_per_step).then(a.base.cmp(&b.base)));
    let (mut free, mut moved) = (free, 0);
    let mut moves = Vec::new();
    for weight in weights {
        if free < margin + weight.span || moved + weight.span > batch {
            continue;
        }
        moves.push(Move::Promote(weight.base));
        free -= weight.span;
        moved += weight.span;
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn candidate(base: u64, span: u64, local: bool, class: Class, uses_per_step: f64) -> Candidate {
        Candidate { base, span, local, class, uses_per_step, settling: false }
    }

    #[test]
    fn an_extent_is_classified_after_three_steps_by_its_uses_per_step() {
        let mut c = Classifier::new();
        c.sample(0, &[(1, 0), (2, 0), (3, 0), (4, 0)]);
        c.sample(2 * STEP, &[(1, 3), (2, 9), (3, 0), (4, 3)]);
        assert_eq!(c.class(1), Class::Unknown, "two steps are not enough");
        // Windows not aligned with the steps: a weight shows at most 4 uses in 3 steps, an
        // extent used twice per step at least 5.
        c.sample(3 * STEP, &[(1, 4), (2, 30), (3, 0), (4, 5)]);
        assert_eq!((c.class(1), c.class(2), c.class(3), c.class(4)), (Class::Weights, Class::Hot, Class::Weights, Class::Hot));
        assert_eq!(c.uses_per_step(2), 10.0);
        c.sample(4 * STEP, &[(1, 5)]);
        assert_eq!(c.class(2), Class::Unknown, "an extent no longer listed is forgotten");
        assert_eq!(c.class(1), Class::Weights, "the class holds until the next window ends");
        c.forget(1);
        assert_eq!(c.class(1), Class::Unknown);
    }

    #[test]
    fn windows_restarted_together_count_from_the_restart_and_keep_the_classes() {
        let mut c = Classifier::new();
        c.sample(0, &[(1, 0), (2, 0)]);
        c.sample(3 * STEP, &[(1, 3), (2, 30)]);
        c.restart_all(10 * STEP, &[(1, 50), (2, 60), (3, 0)]);
        assert_eq!((c.class(1), c.class(2), c.class(3)), (Class::Weights, Class::Hot, Class::Unknown));
        c.sample(13 * STEP, &[(1, 53), (2, 90), (3, 9)]);
        assert_eq!((c.class(1), c.class(2), c.class(3)), (Class::Weights, Class::Hot, Class::Hot));
    }

    #[test]
    fn an_exact_count_classifies_at_once() {
        let mut c = Classifier::new();
        c.sample(0, &[(1, 0), (2, 0)]);
        c.set_exact(1, 2, STEP, 7);
        c.set_exact(2, 1, STEP, 3);
        assert_eq!((c.class(1), c.class(2)), (Class::Hot, Class::Weights));
        c.sample(4 * STEP, &[(1, 8), (2, 6)]);
        assert_eq!((c.class(1), c.class(2)), (Class::Weights, Class::Weights), "windows go on from the exact count");
    }

    #[test]
    fn an_extent_whose_count_went_back_is_a_new_extent() {
        let mut c = Classifier::new();
        c.sample(0, &[(1, 0)]);
        c.sample(3 * STEP, &[(1, 10)]);
        assert_eq!(c.class(1), Class::Hot);
        c.sample(4 * STEP, &[(1, 0)]);
        assert_eq!(c.class(1), Class::Unknown);
    }

    #[test]
    fn a_restarted_watch_keeps_its_class_and_counts_from_the_move() {
        let mut c = Classifier::new();
        c.sample(0, &[(1, 0)]);
        c.sample(3 * STEP, &[(1, 10)]);
        c.restart(1, 4 * STEP, 12);
        c.sample(6 * STEP, &[(1, 14)]);
        assert_eq!(c.class(1), Class::Hot, "the old class until the new window ends");
        c.sample(7 * STEP, &[(1, 15)]);
        assert_eq!(c.class(1), Class::Weights, "1 use per step over steps 4..7");
    }

    #[test]
    fn demotions_take_the_least_used_weights_until_enough_is_free() {
        let candidates = [
            candidate(1, 8 * MIB, true, Class::Weights, 1.0),
            candidate(2, 8 * MIB, true, Class::Weights, 0.0),
            candidate(3, 8 * MIB, true, Class::Hot, 9.0),
            candidate(4, 8 * MIB, false, Class::Weights, 0.0),
            candidate(5, 4 * MIB, true, Class::Unknown, 0.0),
        ];
        assert_eq!(plan_demotions(&candidates, 2 * MIB, 6 * MIB, u64::MAX), vec![Move::Demote(2)]);
        assert_eq!(plan_demotions(&candidates, 2 * MIB, 12 * MIB, u64::MAX), vec![Move::Demote(2), Move::Demote(1)]);
        assert_eq!(plan_demotions(&candidates, 0, 20 * MIB, u64::MAX), vec![], "hot and unknown extents stay");
        assert_eq!(plan_demotions(&candidates, 8 * MIB, 8 * MIB, u64::MAX), vec![], "enough is free already");
        assert_eq!(plan_demotions(&candidates, 0, 12 * MIB, 8 * MIB), vec![], "the batch limit holds");
    }

    #[test]
    fn promotions_use_free_room_first_then_demote_weights_for_the_rest() {
        let candidates = [
            candidate(1, 8 * MIB, true, Class::Weights, 1.0),
            candidate(2, 4 * MIB, false, Class::Hot, 5.0),
            candidate(3, 6 * MIB, false, Class::Hot, 20.0),
            candidate(4, 8 * MIB, false, Class::Weights, 0.0),
        ];
        assert_eq!(plan_promotions(&candidates, 6 * MIB, u64::MAX), vec![Move::Promote(3), Move::Demote(1), Move::Promote(2)]);
        assert_eq!(plan_promotions(&candidates, 10 * MIB, u64::MAX), vec![Move::Promote(3), Move::Promote(2)]);
        assert_eq!(plan_promotions(&candidates, 0, u64::MAX), vec![Move::Demote(1), Move::Promote(3)], "one weight makes room for one");
        assert_eq!(plan_promotions(&candidates, 6 * MIB, 6 * MIB), vec![Move::Promote(3)], "the batch limit holds");
    }

    #[test]
    fn weights_come_back_into_room_beyond_the_margin_once_nothing_hot_waits() {
        let mut candidates = vec![
            candidate(1, 8 * MIB, false, Class::Weights, 1.0),
            candidate(2, 4 * MIB, false, Class::Weights, 2.0),
            candidate(3, 8 * MIB, true, Class::Weights, 1.0),
            candidate(4, 2 * MIB, false, Class::Unknown, 0.0),
        ];
        assert_eq!(plan_refill(&candidates, 16 * MIB, 4 * MIB, u64::MAX), vec![Move::Promote(2), Move::Promote(1)]);
        assert_eq!(plan_refill(&candidates, 12 * MIB, 4 * MIB, u64::MAX), vec![Move::Promote(2)], "8 MiB more would eat the margin");
        assert_eq!(plan_refill(&candidates, 16 * MIB, 4 * MIB, 8 * MIB), vec![Move::Promote(2)], "the batch limit holds");
        candidates.push(candidate(5, 2 * MIB, false, Class::Hot, 9.0));
        assert_eq!(plan_refill(&candidates, 16 * MIB, 4 * MIB, u64::MAX), vec![], "hot extents first");
    }

    #[test]
    fn extents_moved_recently_stay_where_they_are() {
        let mut candidates = [candidate(1, 8 * MIB, true, Class::Weights, 0.0), candidate(2, 8 * MIB, false, Class::Hot, 9.0)];
        candidates[0].settling = true;
        assert_eq!(plan_promotions(&candidates, 0, u64::MAX), vec![]);
        candidates[0].settling = false;
        candidates[1].settling = true;
        assert_eq!(plan_promotions(&candidates, 8 * MIB, u64::MAX), vec![]);
    }
}
