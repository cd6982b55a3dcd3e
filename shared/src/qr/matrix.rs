//! The module matrix of a token, as ISO/IEC 18004 lays it out: one segment in the densest mode
//! the token allows, the smallest version that holds it at the chosen error correction level,
//! Reed-Solomon blocks interleaved, and the mask with the lowest penalty.
//!
//! Written for speed because the matrix is most of a render: choosing the mask means drawing and
//! scoring the symbol eight times, and scoring one module at a time cost 0.18 ms of fast_qr's
//! 0.22 ms for a rotating token. Here every row and column is a bitboard, so each penalty rule
//! is a few word operations per line (BENCHMARKS.md, "QR encoders").

use std::sync::OnceLock;

use super::{Ecc, RenderError};

/// A finished symbol: `size` x `size` modules, dark or light, without the quiet zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    size: usize,
    rows: Vec<Row>,
}

impl Matrix {
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the module in column `x` of row `y` is dark.
    pub fn is_dark(&self, x: usize, y: usize) -> bool {
        self.rows[y].bit(x)
    }
}

/// Encodes `data` at `ecc` with the mask of lowest penalty.
pub fn encode(data: &[u8], ecc: Ecc) -> Result<Matrix, RenderError> {
    let symbol = Symbol::new(data, ecc)?;
    let mut scratch = Scratch::new(symbol.template.size);
    let mut best = (u32::MAX, 0);
    for mask in 0..8 {
        let score = symbol.penalty(mask, &mut scratch);
        // The first of equal scores, as the standard's reference encoders choose.
        if score < best.0 {
            best = (score, mask);
        }
    }
    Ok(symbol.finish(best.1))
}

/// Encodes `data` at `ecc` with a given mask (0-7), for comparing with other encoders.
#[cfg(test)]
fn encode_with_mask(data: &[u8], ecc: Ecc, mask: usize) -> Result<Matrix, RenderError> {
    Ok(Symbol::new(data, ecc)?.finish(mask % 8))
}

/// The codewords of one token placed on its version's template, before masking.
struct Symbol {
    template: &'static Template,
    ecc: Ecc,
    data_rows: Vec<Row>,
    data_cols: Vec<Row>,
}

impl Symbol {
    fn new(data: &[u8], ecc: Ecc) -> Result<Self, RenderError> {
        if data.is_empty() {
            return Err(RenderError::Empty);
        }
        let mode = Mode::of(data);
        let version = (1..=MAX_VERSION)
            .find(|&v| segment_bits(mode, data.len(), v) <= data_codewords(v, ecc) * 8)
            .ok_or(RenderError::TooLong(data.len()))?;
        let codewords = codewords(data, mode, version, ecc);
        let template = template(version);
        let size = template.size;
        let mut data_rows = vec![Row::ZERO; size];
        let mut data_cols = vec![Row::ZERO; size];
        let bits = codewords.len() * 8;
        for (i, &(x, y)) in template.data_path.iter().take(bits).enumerate() {
            // Without a branch: half the bits are dark, in no pattern a predictor could learn.
            let dark = codewords[i >> 3] & (0x80 >> (i & 7)) != 0;
            data_rows[y as usize].put(x as usize, dark);
            data_cols[x as usize].put(y as usize, dark);
        }
        Ok(Symbol {
            template,
            ecc,
            data_rows,
            data_cols,
        })
    }

    /// Rows or columns of the symbol under `mask`, format information included, into `lines`.
    fn mask_into(&self, mask: usize, columns: bool, lines: &mut [Row]) {
        let t = self.template;
        let (base, data, pattern) = if columns {
            (&t.base_cols, &self.data_cols, &t.mask_cols[mask])
        } else {
            (&t.base_rows, &self.data_rows, &t.mask_rows[mask])
        };
        for (i, line) in lines.iter_mut().enumerate() {
            *line = base[i] | (data[i] ^ pattern[i]);
        }
        let bits = format_bits(self.ecc, mask);
        for (i, &(x, y)) in t.format_positions.iter().enumerate() {
            if bits >> (i % 15) & 1 == 1 {
                let (line, at) = if columns { (x, y) } else { (y, x) };
                lines[line as usize].set(at as usize);
            }
        }
    }

    fn penalty(&self, mask: usize, scratch: &mut Scratch) -> u32 {
        let size = self.template.size;
        self.mask_into(mask, false, &mut scratch.rows);
        self.mask_into(mask, true, &mut scratch.cols);
        // Symbols up to version 11 fit a line in one word, up to version 27 in two: score them
        // on plain integers.
        if size <= 64 {
            for i in 0..size {
                scratch.row_words[i] = scratch.rows[i].0[0];
                scratch.col_words[i] = scratch.cols[i].0[0];
            }
            penalty(&scratch.row_words, &scratch.col_words, size)
        } else if size <= 128 {
            let pair = |row: &Row| u128::from(row.0[1]) << 64 | u128::from(row.0[0]);
            for i in 0..size {
                scratch.row_pairs[i] = pair(&scratch.rows[i]);
                scratch.col_pairs[i] = pair(&scratch.cols[i]);
            }
            penalty(&scratch.row_pairs, &scratch.col_pairs, size)
        } else {
            penalty(&scratch.rows, &scratch.cols, size)
        }
    }

