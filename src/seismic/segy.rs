//! SEG-Y (revisions 0, 1, 2) and Seismic Unix reading and writing, our own: published Rust
//! crates misread real files (stale trace-header sample counts, byte-swapped files).
//!
//! Layout: 3200-byte textual header (EBCDIC or ASCII), 400-byte binary header, optional
//! 3200-byte extended textual headers, then traces of a 240-byte header and `ns` samples.
//! Seismic Unix files are traces only. Byte order is detected from the binary header's
//! sample-format code (SEG-Y) or from the trace headers that walk the file exactly (SU).
//!
//! SEG-Y: the sample count comes from the binary header when it makes the file a whole number
//! of traces (fixed-length data); otherwise from the first trace header; otherwise traces are
//! walked by their own counts (0 meaning the binary header's). SU: traces are always walked by
//! their own counts. Traces of differing counts are an error naming both; a file that ends
//! inside a trace is an error naming the trace, its byte offset and the count it was read with
//! (never a count read from sample bytes). Every size is checked against the file's length
//! before it is used. A file without traces or samples opens (`inspect` describes it) but is no
//! [`SeismicFile::section`].

// The writers (`write_like`, `write_as`) live beside the reader, with access to its fields.
#[path = "segy_write.rs"]
mod write;
pub use write::write_at;

use memmap2::Mmap;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Endian {
    Big,
    Little,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    Segy,
    Su,
}

/// Data sample formats we read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SampleFormat {
    /// 1: IBM hexadecimal floating point.
    Ibm,
    /// 2: two's-complement 32-bit integer.
    Int32,
    /// 3: 16-bit integer.
    Int16,
    /// 5: IEEE 754 single precision.
    Ieee,
    /// 8: 8-bit integer.
    Int8,
}

impl SampleFormat {
    pub fn from_code(code: i32) -> Option<SampleFormat> {
        Some(match code {
            1 => SampleFormat::Ibm,
            2 => SampleFormat::Int32,
            3 => SampleFormat::Int16,
            5 => SampleFormat::Ieee,
            8 => SampleFormat::Int8,
            _ => return None,
        })
    }
    pub fn code(self) -> u16 {
        match self {
            SampleFormat::Ibm => 1,
            SampleFormat::Int32 => 2,
            SampleFormat::Int16 => 3,
            SampleFormat::Ieee => 5,
            SampleFormat::Int8 => 8,
        }
    }
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::Int16 => 2,
            SampleFormat::Int8 => 1,
            _ => 4,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SampleFormat::Ibm => "IBM float (1)",
            SampleFormat::Int32 => "int32 (2)",
            SampleFormat::Int16 => "int16 (3)",
            SampleFormat::Ieee => "IEEE float (5)",
            SampleFormat::Int8 => "int8 (8)",
        }
    }
}

/// A reading or writing failure: one line naming the file and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for Error {}

fn err(path: &Path, reason: impl Into<String>) -> Error {
    Error { path: path.to_path_buf(), reason: reason.into() }
}

/// The trace-header fields we interpret (SEG-Y rev1 byte positions).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct TraceHeader {
    /// bytes 1–4
    pub sequence_line: i32,
    /// bytes 5–8
    pub sequence_file: i32,
    /// bytes 9–12
    pub field_record: i32,
    /// bytes 21–24
    pub cdp: i32,
    /// bytes 29–30: trace identification code (1 live, 2 dead, 0 unknown)
    pub trace_id: i16,
    /// bytes 37–40
    pub offset: i32,
    /// bytes 71–72: applied to the coordinates (negative: divide)
    pub coord_scalar: i16,
    /// bytes 73–80
    pub source_x: f64,
    pub source_y: f64,
    /// bytes 81–88
    pub group_x: f64,
    pub group_y: f64,
    /// bytes 109–110, ms
    pub delay_ms: i16,
    /// bytes 115–116
    pub ns: u16,
    /// bytes 117–118, µs
    pub dt_us: u16,
    /// bytes 181–188
    pub cdp_x: f64,
    pub cdp_y: f64,
    /// bytes 189–192
    pub inline: i32,
    /// bytes 193–196
    pub crossline: i32,
}

