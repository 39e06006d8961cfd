//! Seeded fuzzing of everything geonetc reads (issue 15's "done when"):
//!
//! - 10,000 mutated programs (byte flips, token deletions and duplications, splices of other
//!   examples, huge numbers, long identifiers, unicode) through `check` (with its rendering and
//!   JSON) and `fmt`, plus a few hundred through the binary: never a panic, each under 5 s.
//! - 10,000 malformed data files (SEG-Y, SU, `.npy`, safetensors: truncations, bit flips,
//!   absurd header values) through the readers `inspect` and `infer` use: never a panic or
//!   abort, every error one line naming the file, and no single allocation larger than what the
//!   file could need (a counting allocator in this test binary checks that).
//!
//! The generators are seeded, so a failure names its case and reproduces.

use geonetc::runtime::{checkpoint, data};
use geonetc::seismic::{self, segy::SeismicFile};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

// ---- the largest single allocation, per thread --------------------------------------------

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only records sizes in a thread-local `Cell`
// (const-initialised, so recording never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

// ---- programs ---------------------------------------------------------------------------------

fn examples() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut out = vec![];
    for dir in [root.clone(), root.join("errors")] {
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&dir).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        for p in files.into_iter().filter(|p| p.extension().is_some_and(|x| x == "geonet")) {
            out.push(std::fs::read_to_string(p).expect("example"));
        }
    }
    assert!(out.len() >= 10, "examples not found");
    out
}

/// Token boundaries of a text (runs of identifier characters, of digits, single other bytes).
fn token_spans(s: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut i = 0;
    while i < s.len() {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.';
        let mut j = i + 1;
        if word(s[i]) {
            while j < s.len() && word(s[j]) {
                j += 1;
            }
        }
        if !s[i].is_ascii_whitespace() {
            out.push((i, j));
        }
        i = j;
    }
    out
}

const INSERTS: &[&str] = &[
    "->",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "=",
    "\"",
    "#",
    "-",
    "*",
    "/",
    "99999999999999999999999",
    "18446744073709551616",
    "4294967296",
    "1e308",
    "1e-320",
    "0",
    "-1",
    "é",
    "𝄞",
    "\u{200b}",
    "\u{feff}",
    "ß",
    "\r",
    "\t",
    "model",
    "block",
    "train",
    "input",
    "output",
    "conv(",
    "unet(",
    "concat(",
    "pad=same",
    "kernel=",
    "x ->",
    "= ",
    "\\",
];

/// One mutated program from the examples.
fn mutate(rng: &mut ChaCha8Rng, examples: &[String]) -> Vec<u8> {
    let mut s = examples[rng.random_range(0..examples.len())].as_bytes().to_vec();
    for _ in 0..rng.random_range(1..5) {
        let toks = token_spans(&s);
        let tok = |rng: &mut ChaCha8Rng| toks.get(rng.random_range(0..toks.len().max(1))).copied();
        match rng.random_range(0..10) {
            0 if !s.is_empty() => {
                let at = rng.random_range(0..s.len());
                s[at] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                if let Some((a, b)) = tok(rng) {
                    s.drain(a..b);
                }
            }
            2 => {
                if let Some((a, b)) = tok(rng) {
                    let t = s[a..b].to_vec();
                    s.splice(b..b, t);
                }
            }
            3 => {
                // A splice of another example's lines.
                let other = examples[rng.random_range(0..examples.len())].as_bytes();
                let a = rng.random_range(0..other.len());
                let b = (a + rng.random_range(1..200)).min(other.len());
                let at = rng.random_range(0..=s.len());
                s.splice(at..at, other[a..b].iter().copied());
            }
            4 => {
                // A number replaced by a huge one.
                if let Some((a, b)) = toks.iter().copied().find(|&(a, _)| s[a].is_ascii_digit()) {
                    s.splice(a..b, b"340282366920938463463374607431768211456".iter().copied());
                }
            }
            5 if rng.random_range(0..40) == 0 => {
                // A name or a line past 65,535 characters (rare: each costs a few ms).
                if let Some((a, b)) = toks.iter().copied().find(|&(a, _)| s[a].is_ascii_alphabetic()) {
                    let long = "w".repeat(70_000 + rng.random_range(0..1000));
                    s.splice(a..b, long.into_bytes());
                }
            }
            6 => {
                let at = rng.random_range(0..=s.len());
                let ins = INSERTS[rng.random_range(0..INSERTS.len())].as_bytes();
                s.splice(at..at, ins.iter().copied());
            }
            7 if !s.is_empty() => {
                let at = rng.random_range(0..s.len());
                s[at] = rng.random();
            }
            8 => {
                let lines: Vec<&[u8]> = s.split(|&c| c == b'\n').collect();
                let mut lines: Vec<Vec<u8>> = lines.into_iter().map(<[u8]>::to_vec).collect();
                let (i, j) = (rng.random_range(0..lines.len()), rng.random_range(0..lines.len()));
                lines.swap(i, j);
                s = lines.join(&b'\n');
            }
            _ => {
                if let Some((a, _)) = tok(rng) {
                    let b = (a + rng.random_range(1..30)).min(s.len());
                    s.drain(a..b);
                }
            }
        }
    }
    s
}

