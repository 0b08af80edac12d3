//! Byte sizes as users write them: `2.5GiB`, `2.5gb`, `512MiB`, `800M`, `1048576`.
//!
//! Every unit is binary, as in ComfyUI-MultiGPU's DisTorch2: `GB`, `G` and `GiB` all
//! mean 2^30 bytes. Fractional values are rounded to the nearest byte.

/// One KiB, the base of every unit.
pub const KIB: u64 = 1 << 10;
/// One MiB.
pub const MIB: u64 = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;
/// One TiB.
pub const TIB: u64 = 1 << 40;

/// The units a size may carry, as shown in error messages.
pub const UNITS_HELP: &str =
    "B, KiB, MiB, GiB, TiB (K/KB, M/MB, G/GB, T/TB mean the same: all units are binary)";

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeError {
    /// Nothing was given.
    Empty,
    /// A minus sign: sizes are never negative.
    Negative,
    /// The number part could not be read.
    BadNumber(String),
    /// The unit is not one of [`UNITS_HELP`].
    UnknownUnit(String),
    /// The value does not fit in 64 bits.
    TooLarge,
    /// A plain byte count with a fraction (`0.5`).
    FractionalBytes,
}

impl std::fmt::Display for SizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeError::Empty => write!(f, "empty size: expected a number with a unit, e.g. `8GiB`"),
            SizeError::Negative => write!(f, "a size cannot be negative"),
            SizeError::BadNumber(n) => {
                write!(f, "`{n}` is not a number: expected e.g. `2.5GiB` or `800M`")
            }
            SizeError::UnknownUnit(u) => write!(f, "unknown unit `{u}`: expected {UNITS_HELP}"),
            SizeError::TooLarge => write!(f, "size does not fit in 64 bits"),
            SizeError::FractionalBytes => {
                write!(f, "a byte count must be whole: add a unit (e.g. `0.5GiB`)")
            }
        }
    }
}

impl std::error::Error for SizeError {}

fn unit_multiplier(unit: &str) -> Option<u64> {
    match unit.to_ascii_lowercase().as_str() {
        "" | "b" => Some(1),
        "k" | "kb" | "kib" => Some(KIB),
        "m" | "mb" | "mib" => Some(MIB),
        "g" | "gb" | "gib" => Some(GIB),
        "t" | "tb" | "tib" => Some(TIB),
        _ => None,
    }
}

/// Parses a size such as `2.5GiB`, `2.5 gb`, `512MiB`, `800M` or `1048576`.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SizeError::Empty);
    }
    if text.starts_with('-') {
        return Err(SizeError::Negative);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: String = number.chars().filter(|&c| c != '_').collect();
    let unit = unit.trim();
    if number.is_empty() || number.starts_with('.') && number.len() == 1 {
        return Err(SizeError::BadNumber(text.to_string()));
    }
    let multiplier = unit_multiplier(unit).ok_or_else(|| SizeError::UnknownUnit(unit.to_string()))?;
    match number.split_once('.') {
        None => {
            let whole: u64 = number.parse().map_err(|_| SizeError::BadNumber(number.clone()))?;
            whole.checked_mul(multiplier).ok_or(SizeError::TooLarge)
        }
        Some((whole, fraction)) => {
            if fraction.contains('.') {
                return Err(SizeError::BadNumber(number));
            }
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| SizeError::BadNumber(number.clone()))?
            };
            let fraction_value = fractional_bytes(fraction, multiplier)
                .ok_or_else(|| SizeError::BadNumber(number.clone()))?;
            if multiplier == 1 && fraction.bytes().any(|d| d != b'0') {
                return Err(SizeError::FractionalBytes);
            }
            whole
                .checked_mul(multiplier)
                .and_then(|w| w.checked_add(fraction_value))
                .ok_or(SizeError::TooLarge)
        }
    }
}

/// `0.<digits> × multiplier`, rounded to the nearest byte, computed exactly.
fn fractional_bytes(digits: &str, multiplier: u64) -> Option<u64> {
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.bytes().all(|d| d.is_ascii_digit()) || digits.len() > 30 {
        return None;
    }
    let numerator: u128 = digits.parse().ok()?;
    let denominator = 10u128.checked_pow(digits.len() as u32)?;
    let scaled = numerator.checked_mul(multiplier as u128)?;
    u64::try_from((scaled + denominator / 2) / denominator).ok()
}