/// An open SEG-Y or SU file. The headers are parsed from a memory map that is dropped once
/// `open` returns; traces are then read with positioned reads (`pread`), a window at a time, so
/// a file larger than memory streams and no page of the file counts towards resident memory.
pub struct SeismicFile {
    pub path: PathBuf,
    pub kind: Kind,
    pub endian: Endian,
    pub format: SampleFormat,
    /// SEG-Y revision (0, 1, 2); None for SU.
    pub revision: Option<u16>,
    pub textual_header: String,
    pub textual_ebcdic: bool,
    pub extended_headers: usize,
    pub samples: usize,
    pub dt_us: u32,
    pub warnings: Vec<String>,
    /// Byte offset of the first trace header; traces follow back to back (every trace has
    /// `samples` samples, so trace `i` starts at `first_trace_at + i * trace_bytes()`).
    first_trace_at: usize,
    trace_count: usize,
    file: Option<std::fs::File>,
}

fn be_or_le_i16(b: &[u8], e: Endian) -> i16 {
    let a = [b[0], b[1]];
    match e {
        Endian::Big => i16::from_be_bytes(a),
        Endian::Little => i16::from_le_bytes(a),
    }
}

fn be_or_le_i32(b: &[u8], e: Endian) -> i32 {
    let a = [b[0], b[1], b[2], b[3]];
    match e {
        Endian::Big => i32::from_be_bytes(a),
        Endian::Little => i32::from_le_bytes(a),
    }
}

/// IBM System/360 single precision → f32: sign, base-16 exponent biased by 64, 24-bit fraction.
pub fn ibm_to_f32(bits: u32) -> f32 {
    let sign = if bits >> 31 == 1 { -1.0 } else { 1.0 };
    let exponent = ((bits >> 24) & 0x7f) as i32 - 64;
    let fraction = (bits & 0x00ff_ffff) as f64 / 16_777_216.0;
    (sign * fraction * 16f64.powi(exponent)) as f32
}

/// f32 → IBM single precision (truncating the fraction, as most writers do).
pub fn f32_to_ibm(v: f32) -> u32 {
    if v == 0.0 || !v.is_finite() {
        return 0;
    }
    let sign = if v < 0.0 { 0x8000_0000u32 } else { 0 };
    let mut x = v.abs() as f64;
    let mut exponent = 64i32;
    while x >= 1.0 {
        x /= 16.0;
        exponent += 1;
    }
    while x < 1.0 / 16.0 {
        x *= 16.0;
        exponent -= 1;
    }
    if exponent > 127 {
        return sign | 0x7fff_ffff;
    }
    if exponent < 0 {
        return 0;
    }
    let fraction = (x * 16_777_216.0) as u32 & 0x00ff_ffff;
    sign | ((exponent as u32) << 24) | fraction
}

/// EBCDIC (code page 037) → ASCII for the printable range; anything else becomes a space.
fn ebcdic_to_ascii(b: u8) -> char {
    const TABLE: &[(u8, char)] = &[
        (0x40, ' '),
        (0x4b, '.'),
        (0x4c, '<'),
        (0x4d, '('),
        (0x4e, '+'),
        (0x4f, '|'),
        (0x50, '&'),
        (0x5a, '!'),
        (0x5b, '$'),
        (0x5c, '*'),
        (0x5d, ')'),
        (0x5e, ';'),
        (0x60, '-'),
        (0x61, '/'),
        (0x6b, ','),
        (0x6c, '%'),
        (0x6d, '_'),
        (0x6e, '>'),
        (0x6f, '?'),
        (0x7a, ':'),
        (0x7b, '#'),
        (0x7c, '@'),
        (0x7d, '\''),
        (0x7e, '='),
        (0x7f, '"'),
    ];
    match b {
        0x81..=0x89 => (b'a' + (b - 0x81)) as char,
        0x91..=0x99 => (b'j' + (b - 0x91)) as char,
        0xa2..=0xa9 => (b's' + (b - 0xa2)) as char,
        0xc1..=0xc9 => (b'A' + (b - 0xc1)) as char,
        0xd1..=0xd9 => (b'J' + (b - 0xd1)) as char,
        0xe2..=0xe9 => (b'S' + (b - 0xe2)) as char,
        0xf0..=0xf9 => (b'0' + (b - 0xf0)) as char,
        _ => TABLE.iter().find(|(k, _)| *k == b).map_or(' ', |(_, c)| *c),
    }
}

