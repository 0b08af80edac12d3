//! Errors that name the file, line and column of what is wrong.

use std::fmt;

/// A 1-based line and column (in characters) inside a policy source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Location {
        LineIndex::new(text).locate(text, offset)
    }

    /// The location `chars` characters further along the same line.
    pub fn advanced(self, chars: usize) -> Location {
        Location { line: self.line, column: self.column + chars }
    }
}

/// Locations of byte offsets in one text, each found in logarithmic time: a policy with
/// thousands of located items must not cost a scan of the text per item.
pub(crate) struct LineIndex {
    /// Byte offset where each line starts.
    starts: Vec<usize>,
    /// Byte offset of every character, when the text is not ASCII (else bytes are characters).
    chars: Option<Vec<usize>>,
}

impl LineIndex {
    /// Indexes `text`.
    pub(crate) fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        let chars = (!text.is_ascii()).then(|| text.char_indices().map(|(i, _)| i).collect());
        LineIndex { starts, chars }
    }

    /// The location of byte `offset` (clamped to the text, rounded down to a character).
    pub(crate) fn locate(&self, text: &str, offset: usize) -> Location {
        let offset = floor_char_boundary(text, offset.min(text.len()));
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self.starts[line - 1];
        let column = match &self.chars {
            None => offset - line_start,
            Some(chars) => chars.partition_point(|&c| c < offset) - chars.partition_point(|&c| c < line_start),
        };
        Location { line, column: column + 1 }
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// One problem in a policy: where it is and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file name, or `--alloc` / `VVRAM_ALLOC` / `<text>` for policies not read from a file.
    pub origin: String,
    /// Where in the source.
    pub location: Location,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl PolicyError {
    /// An error at `location` of `origin`.
    pub fn new(origin: &str, location: Location, message: impl Into<String>) -> PolicyError {
        PolicyError { origin: origin.to_string(), location, message: message.into() }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.origin, self.location.line, self.location.column, self.message
        )
    }
}

impl std::error::Error for PolicyError {}

/// The closest candidate to `word` by edit distance, if it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(Location::of_offset(text, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of_offset(text, 6), Location { line: 2, column: 1 });
        let quote = text.find('"').unwrap();
        assert_eq!(Location::of_offset(text, quote), Location { line: 2, column: 6 });
    }

    #[test]
    fn suggestions_for_typos_only() {
        let keys = ["local_budget", "donors", "report"];
        assert_eq!(did_you_mean("local_budgt", &keys), Some("local_budget"));
        assert_eq!(did_you_mean("donor", &keys), Some("donors"));
        assert_eq!(did_you_mean("completely_else", &keys), None);
    }
}