/// Formats a size exactly, in the largest unit that divides it (`24GiB`, `1536MiB`,
/// `4097B`); [`parse_size`] gives the same number back.
pub fn format_size_exact(bytes: u64) -> String {
    for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{}", bytes / unit, name);
        }
    }
    format!("{bytes}B")
}

/// Formats a size for people, with two decimals where needed (`23.50 GiB`).
pub fn format_size(bytes: u64) -> String {
    let (unit, name) = [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")]
        .into_iter()
        .find(|(unit, _)| bytes >= *unit)
        .unwrap_or((1, "B"));
    if unit == 1 {
        return format!("{bytes} B");
    }
    let value = bytes as f64 / unit as f64;
    if bytes.is_multiple_of(unit) {
        format!("{} {name}", bytes / unit)
    } else {
        format!("{value:.2} {name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_forms_parse() {
        assert_eq!(parse_size("2.5GiB"), Ok(5 * GIB / 2));
        assert_eq!(parse_size("2.5gb"), Ok(5 * GIB / 2));
        assert_eq!(parse_size("2.5 GB"), Ok(5 * GIB / 2));
        assert_eq!(parse_size("512MiB"), Ok(512 * MIB));
        assert_eq!(parse_size("800M"), Ok(800 * MIB));
        assert_eq!(parse_size("1048576"), Ok(MIB));
        assert_eq!(parse_size("1_048_576"), Ok(MIB));
        assert_eq!(parse_size("3k"), Ok(3 * KIB));
        assert_eq!(parse_size("1T"), Ok(TIB));
        assert_eq!(parse_size(".5G"), Ok(GIB / 2));
        assert_eq!(parse_size("10b"), Ok(10));
    }

    #[test]
    fn bad_sizes_are_named() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("-1GiB"), Err(SizeError::Negative));
        assert_eq!(parse_size("8XB"), Err(SizeError::UnknownUnit("XB".into())));
        assert_eq!(parse_size("GiB"), Err(SizeError::BadNumber("GiB".into())));
        assert_eq!(parse_size("1.2.3G"), Err(SizeError::BadNumber("1.2.3".into())));
        assert_eq!(parse_size("0.5"), Err(SizeError::FractionalBytes));
        assert_eq!(parse_size("99999999999T"), Err(SizeError::TooLarge));
        assert!(parse_size("8XB").unwrap_err().to_string().contains("GiB"));
    }

    #[test]
    fn human_format() {
        assert_eq!(format_size(24 * GIB), "24 GiB");
        assert_eq!(format_size(24 * GIB + GIB / 2), "24.50 GiB");
        assert_eq!(format_size(12), "12 B");
    }

    proptest! {
        #[test]
        fn exact_format_round_trips(bytes in 0u64..(1u64 << 62)) {
            prop_assert_eq!(parse_size(&format_size_exact(bytes)), Ok(bytes));
        }

        #[test]
        fn unit_multiples_round_trip(value in 0u64..100_000, unit in 0usize..5) {
            let (mult, name) = [(1, "B"), (KIB, "KiB"), (MIB, "MiB"), (GIB, "GiB"), (TIB, "TiB")][unit];
            let bytes = value * mult;
            prop_assert_eq!(parse_size(&format_size_exact(bytes)), Ok(bytes));
            prop_assert_eq!(parse_size(&format!("{value}{name}")), Ok(bytes));
            prop_assert_eq!(parse_size(&format!("{value} {}", name.to_lowercase())), Ok(bytes));
        }

        #[test]
        fn decimals_round_to_nearest_byte(thousandths in 0u64..10_000_000) {
            let text = format!("{}.{:03}GiB", thousandths / 1000, thousandths % 1000);
            let expected = ((thousandths as u128 * GIB as u128 + 500) / 1000) as u64;
            prop_assert_eq!(parse_size(&text), Ok(expected));
        }

        #[test]
        fn human_format_is_within_half_a_percent(bytes in 1u64..(1u64 << 50)) {
            let shown = format_size(bytes).replace(' ', "");
            let parsed = parse_size(&shown).unwrap() as f64;
            prop_assert!((parsed - bytes as f64).abs() <= bytes as f64 * 0.005 + 1.0);
        }
    }
}