/// Reads 3200 bytes of textual header as 40 lines of 80 characters.
fn textual(bytes: &[u8]) -> (String, bool) {
    // EBCDIC text is full of 0x40 (its space) and bytes ≥ 0x80 (its letters and digits);
    // ASCII text of 0x20 spaces and bytes below 0x80.
    let count = |p: &dyn Fn(u8) -> bool| bytes.iter().filter(|&&b| p(b)).count();
    let ebcdic = count(&|b| b == 0x40) > count(&|b| b == 0x20) || count(&|b| b >= 0x80) > bytes.len() / 10;
    let chars: Vec<char> = bytes
        .iter()
        .map(|&b| {
            if ebcdic {
                ebcdic_to_ascii(b)
            } else if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                ' '
            }
        })
        .collect();
    let lines: Vec<String> =
        chars.chunks(80).map(|l| l.iter().collect::<String>().trim_end().to_string()).collect();
    (lines.join("\n").trim_end().to_string(), ebcdic)
}

impl SeismicFile {
    /// Opens a SEG-Y file, or an SU file when the name ends in `.su`.
    pub fn open(path: &Path) -> Result<SeismicFile, Error> {
        if path.is_dir() {
            return Err(err(path, "is a directory, not a data file"));
        }
        let file = std::fs::File::open(path).map_err(|e| err(path, format!("cannot open: {e}")))?;
        let len = file.metadata().map_err(|e| err(path, e.to_string()))?.len() as usize;
        if len == 0 {
            return Err(err(path, "the file is empty"));
        }
        // SAFETY: the map is read-only and lives as long as `SeismicFile`; another process
        // truncating the file while we read it is outside what a file reader can prevent.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| err(path, format!("cannot map: {e}")))?;
        let su = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("su"));
        let mut f = if su { Self::open_su(path, &map)? } else { Self::open_segy(path, &map)? };
        drop(map);
        f.file = Some(file);
        Ok(f)
    }

    fn open_segy(path: &Path, b: &[u8]) -> Result<SeismicFile, Error> {
        if b.len() < 3600 {
            return Err(err(
                path,
                format!("too short for a SEG-Y file: {} bytes, the headers alone take 3600", b.len()),
            ));
        }
        let (textual_header, textual_ebcdic) = textual(&b[..3200]);
        let bin = &b[3200..3600];
        let mut endian = None;
        for e in [Endian::Big, Endian::Little] {
            if SampleFormat::from_code(be_or_le_i16(&bin[24..26], e) as i32).is_some() {
                endian = Some(e);
                break;
            }
        }
        let Some(endian) = endian else {
            let code = be_or_le_i16(&bin[24..26], Endian::Big);
            return Err(err(
                path,
                format!(
                    "unsupported or unreadable sample format code {code} at byte 3225 (read either way round)"
                ),
            ));
        };
        let code = be_or_le_i16(&bin[24..26], endian) as i32;
        let format =
            SampleFormat::from_code(code).ok_or_else(|| err(path, format!("sample format {code}")))?;
        let mut warnings = vec![];
        let rev_raw = be_or_le_i16(&bin[300..302], endian) as u16;
        // 0x0100 is rev 1.0; some writers (and byte-swapped copies) store the major number alone.
        let revision = if rev_raw >= 0x0100 { rev_raw >> 8 } else { rev_raw };
        let ext_raw = be_or_le_i16(&bin[304..306], endian);
        // Extended headers are a rev-1 feature, but rev-0 writers (segyio among them) set the
        // count too; honoured whenever given.
        let extended_headers = ext_raw.max(0) as usize;
        if ext_raw < 0 {
            warnings
                .push(format!("binary header says {ext_raw} extended textual headers (variable); read as 0"));
        }
        let mut ns_bin = be_or_le_i16(&bin[20..22], endian) as u16 as usize;
        if ns_bin == 0 && revision >= 2 {
            ns_bin = be_or_le_i32(&bin[68..72], endian).max(0) as usize;
        }
        let mut dt_us = be_or_le_i16(&bin[16..18], endian) as u16 as u32;
        let data_start = 3600 + 3200 * extended_headers;
        if b.len() < data_start {
            return Err(err(
                path,
                format!(
                    "truncated: {extended_headers} extended textual headers need {data_start} bytes, the file has {}",
                    b.len()
                ),
            ));
        }
        let bps = format.bytes();
        let first = (b.len() >= data_start + 240)
            .then(|| parse_trace_header(&b[data_start..data_start + 240], endian));
        let ns_trace = first.as_ref().map_or(0, |h| h.ns as usize);
        if dt_us == 0 {
            dt_us = first.as_ref().map_or(0, |h| h.dt_us as u32);
        }
        let data = b.len() - data_start;
        let fits = |ns: usize| ns > 0 && data.is_multiple_of(240 + ns * bps);
        let fixed_length = |samples: usize| (samples, data / (240 + samples * bps));
        let (samples, trace_count) = if data == 0 {
            (ns_bin, 0)
        } else if fits(ns_bin) {
            if ns_trace != 0 && ns_trace != ns_bin {
                warnings.push(format!(
                    "trace headers say {ns_trace} samples but the binary header says {ns_bin}; {ns_bin} fits the file size, so it is used"
                ));
            }
            fixed_length(ns_bin)
        } else if fits(ns_trace) {
            warnings.push(format!(
                "binary header says {ns_bin} samples per trace but {ns_trace} (trace headers) fits the file size, so it is used"
            ));
            fixed_length(ns_trace)
        } else if ns_bin == 0 && ns_trace == 0 && data.is_multiple_of(240) {
            warnings.push("traces have no samples (headers only)".into());
            (0, data / 240)
        } else if ns_bin == 0 && ns_trace == 0 {
            return Err(err(
                path,
                "neither the binary header nor the first trace header gives a sample count",
            ));
        } else {
            // Variable-length traces (rev 1 with fixed-length flag 0) or truncation: walk.
            let walked = walk(b, data_start, endian, bps, ns_bin);
            match walked.outcome {
                Walk::Whole => {
                    warnings.push("traces read one by one from their own sample counts".into());
                    (walked.samples, walked.count)
                }
                Walk::Mismatch(m) => return Err(err(path, m.describe())),
                // Which count the file was meant to have: the first trace header's, else the
                // binary header's. The message is in those terms, so it never quotes sample
                // bytes as if they were a trace header.
                Walk::Short(short) => {
                    let (ns, from) = if ns_trace > 0 {
                        (ns_trace, "first trace header")
                    } else {
                        (ns_bin, "binary header")
                    };
                    return Err(err(path, truncation(data_start, b.len(), ns, bps, format, from, &short)));
                }
            }
        };
        if dt_us == 0 {
            warnings.push("no sample interval in the binary or trace headers".into());
        }
        Ok(SeismicFile {
            path: path.to_path_buf(),
            kind: Kind::Segy,
            endian,
            format,
            revision: Some(revision),
            textual_header,
            textual_ebcdic,
            extended_headers,
            samples,
            dt_us,
            warnings,
            first_trace_at: data_start,
            trace_count,
            file: None,
        })
    }

    fn open_su(path: &Path, b: &[u8]) -> Result<SeismicFile, Error> {
        if b.len() < 240 {
            return Err(err(
                path,
                format!("too short for a Seismic Unix file: {} bytes, one trace header takes 240", b.len()),
            ));
        }
        // SU has no file header: the byte order is the one whose trace headers walk the file
        // exactly. Each trace is read by its own count, so traces of differing lengths are
        // found instead of being read as header bytes.
        let walks = [Endian::Big, Endian::Little].map(|e| (e, walk(b, 0, e, 4, 0)));
        let whole = walks.iter().find(|(_, w)| !matches!(w.outcome, Walk::Short(_)));
        let Some((endian, walked)) = whole.or_else(|| walks.iter().max_by_key(|(_, w)| w.count)) else {
            return Err(err(path, "not a Seismic Unix file"));
        };
        match &walked.outcome {
            Walk::Whole if walked.samples == 0 => {
                return Err(err(path, "not a Seismic Unix file: the first trace header says 0 samples"));
            }
            Walk::Whole => {}
            Walk::Mismatch(m) => return Err(err(path, m.describe())),
            Walk::Short(short) => {
                let ns = parse_trace_header(&b[..240], *endian).ns as usize;
                if walked.count == 0 || ns == 0 {
                    return Err(err(
                        path,
                        format!(
                            "not a Seismic Unix file: no byte order makes the first trace header's sample count fit the file's {} bytes",
                            b.len()
                        ),
                    ));
                }
                return Err(err(
                    path,
                    truncation(0, b.len(), ns, 4, SampleFormat::Ieee, "first trace header", short),
                ));
            }
        }
        let dt_us = parse_trace_header(&b[..240], *endian).dt_us as u32;
        Ok(SeismicFile {
            path: path.to_path_buf(),
            kind: Kind::Su,
            endian: *endian,
            format: SampleFormat::Ieee,
            revision: None,
            textual_header: String::new(),
            textual_ebcdic: false,
            extended_headers: 0,
            samples: walked.samples,
            dt_us,
            warnings: vec![],
            first_trace_at: 0,
            trace_count: walked.count,
            file: None,
        })
    }

    pub fn traces(&self) -> usize {
        self.trace_count
    }

    /// Bytes of one trace: its 240-byte header and its samples.
    pub fn trace_bytes(&self) -> usize {
        240 + self.samples * self.format.bytes()
    }

    /// Byte offset of trace `i`'s header.
    pub fn trace_offset(&self, i: usize) -> usize {
        self.first_trace_at + i * self.trace_bytes()
    }

    /// Reads `buf.len()` bytes at byte `at` of the file (a positioned read: no shared cursor,
    /// nothing mapped).
    pub fn read_at(&self, at: usize, buf: &mut [u8]) -> Result<(), Error> {
        use std::os::unix::fs::FileExt;
        let file = self.file.as_ref().ok_or_else(|| err(&self.path, "the file is not open"))?;
        file.read_exact_at(buf, at as u64)
            .map_err(|e| err(&self.path, format!("cannot read {} bytes at byte {at}: {e}", buf.len())))
    }

    /// Reads traces `first..first + count` (headers and samples, as stored) into `buf`, which
    /// is resized to `count * trace_bytes()`.
    pub fn read_raw_traces(&self, first: usize, count: usize, buf: &mut Vec<u8>) -> Result<(), Error> {
        if first + count > self.traces() {
            return Err(err(
                &self.path,
                format!("traces {}..{} asked for, the file has {}", first + 1, first + count, self.traces()),
            ));
        }
        buf.resize(count * self.trace_bytes(), 0);
        self.read_at(self.trace_offset(first), buf)
    }

    /// The trace-header fields of a raw 240-byte header of this file.
    pub fn parse_header(&self, raw: &[u8]) -> TraceHeader {
        parse_trace_header(raw, self.endian)
    }

    /// Decodes the samples of one raw trace (header and samples, as from
    /// [`read_raw_traces`](Self::read_raw_traces)) into `out` (length `samples`), in f64: int32
    /// exactly (f32 holds integers only up to ±2^24).
    pub fn decode_samples(&self, raw_trace: &[u8], out: &mut [f64]) {
        let bps = self.format.bytes();
        let raw = raw_trace.get(240..).unwrap_or(&[]);
        for (o, c) in out.iter_mut().zip(raw.chunks_exact(bps)) {
            *o = match self.format {
                SampleFormat::Int32 => be_or_le_i32(c, self.endian) as f64,
                f => decode(c, f, self.endian) as f64,
            };
        }
    }

    /// Encodes `values` (length `samples`) into the sample bytes of one raw trace (its header
    /// untouched), in this file's format and byte order; integers rounded and clamped.
    pub fn encode_samples(&self, values: &[f64], raw_trace: &mut [u8]) {
        let bps = self.format.bytes();
        let Some(raw) = raw_trace.get_mut(240..) else { return };
        for (c, &v) in raw.chunks_exact_mut(bps).zip(values) {
            write::encode(v, self.format, self.endian, c);
        }
    }

    pub fn trace_header(&self, i: usize) -> Option<TraceHeader> {
        if i >= self.traces() {
            return None;
        }
        let mut raw = [0u8; 240];
        self.read_at(self.trace_offset(i), &mut raw).ok()?;
        Some(parse_trace_header(&raw, self.endian))
    }

    /// Decodes trace `i` into `out` (length `samples`).
    pub fn read_trace(&self, i: usize, out: &mut [f32]) -> Option<()> {
        let mut raw = Vec::new();
        self.read_raw_traces(i, 1, &mut raw).ok()?;
        let bps = self.format.bytes();
        for (o, c) in out.iter_mut().zip(raw[240..].chunks_exact(bps)) {
            *o = decode(c, self.format, self.endian);
        }
        Some(())
    }

    /// The whole file as a `[traces, samples]` section in f64: int32 samples exactly (f32
    /// holds integers only up to ±2^24), every other format as [`section`](Self::section).
    pub fn section_f64(&self) -> ndarray::Array2<f64> {
        let mut a = ndarray::Array2::zeros((self.traces(), self.samples));
        let mut raw = Vec::new();
        for (i, mut row) in a.rows_mut().into_iter().enumerate() {
            if self.read_raw_traces(i, 1, &mut raw).is_ok()
                && let Some(out) = row.as_slice_mut()
            {
                self.decode_samples(&raw, out);
            }
        }
        a
    }

    /// The whole file as a `[traces, samples]` section; a file without traces or samples is
    /// an error here (there is nothing to run a model on), though `open` accepts it.
    pub fn section(&self) -> Result<ndarray::Array2<f32>, Error> {
        if self.traces() == 0 || self.samples == 0 {
            return Err(err(
                &self.path,
                format!(
                    "empty section: {} traces of {} samples, nothing to read",
                    self.traces(),
                    self.samples
                ),
            ));
        }
        let mut a = ndarray::Array2::zeros((self.traces(), self.samples));
        for (i, mut row) in a.rows_mut().into_iter().enumerate() {
            if let Some(s) = row.as_slice_mut() {
                self.read_trace(i, s);
            }
        }
        Ok(a)
    }
}

