//! The zlib stream of a QR image's scanlines, compressed for what they are: each module row is
//! one scanline repeated `scale` times, and a scanline is a few distinct bytes (a byte spans at
//! most three modules), mostly in runs. One DEFLATE block whose Huffman codes are built from
//! this image's own symbols, with runs and repeated lines as copies: no searching for matches,
//! which is where a general compressor spends its time (BENCHMARKS.md, "PNG encoding").

/// The zlib stream (RFC 1950) of `lines`: each `(bytes, times)` stands for `bytes` repeated
/// `times` times, one after another.
pub fn zlib(lines: &[(&[u8], usize)]) -> Vec<u8> {
    let mut tokens = Vec::with_capacity(lines.iter().map(|(l, _)| l.len()).sum::<usize>());
    let mut adler = Adler32 { a: 1, b: 0 };
    for &(line, times) in lines {
        tokenize_line(line, &mut tokens);
        if times > 1 && (MIN_COPY..=MAX_DISTANCE).contains(&line.len()) {
            push_copy(&mut tokens, line.len() * (times - 1), line.len());
        } else {
            // Lines too short to copy, or wider than the window (262,000 pixels): sent again.
            for _ in 1..times {
                tokenize_line(line, &mut tokens);
            }
        }
        adler.push(line, times);
    }
    let mut writer = BitWriter {
        out: Vec::with_capacity(2048),
        acc: 0,
        bits: 0,
    };
    // CMF: deflate with a 32 KiB window; FLG: fastest compression, check bits making it a
    // multiple of 31.
    writer.out.extend_from_slice(&[0x78, 0x01]);
    write_block(&mut writer, &tokens);
    let mut out = writer.finish();
    out.extend_from_slice(&(adler.b << 16 | adler.a).to_be_bytes());
    out
}

/// The zlib checksum (RFC 1950, 8.2), taking a line and its repeats at the cost of one line.
struct Adler32 {
    a: u32,
    b: u32,
}

impl Adler32 {
    const MODULUS: u64 = 65_521;

    fn push(&mut self, line: &[u8], times: usize) {
        // Bytes x_0..x_{n-1} move (a, b) to (a + sum x_i, b + n * a + sum (n - i) * x_i):
        // both sums are the line's own, so each repeat is two multiply-adds.
        let n = line.len() as u64;
        let (mut sum, mut weighted) = (0u64, 0u64);
        for (i, &byte) in line.iter().enumerate() {
            sum += u64::from(byte);
            weighted += (n - i as u64) * u64::from(byte);
        }
        let (sum, weighted, n) = (
            sum % Self::MODULUS,
            weighted % Self::MODULUS,
            n % Self::MODULUS,
        );
        let (mut a, mut b) = (u64::from(self.a), u64::from(self.b));
        for _ in 0..times {
            b = (b + n * a + weighted) % Self::MODULUS;
            a = (a + sum) % Self::MODULUS;
        }
        (self.a, self.b) = (a as u32, b as u32);
    }
}

/// A literal byte, or a copy of `len` bytes from `distance` back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Literal(u8),
    Copy { len: u16, distance: u16 },
}

/// Literals, with each run of one byte sent as the byte and a copy of it.
fn tokenize_line(line: &[u8], tokens: &mut Vec<Token>) {
    let mut i = 0;
    while i < line.len() {
        let byte = line[i];
        let run = line[i..].iter().take_while(|&&b| b == byte).count();
        tokens.push(Token::Literal(byte));
        if run > MIN_COPY {
            push_copy(tokens, run - 1, 1);
            i += run;
        } else {
            i += 1;
        }
    }
}

const MIN_COPY: usize = 3;
const MAX_COPY: usize = 258;
const MAX_DISTANCE: usize = 32_768;

