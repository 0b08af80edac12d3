//! The step predictor: which donor extents the next launches will read.
//!
//! Every launch that references donor extents is reduced to a *signature*: its sorted set
//! of extents. A diffusion sampler repeats the same sequence of signatures every step
//! (twice with unbatched CFG), so the sequence is periodic. The predictor keeps the
//! recent history of signatures and a period `P`: while the newest signature equals the
//! one `P` launches earlier, the next launches are predicted to be those that followed
//! `P` launches ago. On a mismatch it relearns at once: it tries the distances to the
//! signature's last occurrences, verified against the recent history, and takes the
//! shortest that holds; failing that the distance to the last occurrence alone (a
//! last-occurrence successor guess); a signature never seen gives no period, and the
//! caller falls back to first-use order ([`Predictor::after_in_first_use_order`]).
//! Nothing ever waits on the predictor: a wrong guess costs a wasted copy, never a stall.

use std::collections::HashMap;

/// Launches of history kept.
const HISTORY: usize = 1 << 16;
/// Recent launches compared when a period candidate is verified.
const VERIFY: usize = 32;
/// Occurrences remembered per signature.
const OCCURRENCES: usize = 4;
/// Consecutive confirmed launches (or a whole period, if shorter) before the predictor
/// reports itself locked.
const LOCK_AFTER: u64 = 8;
/// One step in the units of [`PredictorState::progress`].
pub const STEP_UNIT: u64 = 1 << 16;

struct Signature {
    extents: Box<[u64]>,
    /// Positions of the last occurrences, most recent first.
    seen: [u64; OCCURRENCES],
    seen_count: usize,
}

/// What the predictor knows, for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PredictorState {
    /// The period in launches, when one is in force.
    pub period: Option<u64>,
    /// Whether the period has held long enough to be trusted.
    pub locked: bool,
    /// Launches whose signature had been predicted by the launch before.
    pub predicted: u64,
    /// Of those, how many were predicted right.
    pub hits: u64,
    /// Steps seen: every launch made while the predictor is locked counts for 1/period of
    /// a step (the working set counts uses per step).
    pub steps: u64,
    /// The same in units of 1/[`STEP_UNIT`] step.
    pub progress: u64,
    /// Launches that did not follow the period (the period was relearnt): step counts
    /// spanning one are approximate.
    pub relearns: u64,
}

/// Learns the sequence of launch signatures and predicts what comes next.
#[derive(Default)]
pub struct Predictor {
    signatures: Vec<Signature>,
    by_extents: HashMap<Box<[u64]>, u32>,
    history: Vec<u32>,
    count: u64,
    period: Option<u64>,
    matched: u64,
    expected: Option<u32>,
    predicted: u64,
    hits: u64,
    progress: u64,
    relearns: u64,
    first_use: HashMap<u64, usize>,
    first_use_order: Vec<u64>,
}

impl Predictor {
    /// An empty predictor.
    pub fn new() -> Predictor {
        Predictor::default()
    }

    fn at(&self, position: u64) -> Option<u32> {
        (position < self.count && self.count - position <= HISTORY as u64).then(|| self.history[(position % HISTORY as u64) as usize])
    }

    /// Records one launch referencing `extents` (sorted, without duplicates).
    pub fn observe(&mut self, extents: &[u64]) {
        let signature = match self.by_extents.get(extents) {
            Some(&s) => s,
            None => {
                let s = self.signatures.len() as u32;
                self.signatures.push(Signature { extents: extents.into(), seen: [0; OCCURRENCES], seen_count: 0 });
                self.by_extents.insert(extents.into(), s);
                s
            }
        };
        for &extent in extents {
            if !self.first_use.contains_key(&extent) {
                self.first_use.insert(extent, self.first_use_order.len());
                self.first_use_order.push(extent);
            }
        }
        if let Some(expected) = self.expected {
            self.predicted += 1;
            self.hits += (expected == signature) as u64;
        }
        let position = self.count;
        if self.history.len() < HISTORY {
            self.history.push(signature);
        } else {
            self.history[(position % HISTORY as u64) as usize] = signature;
        }
        self.count += 1;
        let confirmed = self.period.is_some_and(|p| position >= p && self.at(position - p) == Some(signature));
        if confirmed {
            self.matched += 1;
        } else {
            self.matched = 0;
            self.relearns += 1;
            self.period = self.relearn(signature, position);
        }
        let entry = &mut self.signatures[signature as usize];
        entry.seen.copy_within(0..OCCURRENCES - 1, 1);
        entry.seen[0] = position;
        entry.seen_count = (entry.seen_count + 1).min(OCCURRENCES);
        if let Some(period) = self.period.filter(|_| self.state().locked) {
            self.progress += STEP_UNIT.div_ceil(period);
        }
        self.expected = self.predict(1);
    }

