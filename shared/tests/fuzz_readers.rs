//! Fuzzing the spreadsheet readers: each format's reading entry point (`read_records`) gets the
//! fixtures (saved by an office suite; for `.xlsb`, written by a test and saved by Excel),
//! mutated the way hostile files are (bytes flipped, inserted, cut; in a
//! zip container, a part's numbers replaced by huge ones and text spliced in, then re-zipped),
//! under a memory cap. A panic that escapes the reader, an abort, or an allocation past the cap
//! fails the test.
//!
//! Briefly in CI (`FUZZ_SECONDS`, default 5 per format); longer on demand:
//! `FUZZ_SECONDS=600 cargo nextest run -p shared --test fuzz_readers`. A failure prints
//! `BOLERO_RANDOM_SEED=...`, which replays it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Cursor, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bolero::generator::TypeGenerator;
use shared::kind::Kind;
use shared::spreadsheet::{read_records, Format, Limits};

/// Live heap bytes past which the process aborts: a reader that reserves by what a file claims
/// blows through it at once, while the fixtures need a few MiB.
const MEMORY_CAP: usize = 256 * 1024 * 1024;

struct Capped;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the caller's layout; the counter
// only observes sizes.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        if live > MEMORY_CAP {
            breach(layout.size());
        }
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let grown = new_size - layout.size();
            if LIVE.fetch_add(grown, Ordering::Relaxed) + grown > MEMORY_CAP {
                breach(new_size);
            }
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `alloc` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Says why on stderr without allocating, then aborts: the cap is a failure, not an error.
fn breach(size: usize) -> ! {
    let message = format_args!("memory cap breached: an allocation of {size} bytes\n");
    let mut buffer = [0u8; 96];
    let mut cursor = Cursor::new(&mut buffer[..]);
    let _ = cursor.write_fmt(message);
    let written = cursor.position() as usize;
    // SAFETY: writes bytes of a live stack buffer to stderr.
    unsafe {
        libc::write(2, buffer.as_ptr().cast(), written);
    }
    std::process::abort()
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// One change to a seed file.
#[derive(Debug, Clone, TypeGenerator)]
enum Edit {
    Flip {
        at: u16,
        bit: u8,
    },
    /// A little-endian 32-bit value written over the bytes at `at` (binary counts and sizes).
    Word {
        at: u16,
        value: u32,
    },
    Insert {
        at: u16,
        bytes: Vec<u8>,
    },
    Truncate {
        at: u16,
    },
    /// In a zip container: the `which`-th run of digits in a part replaced by `value`.
    Number {
        part: u8,
        which: u8,
        value: u64,
    },
    /// In a zip container: bytes spliced into a part.
    Splice {
        part: u8,
        at: u16,
        bytes: Vec<u8>,
    },
}

#[derive(Debug, Clone, TypeGenerator)]
struct Case {
    seed: u8,
    edits: Vec<Edit>,
}

fn unzip(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).ok()?;
    let mut parts = Vec::new();
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).ok()?;
        let name = file.name().ok()?.into_owned();
        let mut content = Vec::new();
        file.read_to_end(&mut content).ok()?;
        parts.push((name, content));
    }
    Some(parts)
}

fn rezip(parts: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content) in parts {
        writer
            .start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        writer.write_all(content).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn replace_number(part: &mut Vec<u8>, which: u8, value: u64) {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, b) in part.iter().enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if runs.is_empty() {
        return;
    }
    let (from, to) = runs[which as usize % runs.len()];
    part.splice(from..to, value.to_string().into_bytes());
}

fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for edit in edits {
        let at = |at: u16, len: usize| if len == 0 { 0 } else { at as usize % len };
        match edit {
            Edit::Flip { at: a, bit } => {
                if !bytes.is_empty() {
                    let i = at(*a, bytes.len());
                    bytes[i] ^= 1 << (bit % 8);
                }
            }
            Edit::Word { at: a, value } => {
                if bytes.len() >= 4 {
                    let i = at(*a, bytes.len() - 3);
                    bytes[i..i + 4].copy_from_slice(&value.to_le_bytes());
                }
            }
            Edit::Insert { at: a, bytes: more } => {
                let i = at(*a, bytes.len() + 1);
                bytes.splice(i..i, more.iter().copied());
            }
            Edit::Truncate { at: a } => {
                let i = at(*a, bytes.len() + 1);
                bytes.truncate(i);
            }
            Edit::Number { part, which, value } => {
                if let Some(mut parts) = unzip(&bytes) {
                    if !parts.is_empty() {
                        let index = *part as usize % parts.len();
                        replace_number(&mut parts[index].1, *which, *value);
                        bytes = rezip(&parts);
                    }
                }
            }
            Edit::Splice {
                part,
                at: a,
                bytes: more,
            } => {
                if let Some(mut parts) = unzip(&bytes) {
                    if !parts.is_empty() {
                        let index = *part as usize % parts.len();
                        let content = &mut parts[index].1;
                        let i = at(*a, content.len() + 1);
                        content.splice(i..i, more.iter().copied());
                        bytes = rezip(&parts);
                    }
                }
            }
        }
    }
    bytes
}

fn seconds() -> u64 {
    std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// Feeds mutated `seeds` to the reader of `format`, for both kinds. A refusal is a fine answer;
/// a panic out of the reader or an abort is not.
fn fuzz(format: Format, seeds: &[&[u8]]) {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
    let limits = Limits::default();
    bolero::check!()
        .with_type::<Case>()
        .with_test_time(Duration::from_secs(seconds()))
        .for_each(|case| {
            let seed = seeds[case.seed as usize % seeds.len()];
            let bytes = mutate(seed, &case.edits);
            for kind in Kind::ALL {
                let _ = read_records(&bytes, format, kind, &limits, today);
            }
        });
}

const STUDENTS_XLSX: &[u8] = include_bytes!("../src/spreadsheet/fixtures/students.xlsx");
const STUDENTS_XLSB: &[u8] = include_bytes!("../src/spreadsheet/fixtures/students.xlsb");
const EXCEL_XLSB: &[u8] = include_bytes!("../src/spreadsheet/fixtures/excel-any-sheets.xlsb");
const EXCEL_DATE_XLSB: &[u8] = include_bytes!("../src/spreadsheet/fixtures/excel-date.xlsb");
const STUDENTS_XLS: &[u8] = include_bytes!("../src/spreadsheet/fixtures/students.xls");
const TEMPLATE_XLS: &[u8] = include_bytes!("../src/spreadsheet/fixtures/template.xls");
const STUDENTS_ODS: &[u8] = include_bytes!("../src/spreadsheet/fixtures/students.ods");
const TEMPLATE_ODS: &[u8] = include_bytes!("../src/spreadsheet/fixtures/template.ods");
const STUDENTS_CSV: &[u8] = include_bytes!("../src/spreadsheet/fixtures/students-source.csv");

#[test]
fn xlsx_reader() {
    fuzz(Format::Xlsx, &[STUDENTS_XLSX]);
}

#[test]
fn xlsm_reader() {
    fuzz(Format::Xlsm, &[STUDENTS_XLSX]);
}

#[test]
fn xlsb_reader() {
    // No office suite here writes .xlsb: `students.xlsb` is written record by record by a
    // test, its parts stored uncompressed so that byte edits land in the records (sizes,
    // counts, texts); the two saved by Excel (deflated) come from calamine's tests.
    fuzz(Format::Xlsb, &[STUDENTS_XLSB, EXCEL_XLSB, EXCEL_DATE_XLSB]);
}

#[test]
fn xls_reader() {
    fuzz(Format::Xls, &[STUDENTS_XLS, TEMPLATE_XLS]);
}

#[test]
fn ods_reader() {
    fuzz(Format::Ods, &[STUDENTS_ODS, TEMPLATE_ODS]);
}

#[test]
fn csv_reader() {
    fuzz(Format::Csv, &[STUDENTS_CSV]);
}

#[test]
fn a_breach_of_the_memory_cap_aborts() {
    if std::env::var_os("FUZZ_BREACH").is_some() {
        let hog = vec![1u8; MEMORY_CAP + 1];
        std::hint::black_box(hog);
        return;
    }
    // Run this same test in a child process, where it allocates past the cap.
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_breach_of_the_memory_cap_aborts",
            "--nocapture",
        ])
        .env("FUZZ_BREACH", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "memory cap breached: an allocation of {} bytes",
            MEMORY_CAP + 1
        )),
        "{stderr}"
    );
}