    fn finish(&self, mask: usize) -> Matrix {
        let mut rows = vec![Row::ZERO; self.template.size];
        self.mask_into(mask, false, &mut rows);
        Matrix {
            size: self.template.size,
            rows,
        }
    }
}

/// Lines of one masked symbol, allocated once for the eight masks scored.
struct Scratch {
    rows: Vec<Row>,
    cols: Vec<Row>,
    row_words: Vec<u64>,
    col_words: Vec<u64>,
    row_pairs: Vec<u128>,
    col_pairs: Vec<u128>,
}

impl Scratch {
    fn new(size: usize) -> Scratch {
        let words = if size <= 64 { size } else { 0 };
        let pairs = if (65..=128).contains(&size) { size } else { 0 };
        Scratch {
            rows: vec![Row::ZERO; size],
            cols: vec![Row::ZERO; size],
            row_words: vec![0; words],
            col_words: vec![0; words],
            row_pairs: vec![0; pairs],
            col_pairs: vec![0; pairs],
        }
    }
}

/// The four penalty rules of ISO/IEC 18004 over a symbol's rows and columns.
fn penalty<L: Line>(rows: &[L], cols: &[L], size: usize) -> u32 {
    let valid = L::low(size);
    let pairs = L::low(size - 1);
    let mut score = 0;
    for &line in rows.iter().chain(cols) {
        score += line_penalty(line, valid, pairs);
    }
    for pair in rows.windows(2) {
        score += 3 * block_count(pair[0], pair[1], pairs);
    }
    let dark: u32 = rows.iter().map(|r| r.ones()).sum();
    let total = (size * size) as u32;
    // Total is odd (the side is), so the difference is never zero and k never below zero.
    let k = (dark * 20)
        .abs_diff(total * 10)
        .div_ceil(total)
        .saturating_sub(1);
    score + 10 * k
}

/// Rule 1 (runs of five or more alike: 3, plus 1 per module beyond five) and rule 3 (a finder
/// lookalike 1011101 with four light modules on a side, the edge counting as light: 40 each).
/// `valid` has a bit per module of the line, `pairs` one per module but the last.
fn line_penalty<L: Line>(line: L, valid: L, pairs: L) -> u32 {
    // Bit i: module i equals module i + 1.
    let alike = !(line ^ line.shr(1)) & pairs;
    let run5 = alike & alike.shr(1) & alike.shr(2) & alike.shr(3);
    // Bit i: a run starts at i.
    let starts = !alike.shl(1) & valid;
    // A run of n >= 5 holds n - 4 windows of five and one start: (n - 4) + 2 = n - 2.
    let runs = run5.ones() + 2 * (run5 & starts).ones();

    let finder = line
        & !line.shr(1)
        & line.shr(2)
        & line.shr(3)
        & line.shr(4)
        & !line.shr(5)
        & line.shr(6)
        & valid;
    let light_after = !(line.shr(7) | line.shr(8) | line.shr(9) | line.shr(10));
    let light_before = !(line.shl(1) | line.shl(2) | line.shl(3) | line.shl(4));
    let finders = (finder & light_after).ones() + (finder & light_before).ones();
    runs + 40 * finders
}

/// Rule 2: 2x2 blocks of one colour in two neighbouring rows.
fn block_count<L: Line>(upper: L, lower: L, pairs: L) -> u32 {
    let vertical = !(upper ^ lower);
    let horizontal = !(upper ^ upper.shr(1));
    (vertical & vertical.shr(1) & horizontal & pairs).ones()
}

const MAX_VERSION: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Numeric,
    Alphanumeric,
    Byte,
}

const ALPHANUMERIC: &[u8; 45] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

impl Mode {
    fn of(data: &[u8]) -> Mode {
        if data.iter().all(u8::is_ascii_digit) {
            Mode::Numeric
        } else if data.iter().all(|c| ALPHANUMERIC.contains(c)) {
            Mode::Alphanumeric
        } else {
            Mode::Byte
        }
    }

    fn indicator(self) -> u32 {
        match self {
            Mode::Numeric => 0b0001,
            Mode::Alphanumeric => 0b0010,
            Mode::Byte => 0b0100,
        }
    }

    fn count_bits(self, version: usize) -> usize {
        let band = match version {
            1..=9 => 0,
            10..=26 => 1,
            _ => 2,
        };
        match self {
            Mode::Numeric => [10, 12, 14][band],
            Mode::Alphanumeric => [9, 11, 13][band],
            Mode::Byte => [8, 16, 16][band],
        }
    }
}

