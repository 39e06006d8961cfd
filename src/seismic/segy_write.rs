//! SEG-Y and Seismic Unix writing: a copy of a file with its samples replaced, in its own
//! format or converted between SEG-Y and SU (see docs/outputs.md). Every file is written
//! through `output::write_atomically`.

use super::{Endian, Error, Kind, SampleFormat, SeismicFile, err, f32_to_ibm};
use std::path::Path;

impl SeismicFile {
    /// Writes a copy of this file with every header byte kept and the samples replaced by
    /// `section` (`[traces, samples]`, same geometry), in the same format and byte order.
    /// Integer formats are rounded and clamped. Written atomically.
    pub fn write_like<A: Copy + Into<f64>>(
        &self,
        out: &Path,
        section: &ndarray::Array2<A>,
    ) -> Result<(), Error> {
        if section.dim() != (self.traces(), self.samples) {
            return Err(err(
                out,
                format!(
                    "section is {:?} but {} has {} traces of {} samples",
                    section.dim(),
                    self.path.display(),
                    self.traces(),
                    self.samples
                ),
            ));
        }
        let mut out_file = self.copy_to_temp(out)?;
        let mut raw = Vec::new();
        let mut values = vec![0f64; self.samples];
        for i in 0..self.traces() {
            self.read_raw_traces(i, 1, &mut raw)?;
            for (v, &a) in values.iter_mut().zip(section.row(i)) {
                *v = a.into();
            }
            self.encode_samples(&values, &mut raw);
            write_at(&mut out_file, out, self.trace_offset(i), &raw)?;
        }
        out_file.commit().map_err(|e| err(out, e))
    }

    /// Starts an output that is a byte-for-byte copy of this file (copied in kernel space,
    /// never held), in a temporary file beside `out`; traces are then replaced in place with
    /// [`write_at`] and the file renamed by `commit`.
    pub fn copy_to_temp(&self, out: &Path) -> Result<crate::output::AtomicFile, Error> {
        let mut temp = crate::output::AtomicFile::create(out).map_err(|e| err(out, e))?;
        let mut input =
            std::fs::File::open(&self.path).map_err(|e| err(&self.path, format!("cannot open: {e}")))?;
        std::io::copy(&mut input, temp.file()).map_err(|e| err(out, format!("cannot write: {e}")))?;
        Ok(temp)
    }
}

/// Writes `bytes` at byte `at` of an output being written.
pub fn write_at(
    out_file: &mut crate::output::AtomicFile,
    out: &Path,
    at: usize,
    bytes: &[u8],
) -> Result<(), Error> {
    use std::os::unix::fs::FileExt;
    out_file
        .file()
        .write_all_at(bytes, at as u64)
        .map_err(|e| err(out, format!("cannot write {} bytes at byte {at}: {e}", bytes.len())))
}