/// Copies of `len` (at least three) bytes in all from `distance` back, in parts DEFLATE can
/// express.
fn push_copy(tokens: &mut Vec<Token>, mut len: usize, distance: usize) {
    while len > 0 {
        // Never leave a tail shorter than a copy can be.
        let part = if len > MAX_COPY && len - MAX_COPY < MIN_COPY {
            len - MIN_COPY
        } else {
            len.min(MAX_COPY)
        };
        tokens.push(Token::Copy {
            len: part as u16,
            distance: distance as u16,
        });
        len -= part;
    }
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order code length code lengths are sent in (RFC 1951, 3.2.7).
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];
const END_OF_BLOCK: usize = 256;

/// Index of the bucket of `value` in a base table: the last base not above it.
fn bucket(bases: &[u16], value: u16) -> usize {
    bases.partition_point(|&base| base <= value) - 1
}

/// One block of Huffman codes built for `tokens` (RFC 1951, 3.2.7), marked final.
fn write_block(writer: &mut BitWriter, tokens: &[Token]) {
    let mut literal_counts = [0u32; 286];
    let mut distance_counts = [0u32; 30];
    for token in tokens {
        match *token {
            Token::Literal(byte) => literal_counts[byte as usize] += 1,
            Token::Copy { len, distance } => {
                literal_counts[257 + bucket(&LENGTH_BASE, len)] += 1;
                distance_counts[bucket(&DISTANCE_BASE, distance)] += 1;
            }
        }
    }
    literal_counts[END_OF_BLOCK] = 1;
    let literal_lengths = code_lengths(&literal_counts, 15);
    let distance_lengths = code_lengths(&distance_counts, 15);
    let literal_used = used_len(&literal_lengths).max(257);
    let distance_used = used_len(&distance_lengths).max(1);

    let mut all_lengths = literal_lengths[..literal_used].to_vec();
    all_lengths.extend_from_slice(&distance_lengths[..distance_used]);
    let length_symbols = run_length(&all_lengths);
    let mut length_counts = [0u32; 19];
    for &(symbol, _) in &length_symbols {
        length_counts[symbol as usize] += 1;
    }
    let length_lengths = code_lengths(&length_counts, 7);
    let length_codes = canonical_codes(&length_lengths);
    let length_count = CODE_LENGTH_ORDER
        .iter()
        .rposition(|&i| length_lengths[i] != 0)
        .map_or(4, |last| (last + 1).max(4));

    writer.put(1, 1); // the final block
    writer.put(2, 2); // Huffman codes of its own
    writer.put((literal_used - 257) as u32, 5);
    writer.put((distance_used - 1) as u32, 5);
    writer.put((length_count - 4) as u32, 4);
    for &i in &CODE_LENGTH_ORDER[..length_count] {
        writer.put(u32::from(length_lengths[i]), 3);
    }
    for &(symbol, extra) in &length_symbols {
        let s = symbol as usize;
        writer.code(length_codes[s], length_lengths[s]);
        match symbol {
            16 => writer.put(u32::from(extra), 2),
            17 => writer.put(u32::from(extra), 3),
            18 => writer.put(u32::from(extra), 7),
            _ => {}
        }
    }

    let literal_codes = canonical_codes(&literal_lengths);
    let distance_codes = canonical_codes(&distance_lengths);
    for token in tokens {
        match *token {
            Token::Literal(byte) => {
                let b = byte as usize;
                writer.code(literal_codes[b], literal_lengths[b]);
            }
            Token::Copy { len, distance } => {
                let l = bucket(&LENGTH_BASE, len);
                writer.code(literal_codes[257 + l], literal_lengths[257 + l]);
                writer.put(u32::from(len - LENGTH_BASE[l]), u32::from(LENGTH_EXTRA[l]));
                let d = bucket(&DISTANCE_BASE, distance);
                writer.code(distance_codes[d], distance_lengths[d]);
                writer.put(
                    u32::from(distance - DISTANCE_BASE[d]),
                    u32::from(DISTANCE_EXTRA[d]),
                );
            }
        }
    }
    writer.code(literal_codes[END_OF_BLOCK], literal_lengths[END_OF_BLOCK]);
}