/// Bits of the one segment: mode, count and data.
fn segment_bits(mode: Mode, len: usize, version: usize) -> usize {
    let data = match mode {
        Mode::Numeric => 10 * (len / 3) + [0, 4, 7][len % 3],
        Mode::Alphanumeric => 11 * (len / 2) + 6 * (len % 2),
        Mode::Byte => 8 * len,
    };
    4 + mode.count_bits(version) + data
}

struct BitWriter {
    bytes: Vec<u8>,
    len: usize,
}

impl BitWriter {
    fn push(&mut self, value: u32, bits: usize) {
        for i in (0..bits).rev() {
            if self.len.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if value >> i & 1 == 1 {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 0x80 >> (self.len % 8);
            }
            self.len += 1;
        }
    }
}

/// Data codewords, padded, split into blocks with their error correction, interleaved.
fn codewords(data: &[u8], mode: Mode, version: usize, ecc: Ecc) -> Vec<u8> {
    let capacity = data_codewords(version, ecc);
    let mut writer = BitWriter {
        bytes: Vec::with_capacity(capacity),
        len: 0,
    };
    writer.push(mode.indicator(), 4);
    writer.push(data.len() as u32, mode.count_bits(version));
    match mode {
        Mode::Numeric => {
            for group in data.chunks(3) {
                let value = group.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
                writer.push(value, [0, 4, 7, 10][group.len()]);
            }
        }
        Mode::Alphanumeric => {
            let index = |c: &u8| ALPHANUMERIC.iter().position(|a| a == c).unwrap_or(0) as u32;
            for pair in data.chunks(2) {
                match pair {
                    [a, b] => writer.push(index(a) * 45 + index(b), 11),
                    [a] => writer.push(index(a), 6),
                    _ => {}
                }
            }
        }
        Mode::Byte => {
            for &byte in data {
                writer.push(u32::from(byte), 8);
            }
        }
    }
    let terminator = (capacity * 8 - writer.len).min(4);
    writer.push(0, terminator);
    writer.push(0, (8 - writer.len % 8) % 8);
    let mut padded = writer.bytes;
    for pad in [0xEC, 0x11].into_iter().cycle() {
        if padded.len() >= capacity {
            break;
        }
        padded.push(pad);
    }

    let blocks = ECC_BLOCKS[ecc_index(ecc)][version] as usize;
    let ecc_len = ECC_PER_BLOCK[ecc_index(ecc)][version] as usize;
    let raw = raw_data_modules(version) / 8;
    let short_blocks = blocks - raw % blocks;
    let short_len = raw / blocks;
    let divisor = &divisors()[ecc_len];
    let mut data_parts = Vec::with_capacity(blocks);
    let mut ecc_parts = Vec::with_capacity(blocks);
    let mut at = 0;
    for block in 0..blocks {
        let len = short_len - ecc_len + usize::from(block >= short_blocks);
        let part = &padded[at..at + len];
        at += len;
        ecc_parts.push(remainder(part, divisor));
        data_parts.push(part);
    }
    let mut out = Vec::with_capacity(raw);
    for i in 0..=short_len - ecc_len {
        for part in &data_parts {
            if let Some(&byte) = part.get(i) {
                out.push(byte);
            }
        }
    }
    for i in 0..ecc_len {
        for part in &ecc_parts {
            out.push(part[i]);
        }
    }
    out
}

fn ecc_index(ecc: Ecc) -> usize {
    match ecc {
        Ecc::L => 0,
        Ecc::M => 1,
        Ecc::Q => 2,
        Ecc::H => 3,
    }
}

/// Modules left for codewords once the function patterns are drawn.
fn raw_data_modules(version: usize) -> usize {
    let mut modules = (16 * version + 128) * version + 64;
    if version >= 2 {
        let aligns = version / 7 + 2;
        modules -= (25 * aligns - 10) * aligns - 55;
        if version >= 7 {
            modules -= 36;
        }
    }
    modules
}

fn data_codewords(version: usize, ecc: Ecc) -> usize {
    let e = ecc_index(ecc);
    raw_data_modules(version) / 8
        - ECC_PER_BLOCK[e][version] as usize * ECC_BLOCKS[e][version] as usize
}