/// `check` (with rendering and JSON) and, when it parses, `fmt`: no panic, under 5 s.
fn run_program(case: usize, bytes: &[u8]) {
    let t = Instant::now();
    let out = geonetc::check::check_bytes(bytes);
    let rendered = geonetc::diag::render(&out.diagnostics, "f.geonet", &out.source, false);
    let json = geonetc::check::to_json(&out, "f.geonet");
    assert!(json.get("diagnostics").is_some(), "case {case}: JSON without diagnostics");
    if out.has_errors() {
        assert!(!rendered.is_empty(), "case {case}: errors but nothing rendered");
    } else {
        let _ = geonetc::check::summary_table(&out);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        match geonetc::fmt::format_source(text) {
            Ok(formatted) => {
                // Formatting keeps what check says about the file.
                let again = geonetc::check::check_source(&formatted);
                assert_eq!(again.has_errors(), out.has_errors(), "case {case}: fmt changed the verdict");
            }
            Err(geonetc::fmt::FmtError::Internal(why)) => panic!("case {case}: formatter bug: {why}"),
            Err(geonetc::fmt::FmtError::Syntax(_)) => {}
        }
    }
    assert!(t.elapsed() < Duration::from_secs(5), "case {case} took {:?}", t.elapsed());
}

fn program_cases(seed: u64, count: usize) {
    let examples = examples();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for case in 0..count {
        let bytes = mutate(&mut rng, &examples);
        run_program(case, &bytes);
    }
}

