//! Seismic data files: SEG-Y and Seismic Unix ([`segy`]), and a format-independent summary
//! ([`inspect`]) of those and `.npy` arrays.

pub mod geometry;
pub mod hygiene;
pub mod npy;
pub mod plot;
pub mod qc;
pub mod qc_stream;
pub mod segy;
pub mod tiling;

use serde::Serialize;
use std::path::Path;

/// What `geonetc inspect` reports about a data file.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub file: String,
    pub format: String,
    pub revision: Option<u16>,
    pub endianness: Option<segy::Endian>,
    pub sample_format: String,
    pub traces: usize,
    pub samples: usize,
    pub dt_us: u32,
    pub min: f64,
    pub max: f64,
    pub rms: f64,
    pub warnings: Vec<String>,
    /// `.npy` only: the array's shape (traces = all but the last axis, samples = the last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub textual_header: Option<String>,
    /// SEG-Y/SU: inline/crossline geometry from the trace headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geometry: Option<geometry::Geometry>,
    /// SEG-Y/SU: how many gathers (runs of consecutive traces sharing the key) by field record
    /// (byte 9) and by CDP (byte 21), for pre-stack data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gathers: Option<GatherCounts>,
}

#[derive(Debug, Serialize)]
pub struct GatherCounts {
    pub field_record: usize,
    pub cdp: usize,
}

/// Counts runs of equal consecutive values, pushed one at a time.
#[derive(Default)]
struct Runs {
    last: Option<i32>,
    count: usize,
}

impl Runs {
    fn push(&mut self, v: i32) {
        if self.last != Some(v) {
            self.count += 1;
            self.last = Some(v);
        }
    }
}

/// Minimum, maximum and RMS of the finite values, and a warning when some are not finite:
/// `f64::min`/`max` skip NaN silently, and a file with NaN samples must not look clean.
#[derive(Default)]
struct Stats {
    min: f64,
    max: f64,
    sq: f64,
    n: usize,
    seen: usize,
    bad: usize,
    first_bad: Option<usize>,
}

impl Stats {
    fn new() -> Stats {
        Stats { min: f64::INFINITY, max: f64::NEG_INFINITY, ..Stats::default() }
    }

    fn push(&mut self, v: f64) {
        let i = self.seen;
        self.seen += 1;
        if !v.is_finite() {
            self.bad += 1;
            self.first_bad.get_or_insert(i);
            return;
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sq += v * v;
        self.n += 1;
    }

    /// `samples` is the trace length, to say where the first bad value is.
    fn finish(self, samples: usize) -> (f64, f64, f64, Option<String>) {
        let bad = self.bad;
        let warning = self.first_bad.map(|i| {
            let (trace, sample) = (i / samples.max(1), i % samples.max(1));
            format!(
                "{bad} sample{} NaN or infinite (the first in trace {}, sample {}); min, max and RMS are of the finite ones",
                if bad == 1 { " is" } else { "s are" },
                trace + 1,
                sample + 1
            )
        });
        let n = self.n;
        let (min, max, rms) =
            if n == 0 { (0.0, 0.0, 0.0) } else { (self.min, self.max, (self.sq / n as f64).sqrt()) };
        (min, max, rms, warning)
    }
}

/// Reads a SEG-Y, SU or `.npy` file (by extension; SEG-Y otherwise) and summarises it,
/// streaming trace by trace.
pub fn inspect(path: &Path) -> Result<Summary, String> {
    inspect_with(path, geometry::GeometryOptions::default(), 64 << 20)
}

/// [`inspect`] with the inline/crossline header fields given, reading SEG-Y/SU in windows of
/// about `window_bytes`: one pass over the file gives values, geometry and gathers together.
pub fn inspect_with(
    path: &Path,
    options: geometry::GeometryOptions,
    window_bytes: usize,
) -> Result<Summary, String> {
    let file = path.display().to_string();
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        let a = npy::read(path)?;
        let shape = a.shape().to_vec();
        let samples = shape.last().copied().unwrap_or(0);
        let traces = a.len().checked_div(samples).unwrap_or(0);
        let mut stats = Stats::new();
        a.iter().for_each(|&v| stats.push(v));
        let (min, max, rms, warning) = stats.finish(samples);
        return Ok(Summary {
            file,
            format: "npy".into(),
            revision: None,
            endianness: None,
            sample_format: "float".into(),
            traces,
            samples,
            dt_us: 0,
            min,
            max,
            rms,
            warnings: warning.into_iter().collect(),
            shape: Some(shape),
            textual_header: None,
            geometry: None,
            gathers: None,
        });
    }
    let f = segy::SeismicFile::open(path).map_err(|e| e.to_string())?;
    let mut stats = Stats::new();
    let mut index = geometry::GeometryBuilder::new(options, f.endian);
    let (mut records, mut cdps) = (Runs::default(), Runs::default());
    let per_window = (window_bytes / f.trace_bytes().max(1)).max(1);
    let mut raw = Vec::new();
    let mut values = vec![0f64; f.samples];
    for first in (0..f.traces()).step_by(per_window) {
        let count = per_window.min(f.traces() - first);
        f.read_raw_traces(first, count, &mut raw).map_err(|e| e.to_string())?;
        for trace in raw.chunks_exact(f.trace_bytes()) {
            let header = &trace[..240];
            index.push(header);
            records.push(geometry::HeaderField::FIELD_RECORD.read(header, f.endian));
            cdps.push(geometry::HeaderField::CDP.read(header, f.endian));
            f.decode_samples(trace, &mut values);
            values.iter().for_each(|&v| stats.push(v));
        }
    }
    let (min, max, rms, warning) = stats.finish(f.samples);
    let mut warnings = f.warnings.clone();
    warnings.extend(warning);
    let geometry = index.finish();
    if let Some(why) = &geometry.irregular {
        warnings.push(why.clone());
    }
    if f.traces() > 1 && geometry.keys.iter().all(|&k| k == (0, 0)) {
        warnings.push(format!(
            "the inline and crossline fields (bytes {} and {}) are 0 in every trace: read as a 2-D line{}",
            options.inline.byte,
            options.crossline.byte,
            if f.revision == Some(0) {
                "; rev 0 files often keep them elsewhere (see --iline and --xline)"
            } else {
                ""
            }
        ));
    }
    Ok(Summary {
        file,
        format: match f.kind {
            segy::Kind::Segy => "SEG-Y".into(),
            segy::Kind::Su => "SU".into(),
        },
        revision: f.revision,
        endianness: Some(f.endian),
        sample_format: f.format.name().into(),
        traces: f.traces(),
        samples: f.samples,
        dt_us: f.dt_us,
        min,
        max,
        rms,
        warnings,
        shape: None,
        textual_header: (!f.textual_header.is_empty()).then(|| f.textual_header.clone()),
        gathers: (f.traces() > 0).then_some(GatherCounts { field_record: records.count, cdp: cdps.count }),
        geometry: (f.traces() > 0).then_some(geometry),
    })
}

pub use tiling::{apply_tiled, apply_tiled_streaming, tile_starts};