// ISO/IEC 18004 table 9, indexed [L, M, Q, H][version]; index 0 is unused.
const ECC_PER_BLOCK: [[u8; 41]; 4] = [
    [
        0, 7, 10, 15, 20, 26, 18, 20, 24, 30, 18, 20, 24, 26, 30, 22, 24, 28, 30, 28, 28, 28, 28,
        30, 30, 26, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30,
    ],
    [
        0, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26, 26, 28,
        28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    ],
    [
        0, 13, 22, 18, 26, 18, 24, 18, 22, 20, 24, 28, 26, 24, 20, 30, 24, 28, 28, 26, 30, 28, 30,
        30, 30, 30, 28, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30,
    ],
    [
        0, 17, 28, 22, 16, 22, 28, 26, 26, 24, 28, 24, 28, 22, 24, 24, 30, 28, 28, 26, 28, 30, 24,
        30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30,
    ],
];
const ECC_BLOCKS: [[u8; 41]; 4] = [
    [
        0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 4, 4, 6, 6, 6, 6, 7, 8, 8, 9, 9, 10, 12, 12, 12, 13,
        14, 15, 16, 17, 18, 19, 19, 20, 21, 22, 24, 25,
    ],
    [
        0, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16, 17, 17, 18, 20, 21,
        23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49,
    ],
    [
        0, 1, 1, 2, 2, 4, 4, 6, 6, 8, 8, 8, 10, 12, 16, 12, 17, 16, 18, 21, 20, 23, 23, 25, 27, 29,
        34, 34, 35, 38, 40, 43, 45, 48, 51, 53, 56, 59, 62, 65, 68,
    ],
    [
        0, 1, 1, 2, 4, 4, 4, 5, 6, 8, 8, 11, 11, 16, 16, 18, 16, 19, 21, 25, 25, 25, 34, 30, 32,
        35, 37, 40, 42, 45, 48, 51, 54, 57, 60, 63, 66, 70, 74, 77, 81,
    ],
];

/// GF(256) with the QR polynomial x^8 + x^4 + x^3 + x^2 + 1, as antilogarithm and logarithm
/// tables. The antilogarithms repeat (a sum of two logarithms needs no reduction) and end in
/// zeros that [`LOG_ZERO`] lands in, so a product is two lookups and an addition, no branch.
const GF: ([u8; 768], [u16; 256]) = {
    let mut exp = [0u8; 768];
    let mut log = [LOG_ZERO; 256];
    let mut value: u16 = 1;
    let mut i = 0;
    while i < 255 {
        exp[i] = value as u8;
        exp[i + 255] = value as u8;
        log[value as usize] = i as u16;
        value <<= 1;
        if value & 0x100 != 0 {
            value ^= 0x11D;
        }
        i += 1;
    }
    (exp, log)
};

/// The "logarithm" of zero: past every sum of two real logarithms (at most 508), and with one
/// (at most 254) still inside the table, on its zero tail.
const LOG_ZERO: u16 = 510;

fn gf_mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        0
    } else {
        GF.0[(GF.1[a as usize] + GF.1[b as usize]) as usize]
    }
}

/// The generator polynomial of each degree up to 30 (highest coefficient implied), as the
/// logarithms of its coefficients.
fn divisors() -> &'static [Vec<u16>] {
    static DIVISORS: OnceLock<Vec<Vec<u16>>> = OnceLock::new();
    DIVISORS.get_or_init(|| {
        (0..=MAX_ECC_PER_BLOCK)
            .map(|degree: usize| {
                let mut result = vec![0u8; degree];
                if degree == 0 {
                    return Vec::new();
                }
                result[degree - 1] = 1;
                let mut root = 1u8;
                for _ in 0..degree {
                    for j in 0..degree {
                        result[j] = gf_mul(result[j], root);
                        if j + 1 < degree {
                            result[j] ^= result[j + 1];
                        }
                    }
                    root = gf_mul(root, 2);
                }
                result.iter().map(|&c| GF.1[c as usize]).collect()
            })
            .collect()
    })
}

const MAX_ECC_PER_BLOCK: usize = 30;

/// The error correction codewords of `data`: the remainder of its division by the generator
/// polynomial whose coefficients' logarithms are `divisor`.
fn remainder(data: &[u8], divisor: &[u16]) -> Vec<u8> {
    let degree = divisor.len();
    let mut result = [0u8; MAX_ECC_PER_BLOCK + 1];
    for &byte in data {
        let factor = byte ^ result[0];
        result.copy_within(1..=degree, 0);
        if factor != 0 {
            let log = GF.1[factor as usize];
            for (r, &d) in result[..degree].iter_mut().zip(divisor) {
                *r ^= GF.0[(d + log) as usize];
            }
        }
    }
    result[..degree].to_vec()
}

/// The 15 format bits of a level and mask, BCH-coded and masked as the standard says.
fn format_bits(ecc: Ecc, mask: usize) -> u32 {
    let level = match ecc {
        Ecc::L => 1,
        Ecc::M => 0,
        Ecc::Q => 3,
        Ecc::H => 2,
    };
    let data = (level << 3 | mask as u32) & 0x1F;
    let mut rem = data;
    for _ in 0..10 {
        rem = (rem << 1) ^ ((rem >> 9) * 0x537);
    }
    (data << 10 | (rem & 0x3FF)) ^ 0x5412
}