    /// A period for the newest launch at `position`: the shortest distance to an earlier
    /// occurrence of its signature that the recent history confirms, else the distance to
    /// the last occurrence, else none.
    fn relearn(&self, signature: u32, position: u64) -> Option<u64> {
        let entry = &self.signatures[signature as usize];
        let candidates = &entry.seen[..entry.seen_count];
        let holds = |period: u64| {
            (1..VERIFY as u64)
                .take_while(|k| *k < period && position >= period + k)
                .all(|k| self.at(position - k).is_some() && self.at(position - k) == self.at(position - k - period))
        };
        candidates.iter().map(|&c| position - c).find(|&p| holds(p)).or_else(|| candidates.first().map(|&c| position - c))
    }

    /// The signature predicted `ahead` launches after the newest one (1 = the next).
    fn predict(&self, ahead: u64) -> Option<u32> {
        let period = self.period?;
        let newest = self.count.checked_sub(1)?;
        let back = ((ahead - 1) % period) + 1;
        self.at((newest + back).checked_sub(period)?)
    }

    /// Appends the extents the next `launches` launches are predicted to reference, in
    /// order, each once, to `out`. Returns false when there is no period to predict from.
    pub fn upcoming(&self, launches: usize, out: &mut Vec<u64>) -> bool {
        if self.period.is_none() {
            return false;
        }
        for ahead in 1..=launches as u64 {
            let Some(signature) = self.predict(ahead) else { break };
            for &extent in self.signatures[signature as usize].extents.iter() {
                if !out.contains(&extent) {
                    out.push(extent);
                }
            }
        }
        true
    }

    /// Up to `count` extents that were first used right after the latest first use among
    /// `extents`, in first-use order (the fallback without a period).
    pub fn after_in_first_use_order(&self, extents: &[u64], count: usize, out: &mut Vec<u64>) {
        let Some(latest) = extents.iter().filter_map(|e| self.first_use.get(e)).max() else { return };
        for &extent in self.first_use_order.iter().skip(latest + 1).take(count) {
            if !out.contains(&extent) {
                out.push(extent);
            }
        }
    }

    /// While locked: how many of the last period's launches referenced each extent (each
    /// listed once, with its count), into `out`. Exact, unlike counts sampled at arbitrary
    /// times. Returns false (and leaves `out` empty) when not locked.
    pub fn uses_per_period(&self, out: &mut Vec<(u64, u64)>) -> bool {
        out.clear();
        let Some(period) = self.period.filter(|_| self.state().locked) else { return false };
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for position in self.count.saturating_sub(period)..self.count {
            let Some(signature) = self.at(position) else { continue };
            for &extent in self.signatures[signature as usize].extents.iter() {
                *counts.entry(extent).or_default() += 1;
            }
        }
        out.extend(counts);
        out.sort_unstable();
        true
    }