/// One past the last symbol with a code.
fn used_len(lengths: &[u8]) -> usize {
    lengths.iter().rposition(|&l| l != 0).map_or(0, |i| i + 1)
}

/// Code lengths as the code length alphabet sends them: (symbol, extra bits' value), with 16
/// repeating the previous length 3-6 times, 17 and 18 runs of 3-10 and 11-138 zeros.
fn run_length(lengths: &[u8]) -> Vec<(u8, u8)> {
    let mut out = Vec::with_capacity(lengths.len());
    let mut i = 0;
    while i < lengths.len() {
        let length = lengths[i];
        let run = lengths[i..].iter().take_while(|&&l| l == length).count();
        if length == 0 && run >= 3 {
            let n = run.min(138);
            out.push(if n >= 11 {
                (18, (n - 11) as u8)
            } else {
                (17, (n - 3) as u8)
            });
            i += n;
        } else if length != 0 && run >= 4 {
            let n = (run - 1).min(6);
            out.push((length, 0));
            out.push((16, (n - 3) as u8));
            i += 1 + n;
        } else {
            out.push((length, 0));
            i += 1;
        }
    }
    out
}

/// Huffman code lengths for `counts`, none longer than `limit`. At least two symbols get a
/// code, so the code is complete, as every decoder requires of it.
fn code_lengths(counts: &[u32], limit: u8) -> Vec<u8> {
    let mut counts = counts.to_vec();
    let mut extra = 0;
    while counts.iter().filter(|&&c| c > 0).count() < 2 {
        if counts[extra] == 0 {
            counts[extra] = 1;
        }
        extra += 1;
    }
    loop {
        let lengths = huffman_lengths(&counts);
        if lengths.iter().all(|&l| l <= limit) {
            return lengths;
        }
        // Flatter counts make a shallower tree; all equal gives the shallowest.
        for count in counts.iter_mut().filter(|c| **c > 0) {
            *count = count.div_ceil(2);
        }
    }
}

/// Depths of the symbols with a count in a Huffman tree built from the counts.
fn huffman_lengths(counts: &[u32]) -> Vec<u8> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let mut parents: Vec<usize> = Vec::with_capacity(2 * counts.len());
    let mut heap = BinaryHeap::with_capacity(counts.len());
    let mut leaves = Vec::new();
    for (symbol, &count) in counts.iter().enumerate() {
        if count > 0 {
            heap.push(Reverse((u64::from(count), parents.len())));
            leaves.push((symbol, parents.len()));
            parents.push(usize::MAX);
        }
    }
    while let (Some(Reverse((a, i))), Some(Reverse((b, j)))) = (heap.pop(), heap.pop()) {
        let node = parents.len();
        parents.push(usize::MAX);
        parents[i] = node;
        parents[j] = node;
        heap.push(Reverse((a + b, node)));
    }
    let mut lengths = vec![0u8; counts.len()];
    for (symbol, mut node) in leaves {
        let mut depth = 0u8;
        while parents[node] != usize::MAX {
            node = parents[node];
            depth = depth.saturating_add(1);
        }
        lengths[symbol] = depth;
    }
    lengths
}

/// Canonical codes for `lengths` (RFC 1951, 3.2.2), each already bit-reversed, since DEFLATE
/// sends Huffman codes most significant bit first into a stream packed from the least.
fn canonical_codes(lengths: &[u8]) -> Vec<u32> {
    let mut per_length = [0u32; 16];
    for &l in lengths.iter().filter(|&&l| l > 0) {
        per_length[l as usize] += 1;
    }
    let mut next = [0u32; 16];
    let mut code = 0;
    for bits in 1..16 {
        code = (code + per_length[bits - 1]) << 1;
        next[bits] = code;
    }
    lengths
        .iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let code = next[l as usize];
            next[l as usize] += 1;
            code.reverse_bits() >> (32 - u32::from(l))
        })
        .collect()
}