/// What every symbol of one version shares: function patterns, the path codewords take, and
/// each mask restricted to the modules it applies to.
struct Template {
    size: usize,
    base_rows: Vec<Row>,
    base_cols: Vec<Row>,
    /// Modules of the codewords, in placement order, as (column, row).
    data_path: Vec<(u8, u8)>,
    /// Where format bit i goes, twice: positions i (first copy) and 15 + i (second copy).
    format_positions: Vec<(u8, u8)>,
    mask_rows: [Vec<Row>; 8],
    mask_cols: [Vec<Row>; 8],
}

fn template(version: usize) -> &'static Template {
    static TEMPLATES: [OnceLock<Template>; MAX_VERSION + 1] =
        [const { OnceLock::new() }; MAX_VERSION + 1];
    TEMPLATES[version].get_or_init(|| Template::new(version))
}

impl Template {
    fn new(version: usize) -> Template {
        let size = version * 4 + 17;
        let mut dark = vec![false; size * size];
        let mut function = vec![false; size * size];
        let mut draw = |x: usize, y: usize, is_dark: bool| {
            dark[y * size + x] = is_dark;
            function[y * size + x] = true;
        };
        for i in 0..size {
            draw(6, i, i % 2 == 0);
            draw(i, 6, i % 2 == 0);
        }
        for (cx, cy) in [(3, 3), (size - 4, 3), (3, size - 4)] {
            for dy in -4i32..=4 {
                for dx in -4i32..=4 {
                    let (x, y) = (cx as i32 + dx, cy as i32 + dy);
                    if (0..size as i32).contains(&x) && (0..size as i32).contains(&y) {
                        let ring = dx.abs().max(dy.abs());
                        draw(x as usize, y as usize, ring != 2 && ring != 4);
                    }
                }
            }
        }
        let centres = alignment_centres(version, size);
        let last = centres.len().saturating_sub(1);
        for (i, &cx) in centres.iter().enumerate() {
            for (j, &cy) in centres.iter().enumerate() {
                // The three corners are the finder patterns'.
                if [(0, 0), (0, last), (last, 0)].contains(&(i, j)) {
                    continue;
                }
                for dy in -2i32..=2 {
                    for dx in -2i32..=2 {
                        let ring = dx.abs().max(dy.abs());
                        draw(
                            (cx as i32 + dx) as usize,
                            (cy as i32 + dy) as usize,
                            ring != 1,
                        );
                    }
                }
            }
        }
        let mut format_positions = Vec::with_capacity(30);
        for i in 0..15 {
            format_positions.push(match i {
                0..=5 => (8, i),
                6 => (8, 7),
                7 => (8, 8),
                8 => (7, 8),
                _ => (14 - i, 8),
            });
        }
        for i in 0..15 {
            format_positions.push(if i < 8 {
                (size - 1 - i, 8)
            } else {
                (8, size - 15 + i)
            });
        }
        for &(x, y) in &format_positions {
            draw(x, y, false);
        }
        draw(8, size - 8, true);
        if version >= 7 {
            let mut rem = version as u32;
            for _ in 0..12 {
                rem = (rem << 1) ^ ((rem >> 11) * 0x1F25);
            }
            let bits = (version as u32) << 12 | (rem & 0xFFF);
            for i in 0..18 {
                let (a, b) = (size - 11 + i % 3, i / 3);
                let bit = bits >> i & 1 == 1;
                draw(a, b, bit);
                draw(b, a, bit);
            }
        }

        let mut data_path = Vec::with_capacity(raw_data_modules(version));
        let mut right = size as i32 - 1;
        while right >= 1 {
            if right == 6 {
                right = 5;
            }
            let upward = (right + 1) & 2 == 0;
            for vert in 0..size {
                let y = if upward { size - 1 - vert } else { vert };
                for x in [right as usize, right as usize - 1] {
                    if !function[y * size + x] {
                        data_path.push((x as u8, y as u8));
                    }
                }
            }
            right -= 2;
        }

        let mut base_rows = vec![Row::ZERO; size];
        let mut base_cols = vec![Row::ZERO; size];
        let mut mask_rows: [Vec<Row>; 8] = std::array::from_fn(|_| vec![Row::ZERO; size]);
        let mut mask_cols: [Vec<Row>; 8] = std::array::from_fn(|_| vec![Row::ZERO; size]);
        for y in 0..size {
            for x in 0..size {
                if dark[y * size + x] {
                    base_rows[y].set(x);
                    base_cols[x].set(y);
                }
                if function[y * size + x] {
                    continue;
                }
                for mask in 0..8 {
                    if mask_applies(mask, x, y) {
                        mask_rows[mask][y].set(x);
                        mask_cols[mask][x].set(y);
                    }
                }
            }
        }
        Template {
            size,
            base_rows,
            base_cols,
            data_path,
            format_positions: format_positions
                .into_iter()
                .map(|(x, y)| (x as u8, y as u8))
                .collect(),
            mask_rows,
            mask_cols,
        }
    }
}

