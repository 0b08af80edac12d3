//! Reading a TOML policy into a validated [`Policy`].

use crate::distorch::parse_allocation;
use crate::error::{LineIndex, Location, PolicyError, did_you_mean};
use crate::model::*;
use crate::size::parse_size;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::fmt;
use std::ops::Range;
use toml::Spanned;

/// Whether `name` is a valid phase or tag name (what rules, the control API and
/// `VVRAM_PHASE` accept): 1–64 ASCII letters, digits, `_`, `-` or `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// An amount as written: size, `*`, `{ fraction = x }` or `{ share = x }`.
struct RawAmount(Amount);

impl<'de> Deserialize<'de> for RawAmount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AmountVisitor::<true>).map(RawAmount)
    }
}

/// A plain size: a number of bytes or a size string.
struct RawSize(u64);

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_any(AmountVisitor::<false>)? {
            Amount::Bytes(bytes) => Ok(RawSize(bytes)),
            other => Err(de::Error::custom(format!("`{other}`: expected a plain size such as \"8GiB\""))),
        }
    }
}

struct AmountVisitor<const FLEXIBLE: bool>;

impl<'de, const FLEXIBLE: bool> Visitor<'de> for AmountVisitor<FLEXIBLE> {
    type Value = Amount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if FLEXIBLE {
            write!(f, "a size such as \"8GiB\", \"*\", {{ fraction = 0.5 }} or {{ share = 8 }}")
        } else {
            write!(f, "a size such as \"8GiB\", \"512MiB\" or a number of bytes")
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Amount, E> {
        u64::try_from(v)
            .map(Amount::Bytes)
            .map_err(|_| E::custom(format!("`{v}`: a size cannot be negative")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Amount, E> {
        Ok(Amount::Bytes(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Amount, E> {
        Err(E::custom(format!(
            "`{v}`: a size needs a unit, written as a string: e.g. \"{v}GiB\""
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
        if v.trim() == "*" {
            return if FLEXIBLE {
                Ok(Amount::Rest)
            } else {
                Err(E::custom("`*` is not allowed here: expected a size such as \"8GiB\""))
            };
        }
        parse_size(v).map(Amount::Bytes).map_err(|e| E::custom(format!("`{v}`: {e}")))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Amount, A::Error> {
        if !FLEXIBLE {
            return Err(de::Error::custom("expected a size such as \"8GiB\", not a table"));
        }
        let key: String = map
            .next_key()?
            .ok_or_else(|| de::Error::custom("expected { fraction = 0.5 } or { share = 8 }"))?;
        let value: f64 = map.next_value()?;
        if map.next_key::<String>()?.is_some() {
            return Err(de::Error::custom("give one of `fraction` or `share`, not both"));
        }
        match key.as_str() {
            "fraction" if value > 0.0 && value <= 1.0 => Ok(Amount::Fraction(value)),
            "fraction" => Err(de::Error::custom(format!(
                "fraction `{value}`: expected a fraction of the tier's memory in (0, 1]"
            ))),
            "share" if value > 0.0 && value.is_finite() => Ok(Amount::Share(value)),
            "share" => Err(de::Error::custom(format!("share `{value}`: expected a number above zero"))),
            other => Err(de::Error::custom(format!(
                "unknown key `{other}`: expected `fraction` or `share`"
            ))),
        }
    }
}

struct RawTier(Tier);

impl<'de> Deserialize<'de> for RawTier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(RawTier).map_err(de::Error::custom)
    }
}

enum RawReport {
    Virtual,
    Fixed(u64),
}

impl<'de> Deserialize<'de> for RawReport {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ReportVisitor;
        impl<'de> Visitor<'de> for ReportVisitor {
            type Value = RawReport;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "\"virtual\" or a size such as \"48GiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawReport, E> {
                u64::try_from(v)
                    .map(RawReport::Fixed)
                    .map_err(|_| E::custom(format!("`{v}`: a size cannot be negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawReport, E> {
                Ok(RawReport::Fixed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawReport, E> {
                if v == "virtual" {
                    return Ok(RawReport::Virtual);
                }
                parse_size(v).map(RawReport::Fixed).map_err(|e| {
                    E::custom(format!("`{v}`: expected \"virtual\" or a size such as \"48GiB\" ({e})"))
                })
            }
        }
        deserializer.deserialize_any(ReportVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: Option<Spanned<u32>>,
    machine: Option<RawMachine>,
    #[serde(default)]
    device: Vec<Spanned<RawDevice>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    host_pool: Option<RawHostPool>,
    streaming: Option<RawStreaming>,
    placement: Option<RawPlacement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMachine {
    devices: Spanned<Vec<RawSize>>,
    host: Spanned<RawSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    index: Spanned<u32>,
    local_budget: Option<Spanned<RawAmount>>,
    donors: Option<Vec<Spanned<RawDonor>>>,
    alloc: Option<Spanned<String>>,
    report: Option<Spanned<RawReport>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDonor {
    tier: Spanned<RawTier>,
    capacity: Spanned<RawAmount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    device: Option<Spanned<u32>>,
    min_size: Option<Spanned<RawSize>>,
    max_size: Option<Spanned<RawSize>>,
    phase: Option<Spanned<String>>,
    tag: Option<Spanned<String>>,
    tiers: Spanned<Vec<Spanned<RawTier>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostPool {
    pin_ahead: Option<Spanned<RawSize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStreaming {
    enabled: Option<bool>,
    local_cache: Option<Spanned<RawSize>>,
    prefetch_depth: Option<Spanned<u32>>,
    weights_read_only: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    automatic: Option<bool>,
    reserve: Option<Spanned<RawSize>>,
}

/// The largest policy text accepted: far above any real policy, small enough that
/// parsing one (in the application's process, through the control API) stays quick.
pub const MAX_POLICY_BYTES: usize = 1 << 20;
/// The most `[[rule]]` tables a policy may have.
pub const MAX_RULES: usize = 1024;
/// The most `[[device]]` tables, and the most donors of one device.
pub const MAX_DEVICES: usize = 256;

/// Reads a TOML policy. `origin` (usually the file name) is used in every message.
/// Texts over [`MAX_POLICY_BYTES`] are refused before parsing.
pub fn parse_policy(origin: &str, text: &str) -> Result<Policy, PolicyError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::new(
            origin,
            Location { line: 1, column: 1 },
            format!("the policy is {} bytes long; at most {MAX_POLICY_BYTES} bytes are accepted", text.len()),
        ));
    }
    let source = Source { origin, text, lines: LineIndex::new(text) };
    let raw: RawPolicy = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
    source.convert(raw)
}

struct Source<'a> {
    origin: &'a str,
    text: &'a str,
    lines: LineIndex,
}

impl Source<'_> {
    fn at(&self, span: Range<usize>) -> Location {
        self.lines.locate(self.text, span.start)
    }

    /// An error when a list holds more than `limit` entries.
    fn limit<T>(&self, items: &[Spanned<T>], limit: usize, what: &str) -> Result<(), PolicyError> {
        match items.get(limit) {
            Some(extra) => Err(self.error(extra.span(), format!("more than {limit} {what}: at most {limit} are accepted"))),
            None => Ok(()),
        }
    }

    fn error(&self, span: Range<usize>, message: impl Into<String>) -> PolicyError {
        PolicyError::new(self.origin, self.at(span), message)
    }

    fn toml_error(&self, error: &toml::de::Error) -> PolicyError {
        let span = error.span().unwrap_or(0..0);
        PolicyError::new(self.origin, self.at(span), explain_toml_message(error.message()))
    }

    fn convert(&self, raw: RawPolicy) -> Result<Policy, PolicyError> {
        if let Some(version) = &raw.version
            && *version.get_ref() != 1 {
                return Err(self.error(
                    version.span(),
                    format!("policy version {} is not known: expected `version = 1`", version.get_ref()),
                ));
            }
        let machine = raw.machine.map(|m| self.machine(m)).transpose()?;
        if raw.device.is_empty() {
            return Err(PolicyError::new(
                self.origin,
                Location { line: 1, column: 1 },
                "the policy names no compute device: add a `[[device]]` table with `index` and \
                 `local_budget` (or `alloc`)",
            ));
        }
        self.limit(&raw.device, MAX_DEVICES, "`[[device]]` tables")?;
        self.limit(&raw.rule, MAX_RULES, "`[[rule]]` tables")?;
        let mut devices: Vec<DevicePolicy> = Vec::new();
        for device in raw.device {
            let device = self.device(device.into_inner())?;
            if let Some(earlier) = devices.iter().find(|d| d.index == device.index) {
                return Err(PolicyError::new(
                    self.origin,
                    device.at,
                    format!(
                        "device {} is configured twice (first at line {})",
                        device.index, earlier.at.line
                    ),
                ));
            }
            devices.push(device);
        }
        let mut rules: Vec<Rule> = Vec::new();
        for rule in raw.rule {
            let span = rule.span();
            let rule = self.rule(rule.into_inner(), span, &devices)?;
            if let Some((number, earlier)) = rules.iter().enumerate().find(|(_, r)| r.covers(&rule)) {
                return Err(PolicyError::new(
                    self.origin,
                    rule.at,
                    format!(
                        "this rule can never match: rule {} (line {}) comes first and matches \
                         every allocation it would ({}); move it above that rule or narrow it",
                        number + 1,
                        earlier.at.line,
                        earlier.condition()
                    ),
                ));
            }
            rules.push(rule);
        }
        let host_pool = match raw.host_pool.and_then(|p| p.pin_ahead) {
            None => HostPool { pin_ahead: None, at: Location::default() },
            Some(pin) => HostPool { at: self.at(pin.span()), pin_ahead: Some(pin.into_inner().0) },
        };
        let streaming = self.streaming(raw.streaming)?;
        let placement = self.placement(raw.placement);
        let policy = Policy { origin: self.origin.to_string(), machine, devices, rules, host_pool, streaming, placement };
        if let Some(machine) = &policy.machine {
            crate::resolve::resolve(&policy, machine)?;
        }
        Ok(policy)
    }

    fn machine(&self, raw: RawMachine) -> Result<Machine, PolicyError> {
        let span = raw.devices.span();
        let devices: Vec<u64> = raw.devices.into_inner().into_iter().map(|s| s.0).collect();
        if devices.is_empty() || devices.contains(&0) {
            return Err(self.error(span, "`devices` lists each GPU's memory, e.g. [\"24GiB\", \"24GiB\"]; none may be zero"));
        }
        Ok(Machine { devices, host: raw.host.into_inner().0, ..Machine::default() })
    }

    fn device(&self, raw: RawDevice) -> Result<DevicePolicy, PolicyError> {
        let index = *raw.index.get_ref();
        let at = self.at(raw.index.span());
        let (local_budget, budget_at, donors) = match (raw.alloc, raw.local_budget) {
            (Some(alloc), None) if raw.donors.is_none() => {
                // The string's characters start one past the opening quote.
                let start = self.at(alloc.span()).advanced(1);
                let parsed = parse_allocation(alloc.get_ref(), index, self.origin, start)?;
                (parsed.local_budget, parsed.budget_at, parsed.donors)
            }
            (Some(alloc), _) => {
                return Err(self.error(
                    alloc.span(),
                    "give either `alloc` or `local_budget` with `donors`, not both",
                ));
            }
            (None, Some(budget)) => {
                let budget_at = self.at(budget.span());
                let donors = raw.donors.unwrap_or_default();
                self.limit(&donors, MAX_DEVICES, "donors")?;
                let donors = donors
                    .into_iter()
                    .map(|d| {
                        let d = d.into_inner();
                        Donor { at: self.at(d.tier.span()), tier: d.tier.into_inner().0, capacity: d.capacity.into_inner().0 }
                    })
                    .collect();
                (budget.into_inner().0, budget_at, donors)
            }
            (None, None) => {
                return Err(PolicyError::new(
                    self.origin,
                    at,
                    format!(
                        "device {index} needs `local_budget` (the VRAM vvram may use there, e.g. \
                         \"20GiB\") or an `alloc` string such as \"cuda:{index},20gb;cpu,*\""
                    ),
                ));
            }
        };
        if local_budget == Amount::Bytes(0) {
            return Err(PolicyError::new(self.origin, budget_at, "`local_budget` must be greater than zero"));
        }
        let mut seen: Vec<Tier> = Vec::new();
        for donor in &donors {
            let problem = match donor.tier {
                Tier::Local => Some("`local` is the device itself, not a donor: donors are `peer:N` or `host`".to_string()),
                Tier::Peer(n) if n == index => Some(format!(
                    "peer:{n} is the compute device itself: a device cannot donate to itself; \
                     donors are other GPUs (`peer:N`, N ≠ {index}) or `host`"
                )),
                tier if seen.contains(&tier) => Some(format!("donor {tier} is listed twice")),
                _ if donor.capacity == Amount::Bytes(0) => {
                    Some(format!("donor {}: capacity must be greater than zero", donor.tier))
                }
                _ => None,
            };
            if let Some(message) = problem {
                return Err(PolicyError::new(self.origin, donor.at, message));
            }
            seen.push(donor.tier);
        }
        let report = match raw.report {
            None => Report::Virtual,
            Some(report) => match report.get_ref() {
                RawReport::Virtual => Report::Virtual,
                RawReport::Fixed(0) => {
                    return Err(self.error(report.span(), "`report` must be \"virtual\" or a size above zero"));
                }
                RawReport::Fixed(b) => Report::Fixed(*b),
            },
        };
        Ok(DevicePolicy { index, local_budget, donors, report, at, budget_at })
    }

    fn rule(&self, raw: RawRule, span: Range<usize>, devices: &[DevicePolicy]) -> Result<Rule, PolicyError> {
        let at = self.at(span);
        let device = match raw.device {
            None => None,
            Some(d) => {
                let index = *d.get_ref();
                if !devices.iter().any(|dev| dev.index == index) {
                    let known: Vec<String> = devices.iter().map(|d| d.index.to_string()).collect();
                    return Err(self.error(
                        d.span(),
                        format!("device {index} has no `[[device]]` table: configured devices are {}", known.join(", ")),
                    ));
                }
                Some(index)
            }
        };
        let min_size = raw.min_size.as_ref().map_or(0, |s| s.get_ref().0);
        let max_size = match &raw.max_size {
            None => None,
            Some(max) => {
                let max_bytes = max.get_ref().0;
                if max_bytes <= min_size {
                    return Err(self.error(
                        max.span(),
                        format!(
                            "empty size range: `max_size` ({}) must be above `min_size` ({}); sizes match min_size <= size < max_size",
                            crate::size::format_size(max_bytes),
                            crate::size::format_size(min_size)
                        ),
                    ));
                }
                Some(max_bytes)
            }
        };
        let mut names = Vec::new();
        for (key, value) in [("phase", &raw.phase), ("tag", &raw.tag)] {
            names.push(match value {
                Some(name) if !valid_name(name.get_ref()) => {
                    return Err(self.error(
                        name.span(),
                        format!("`{key}` must be 1–64 letters, digits, `_`, `-` or `.`"),
                    ));
                }
                other => other.as_ref().map(|n| n.get_ref().clone()),
            });
        }
        let tag = names.pop().flatten();
        let phase = names.pop().flatten();
        let tiers_span = raw.tiers.span();
        let mut tiers: Vec<Tier> = Vec::new();
        for tier in raw.tiers.into_inner() {
            let (span, tier) = (tier.span(), tier.into_inner().0);
            if tiers.contains(&tier) {
                return Err(self.error(span, format!("tier {tier} is listed twice")));
            }
            for dev in devices.iter().filter(|d| device.is_none_or(|i| i == d.index)) {
                let available = tier == Tier::Local || dev.donors.iter().any(|d| d.tier == tier);
                if !available {
                    let mut have = vec!["local".to_string()];
                    have.extend(dev.donors.iter().map(|d| d.tier.to_string()));
                    return Err(self.error(
                        span,
                        format!(
                            "device {} has no tier {tier}: its tiers are {}{}",
                            dev.index,
                            have.join(", "),
                            if device.is_none() { " (limit the rule with `device = N` to use a tier only some devices have)" } else { "" }
                        ),
                    ));
                }
            }
            tiers.push(tier);
        }
        if tiers.is_empty() {
            return Err(self.error(tiers_span, "`tiers` is empty: list at least one of `local`, `peer:N`, `host`"));
        }
        Ok(Rule { name: raw.name, device, min_size, max_size, phase, tag, tiers, at })
    }

    fn placement(&self, raw: Option<RawPlacement>) -> Placement {
        let mut placement = Placement::default();
        let Some(raw) = raw else { return placement };
        placement.automatic = raw.automatic.unwrap_or(placement.automatic);
        if let Some(reserve) = raw.reserve {
            placement.at = self.at(reserve.span());
            placement.reserve = Some(reserve.into_inner().0);
        }
        placement
    }

    fn streaming(&self, raw: Option<RawStreaming>) -> Result<Streaming, PolicyError> {
        let mut streaming = Streaming::default();
        let Some(raw) = raw else { return Ok(streaming) };
        streaming.enabled = raw.enabled.unwrap_or(streaming.enabled);
        streaming.weights_read_only = raw.weights_read_only.unwrap_or(streaming.weights_read_only);
        if let Some(cache) = raw.local_cache {
            streaming.local_cache = cache.get_ref().0;
            if streaming.local_cache == 0 {
                return Err(self.error(cache.span(), "`local_cache` must be greater than zero"));
            }
        }
        if let Some(depth) = raw.prefetch_depth {
            if !(1..=16).contains(depth.get_ref()) {
                return Err(self.error(depth.span(), format!("`prefetch_depth` {} is out of range: expected 1 to 16", depth.get_ref())));
            }
            streaming.prefetch_depth = *depth.get_ref();
        }
        Ok(streaming)
    }
}

/// Turns serde's messages into ones that say what would be valid.
fn explain_toml_message(message: &str) -> String {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    if message.starts_with("unknown field")
        && let Some((unknown, valid)) = quoted.split_first() {
            let suggestion = did_you_mean(unknown, valid)
                .map(|s| format!(": did you mean `{s}`?"))
                .unwrap_or_default();
            return format!("unknown key `{unknown}`{suggestion} (valid keys here: {})", valid.join(", "));
        }
    if message.starts_with("missing field")
        && let Some(field) = quoted.first() {
            return format!("missing key `{field}` in this table");
        }
    message.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::GIB;

    fn error_of(text: &str) -> PolicyError {
        parse_policy("p.toml", text).expect_err("policy should be rejected")
    }

    fn at(line: usize, column: usize) -> Location {
        Location { line, column }
    }

    const HEAD: &str = "[[device]]\nindex = 0\n";

    #[test]
    fn oversized_policies_are_refused_before_parsing() {
        let e = error_of(&" ".repeat(MAX_POLICY_BYTES + 1));
        assert!(e.message.contains("at most 1048576 bytes"), "{e}");
        let rules = "[[rule]]\nmin_size = \"1MiB\"\ntiers = [\"local\"]\n".repeat(MAX_RULES + 1);
        let e = error_of(&format!("{HEAD}local_budget = \"8GiB\"\n{rules}"));
        assert!(e.message.contains("more than 1024 `[[rule]]` tables"), "{e}");
        assert_eq!(e.location.line, 3 + 3 * MAX_RULES + 1);
        let donors: Vec<String> = (1..300).map(|n| format!("{{ tier = \"peer:{n}\", capacity = \"1GiB\" }}")).collect();
        let e = error_of(&format!("{HEAD}local_budget = \"8GiB\"\ndonors = [{}]\n", donors.join(", ")));
        assert!(e.message.contains("more than 256 donors"), "{e}");
    }

    #[test]
    fn many_rules_on_one_line_are_located_quickly() {
        // Thousands of located items on one non-ASCII line: each location is a binary search.
        let rules: Vec<String> = (0..MAX_RULES).map(|i| format!("{{ name = \"règle\", min_size = {}, tiers = [\"local\"] }}", i + 1)).collect();
        let text = format!("rule = [{}]\n{HEAD}local_budget = \"8GiB\"\n", rules.join(", "));
        let started = std::time::Instant::now();
        let e = error_of(&text);
        assert!(e.message.contains("can never match"), "{e}");
        assert_eq!(e.location.line, 1);
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn minimal_policy() {
        let p = parse_policy("p.toml", &format!("{HEAD}local_budget = \"8GiB\"\ndonors = [{{ tier = \"host\", capacity = \"32GiB\" }}]\n")).unwrap();
        assert_eq!(p.devices[0].local_budget, Amount::Bytes(8 * GIB));
        assert_eq!(p.devices[0].donors[0].tier, Tier::Host);
        assert_eq!(p.devices[0].report, Report::Virtual);
        assert!(p.rules.is_empty());
    }

    #[test]
    fn misspelled_key_names_line_column_and_suggestion() {
        let e = error_of(&format!("{HEAD}local_budgt = \"8GiB\"\n"));
        assert_eq!(e.location, at(3, 1));
        assert!(e.message.contains("did you mean `local_budget`"), "{e}");
        assert_eq!(e.to_string().split(':').take(3).collect::<Vec<_>>(), ["p.toml", "3", "1"]);
    }

    #[test]
    fn unknown_top_level_key() {
        let e = error_of("stremaing = 1\n");
        assert_eq!(e.location, at(1, 1));
        assert!(e.message.contains("did you mean `streaming`"), "{e}");
    }

    #[test]
    fn negative_and_zero_sizes() {
        let e = error_of(&format!("{HEAD}local_budget = -5\n"));
        assert_eq!(e.location, at(3, 16));
        assert!(e.message.contains("negative"), "{e}");
        let e = error_of(&format!("{HEAD}local_budget = \"-5GiB\"\n"));
        assert_eq!(e.location, at(3, 16));
        assert!(e.message.contains("negative"), "{e}");
        let e = error_of(&format!("{HEAD}local_budget = \"0GiB\"\n"));
        assert_eq!(e.location, at(3, 16));
        assert!(e.message.contains("greater than zero"), "{e}");
        let e = error_of(&format!("{HEAD}local_budget = \"8G\"\ndonors = [{{ tier = \"host\", capacity = 0 }}]\n"));
        assert_eq!(e.location, at(4, 20));
        assert!(e.message.contains("greater than zero"), "{e}");
    }

    #[test]
    fn unknown_unit() {
        let e = error_of(&format!("{HEAD}local_budget = \"8XB\"\n"));
        assert_eq!(e.location, at(3, 16));
        assert!(e.message.contains("unknown unit `XB`") && e.message.contains("GiB"), "{e}");
        let e = error_of(&format!("{HEAD}local_budget = 2.5\n"));
        assert!(e.message.contains("needs a unit"), "{e}");
    }

    #[test]
    fn donor_that_is_the_compute_device() {
        let e = error_of(&format!("{HEAD}local_budget = \"8G\"\ndonors = [{{ tier = \"peer:0\", capacity = \"8G\" }}]\n"));
        assert_eq!(e.location, at(4, 20));
        assert!(e.message.contains("cannot donate to itself"), "{e}");
    }

    #[test]
    fn unknown_tier_and_bad_report() {
        let e = error_of(&format!("{HEAD}local_budget = \"8G\"\ndonors = [{{ tier = \"disk\", capacity = \"8G\" }}]\n"));
        assert_eq!(e.location, at(4, 20));
        assert!(e.message.contains("`local`, `host` or `peer:N`"), "{e}");
        let e = error_of(&format!("{HEAD}local_budget = \"8G\"\nreport = \"virtaul\"\n"));
        assert_eq!(e.location, at(4, 10));
        assert!(e.message.contains("\"virtual\""), "{e}");
    }

    #[test]
    fn alloc_string_errors_point_inside_the_string() {
        let e = error_of(&format!("{HEAD}alloc = \"cuda:0,2gb;cpu,3qb\"\n"));
        assert_eq!(e.location, at(3, 25));
        assert!(e.message.contains("unknown unit `qb`"), "{e}");
        let e = error_of(&format!("{HEAD}alloc = \"cuda:0,2gb\"\nlocal_budget = \"2G\"\n"));
        assert!(e.message.contains("not both"), "{e}");
    }

    #[test]
    fn rules_that_can_never_match() {
        let base = format!("{HEAD}local_budget = \"8G\"\ndonors = [{{ tier = \"host\", capacity = \"8G\" }}]\n");
        let e = error_of(&format!(
            "{base}[[rule]]\ntiers = [\"local\"]\n\n[[rule]]\nphase = \"load\"\ntiers = [\"host\"]\n"
        ));
        assert_eq!(e.location, at(8, 1));
        assert!(e.message.contains("can never match") && e.message.contains("rule 1 (line 5)"), "{e}");
        let e = error_of(&format!(
            "{base}[[rule]]\nmax_size = \"64MiB\"\ntiers = [\"local\"]\n[[rule]]\nmax_size = \"1MiB\"\ntiers = [\"host\"]\n"
        ));
        assert_eq!(e.location, at(8, 1));
        let e = error_of(&format!("{base}[[rule]]\nmin_size = \"64MiB\"\nmax_size = \"64MiB\"\ntiers = [\"local\"]\n"));
        assert_eq!(e.location, at(7, 12));
        assert!(e.message.contains("empty size range"), "{e}");
        // A narrower rule first, a wider one after, is fine.
        parse_policy("p.toml", &format!(
            "{base}[[rule]]\nmax_size = \"1MiB\"\ntiers = [\"local\"]\n[[rule]]\ntiers = [\"host\", \"local\"]\n"
        ))
        .unwrap();
    }

    #[test]
    fn rule_tiers_must_exist_on_the_device() {
        let base = format!("{HEAD}local_budget = \"8G\"\ndonors = [{{ tier = \"host\", capacity = \"8G\" }}]\n");
        let e = error_of(&format!("{base}[[rule]]\ntiers = [\"peer:1\", \"local\"]\n"));
        assert_eq!(e.location, at(6, 10));
        assert!(e.message.contains("device 0 has no tier peer:1"), "{e}");
        let e = error_of(&format!("{base}[[rule]]\ndevice = 3\ntiers = [\"local\"]\n"));
        assert_eq!(e.location, at(6, 10));
        let e = error_of(&format!("{base}[[rule]]\ntiers = []\n"));
        assert!(e.message.contains("empty"), "{e}");
    }

    #[test]
    fn duplicate_devices_and_missing_budget() {
        let e = error_of(&format!("{HEAD}local_budget = \"8G\"\n[[device]]\nindex = 0\nlocal_budget = \"8G\"\n"));
        assert_eq!(e.location, at(5, 9));
        let e = error_of(HEAD);
        assert_eq!(e.location, at(2, 9));
        assert!(e.message.contains("local_budget"), "{e}");
        let e = error_of("version = 2\n");
        assert_eq!(e.location, at(1, 11));
    }

    #[test]
    fn streaming_settings() {
        let base = format!("{HEAD}local_budget = \"8G\"\n");
        let p = parse_policy("p.toml", &format!("{base}[streaming]\nenabled = true\nlocal_cache = \"3GiB\"\nprefetch_depth = 4\nweights_read_only = false\n")).unwrap();
        assert_eq!(p.streaming, Streaming { enabled: true, local_cache: 3 * GIB, prefetch_depth: 4, weights_read_only: false });
        let e = error_of(&format!("{base}[streaming]\nprefetch_depth = 0\n"));
        assert_eq!(e.location, at(5, 18));
        let e = error_of(&format!("{base}[streaming]\nlocal_cache = \"*\"\n"));
        assert!(e.message.contains("not allowed"), "{e}");
    }

    #[test]
    fn placement_settings_and_defaults() {
        let base = format!("{HEAD}local_budget = \"8G\"\n");
        let p = parse_policy("p.toml", &base).unwrap();
        assert_eq!(p.placement, Placement { automatic: true, reserve: None, at: Location::default() });
        let p = parse_policy("p.toml", &format!("{base}[placement]\nautomatic = false\nreserve = \"3GiB\"\n")).unwrap();
        assert_eq!(p.placement, Placement { automatic: false, reserve: Some(3 * GIB), at: at(6, 11) });
        let p = parse_policy("p.toml", &format!("{base}[placement]\nreserve = 0\n")).unwrap();
        assert_eq!((p.placement.automatic, p.placement.reserve), (true, Some(0)));
        let p = crate::policy_from_allocation("VVRAM_ALLOC", "cuda:0,8gb;cpu,*", 0).unwrap();
        assert_eq!(p.placement, Placement::default());
        let p = parse_policy("p.toml", &format!("{HEAD}alloc = \"cuda:0,8gb;cpu,*\"\n")).unwrap();
        assert_eq!(p.placement, Placement::default());
    }

    #[test]
    fn placement_errors_name_the_line_and_what_was_expected() {
        let base = format!("{HEAD}local_budget = \"8G\"\n");
        let e = error_of(&format!("{base}[placement]\nreserv = \"1GiB\"\n"));
        assert_eq!(e.location, at(5, 1));
        assert!(e.message.contains("did you mean `reserve`") && e.message.contains("automatic, reserve"), "{e}");
        let e = error_of(&format!("{base}[placement]\nreserve = \"*\"\n"));
        assert_eq!(e.location.line, 5);
        assert!(e.message.contains("expected a size"), "{e}");
        let e = error_of(&format!("{base}[placement]\nreserve = \"4XB\"\n"));
        assert_eq!(e.location.line, 5);
        assert!(e.message.contains("unknown unit `XB`"), "{e}");
        let e = error_of(&format!("{base}[placement]\nautomatic = \"yes\"\n"));
        assert_eq!(e.location.line, 5);
        assert!(e.message.contains("boolean"), "{e}");
        let e = error_of(&format!("{base}[placment]\nautomatic = true\n"));
        assert!(e.message.contains("did you mean `placement`"), "{e}");
    }
}
