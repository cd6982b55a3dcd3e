//! QR rendering: a token becomes a crisp 1-bit PNG and the `data:image/png;base64,` string the
//! app's QR service stores and reads. This is the one render function every caller uses.

use std::time::{Duration, Instant};

use base64::Engine as _;

mod deflate;
mod matrix;

pub use matrix::Matrix;

/// Prefix of every cached value; the app's QR service serves exactly this string.
pub const DATA_URL_PREFIX: &str = "data:image/png;base64,";

/// Error correction level, as the app's `QR_ECC` setting names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ecc {
    L,
    M,
    Q,
    H,
}

impl std::str::FromStr for Ecc {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_uppercase().as_str() {
            "L" => Ok(Ecc::L),
            "M" => Ok(Ecc::M),
            "Q" => Ok(Ecc::Q),
            "H" => Ok(Ecc::H),
            other => Err(format!(
                "`{other}` is not an error correction level (L, M, Q or H)"
            )),
        }
    }
}

/// How images are drawn. The defaults are the app's own (`width: 400, margin: 4`, level H).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QrSettings {
    pub width_px: u32,
    pub margin_modules: u32,
    pub ecc: Ecc,
}

impl Default for QrSettings {
    fn default() -> Self {
        QrSettings {
            width_px: 400,
            margin_modules: 4,
            ecc: Ecc::H,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("token of {0} bytes is too long for a QR code at this error correction level")]
    TooLong(usize),
    #[error("the token is empty")]
    Empty,
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
}

/// Where one render spent its time, summed by the warmer into its stage figures.
#[derive(Debug, Default, Clone, Copy)]
pub struct RenderTimings {
    pub matrix: Duration,
    pub png: Duration,
    pub base64: Duration,
}

impl std::ops::AddAssign for RenderTimings {
    fn add_assign(&mut self, other: Self) {
        self.matrix += other.matrix;
        self.png += other.png;
        self.base64 += other.base64;
    }
}

/// A square grid of modules, dark or light, before any margin or scaling.
pub trait ModuleGrid {
    fn size(&self) -> usize;
    fn is_dark(&self, x: usize, y: usize) -> bool;
}

impl ModuleGrid for Matrix {
    fn size(&self) -> usize {
        Matrix::size(self)
    }