/// How walking the traces by their own sample counts ended.
enum Walk {
    /// The traces end exactly where the file does, all with one count.
    Whole,
    /// The traces end where the file does, but their counts differ.
    Mismatch(Mismatch),
    /// The file ends inside a trace (or a header says more samples than the file holds): the
    /// trace whose header or samples do not fit, and its count (0 when its header is cut).
    Short(Mismatch),
}

#[derive(Clone, Copy)]
struct Mismatch {
    trace: usize,
    at: usize,
    ns: usize,
    first: usize,
}

impl Mismatch {
    fn describe(&self) -> String {
        format!(
            "trace {} at byte {} has {} samples but trace 1 has {}: every trace of a section needs the same count",
            self.trace, self.at, self.ns, self.first
        )
    }
}

struct Walked {
    /// How many whole traces were walked (also when the walk came up short).
    count: usize,
    samples: usize,
    outcome: Walk,
}

/// Walks traces from `start` by their own header sample counts (a count of 0 means
/// `fallback`, the binary header's). Never reads past `b`; the traces that fit are counted
/// even when the walk comes up short, to tell which byte order went further.
fn walk(b: &[u8], start: usize, endian: Endian, bps: usize, fallback: usize) -> Walked {
    let mut at = start;
    let mut count = 0usize;
    let mut first = None;
    let mut mismatch = None;
    while at < b.len() {
        let short = |ns: usize, count: usize| {
            let trace = count + 1;
            let outcome = Walk::Short(Mismatch { trace, at, ns, first: first.unwrap_or(ns) });
            Walked { count, samples: first.unwrap_or(0), outcome }
        };
        let Some(header) = b.get(at..at + 240) else { return short(0, count) };
        let ns = match parse_trace_header(header, endian).ns as usize {
            0 => fallback,
            n => n,
        };
        let end = at + 240 + ns * bps;
        if end > b.len() {
            return short(ns, count);
        }
        match first {
            None => first = Some(ns),
            Some(f) if f != ns && mismatch.is_none() => {
                mismatch = Some(Mismatch { trace: count + 1, at, ns, first: f });
            }
            _ => {}
        }
        count += 1;
        at = end;
    }
    let outcome = match mismatch {
        Some(m) => Walk::Mismatch(m),
        None => Walk::Whole,
    };
    Walked { count, samples: first.unwrap_or(0), outcome }
}