/// Bits packed least significant first, as DEFLATE packs them.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter {
    /// The low `count` bits of `value`; `count` at most 16.
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= u64::from(value) << self.bits;
        self.bits += count;
        // Four bytes at a time: fewer writes through the vector, which the compiler cannot
        // keep the accumulator in a register across.
        if self.bits >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.bits -= 32;
        }
    }

    /// A Huffman code from [`canonical_codes`].
    fn code(&mut self, reversed_code: u32, length: u8) {
        self.put(reversed_code, u32::from(length));
    }

    fn finish(mut self) -> Vec<u8> {
        let bytes = self.bits.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(stream: &[u8]) -> Vec<u8> {
        miniz_oxide::inflate::decompress_to_vec_zlib(stream).expect("a valid zlib stream")
    }

    fn expand(lines: &[(&[u8], usize)]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|&(line, times)| std::iter::repeat_n(line, times).flatten().copied())
            .collect()
    }

    #[test]
    fn lines_and_their_repeats_inflate_back_exactly() {
        let scanline: Vec<u8> = (0..38u32)
            .map(|i| [0x00, 0xFF, 0x07, 0xE0][(i * 7 % 11 % 4) as usize])
            .collect();
        let light = vec![0xFFu8; 38];
        let cases: Vec<Vec<(&[u8], usize)>> = vec![
            vec![(&light, 5), (&scanline, 5), (&light, 4)],
            // One line repeated past a copy's longest (258 bytes) and with odd tails.
            vec![(&scanline, 1), (&scanline[..7], 100), (&light[..1], 3)],
            // A single byte, and lines too short to copy.
            vec![(&[0x42][..], 1)],
            vec![(&[1, 2][..], 9), (&[], 4)],
        ];
        for lines in cases {
            assert_eq!(inflate(&zlib(&lines)), expand(&lines));
        }
    }

    #[test]
    fn the_checksum_of_repeated_lines_is_adler32_of_the_bytes() {
        let line: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 256) as u8).collect();
        let mut ours = Adler32 { a: 1, b: 0 };
        ours.push(&line, 7);
        ours.push(&[0xFF; 3], 1);
        let mut reference = adler2::Adler32::new();
        for _ in 0..7 {
            reference.write_slice(&line);
        }
        reference.write_slice(&[0xFF; 3]);
        assert_eq!(ours.b << 16 | ours.a, reference.checksum());
    }

    #[test]
    fn every_byte_value_and_long_runs_inflate_back() {
        let all: Vec<u8> = (0..=255).collect();
        let runs: Vec<u8> = (0..2000)
            .map(|i| if i % 700 < 600 { 0 } else { i as u8 })
            .collect();
        let lines: Vec<(&[u8], usize)> = vec![(&all, 2), (&runs, 3)];
        assert_eq!(inflate(&zlib(&lines)), expand(&lines));
    }

    #[test]
    fn code_lengths_stay_within_the_limit_and_form_a_complete_code() {
        // Fibonacci counts make the deepest Huffman trees.
        let mut counts = vec![0u32; 30];
        let (mut a, mut b) = (1u32, 1u32);
        for count in counts.iter_mut() {
            *count = a;
            (a, b) = (b, a.saturating_add(b));
        }
        for limit in [7, 15] {
            let lengths = code_lengths(&counts, limit);
            assert!(lengths.iter().all(|&l| (1..=limit).contains(&l)));
            let kraft: f64 = lengths.iter().map(|&l| 0.5f64.powi(l.into())).sum();
            assert!(
                (kraft - 1.0).abs() < 1e-9,
                "complete code, Kraft sum {kraft}"
            );
        }
        // One symbol alone still gets a second, so its code is complete.
        let lengths = code_lengths(&[0, 0, 5], 7);
        assert_eq!(lengths.iter().filter(|&&l| l == 1).count(), 2);
    }
}
