//! Input generation: mutations of a corpus, with a dictionary of tokens that matter.

/// A seeded xorshift64* generator: the same seed gives the same inputs.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Makes inputs from a corpus and a dictionary.
pub struct Mutator {
    rng: Rng,
    corpus: Vec<Vec<u8>>,
    dictionary: Vec<Vec<u8>>,
}

/// The longest input made (policies are limited to 1 MiB; this stays well inside).
const MAX_LEN: usize = 64 << 10;

impl Mutator {
    /// A mutator over `corpus` (never empty: an empty input is added) and `dictionary`.
    pub fn new(seed: u64, mut corpus: Vec<Vec<u8>>, dictionary: Vec<Vec<u8>>) -> Mutator {
        corpus.push(Vec::new());
        Mutator { rng: Rng::new(seed), corpus, dictionary }
    }

    /// The next input: a corpus entry with one to eight mutations.
    pub fn next_input(&mut self) -> Vec<u8> {
        let mut input = self.corpus[self.rng.below(self.corpus.len())].clone();
        for _ in 0..1 + self.rng.below(8) {
            self.mutate(&mut input);
        }
        input.truncate(MAX_LEN);
        input
    }

    fn mutate(&mut self, input: &mut Vec<u8>) {
        let len = input.len();
        match self.rng.below(8) {
            0 if len > 0 => {
                let at = self.rng.below(len);
                input[at] ^= 1 << self.rng.below(8);
            }
            1 if len > 0 => {
                let at = self.rng.below(len);
                input[at] = [b'0', b'9', b'*', b'%', b'.', b';', b',', b'"', b'\n', b'=', b'[', b']', b'{', b'}', 0xff, b'-'][self.rng.below(16)];
            }
            2 | 3 if !self.dictionary.is_empty() => {
                let token = self.dictionary[self.rng.below(self.dictionary.len())].clone();
                let at = self.rng.below(len + 1);
                input.splice(at..at, token);
            }
            4 if len > 0 => {
                let at = self.rng.below(len);
                let n = 1 + self.rng.below((len - at).min(64));
                input.drain(at..at + n);
            }
            5 if len > 0 => {
                let at = self.rng.below(len);
                let n = 1 + self.rng.below((len - at).min(256));
                let piece: Vec<u8> = input[at..at + n].to_vec();
                let most = if self.rng.below(16) == 0 { 512 } else { 4 };
                let times = 1 + self.rng.below(most);
                let to = self.rng.below(len + 1);
                input.splice(to..to, piece.iter().copied().cycle().take(n * times));
            }
            6 => {
                let other = self.corpus[self.rng.below(self.corpus.len())].clone();
                let at = self.rng.below(len + 1);
                let from = self.rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                let digits = self.rng.next().to_string();
                let at = self.rng.below(len + 1);
                input.splice(at..at, digits.bytes());
            }
        }
    }
}