    fn is_dark(&self, x: usize, y: usize) -> bool {
        Matrix::is_dark(self, x, y)
    }
}

/// Builds the module matrix of `token`, with our own encoder rather than a crate's: it scores
/// the eight masks on bitboards, 5-7x faster than fast_qr and 30-50x faster than the `qrcode`
/// crate on our tokens, with identical decoded content (BENCHMARKS.md, "QR encoders").
pub fn encode_matrix(token: &str, ecc: Ecc) -> Result<Matrix, RenderError> {
    matrix::encode(token.as_bytes(), ecc)
}

/// Draws `grid` as a 1-bit grayscale PNG exactly `width_px` wide. Each module is a whole number
/// of pixels so edges stay crisp for phone cameras; the pixels left over widen the quiet zone,
/// which is never narrower than `margin_modules`.
pub fn png_from_grid(
    grid: &impl ModuleGrid,
    settings: &QrSettings,
) -> Result<Vec<u8>, RenderError> {
    let modules = grid.size();
    let framed = modules + 2 * settings.margin_modules as usize;
    let scale = (settings.width_px as usize / framed).max(1);
    let width = (settings.width_px as usize).max(framed * scale);
    let offset = (width - modules * scale) / 2;
    // Each scanline is a filter-type byte (0: none) and the row's bits; bit 1 is white.
    let line = width.div_ceil(8) + 1;
    let mut light_line = vec![0xFFu8; line];
    light_line[0] = 0;
    let mut module_lines = Vec::with_capacity(modules);
    for y in 0..modules {
        let mut module_line = light_line.clone();
        // Runs of dark modules, each cleared in one go.
        let mut run_start = None;
        for x in 0..=modules {
            let dark = x < modules && grid.is_dark(x, y);
            match (dark, run_start) {
                (true, None) => run_start = Some(x),
                (false, Some(start)) => {
                    let first_bit = 8 + offset + start * scale;
                    clear_bits(&mut module_line, first_bit, first_bit + (x - start) * scale);
                    run_start = None;
                }
                _ => {}
            }
        }
        module_lines.push(module_line);
    }
    // Each module row is one scanline `scale` times over: the compressor is told so, and
    // copies it instead of searching for the repeat.
    let mut lines: Vec<(&[u8], usize)> = Vec::with_capacity(modules + 2);
    lines.push((&light_line, offset));
    lines.extend(module_lines.iter().map(|l| (l.as_slice(), scale)));
    lines.push((&light_line, width - offset - modules * scale));
    let compressed = deflate::zlib(&lines);

    let mut out = Vec::with_capacity(compressed.len() + 64);
    let mut encoder = png::Encoder::new(&mut out, width as u32, width as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    let mut writer = encoder.write_header()?;
    writer.write_chunk(png::chunk::IDAT, &compressed)?;
    writer.finish()?;
    Ok(out)
}

/// Clears bits `from..to` of `bytes`, bit 0 being the most significant of the first byte.
fn clear_bits(bytes: &mut [u8], from: usize, to: usize) {
    if from >= to {
        return;
    }
    let (first, last) = (from / 8, (to - 1) / 8);
    // The bits of the first byte from `from` on, and of the last byte up to `to`.
    let head = 0xFFu8 >> (from % 8);
    let tail = 0xFFu8 << (7 - (to - 1) % 8);
    if first == last {
        bytes[first] &= !(head & tail);
    } else {
        bytes[first] &= !head;
        bytes[first + 1..last].fill(0);
        bytes[last] &= !tail;
    }
}

/// `data:image/png;base64,...` of a PNG: the cache value format.
pub fn data_url(png: &[u8]) -> String {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut url = String::with_capacity(DATA_URL_PREFIX.len() + png.len().div_ceil(3) * 4);
    url.push_str(DATA_URL_PREFIX);
    engine.encode_string(png, &mut url);
    url
}

/// Renders `token` to its cache value, noting where the time went.
pub fn render_data_url(
    token: &str,
    settings: &QrSettings,
) -> Result<(String, RenderTimings), RenderError> {
    let started = Instant::now();
    let matrix = encode_matrix(token, settings.ecc)?;
    let matrix_done = Instant::now();
    let png = png_from_grid(&matrix, settings)?;
    let png_done = Instant::now();
    let url = data_url(&png);
    let timings = RenderTimings {
        matrix: matrix_done - started,
        png: png_done - matrix_done,
        base64: png_done.elapsed(),
    };
    Ok((url, timings))
}

/// Renders `token` to PNG bytes (for HTTP responses).
pub fn render_png(token: &str, settings: &QrSettings) -> Result<Vec<u8>, RenderError> {
    png_from_grid(&encode_matrix(token, settings.ecc)?, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuIjoiYTFiMiIsInQiOiJTIiwiciI6IjIwMjEwMDEiLCJpYXQiOjE3MDAwMDAwMDB9.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU";

    fn decode(png_bytes: &[u8]) -> (u32, png::BitDepth, String) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().unwrap();
        let info = reader.info().clone();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        // Expand 1-bit rows to 8-bit luma for the QR reader.
        let width = info.width as usize;
        let row_bytes = width.div_ceil(8);
        let luma: Vec<u8> = (0..width * width)
            .map(|i| {
                let (y, x) = (i / width, i % width);
                if buf[y * row_bytes + x / 8] & (0x80 >> (x % 8)) != 0 {
                    255
                } else {
                    0
                }
            })
            .collect();
        let mut img =
            rqrr::PreparedImage::prepare_from_greyscale(width, width, |x, y| luma[y * width + x]);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the image");
        let (_, content) = grids[0].decode().unwrap();
        (info.width, info.bit_depth, content)
    }

    #[test]
    fn clearing_bits_clears_exactly_the_range() {
        for from in 0..24 {
            for to in from..=24 {
                let mut bytes = [0xFFu8; 3];
                clear_bits(&mut bytes, from, to);
                for bit in 0..24 {
                    let set = bytes[bit / 8] & (0x80 >> (bit % 8)) != 0;
                    assert_eq!(set, !(from..to).contains(&bit), "bit {bit} of {from}..{to}");
                }
            }
        }
    }

    #[test]
    fn png_is_one_bit_of_the_configured_width_and_decodes_to_the_token() {
        let png = render_png(TOKEN, &QrSettings::default()).unwrap();
        let (width, depth, content) = decode(&png);
        assert_eq!(width, 400);
        assert_eq!(depth, png::BitDepth::One);
        assert_eq!(content, TOKEN);
    }

    #[test]
    fn data_url_is_the_cache_format_and_small() {
        let (url, _) = render_data_url(TOKEN, &QrSettings::default()).unwrap();
        let encoded = url.strip_prefix(DATA_URL_PREFIX).expect("prefix");
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(url.len() <= 3200, "data URL is {} bytes", url.len());
        assert_eq!(decode(&png).2, TOKEN);
    }

    #[test]
    fn every_level_and_an_odd_width_still_decode() {
        for ecc in [Ecc::L, Ecc::M, Ecc::Q, Ecc::H] {
            let settings = QrSettings {
                width_px: 333,
                margin_modules: 2,
                ecc,
            };
            let png = render_png("STALL_A-17", &settings).unwrap();
            let (width, _, content) = decode(&png);
            assert_eq!(width, 333);
            assert_eq!(content, "STALL_A-17");
        }
    }

    #[test]
    fn tokens_of_many_lengths_and_modes_decode_back_with_the_mask_chosen() {
        let rotating = QrSettings {
            width_px: 300,
            margin_modules: 1,
            ecc: Ecc::M,
        };
        let wide = QrSettings {
            width_px: 800,
            ..QrSettings::default()
        };
        let jwt: String = TOKEN.repeat(4);
        for len in (1..=400).step_by(57) {
            for (token, settings) in [
                (jwt[..len].to_string(), &rotating),
                (jwt[..len].to_string(), &wide),
                ("7".repeat(len), &rotating),
                (format!("STALL_{}", "A-9".repeat(len / 3)), &rotating),
            ] {
                let (_, _, content) = decode(&render_png(&token, settings).unwrap());
                assert_eq!(
                    content,
                    token,
                    "{} chars at {:?}",
                    token.len(),
                    settings.ecc
                );
            }
        }
    }

    #[test]
    fn a_width_too_small_for_the_code_grows_to_one_pixel_per_module() {
        let settings = QrSettings {
            width_px: 10,
            ..QrSettings::default()
        };
        let png = render_png(TOKEN, &settings).unwrap();
        let (width, _, content) = decode(&png);
        assert!(width > 10);
        assert_eq!(content, TOKEN);
    }

    #[test]
    fn empty_and_oversized_tokens_are_errors() {
        assert!(matches!(
            render_png("", &QrSettings::default()),
            Err(RenderError::Empty)
        ));
        let huge = "x".repeat(5000);
        assert!(matches!(
            render_png(&huge, &QrSettings::default()),
            Err(RenderError::TooLong(5000))
        ));
    }

    #[test]
    fn ecc_parses_case_insensitively_and_rejects_others() {
        assert_eq!("h".parse::<Ecc>().unwrap(), Ecc::H);
        assert!("X".parse::<Ecc>().is_err());
    }
}
