//! DisTorch2 allocation strings (ComfyUI-MultiGPU's "expert mode"), as a shorthand for a
//! device's local budget and donors.
//!
//! Entries are `device,value` separated by `;`; devices are `cuda:N` and `cpu`. The mode
//! is chosen from the *values* only (ComfyUI-MultiGPU also scanned the device names, so
//! a name containing `m` or `b` switched modes by accident):
//!
//! * **ratio** when a value has `%`: `cuda:0,8%;cuda:1,8%;cpu,4%` splits 40/40/20. The
//!   compute device keeps its whole card; each donor gets its share relative to it.
//! * **bytes** when a value carries a unit letter: `cuda:0,2.5gb;cpu,*`. `*` (alone or
//!   after a number, which is then ignored, as in DisTorch2) takes what is left of that
//!   device. Without a `*` and without `cpu`, the host is added last as the wildcard,
//!   as DisTorch2 sends the rest of a model to the CPU.
//! * **fraction** otherwise: `cuda:0,0.1;cpu,0.5` gives each device that fraction of
//!   its total memory.
//!
//! The compute device's entry becomes its local budget (all VRAM vvram may use there);
//! `cuda:N` for another N becomes donor `peer:N`; `cpu` becomes donor `host`.

use crate::error::{Location, PolicyError};
use crate::model::{Amount, Donor, Tier};
use crate::size::parse_size;

/// A compute device's budget and donors, as an allocation string gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    /// The local budget.
    pub local_budget: Amount,
    /// Where the local budget was written.
    pub budget_at: Location,
    /// Donors in written order.
    pub donors: Vec<Donor>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bytes,
    Ratio,
    Fraction,
}

struct Entry<'a> {
    tier: Tier,
    device_name: &'a str,
    value: &'a str,
    at: Location,
}

/// Parses an allocation string for compute device `compute`. `start` is the location of
/// the string's first character, so errors point inside it.
pub fn parse_allocation(
    text: &str,
    compute: u32,
    origin: &str,
    start: Location,
) -> Result<Allocation, PolicyError> {
    let error = |at: Location, message: String| PolicyError::new(origin, at, message);
    if let Some((column, c)) = text.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Err(error(
            start.advanced(column),
            format!("control character {} in the allocation string: it is one line of `device,value` entries", c.escape_default()),
        ));
    }
    let mut entries = Vec::new();
    let mut chars_before = 0;
    for piece in text.split(';') {
        let piece_at = start.advanced(chars_before);
        chars_before += piece.chars().count() + 1;
        if piece.trim().is_empty() {
            continue;
        }
        if entries.len() == crate::MAX_DEVICES + 1 {
            return Err(error(piece_at, format!("more than {} entries: one per device at most", crate::MAX_DEVICES + 1)));
        }
        let Some((device_name, value)) = piece.split_once(',') else {
            return Err(error(
                piece_at,
                format!("`{}`: expected `device,value`, e.g. `cuda:0,2.5gb` or `cpu,*`", piece.trim()),
            ));
        };
        let value_at = piece_at.advanced(device_name.chars().count() + 1);
        let device_name = device_name.trim();
        let tier = match device_name {
            "cpu" => Tier::Host,
            _ => match device_name.strip_prefix("cuda:").map(str::parse::<u32>) {
                Some(Ok(n)) if n == compute => Tier::Local,
                Some(Ok(n)) => Tier::Peer(n),
                _ => {
                    return Err(error(
                        piece_at,
                        format!("unknown device `{device_name}`: expected `cuda:N` or `cpu`"),
                    ));
                }
            },
        };
        if entries.iter().any(|e: &Entry| e.tier == tier) {
            return Err(error(piece_at, format!("`{device_name}` is named twice")));
        }
        entries.push(Entry { tier, device_name, value: value.trim(), at: value_at });
    }

    let mode = if entries.iter().any(|e| e.value.contains('%')) {
        Mode::Ratio
    } else if entries.iter().any(|e| e.value.chars().any(|c| c.is_ascii_alphabetic())) {
        Mode::Bytes
    } else {
        Mode::Fraction
    };

    let mut local = None;
    let mut donors = Vec::new();
    let mut has_wildcard = false;
    for entry in &entries {
        let amount = parse_value(entry, mode).map_err(|m| error(entry.at, m))?;
        if amount == Amount::Rest {
            if has_wildcard {
                return Err(error(entry.at, "only one device can take the rest (`*`)".into()));
            }
            has_wildcard = true;
        }
        match entry.tier {
            Tier::Local => local = Some((amount, entry.at)),
            tier => donors.push(Donor { tier, capacity: amount, at: entry.at }),
        }
    }
    let Some((local_budget, budget_at)) = local else {
        return Err(error(
            start,
            format!(
                "the allocation string gives nothing for the compute device cuda:{compute}: \
                 add `cuda:{compute},<amount>` (e.g. `cuda:{compute},20gb;cpu,*`)"
            ),
        ));
    };
    if mode == Mode::Bytes && !has_wildcard && !donors.iter().any(|d| d.tier == Tier::Host) {
        donors.push(Donor { tier: Tier::Host, capacity: Amount::Rest, at: start });
    }
    Ok(Allocation { local_budget, budget_at, donors })
}