// Four seeds of 2,500 each, so the test harness runs them on separate threads.
#[test]
fn mutated_programs_a() {
    program_cases(1, 2500);
}
#[test]
fn mutated_programs_b() {
    program_cases(2, 2500);
}
#[test]
fn mutated_programs_c() {
    program_cases(3, 2500);
}
#[test]
fn mutated_programs_d() {
    program_cases(4, 2500);
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("geonetc-fuzz-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn mutated_programs_through_the_binary() {
    let examples = examples();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let dir = tmp_dir("bin");
    let path = dir.join("m.geonet");
    for case in 0..300 {
        let bytes = mutate(&mut rng, &examples);
        std::fs::write(&path, &bytes).expect("write");
        let t = Instant::now();
        let args: &[&str] = match case % 3 {
            0 => &["check"],
            1 => &["check", "--format", "json"],
            _ => &["fmt", "--check"],
        };
        let out =
            Command::new(env!("CARGO_BIN_EXE_geonetc")).args(args).arg(&path).output().expect("run geonetc");
        // The file is readable, so never 2 (an I/O failure): 0, or 1 with diagnostics.
        let code = out.status.code();
        assert!(
            matches!(code, Some(0..=1)),
            "case {case} {args:?}: exit {code:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "case {case}");
        assert!(t.elapsed() < Duration::from_secs(5), "case {case} took {:?}", t.elapsed());
        if args.contains(&"json") {
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .unwrap_or_else(|e| panic!("case {case}: JSON output does not parse: {e}"));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

// ---- data files -------------------------------------------------------------------------------

fn put16(b: &mut [u8], at: usize, v: u16, big: bool) {
    b[at..at + 2].copy_from_slice(&if big { v.to_be_bytes() } else { v.to_le_bytes() });
}

/// A small well-formed SEG-Y (or, `su`, Seismic Unix) file of random geometry and format.
fn seismic_file(rng: &mut ChaCha8Rng, su: bool) -> Vec<u8> {
    let big = rng.random_bool(0.5);
    let (code, bps) =
        if su { (5, 4) } else { [(1, 4), (2, 4), (3, 2), (5, 4), (8, 1)][rng.random_range(0..5)] };
    let ns = rng.random_range(1..64usize);
    let traces = rng.random_range(0..10usize);
    let mut b = vec![];
    if !su {
        b.resize(3600, 0x40);
        b[3200..3600].fill(0);
        put16(&mut b, 3216, 4000, big);
        put16(&mut b, 3220, ns as u16, big);
        put16(&mut b, 3224, code, big);
        put16(&mut b, 3500, [0u16, 0x0100, 0x0200][rng.random_range(0..3)], big);
    }
    for t in 0..traces {
        let at = b.len();
        b.resize(at + 240 + ns * bps, 0);
        b[at..at + 4].copy_from_slice(&(t as u32 + 1).to_be_bytes());
        put16(&mut b, at + 114, ns as u16, big);
        put16(&mut b, at + 116, 4000, big);
        for (i, x) in b[at + 240..].iter_mut().enumerate() {
            *x = (i * 31 + t * 7) as u8;
        }
    }
    b
}

fn npy_file(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let (descr, size) = [("<f4", 4), (">f4", 4), ("<f8", 8), ("<i8", 8), ("<i4", 4)][rng.random_range(0..5)];
    let shape: Vec<usize> = (0..rng.random_range(1..4)).map(|_| rng.random_range(1..9)).collect();
    let n: usize = shape.iter().product();
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text =
        if shape.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape_text}, }}",
        if rng.random_bool(0.2) { "True" } else { "False" }
    );
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((dict.len() as u16).to_le_bytes());
    b.extend(dict.as_bytes());
    b.extend((0..n * size).map(|i| (i * 13) as u8));
    b
}

/// The tiny model whose weights the safetensors cases are read against.
const TINY: &str =
    "model tiny {\n  input x: [1, 8, 8]\n  y = x -> conv(2, kernel=3) -> relu\n  output y\n}\n";

fn safetensors_file(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut entries: Vec<(String, Vec<usize>)> =
        vec![("y.conv0.weight".into(), vec![2, 1, 3, 3]), ("y.conv0.bias".into(), vec![2])];
    if rng.random_bool(0.2) {
        entries.push(("extra".into(), vec![rng.random_range(1..5)]));
    }
    let dtype = if rng.random_bool(0.5) { safetensors::Dtype::F32 } else { safetensors::Dtype::F64 };
    let bytes: Vec<Vec<u8>> =
        entries.iter().map(|(_, s)| vec![0x3f; s.iter().product::<usize>() * dtype.bitsize() / 8]).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = entries
        .iter()
        .zip(&bytes)
        .map(|((n, s), b)| {
            (n.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), b).expect("view"))
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

/// Damage: truncation, bit flips, absurd values at header fields, garbage appended.
fn damage(rng: &mut ChaCha8Rng, mut b: Vec<u8>, fields: &[usize]) -> Vec<u8> {
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..6) {
            0 => {
                let cut = rng.random_range(0..=b.len());
                b.truncate(cut);
            }
            1 if !b.is_empty() => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..b.len());
                    b[at] ^= 1 << rng.random_range(0..8);
                }
            }
            2 | 3 => {
                // An absurd value written over a field that declares a size.
                let candidates: Vec<usize> = fields.iter().copied().filter(|&f| f + 8 <= b.len()).collect();
                if let Some(&at) = candidates.get(rng.random_range(0..candidates.len().max(1))) {
                    let v: [u8; 8] = match rng.random_range(0..4) {
                        0 => [0xff; 8],
                        1 => [0; 8],
                        2 => [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                        _ => rng.random(),
                    };
                    let n = rng.random_range(1..=8);
                    b[at..at + n].copy_from_slice(&v[..n]);
                }
            }
            4 => b.extend((0..rng.random_range(1..300)).map(|_| rng.random::<u8>())),
            _ if !b.is_empty() => {
                let at = rng.random_range(0..b.len());
                b[at] = rng.random();
            }
            _ => {}
        }
    }
    b
}

/// An error of a reader: one line, naming the file.
fn assert_clean_error(case: usize, path: &Path, e: &str) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(!e.contains('\n'), "case {case}: multi-line error: {e}");
    assert!(e.contains(name), "case {case}: error does not name {name}: {e}");
}