    /// Period, lock and hit rate.
    pub fn state(&self) -> PredictorState {
        PredictorState {
            period: self.period,
            locked: self.period.is_some_and(|p| self.matched >= p.min(LOCK_AFTER)),
            predicted: self.predicted,
            hits: self.hits,
            steps: self.progress / STEP_UNIT,
            progress: self.progress,
            relearns: self.relearns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One "step": launches each reading one of `extents`, in order.
    fn step(p: &mut Predictor, extents: &[u64]) {
        for &e in extents {
            p.observe(&[e]);
        }
    }

    fn next(p: &Predictor, launches: usize) -> Vec<u64> {
        let mut out = Vec::new();
        p.upcoming(launches, &mut out);
        out
    }

    #[test]
    fn uses_per_period_count_each_extent_over_the_last_period_once_locked() {
        let mut p = Predictor::new();
        let mut out = Vec::new();
        // A step: weights 1..=4, each launch also reading activation 9.
        let step = |p: &mut Predictor| (1..=4).for_each(|w| p.observe(&[w, 9]));
        step(&mut p);
        assert!(!p.uses_per_period(&mut out) && out.is_empty());
        step(&mut p);
        step(&mut p);
        assert!(p.uses_per_period(&mut out));
        assert_eq!(out, vec![(1, 1), (2, 1), (3, 1), (4, 1), (9, 4)]);
    }

    #[test]
    fn a_step_is_a_period_of_launches() {
        let mut p = Predictor::new();
        let blocks: Vec<u64> = (1..=10).collect();
        step(&mut p, &blocks);
        step(&mut p, &blocks);
        assert_eq!(p.state().steps, 0, "steps count from the lock, 8 launches into the second step");
        step(&mut p, &blocks);
        assert_eq!(p.state().steps, 1);
        step(&mut p, &blocks[..5]);
        assert_eq!(p.state().steps, 1);
        step(&mut p, &blocks[5..]);
        for _ in 0..100 {
            step(&mut p, &blocks);
        }
        assert_eq!(p.state().steps, 102, "no drift");
    }

    #[test]
    fn locks_on_within_the_second_step_and_predicts_the_next_launches() {
        let mut p = Predictor::new();
        let blocks: Vec<u64> = (1..=57).collect();
        step(&mut p, &blocks);
        assert!(!p.state().locked);
        step(&mut p, &blocks[..10]);
        assert_eq!(p.state().period, Some(57));
        assert!(p.state().locked);
        assert_eq!(next(&p, 3), vec![11, 12, 13]);
        step(&mut p, &blocks[10..]);
        assert_eq!(next(&p, 2), vec![1, 2], "wraps into the next step");
        let state = p.state();
        assert!(state.hits >= 56, "{state:?}");
    }

    #[test]
    fn cfg_passes_give_the_forward_pass_as_period() {
        let mut p = Predictor::new();
        let pass: Vec<u64> = (100..120).collect();
        for _ in 0..4 {
            step(&mut p, &pass);
        }
        assert_eq!(p.state().period, Some(20));
        assert!(p.state().locked);
    }

    #[test]
    fn a_signature_repeated_inside_the_period_does_not_confuse_it() {
        // A shared extent (say a norm weight, 9) is read between every block.
        let mut p = Predictor::new();
        let pass: Vec<u64> = (1..=8).flat_map(|b| [b, 9]).collect();
        for _ in 0..3 {
            step(&mut p, &pass);
        }
        assert_eq!(p.state().period, Some(16));
        assert_eq!(next(&p, 2), vec![1, 9]);
        step(&mut p, &pass[..5]);
        assert_eq!(next(&p, 2), vec![9, 4]);
    }

    #[test]
    fn a_changed_pattern_is_relearned() {
        let mut p = Predictor::new();
        let first: Vec<u64> = (1..=30).collect();
        let second: Vec<u64> = (200..=220).collect();
        for _ in 0..3 {
            step(&mut p, &first);
        }
        assert_eq!(p.state().period, Some(30));
        step(&mut p, &second);
        assert_eq!(p.state().period, None, "new signatures: no period yet");
        step(&mut p, &second[..3]);
        assert_eq!(p.state().period, Some(21));
        assert_eq!(next(&p, 2), vec![203, 204]);
    }

    #[test]
    fn first_use_order_is_the_fallback() {
        let mut p = Predictor::new();
        p.observe(&[5]);
        p.observe(&[3, 7]);
        p.observe(&[1]);
        let mut out = Vec::new();
        p.after_in_first_use_order(&[5], 2, &mut out);
        assert_eq!(out, vec![3, 7]);
    }

    #[test]
    fn history_longer_than_kept_still_predicts() {
        let mut p = Predictor::new();
        let pass: Vec<u64> = (1..=1000).collect();
        for _ in 0..(HISTORY / 1000 + 3) {
            step(&mut p, &pass);
        }
        assert_eq!(p.state().period, Some(1000));
        assert_eq!(next(&p, 1), vec![1]);
    }
}