/// Row and column coordinates of the alignment pattern centres.
fn alignment_centres(version: usize, size: usize) -> Vec<usize> {
    if version == 1 {
        return Vec::new();
    }
    let count = version / 7 + 2;
    let step = if version == 32 {
        26
    } else {
        (version * 4 + count * 2 + 1) / (count * 2 - 2) * 2
    };
    let mut centres: Vec<usize> = (0..count - 1).map(|i| size - 7 - i * step).collect();
    centres.push(6);
    centres.reverse();
    centres
}

/// Whether mask `mask` flips the module at column `x`, row `y`.
// Written as ISO/IEC 18004 table 10 writes them, so each can be checked against it.
#[allow(clippy::manual_is_multiple_of)]
fn mask_applies(mask: usize, x: usize, y: usize) -> bool {
    match mask {
        0 => (x + y) % 2 == 0,
        1 => y % 2 == 0,
        2 => x % 3 == 0,
        3 => (x + y) % 3 == 0,
        4 => (x / 3 + y / 2) % 2 == 0,
        5 => x * y % 2 + x * y % 3 == 0,
        6 => (x * y % 2 + x * y % 3) % 2 == 0,
        _ => ((x + y) % 2 + x * y % 3) % 2 == 0,
    }
}

/// One line of modules as bits (bit i: module i is dark); 192 bits hold the largest symbol's
/// 177.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Row([u64; 3]);

impl Row {
    const ZERO: Row = Row([0; 3]);

    /// Bits 0..n set.
    fn low(n: usize) -> Row {
        let mut words = [0u64; 3];
        for (i, word) in words.iter_mut().enumerate() {
            let from = i * 64;
            *word = match n.saturating_sub(from) {
                0 => 0,
                k if k >= 64 => u64::MAX,
                k => (1u64 << k) - 1,
            };
        }
        Row(words)
    }