/// The message for data that ends inside a trace of `ns` samples: which trace, at which byte,
/// how many whole traces come before it. When the data is a whole number of such traces, the
/// file is not short: a later trace header (`short`) claims another count.
fn truncation(
    start: usize,
    len: usize,
    ns: usize,
    bps: usize,
    format: SampleFormat,
    from: &str,
    short: &Mismatch,
) -> String {
    let trace_len = 240 + ns * bps;
    if (len - start).is_multiple_of(trace_len) && short.ns != 0 && short.ns != ns {
        let first = Mismatch { first: ns, ..*short };
        return first.describe();
    }
    let whole = (len - start) / trace_len;
    let at = start + whole * trace_len;
    format!(
        "truncated: trace {} at byte {at} needs {trace_len} bytes ({ns} samples of {}, from the {from}) but the file ends at byte {len}, {} bytes into it; {whole} whole traces before it",
        whole + 1,
        format.name(),
        len - at
    )
}

fn decode(c: &[u8], f: SampleFormat, e: Endian) -> f32 {
    let u32_of = |c: &[u8]| {
        let a = [c[0], c[1], c[2], c[3]];
        match e {
            Endian::Big => u32::from_be_bytes(a),
            Endian::Little => u32::from_le_bytes(a),
        }
    };
    match f {
        SampleFormat::Ibm => ibm_to_f32(u32_of(c)),
        SampleFormat::Ieee => f32::from_bits(u32_of(c)),
        SampleFormat::Int32 => u32_of(c) as i32 as f32,
        SampleFormat::Int16 => be_or_le_i16(c, e) as f32,
        SampleFormat::Int8 => c[0] as i8 as f32,
    }
}