fn data_cases(kind: &str, seed: u64, count: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dir = tmp_dir(kind);
    let graph = {
        let out = geonetc::check::check_source(TINY);
        let program = out.program.expect("tiny model checks");
        geonetc::ir::lower(&program, 1)
    };
    for case in 0..count {
        let (bytes, path) = match kind {
            "segy" => {
                let base = seismic_file(&mut rng, false);
                // Binary-header sample interval, count, format, revision, extended headers;
                // the first trace header's count.
                let fields = [3216, 3220, 3224, 3300, 3304, 3268, 3600 + 114, 3600 + 240];
                (damage(&mut rng, base, &fields), dir.join("d.sgy"))
            }
            "su" => {
                let base = seismic_file(&mut rng, true);
                (damage(&mut rng, base, &[114, 116, 240 + 114, 480 + 114]), dir.join("d.su"))
            }
            "npy" => {
                let base = npy_file(&mut rng);
                let fields: Vec<usize> = (6..60).collect();
                (damage(&mut rng, base, &fields), dir.join("d.npy"))
            }
            _ => {
                let base = safetensors_file(&mut rng);
                let fields: Vec<usize> = (0..48).collect();
                (damage(&mut rng, base, &fields), dir.join("w.safetensors"))
            }
        };
        std::fs::write(&path, &bytes).expect("write");
        // What the file could need: its values as f64 (8× for int8 samples), plus room.
        let bound = 16 * bytes.len() + (1 << 20);
        let t = Instant::now();
        let ((), largest) = largest_allocation(|| match kind {
            "segy" | "su" => {
                if let Err(e) = seismic::inspect(&path) {
                    assert_clean_error(case, &path, &e);
                }
                match SeismicFile::open(&path) {
                    Err(e) => assert_clean_error(case, &path, &e.to_string()),
                    Ok(f) => match f.section() {
                        Ok(s) => assert_eq!(s.dim(), (f.traces(), f.samples), "case {case}"),
                        Err(e) => assert_clean_error(case, &path, &e.to_string()),
                    },
                }
            }
            "npy" => match data::read_npy(&path) {
                Ok(a) => assert!(a.len() * 4 <= bytes.len(), "case {case}: more values than bytes"),
                Err(e) => assert_clean_error(case, &path, &e),
            },
            _ => {
                if let Err(e) = checkpoint::load_weights(&path, &graph) {
                    assert_clean_error(case, &path, &e);
                }
            }
        });
        assert!(
            largest <= bound,
            "case {case} ({kind}, {} bytes): allocated {largest} bytes at once",
            bytes.len()
        );
        assert!(t.elapsed() < Duration::from_secs(5), "case {case} took {:?}", t.elapsed());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn malformed_segy_files() {
    data_cases("segy", 11, 3000);
}
#[test]
fn malformed_su_files() {
    data_cases("su", 12, 2500);
}
#[test]
fn malformed_npy_files() {
    data_cases("npy", 13, 2500);
}
#[test]
fn malformed_safetensors_files() {
    data_cases("safetensors", 14, 2000);
}

#[test]
fn malformed_files_through_inspect() {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let dir = tmp_dir("inspect");
    for case in 0..150 {
        let (base, fields, path): (_, &[usize], _) = match case % 3 {
            0 => (seismic_file(&mut rng, false), &[3220, 3224, 3714], dir.join("i.sgy")),
            1 => (seismic_file(&mut rng, true), &[114, 354], dir.join("i.su")),
            _ => (npy_file(&mut rng), &[8, 40, 50], dir.join("i.npy")),
        };
        let bytes = damage(&mut rng, base, fields);
        std::fs::write(&path, &bytes).expect("write");
        let out =
            Command::new(env!("CARGO_BIN_EXE_geonetc")).arg("inspect").arg(&path).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(2) => {
                assert_eq!(stderr.lines().count(), 1, "case {case}: {stderr}");
                assert!(
                    stderr.contains(path.file_name().and_then(|n| n.to_str()).unwrap_or("")),
                    "case {case}: {stderr}"
                );
            }
            other => panic!("case {case}: exit {other:?}: {stderr}"),
        }
    }
    // A directory given as a data file.
    for name in ["dir.sgy", "dir.su", "dir.npy"] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("dir");
        let out = Command::new(env!("CARGO_BIN_EXE_geonetc")).arg("inspect").arg(&d).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("is a directory") && stderr.lines().count() == 1, "{name}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