    fn bit(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    /// Sets bit i if `dark` (bits start clear).
    fn put(&mut self, i: usize, dark: bool) {
        self.0[i / 64] |= u64::from(dark) << (i % 64);
    }

    fn ones(self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// Bit i becomes bit i + k's (module i + k moves to i); `k` in 1..64.
    fn shr(self, k: u32) -> Row {
        let [a, b, c] = self.0;
        Row([a >> k | b << (64 - k), b >> k | c << (64 - k), c >> k])
    }

    /// Bit i becomes bit i - k's; `k` in 1..64.
    fn shl(self, k: u32) -> Row {
        let [a, b, c] = self.0;
        Row([a << k, b << k | a >> (64 - k), c << k | b >> (64 - k)])
    }
}

impl std::ops::BitAnd for Row {
    type Output = Row;
    fn bitand(self, other: Row) -> Row {
        Row([
            self.0[0] & other.0[0],
            self.0[1] & other.0[1],
            self.0[2] & other.0[2],
        ])
    }
}

impl std::ops::BitOr for Row {
    type Output = Row;
    fn bitor(self, other: Row) -> Row {
        Row([
            self.0[0] | other.0[0],
            self.0[1] | other.0[1],
            self.0[2] | other.0[2],
        ])
    }
}

impl std::ops::BitXor for Row {
    type Output = Row;
    fn bitxor(self, other: Row) -> Row {
        Row([
            self.0[0] ^ other.0[0],
            self.0[1] ^ other.0[1],
            self.0[2] ^ other.0[2],
        ])
    }
}

impl std::ops::Not for Row {
    type Output = Row;
    fn not(self) -> Row {
        Row([!self.0[0], !self.0[1], !self.0[2]])
    }
}

/// A line of modules as bits, bit i for module i: integers for small symbols, [`Row`] for any.
trait Line:
    Copy
    + std::ops::BitAnd<Output = Self>
    + std::ops::BitOr<Output = Self>
    + std::ops::BitXor<Output = Self>
    + std::ops::Not<Output = Self>
{
    /// Bits 0..n set.
    fn low(n: usize) -> Self;
    /// Bit i becomes bit i + k's; `k` in 1..64.
    fn shr(self, k: u32) -> Self;
    /// Bit i becomes bit i - k's; `k` in 1..64.
    fn shl(self, k: u32) -> Self;
    fn ones(self) -> u32;
}

/// Integers are lines as they are: one shift or count instruction per operation.
macro_rules! integer_line {
    ($bits:ty) => {
        impl Line for $bits {
            fn low(n: usize) -> $bits {
                if n >= <$bits>::BITS as usize {
                    <$bits>::MAX
                } else {
                    (1 << n) - 1
                }
            }
            fn shr(self, k: u32) -> $bits {
                self >> k
            }
            fn shl(self, k: u32) -> $bits {
                self << k
            }
            fn ones(self) -> u32 {
                self.count_ones()
            }
        }
    };
}

integer_line!(u64);
integer_line!(u128);

impl Line for Row {
    fn low(n: usize) -> Row {
        Row::low(n)
    }
    fn shr(self, k: u32) -> Row {
        Row::shr(self, k)
    }
    fn shl(self, k: u32) -> Row {
        Row::shl(self, k)
    }
    fn ones(self) -> u32 {
        Row::ones(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS: [(Ecc, fast_qr::ECL); 4] = [
        (Ecc::L, fast_qr::ECL::L),
        (Ecc::M, fast_qr::ECL::M),
        (Ecc::Q, fast_qr::ECL::Q),
        (Ecc::H, fast_qr::ECL::H),
    ];
    const MASKS: [fast_qr::Mask; 8] = [
        fast_qr::Mask::Checkerboard,
        fast_qr::Mask::HorizontalLines,
        fast_qr::Mask::VerticalLines,
        fast_qr::Mask::DiagonalLines,
        fast_qr::Mask::LargeCheckerboard,
        fast_qr::Mask::Fields,
        fast_qr::Mask::Diamonds,
        fast_qr::Mask::Meadow,
    ];

    /// Module-for-module equality with fast_qr (an independent encoder) under the same mask.
    fn assert_same_as_fast_qr(data: &[u8], level: usize, mask: usize) {
        let (ecc, ecl) = LEVELS[level];
        let ours = encode_with_mask(data, ecc, mask).unwrap();
        let theirs = fast_qr::QRBuilder::new(data)
            .ecl(ecl)
            .mask(MASKS[mask])
            .build()
            .unwrap_or_else(|e| {
                panic!(
                    "fast_qr: {e} for {} bytes at {ecc:?} (ours: size {})",
                    data.len(),
                    ours.size()
                )
            });
        assert_eq!(ours.size(), theirs.size, "{} bytes at {ecc:?}", data.len());
        for y in 0..ours.size() {
            for x in 0..ours.size() {
                assert_eq!(
                    ours.is_dark(x, y),
                    theirs[y][x].value(),
                    "module ({x}, {y}) of {} bytes at {ecc:?}, mask {mask}",
                    data.len()
                );
            }
        }
    }

    /// The longest input of each mode that fits `version` at `ecc`, by our own capacity.
    fn longest(mode: Mode, version: usize, ecc: Ecc) -> usize {
        let capacity = data_codewords(version, ecc) * 8;
        (1..8000)
            .take_while(|&len| segment_bits(mode, len, version) <= capacity)
            .last()
            .unwrap_or(1)
    }

    #[test]
    fn every_version_level_and_mask_matches_an_independent_encoder() {
        let text: Vec<u8> = (0..3000)
            .map(|i| b"eyJhbGciOiJIUzI1NiJ9._-x"[i % 24])
            .collect();
        for version in 1..=MAX_VERSION {
            for (level, &(ecc, _)) in LEVELS.iter().enumerate() {
                // The fullest symbol of this version, and one byte more (the next version).
                let len = longest(Mode::Byte, version, ecc);
                let mask = (version + level) % 8;
                assert_same_as_fast_qr(&text[..len], level, mask);
                if version < MAX_VERSION {
                    let next = encode_with_mask(&text[..len + 1], ecc, mask).unwrap();
                    assert_eq!(next.size(), (version + 1) * 4 + 17);
                }
            }
        }
    }

    #[test]
    fn numeric_and_alphanumeric_tokens_match_an_independent_encoder() {
        for (data, mask) in [
            (&b"2021001"[..], 0),
            (b"12345678901234567890123456789012345678901", 3),
            (b"STALL-A12", 5),
            (b"HTTPS://CAMPUS.EXAMPLE/QR/STALL:42 $%*+", 7),
        ] {
            for level in 0..4 {
                assert_same_as_fast_qr(data, level, mask);
            }
        }
    }

    #[test]
    fn all_masks_match_on_a_rotating_token() {
        let token = b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyIjoiMjAyMTAwMSIsInciOjU3NzQ1NjE1LCJoIjoiYWJjZGVmMDEyMzQ1IiwidCI6IlJTIiwiaWF0IjoxNzMyOTk5OTk5LCJleHAiOjE3MzMwMDAwODl9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        for mask in 0..8 {
            assert_same_as_fast_qr(token, 1, mask);
        }
    }

    #[test]
    fn too_long_and_empty_are_refused() {
        assert!(matches!(encode(b"", Ecc::M), Err(RenderError::Empty)));
        let huge = vec![b'a'; 1274];
        assert!(matches!(
            encode(&huge, Ecc::H),
            Err(RenderError::TooLong(1274))
        ));
        // Version 40 at level L holds 2,953 bytes.
        assert_eq!(encode(&vec![b'a'; 2953], Ecc::L).unwrap().size(), 177);
        assert!(matches!(
            encode(&vec![b'a'; 2954], Ecc::L),
            Err(RenderError::TooLong(2954))
        ));
    }

    /// The penalty rules applied one module at a time, as the standard words them.
    fn naive_penalty(m: &Matrix) -> u32 {
        let n = m.size();
        let mut score = 0;
        for vertical in [false, true] {
            for a in 0..n {
                let line: Vec<bool> = (0..n)
                    .map(|b| {
                        if vertical {
                            m.is_dark(a, b)
                        } else {
                            m.is_dark(b, a)
                        }
                    })
                    .collect();
                let mut run = 1;
                for i in 1..=n {
                    if i < n && line[i] == line[i - 1] {
                        run += 1;
                    } else {
                        if run >= 5 {
                            score += run - 2;
                        }
                        run = 1;
                    }
                }
                let at = |i: i32| i >= 0 && (i as usize) < n && line[i as usize];
                for start in 0..n as i32 {
                    let core = [true, false, true, true, true, false, true];
                    if (0..7).all(|k| at(start + k) == core[k as usize]) {
                        if (1..=4).all(|k| !at(start - k)) {
                            score += 40;
                        }
                        if (7..11).all(|k| !at(start + k)) {
                            score += 40;
                        }
                    }
                }
            }
        }
        for y in 0..n - 1 {
            for x in 0..n - 1 {
                let c = m.is_dark(x, y);
                if m.is_dark(x + 1, y) == c
                    && m.is_dark(x, y + 1) == c
                    && m.is_dark(x + 1, y + 1) == c
                {
                    score += 3;
                }
            }
        }
        let dark = (0..n * n).filter(|i| m.is_dark(i % n, i / n)).count() as i64;
        let total = (n * n) as i64;
        let k = ((dark * 20 - total * 10).abs() + total - 1) / total - 1;
        score + 10 * k as u32
    }

    #[test]
    fn bitboard_penalties_equal_the_rules_counted_module_by_module() {
        let text: Vec<u8> = (0..2000).map(|i| (i * 7919 % 251) as u8).collect();
        // Small and large symbols, so lines span one, two and three 64-bit words.
        for (len, ecc) in [
            (10, Ecc::L),
            (205, Ecc::M),
            (153, Ecc::H),
            (700, Ecc::Q),
            (1800, Ecc::L),
        ] {
            let symbol = Symbol::new(&text[..len], ecc).unwrap();
            let mut scratch = Scratch::new(symbol.template.size);
            for mask in 0..8 {
                assert_eq!(
                    symbol.penalty(mask, &mut scratch),
                    naive_penalty(&symbol.finish(mask)),
                    "{len} bytes at {ecc:?}, mask {mask}"
                );
            }
        }
    }

    /// A line from a string of `#` (dark) and `.` (light).
    fn line(pattern: &str) -> (Row, usize) {
        let mut row = Row::ZERO;
        for (i, c) in pattern.chars().enumerate() {
            if c == '#' {
                row.set(i);
            }
        }
        (row, pattern.len())
    }

    #[test]
    fn runs_score_three_plus_one_per_module_beyond_five() {
        let (row, size) = line("#.#.#.#.#.#.#.#.#.#.#");
        assert_eq!(line_penalty(row, Row::low(size), Row::low(size - 1)), 0);
        let (row, size) = line("#####.#.#.#.#.#.#.#.#");
        assert_eq!(line_penalty(row, Row::low(size), Row::low(size - 1)), 3);
        let (row, size) = line("#.#.#.#.#.#.#.#.#####");
        assert_eq!(line_penalty(row, Row::low(size), Row::low(size - 1)), 3);
        let (row, size) = line("#.#.#.#.#.#.#.#.#.#.#.......#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.");
        assert_eq!(line_penalty(row, Row::low(size), Row::low(size - 1)), 3 + 2);
        // Two runs, the second across the 64-bit word boundary.
        let mut pattern: String = "#.".repeat(30);
        pattern.push_str("..........");
        pattern.push_str(&"#.".repeat(10));
        let (row, size) = line(&pattern);
        assert_eq!(line_penalty(row, Row::low(size), Row::low(size - 1)), 3 + 6);
    }

    #[test]
    fn finder_lookalikes_score_forty_per_light_side() {
        // Light four before (the edge counts as light) and after: both sides count.
        let (row, size) = line("#.###.#....#.#.#.#.#.#");
        assert_eq!(
            line_penalty(row, Row::low(size), Row::low(size - 1)),
            2 * 40
        );
        // Dark right after the lookalike; four light before it.
        let (row, size) = line("#.#.#....#.###.##.#.#.#");
        assert_eq!(line_penalty(row, Row::low(size), Row::low(size - 1)), 40);
        // No four light modules on either side.
        let (row, size) = line("#.#..#.###.#..#.#");
        assert_eq!(line_penalty(row, Row::low(size), Row::low(size - 1)), 0);
    }

    #[test]
    fn two_by_two_blocks_score_three_each() {
        let (upper, size) = line("##..#.#");
        let (lower, _) = line("##..##.");
        // Blocks at columns 0-1 (dark) and 2-3 (light); 4-5 is mixed.
        assert_eq!(block_count(upper, lower, Row::low(size - 1)), 2);
    }
}
