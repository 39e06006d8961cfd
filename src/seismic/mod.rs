//! Seismic data files: SEG-Y and Seismic Unix ([`segy`]), and a format-independent summary
//! ([`inspect`]) of those and `.npy` arrays.

pub mod segy;

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
}

fn stats(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let (mut min, mut max, mut sq, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
    for v in values {
        min = min.min(v);
        max = max.max(v);
        sq += v * v;
        n += 1;
    }
    if n == 0 { (0.0, 0.0, 0.0) } else { (min, max, (sq / n as f64).sqrt()) }
}

/// Reads a SEG-Y, SU or `.npy` file (by extension; SEG-Y otherwise) and summarises it,
/// streaming trace by trace.
pub fn inspect(path: &Path) -> Result<Summary, String> {
    let file = path.display().to_string();
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        let a = crate::runtime::data::read_npy(path)?;
        let shape = a.shape().to_vec();
        let samples = shape.last().copied().unwrap_or(0);
        let traces = a.len().checked_div(samples).unwrap_or(0);
        let (min, max, rms) = stats(a.iter().copied());
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
            warnings: vec![],
            shape: Some(shape),
            textual_header: None,
        });
    }
    let f = segy::SeismicFile::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0f32; f.samples];
    let values = (0..f.traces()).flat_map(|i| {
        f.read_trace(i, &mut buf);
        buf.iter().map(|&v| v as f64).collect::<Vec<_>>()
    });
    let (min, max, rms) = stats(values);
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
        warnings: f.warnings.clone(),
        shape: None,
        textual_header: (!f.textual_header.is_empty()).then(|| f.textual_header.clone()),
    })
}