fn parse_value(entry: &Entry, mode: Mode) -> Result<Amount, String> {
    let value = entry.value;
    let name = entry.device_name;
    if value == "*" {
        return Ok(Amount::Rest);
    }
    match mode {
        Mode::Ratio => {
            let number = value.strip_suffix('%').ok_or_else(|| {
                format!("`{name},{value}`: in ratio mode (a value has `%`) every value must be a percentage")
            })?;
            match number.trim().parse::<f64>() {
                Ok(x) if x > 0.0 && x.is_finite() => Ok(Amount::Share(x)),
                _ => Err(format!("`{name},{value}`: expected a percentage above zero, e.g. `8%`")),
            }
        }
        Mode::Bytes => {
            if let Some(size) = value.strip_suffix('*') {
                // DisTorch2's `5gb*`: the size before the `*` is ignored, but must be one.
                return match parse_size(size) {
                    Ok(_) => Ok(Amount::Rest),
                    Err(e) => Err(format!("`{name},{value}`: expected `*` or a size followed by `*` (`5gb*`): {e}")),
                };
            }
            match parse_size(value) {
                Ok(0) => Err(format!("`{name},{value}`: a size must be greater than zero")),
                Ok(bytes) => Ok(Amount::Bytes(bytes)),
                Err(e) => Err(format!("`{name},{value}`: {e}")),
            }
        }
        Mode::Fraction => match value.parse::<f64>() {
            Ok(x) if x > 0.0 && x <= 1.0 => Ok(Amount::Fraction(x)),
            _ => Err(format!(
                "`{name},{value}`: in fraction mode each value is a fraction of the device's memory \
                 in (0, 1], e.g. `0.5`; use a unit (`2.5gb`) or `%` for the other modes"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size::GIB;

    fn parse(text: &str) -> Result<Allocation, PolicyError> {
        parse_allocation(text, 0, "--alloc", Location { line: 1, column: 1 })
    }

    fn donors(a: &Allocation) -> Vec<(Tier, Amount)> {
        a.donors.iter().map(|d| (d.tier, d.capacity)).collect()
    }

    #[test]
    fn bytes_mode() {
        let a = parse("cuda:0,2.5gb;cpu,*").unwrap();
        assert_eq!(a.local_budget, Amount::Bytes(5 * GIB / 2));
        assert_eq!(donors(&a), vec![(Tier::Host, Amount::Rest)]);
        let a = parse("cuda:0,500mb;cuda:1,3.0g;cpu,5gb*").unwrap();
        assert_eq!(
            donors(&a),
            vec![(Tier::Peer(1), Amount::Bytes(3 * GIB)), (Tier::Host, Amount::Rest)]
        );
    }

    #[test]
    fn bytes_mode_sends_the_rest_to_the_host_by_default() {
        let a = parse("cuda:0,20gb").unwrap();
        assert_eq!(donors(&a), vec![(Tier::Host, Amount::Rest)]);
    }

    #[test]
    fn ratio_mode() {
        let a = parse("cuda:0,8%;cuda:1,8%;cpu,4%").unwrap();
        assert_eq!(a.local_budget, Amount::Share(8.0));
        assert_eq!(
            donors(&a),
            vec![(Tier::Peer(1), Amount::Share(8.0)), (Tier::Host, Amount::Share(4.0))]
        );
    }

    #[test]
    fn fraction_mode() {
        let a = parse("cuda:0,0.1;cpu,0.5").unwrap();
        assert_eq!(a.local_budget, Amount::Fraction(0.1));
        assert_eq!(donors(&a), vec![(Tier::Host, Amount::Fraction(0.5))]);
    }

    #[test]
    fn device_names_do_not_choose_the_mode() {
        // "cuda" and "cpu" contain no unit letters, but a name such as "mps" must not
        // switch a fraction string into bytes mode either: the name is rejected instead.
        let e = parse("cuda:0,0.5;mps,0.5").unwrap_err();
        assert!(e.message.contains("unknown device `mps`"), "{e}");
        assert_eq!(e.location.column, 12);
    }

    #[test]
    fn compute_device_is_the_budget_not_a_donor() {
        let a = parse_allocation("cuda:1,4gb;cuda:0,8gb", 1, "x", Location { line: 1, column: 1 })
            .unwrap();
        assert_eq!(a.local_budget, Amount::Bytes(4 * GIB));
        assert_eq!(donors(&a)[0], (Tier::Peer(0), Amount::Bytes(8 * GIB)));
    }

    #[test]
    fn errors_point_into_the_string() {
        let e = parse("cuda:0,2gb;cpu,3xb").unwrap_err();
        assert_eq!(e.location, Location { line: 1, column: 16 });
        assert!(e.message.contains("unknown unit `xb`"), "{e}");
        let e = parse("cuda:0,8%;cpu,2gb").unwrap_err();
        assert_eq!(e.location.column, 15);
        let e = parse("cuda:0,1.5;cpu,0.5").unwrap_err();
        assert!(e.message.contains("(0, 1]"), "{e}");
        let e = parse("cpu,*").unwrap_err();
        assert!(e.message.contains("cuda:0"), "{e}");
        let e = parse("cuda:0,1gb;cpu,*;cuda:1,*").unwrap_err();
        assert!(e.message.contains("only one"), "{e}");
        let e = parse("cuda:0,1gb;cuda:0,2gb").unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
        let e = parse("cuda:0").unwrap_err();
        assert!(e.message.contains("device,value"), "{e}");
    }

    #[test]
    fn only_a_size_may_stand_before_the_rest() {
        let e = parse("cuda:0,garbage*").unwrap_err();
        assert!(e.message.contains("a size followed by `*`"), "{e}");
        let e = parse("cuda:0,1gb;cpu,**").unwrap_err();
        assert_eq!(e.location.column, 16);
        assert_eq!(donors(&parse("cuda:0,1gb;cpu,5gb*").unwrap()), vec![(Tier::Host, Amount::Rest)]);
    }

    #[test]
    fn control_characters_are_refused() {
        let e = parse("cuda:0,1gb;\ncpu,*").unwrap_err();
        assert_eq!(e.location.column, 12);
        assert!(e.message.contains("control character \\n"), "{e}");
        assert!(parse("cuda:0,1gb\u{1b}[2J").is_err());
    }

    #[test]
    fn long_strings_are_parsed_in_linear_time() {
        let e = parse(&"cpu,1gb;".repeat(200_000)).unwrap_err();
        assert!(e.message.contains("named twice"), "{e}");
        let many: String = (1..400).map(|n| format!("cuda:{n},1gb;")).collect();
        let e = parse(&format!("cuda:0,1gb;{many}")).unwrap_err();
        assert!(e.message.contains("more than 257 entries"), "{e}");
        let e = parse(&format!("{}cuda:0,1xb", ";".repeat(500_000))).unwrap_err();
        assert_eq!(e.location.column, 500_001 + 7);
    }
}