impl SeismicFile {
    /// Writes `section` (`[traces, samples]`, this file's geometry) as `kind`: with
    /// [`write_like`](Self::write_like) when that is this file's own format, else converted:
    ///
    /// - SU → SEG-Y: a minimal valid SEG-Y — an ASCII textual header saying where the data
    ///   came from, a binary header (interval, samples per trace, IEEE float samples, fixed
    ///   length; rev 1 big-endian, or rev 2 with its byte-order marker when the SU file was
    ///   little-endian, so no header field has to be re-encoded), then the traces.
    /// - SEG-Y → SU: the traces only (the textual and binary headers are dropped), samples as
    ///   IEEE float in the SEG-Y file's byte order.
    ///
    /// Both ways each trace header keeps its bytes 1–180 (the fields SEG-Y and SU share, in
    /// the same positions), with the sample count and interval set; bytes 181–240 mean different
    /// things in the two formats and are zeroed.
    pub fn write_as<A: Copy + Into<f64>>(
        &self,
        out: &Path,
        kind: Kind,
        section: &ndarray::Array2<A>,
    ) -> Result<(), Error> {
        if kind == self.kind {
            return self.write_like(out, section);
        }
        if section.dim() != (self.traces(), self.samples) {
            return Err(err(
                out,
                format!(
                    "section is {:?} but the input has {} traces of {} samples",
                    section.dim(),
                    self.traces(),
                    self.samples
                ),
            ));
        }
        let e = self.endian;
        let ns = u16::try_from(self.samples).map_err(|_| {
            err(
                out,
                format!(
                    "traces of {} samples do not fit a trace header's sample count (at most 65535)",
                    self.samples
                ),
            )
        })?;
        let dt = u16::try_from(self.dt_us).unwrap_or(0);
        let put16 = |v: u16, to: &mut [u8]| {
            to.copy_from_slice(&match e {
                Endian::Big => v.to_be_bytes(),
                Endian::Little => v.to_le_bytes(),
            })
        };
        let mut bytes = Vec::with_capacity(3600 + self.traces() * (240 + 4 * self.samples));
        if kind == Kind::Segy {
            let from = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let lines = [
                "SEG-Y written by geonetc infer".to_string(),
                format!("converted from the Seismic Unix file {from}"),
                format!("{} traces of {ns} samples, interval {dt} us, IEEE float samples", self.traces()),
                "trace header bytes 1-180 copied from the SU file".to_string(),
            ];
            let mut text = String::new();
            for i in 0..40 {
                let body = if i == 39 {
                    "END TEXTUAL HEADER".to_string()
                } else {
                    lines.get(i).cloned().unwrap_or_default()
                };
                let line: String =
                    format!("C{:>2} {body}", i + 1).chars().filter(char::is_ascii).take(80).collect();
                text.push_str(&format!("{line:<80}"));
            }
            bytes.extend_from_slice(text.as_bytes());
            let mut bin = [0u8; 400];
            put16(dt, &mut bin[16..18]);
            put16(ns, &mut bin[20..22]);
            put16(SampleFormat::Ieee.code(), &mut bin[24..26]);
            match e {
                Endian::Big => put16(0x0100, &mut bin[300..302]),
                Endian::Little => {
                    put16(0x0200, &mut bin[300..302]);
                    bin[96..100].copy_from_slice(&0x0102_0304u32.to_le_bytes());
                }
            }
            put16(1, &mut bin[302..304]);
            bytes.extend_from_slice(&bin);
        }
        for i in 0..self.traces() {
            let mut header = [0u8; 240];
            self.read_at(self.trace_offset(i), &mut header[..180])?;
            put16(ns, &mut header[114..116]);
            put16(dt, &mut header[116..118]);
            bytes.extend_from_slice(&header);
            let mut sample = [0u8; 4];
            for &v in section.row(i) {
                encode(v.into(), SampleFormat::Ieee, e, &mut sample);
                bytes.extend_from_slice(&sample);
            }
        }
        crate::output::write_atomically(out, &bytes).map_err(|e| err(out, e))
    }
}

/// Encodes one sample from f64 (integers rounded and clamped to the format's range; int32
/// exactly, which f32 could not do beyond ±2^24).
pub(super) fn encode(v: f64, f: SampleFormat, e: Endian, out: &mut [u8]) {
    let put = |bits: u32, out: &mut [u8]| {
        let b = match e {
            Endian::Big => bits.to_be_bytes(),
            Endian::Little => bits.to_le_bytes(),
        };
        out.copy_from_slice(&b);
    };
    match f {
        SampleFormat::Ibm => put(f32_to_ibm(v as f32), out),
        SampleFormat::Ieee => put((v as f32).to_bits(), out),
        SampleFormat::Int32 => put(v.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32 as u32, out),
        SampleFormat::Int16 => {
            let x = v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16;
            out.copy_from_slice(&match e {
                Endian::Big => x.to_be_bytes(),
                Endian::Little => x.to_le_bytes(),
            });
        }
        SampleFormat::Int8 => out[0] = v.round().clamp(-128.0, 127.0) as i8 as u8,
    }
}