fn parse_trace_header(h: &[u8], e: Endian) -> TraceHeader {
    let i32_at = |p: usize| be_or_le_i32(&h[p - 1..p + 3], e);
    let i16_at = |p: usize| be_or_le_i16(&h[p - 1..p + 1], e);
    let scalar = i16_at(71);
    let scale = |v: i32| match scalar {
        0 => v as f64,
        s if s > 0 => v as f64 * s as f64,
        s => v as f64 / -(s as f64),
    };
    TraceHeader {
        sequence_line: i32_at(1),
        sequence_file: i32_at(5),
        field_record: i32_at(9),
        cdp: i32_at(21),
        trace_id: i16_at(29),
        offset: i32_at(37),
        coord_scalar: scalar,
        source_x: scale(i32_at(73)),
        source_y: scale(i32_at(77)),
        group_x: scale(i32_at(81)),
        group_y: scale(i32_at(85)),
        delay_ms: i16_at(109),
        ns: i16_at(115) as u16,
        dt_us: i16_at(117) as u16,
        cdp_x: scale(i32_at(181)),
        cdp_y: scale(i32_at(185)),
        inline: i32_at(189),
        crossline: i32_at(193),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibm_known_values() {
        // From the IBM format definition: 0x42640000 = 100.0; 0xC276A000 = −118.625.
        assert_eq!(ibm_to_f32(0x4264_0000), 100.0);
        assert_eq!(ibm_to_f32(0xC276_A000), -118.625);
        assert_eq!(f32_to_ibm(100.0), 0x4264_0000);
        assert_eq!(f32_to_ibm(-118.625), 0xC276_A000);
        assert_eq!(f32_to_ibm(0.0), 0);
    }

    #[test]
    fn ebcdic_letters_and_digits() {
        let (t, ebcdic) =
            textual(&[0xC3, 0xF0, 0xF1, 0x40, 0xC8, 0x85, 0x93, 0x93, 0x96].repeat(356)[..3200]);
        assert!(ebcdic);
        assert!(t.starts_with("C01 Hello"), "{t}");
    }
}
