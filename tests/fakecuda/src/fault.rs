//! Fault injection: `FAKECUDA_FAIL="cuMemCreate:3,cuMemMap:every:7=2"`.
//!
//! `NAME:N` fails the Nth call of NAME (counting from 1); `NAME:every:N` fails every Nth
//! call; `NAME:always` fails every call. `=CODE` sets the returned `CUresult` (default
//! 2, `CUDA_ERROR_OUT_OF_MEMORY`). NAME is the exported symbol (`cuMemAlloc_v2`).

use std::sync::atomic::{AtomicU64, Ordering};
use vvram_cuda::{CUresult, result};

/// When a rule fires.
#[derive(Debug, PartialEq, Eq)]
pub enum When {
    /// The Nth call only.
    Nth(u64),
    /// Every Nth call.
    Every(u64),
}

/// One fault injection rule.
#[derive(Debug)]
pub struct FaultRule {
    /// The symbol whose calls it counts.
    pub symbol: String,
    /// When it fires.
    pub when: When,
    /// What it returns.
    pub code: CUresult,
    calls: AtomicU64,
}

/// Parses `FAKECUDA_FAIL`.
pub fn parse_rules(text: &str) -> Result<Vec<FaultRule>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|rule| {
            let bad = || format!("FAKECUDA_FAIL `{rule}`: expected NAME:N, NAME:every:N or NAME:always, optionally =CODE");
            let (spec, code) = match rule.split_once('=') {
                Some((spec, code)) => (spec, code.trim().parse().map_err(|_| bad())?),
                None => (rule, result::OUT_OF_MEMORY),
            };
            let parts: Vec<&str> = spec.split(':').collect();
            let when = match parts.as_slice() {
                [_, "always"] => When::Every(1),
                [_, "every", n] => When::Every(n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?),
                [_, n] => When::Nth(n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?),
                _ => return Err(bad()),
            };
            Ok(FaultRule { symbol: parts[0].to_string(), when, code, calls: AtomicU64::new(0) })
        })
        .collect()
}

/// Counts a call of `symbol`; the injected error if a rule fires.
pub fn injected(rules: &[FaultRule], symbol: &str) -> Option<CUresult> {
    let mut fired = None;
    for rule in rules.iter().filter(|r| r.symbol == symbol) {
        let call = rule.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let fires = match rule.when {
            When::Nth(n) => call == n,
            When::Every(n) => call % n == 0,
        };
        if fires && fired.is_none() {
            fired = Some(rule.code);
        }
    }
    fired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fire_on_their_calls() {
        let rules = parse_rules("cuMemCreate:3, cuMemMap:every:2=999,cuInit:always").unwrap();
        let create: Vec<_> = (0..4).map(|_| injected(&rules, "cuMemCreate")).collect();
        assert_eq!(create, vec![None, None, Some(2), None]);
        let map: Vec<_> = (0..4).map(|_| injected(&rules, "cuMemMap")).collect();
        assert_eq!(map, vec![None, Some(999), None, Some(999)]);
        assert_eq!(injected(&rules, "cuInit"), Some(2));
        assert_eq!(injected(&rules, "cuMemAlloc_v2"), None);
    }

    #[test]
    fn malformed_rules_are_refused() {
        assert!(parse_rules("cuMemCreate").is_err());
        assert!(parse_rules("cuMemCreate:0").is_err());
        assert!(parse_rules("cuMemCreate:every:x").is_err());
        assert!(parse_rules("cuMemCreate:1=oops").is_err());
    }
}
