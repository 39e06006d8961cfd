//! The geometry of a SEG-Y/SU file from its trace headers, in one pass that never holds
//! samples: inline and crossline numbers (bytes 189 and 193, 4 bytes, by default; any byte and
//! width 2 or 4 by option, as segyio's `iline`/`xline`), ranges and steps, sorting, missing and
//! dead traces (trace identification code 2, bytes 29–30), whether the file is a regular
//! volume (and if not, the traces at fault), and gathers: runs of consecutive traces sharing a
//! header key (field record, byte 9; CDP, byte 21; or any byte).

use super::segy::{Endian, SeismicFile};
use serde::Serialize;
use std::collections::HashMap;

/// A trace-header field: 1-based byte position and width in bytes (2 or 4), signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HeaderField {
    pub byte: usize,
    pub width: usize,
}

impl HeaderField {
    pub const INLINE: HeaderField = HeaderField { byte: 189, width: 4 };
    pub const CROSSLINE: HeaderField = HeaderField { byte: 193, width: 4 };
    pub const FIELD_RECORD: HeaderField = HeaderField { byte: 9, width: 4 };
    pub const CDP: HeaderField = HeaderField { byte: 21, width: 4 };
    /// Trace identification code (2 = dead).
    pub const TRACE_ID: HeaderField = HeaderField { byte: 29, width: 2 };

    /// Parses `BYTE` or `BYTE:WIDTH` (width 2 or 4, default 4), or the names `field-record`
    /// (byte 9), `cdp` (21), `inline` (189), `crossline` (193).
    pub fn parse(text: &str) -> Result<HeaderField, String> {
        let named = match text {
            "field-record" | "fldr" => Some(Self::FIELD_RECORD),
            "cdp" => Some(Self::CDP),
            "inline" | "iline" => Some(Self::INLINE),
            "crossline" | "xline" => Some(Self::CROSSLINE),
            _ => None,
        };
        if let Some(f) = named {
            return Ok(f);
        }
        let (byte, width) = match text.split_once(':') {
            Some((b, w)) => (b, w),
            None => (text, "4"),
        };
        let bad = || {
            format!(
                "`{text}` is not a trace-header field: give BYTE or BYTE:WIDTH (1-based byte, width 2 or 4, e.g. 189 or 17:2), or field-record, cdp, inline, crossline"
            )
        };
        let byte: usize = byte.trim().parse().map_err(|_| bad())?;
        let width: usize = width.trim().parse().map_err(|_| bad())?;
        if !matches!(width, 2 | 4) || byte == 0 || byte + width - 1 > 240 {
            return Err(bad());
        }
        Ok(HeaderField { byte, width })
    }

    /// The field's value in a raw 240-byte trace header.
    pub fn read(self, header: &[u8], endian: Endian) -> i32 {
        let Some(b) = header.get(self.byte - 1..self.byte - 1 + self.width) else { return 0 };
        match (self.width, endian) {
            (2, Endian::Big) => i16::from_be_bytes([b[0], b[1]]) as i32,
            (2, Endian::Little) => i16::from_le_bytes([b[0], b[1]]) as i32,
            (_, Endian::Big) => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            (_, Endian::Little) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }
}

/// Which header fields hold the inline and crossline numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeometryOptions {
    pub inline: HeaderField,
    pub crossline: HeaderField,
}

impl Default for GeometryOptions {
    fn default() -> Self {
        GeometryOptions { inline: HeaderField::INLINE, crossline: HeaderField::CROSSLINE }
    }
}

/// Values along one axis: first and last (in increasing order), the step (the greatest common
/// divisor of the gaps between the distinct values) and how many grid positions that makes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AxisRange {
    pub first: i32,
    pub last: i32,
    pub step: i64,
    pub count: usize,
    /// Distinct values present.
    pub distinct: usize,
}

impl AxisRange {
    /// The grid index of a value present (in i64: numbers may span the whole i32 range).
    pub fn position(&self, v: i32) -> usize {
        ((v as i64 - self.first as i64) / self.step) as usize
    }
    /// The value at grid index `k` (`k < count`, so it lies between `first` and `last`).
    pub fn value(&self, k: usize) -> i32 {
        (self.first as i64 + k as i64 * self.step) as i32
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sorting {
    /// Each inline's traces are together, crosslines in order within it.
    InlineMajor,
    /// Each crossline's traces are together, inlines in order within it.
    CrosslineMajor,
    Unsorted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One inline or one crossline (or no inline/crossline numbers): a 2-D section.
    Line,
    /// A grid of inlines × crosslines, each position at most once.
    Volume,
    /// Inline/crossline numbers that do not make a volume (see `irregular`).
    Irregular,
}

/// What the index found. Traces are numbered from 1 in messages, from 0 in fields.
#[derive(Clone, Debug, Serialize)]
pub struct Geometry {
    pub inline_field: HeaderField,
    pub crossline_field: HeaderField,
    pub layout: Layout,
    pub inlines: Option<AxisRange>,
    pub crosslines: Option<AxisRange>,
    pub sorting: Sorting,
    /// Grid positions without a trace (a volume only).
    pub missing: usize,
    /// The first few missing positions, as [inline, crossline].
    pub missing_first: Vec<[i32; 2]>,
    /// Traces whose identification code (bytes 29–30) is 2, dead.
    pub dead: usize,
    /// The first few dead traces (1-based trace numbers).
    pub dead_first: Vec<usize>,
    /// Why the file is not a regular volume, naming the traces at fault.
    pub irregular: Option<String>,
    /// Each trace's (inline, crossline), for placing it in the grid.
    #[serde(skip)]
    pub keys: Vec<(i32, i32)>,
    /// Whether each trace is dead.
    #[serde(skip)]
    pub dead_traces: Vec<bool>,
}

/// How many examples of missing positions or dead traces a report lists.
const SHOWN: usize = 10;

/// Builds a [`Geometry`] from trace headers pushed in file order.
pub struct GeometryBuilder {
    options: GeometryOptions,
    endian: Endian,
    keys: Vec<(i32, i32)>,
    dead: Vec<bool>,
}

impl GeometryBuilder {
    pub fn new(options: GeometryOptions, endian: Endian) -> GeometryBuilder {
        GeometryBuilder { options, endian, keys: vec![], dead: vec![] }
    }

    /// The next trace's raw 240-byte header.
    pub fn push(&mut self, header: &[u8]) {
        let il = self.options.inline.read(header, self.endian);
        let xl = self.options.crossline.read(header, self.endian);
        self.keys.push((il, xl));
        self.dead.push(HeaderField::TRACE_ID.read(header, self.endian) == 2);
    }

    pub fn finish(self) -> Geometry {
        let GeometryBuilder { options, keys, dead, .. } = self;
        let dead_first: Vec<usize> =
            dead.iter().enumerate().filter(|(_, d)| **d).map(|(i, _)| i + 1).take(SHOWN).collect();
        let dead_count = dead.iter().filter(|d| **d).count();
        let mut g = Geometry {
            inline_field: options.inline,
            crossline_field: options.crossline,
            layout: Layout::Line,
            inlines: axis_range(keys.iter().map(|k| k.0)),
            crosslines: axis_range(keys.iter().map(|k| k.1)),
            sorting: sorting(&keys),
            missing: 0,
            missing_first: vec![],
            dead: dead_count,
            dead_first,
            irregular: None,
            keys: vec![],
            dead_traces: dead,
        };
        let (Some(il), Some(xl)) = (&g.inlines, &g.crosslines) else {
            g.keys = keys;
            return g;
        };
        if il.distinct > 1 && xl.distinct > 1 {
            match volume_check(&keys, il, xl) {
                Ok((missing, missing_first)) => {
                    g.layout = Layout::Volume;
                    g.missing = missing;
                    g.missing_first = missing_first;
                }
                Err(why) => {
                    g.layout = Layout::Irregular;
                    g.irregular = Some(why);
                }
            }
        } else if il.distinct == 1 && xl.distinct == 1 {
            // Every trace at one position: no usable numbers (often all zero), read as a line.
        } else if let Some(why) = duplicates(&keys) {
            // One inline or one crossline: a line, unless positions repeat.
            g.layout = Layout::Irregular;
            g.irregular = Some(why);
        }
        g.keys = keys;
        g
    }
}

impl Geometry {
    /// Indexes `file` in one pass over its trace headers (240 bytes read per trace).
    pub fn index(file: &SeismicFile, options: GeometryOptions) -> Result<Geometry, String> {
        Geometry::index_until(file, options, &|| false)
    }

    /// [`index`](Self::index), polling `stop` every 4096 traces (a header pass over a large
    /// file takes minutes): "interrupted" when it says so.
    pub fn index_until(
        file: &SeismicFile,
        options: GeometryOptions,
        stop: &dyn Fn() -> bool,
    ) -> Result<Geometry, String> {
        let mut b = GeometryBuilder::new(options, file.endian);
        let mut header = [0u8; 240];
        for i in 0..file.traces() {
            if i % 4096 == 0 && stop() {
                return Err("interrupted".into());
            }
            file.read_at(file.trace_offset(i), &mut header).map_err(|e| e.to_string())?;
            b.push(&header);
        }
        Ok(b.finish())
    }

    /// The grid index (inline position, crossline position) of a volume's trace.
    pub fn grid_position(&self, trace: usize) -> Option<(usize, usize)> {
        let (il, xl) = (self.inlines.as_ref()?, self.crosslines.as_ref()?);
        let (i, x) = *self.keys.get(trace)?;
        Some((il.position(i), xl.position(x)))
    }

    /// For a volume: the trace at each grid position, `[inline][crossline]` flattened
    /// (crossline fastest), `None` where a trace is missing.
    pub fn grid(&self) -> Option<Grid> {
        if self.layout != Layout::Volume {
            return None;
        }
        let (il, xl) = (self.inlines.as_ref()?, self.crosslines.as_ref()?);
        let mut traces = vec![None; il.count * xl.count];
        for t in 0..self.keys.len() {
            let (i, x) = self.grid_position(t)?;
            traces[i * xl.count + x] = Some(t);
        }
        Some(Grid { inlines: il.count, crosslines: xl.count, traces })
    }
}

/// A volume's traces by grid position.
pub struct Grid {
    pub inlines: usize,
    pub crosslines: usize,
    /// `[inline][crossline]`, crossline fastest.
    pub traces: Vec<Option<usize>>,
}

impl Grid {
    /// The traces of inline `i` in crossline order (a section along the inline).
    pub fn inline(&self, i: usize) -> Vec<Option<usize>> {
        self.traces[i * self.crosslines..(i + 1) * self.crosslines].to_vec()
    }
    /// The traces of crossline `x` in inline order.
    pub fn crossline(&self, x: usize) -> Vec<Option<usize>> {
        (0..self.inlines).map(|i| self.traces[i * self.crosslines + x]).collect()
    }
}

/// Runs of consecutive traces with the same value of `key`: (first trace, count, value).
pub fn gathers(file: &SeismicFile, key: HeaderField) -> Result<Vec<(usize, usize, i32)>, String> {
    let mut runs: Vec<(usize, usize, i32)> = vec![];
    let mut header = [0u8; 240];
    for i in 0..file.traces() {
        file.read_at(file.trace_offset(i), &mut header).map_err(|e| e.to_string())?;
        let v = key.read(&header, file.endian);
        match runs.last_mut() {
            Some(last) if last.2 == v => last.1 += 1,
            _ => runs.push((i, 1, v)),
        }
    }
    Ok(runs)
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

fn axis_range(values: impl Iterator<Item = i32>) -> Option<AxisRange> {
    let mut distinct: Vec<i32> = values.collect();
    distinct.sort_unstable();
    distinct.dedup();
    let (&first, &last) = (distinct.first()?, distinct.last()?);
    let step = distinct.windows(2).fold(0i64, |g, w| gcd(g, w[1] as i64 - w[0] as i64)).max(1);
    let count = ((last as i64 - first as i64) / step + 1) as usize;
    Some(AxisRange { first, last, step, count, distinct: distinct.len() })
}

/// Inline-major when each inline's traces are contiguous with crosslines monotone within it
/// (the same direction throughout); crossline-major likewise; otherwise unsorted.
fn sorting(keys: &[(i32, i32)]) -> Sorting {
    let major = |outer: &dyn Fn(&(i32, i32)) -> i32, inner: &dyn Fn(&(i32, i32)) -> i32| {
        let mut seen = std::collections::HashSet::new();
        let mut direction = 0i32;
        let mut outer_direction = 0i32;
        for (k, w) in keys.windows(2).enumerate() {
            let (a, b) = (&w[0], &w[1]);
            if k == 0 {
                seen.insert(outer(a));
            }
            if outer(a) == outer(b) {
                let d = inner(b).cmp(&inner(a)) as i32;
                if d == 0 || (direction != 0 && d != direction) {
                    return false;
                }
                direction = d;
            } else {
                let d = outer(b).cmp(&outer(a)) as i32;
                if !seen.insert(outer(b)) || (outer_direction != 0 && d != outer_direction) {
                    return false;
                }
                outer_direction = d;
            }
        }
        true
    };
    let (il, xl) = (|k: &(i32, i32)| k.0, |k: &(i32, i32)| k.1);
    // A single crossline of many inlines passes both tests (one trace per inline): it runs
    // along the crossline, so crossline-major (and a single inline inline-major).
    let single_crossline = keys.iter().all(|k| k.1 == keys[0].1) && keys.iter().any(|k| k.0 != keys[0].0);
    if single_crossline && major(&xl, &il) {
        Sorting::CrosslineMajor
    } else if major(&il, &xl) {
        Sorting::InlineMajor
    } else if major(&xl, &il) {
        Sorting::CrosslineMajor
    } else {
        Sorting::Unsorted
    }
}

/// The first position held by two traces, as a message naming both.
fn duplicates(keys: &[(i32, i32)]) -> Option<String> {
    let mut at: HashMap<(i32, i32), usize> = HashMap::with_capacity(keys.len());
    for (t, k) in keys.iter().enumerate() {
        if let Some(first) = at.insert(*k, t) {
            let count = keys.len() - at.len();
            return Some(format!(
                "traces {} and {} both have inline {} crossline {}{}",
                first + 1,
                t + 1,
                k.0,
                k.1,
                if count > 1 {
                    " (and more repeated positions may follow)".to_string()
                } else {
                    String::new()
                }
            ));
        }
    }
    None
}

/// A grid of inlines × crosslines holding each trace at most once, not mostly empty.
fn volume_check(
    keys: &[(i32, i32)],
    il: &AxisRange,
    xl: &AxisRange,
) -> Result<(usize, Vec<[i32; 2]>), String> {
    if let Some(why) = duplicates(keys) {
        return Err(format!("not a regular volume: {why}"));
    }
    let cells = il.count.saturating_mul(xl.count);
    // A handful of traces scattered over a huge grid is not a volume with missing traces.
    if cells > 4 * keys.len() + 64 {
        return Err(format!(
            "not a regular volume: {} traces on a grid of {} inlines × {} crosslines ({} positions; steps {} and {}) fill only {:.1} % of it",
            keys.len(),
            il.count,
            xl.count,
            cells,
            il.step,
            xl.step,
            100.0 * keys.len() as f64 / cells as f64
        ));
    }
    let mut filled = vec![false; cells];
    for &(i, x) in keys {
        filled[il.position(i) * xl.count + xl.position(x)] = true;
    }
    let missing_first = filled
        .iter()
        .enumerate()
        .filter(|(_, f)| !**f)
        .take(SHOWN)
        .map(|(c, _)| [il.value(c / xl.count), xl.value(c % xl.count)])
        .collect();
    Ok((cells - keys.len(), missing_first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_parse_and_refuse() {
        assert_eq!(HeaderField::parse("189").unwrap(), HeaderField::INLINE);
        assert_eq!(HeaderField::parse("17:2").unwrap(), HeaderField { byte: 17, width: 2 });
        assert_eq!(HeaderField::parse("cdp").unwrap(), HeaderField::CDP);
        for bad in ["0", "239", "17:3", "x", "240:2", ""] {
            assert!(HeaderField::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sorting_and_ranges() {
        let grid: Vec<(i32, i32)> = (0..3).flat_map(|i| (0..4).map(move |x| (10 + 2 * i, 100 + x))).collect();
        assert_eq!(sorting(&grid), Sorting::InlineMajor);
        let mut by_xl = grid.clone();
        by_xl.sort_by_key(|k| (k.1, k.0));
        assert_eq!(sorting(&by_xl), Sorting::CrosslineMajor);
        let mut shuffled = grid.clone();
        shuffled.swap(1, 7);
        assert_eq!(sorting(&shuffled), Sorting::Unsorted);
        let r = axis_range(grid.iter().map(|k| k.0)).unwrap();
        assert_eq!((r.first, r.last, r.step, r.count, r.distinct), (10, 14, 2, 3, 3));
        // Numbers spanning the whole i32 range: no overflow, not a volume.
        let extreme = vec![(i32::MIN, i32::MIN), (i32::MAX, i32::MAX), (i32::MIN, i32::MAX), (0, 0)];
        let mut b = GeometryBuilder::new(GeometryOptions::default(), Endian::Big);
        for (il, xl) in &extreme {
            let mut h = [0u8; 240];
            h[188..192].copy_from_slice(&il.to_be_bytes());
            h[192..196].copy_from_slice(&xl.to_be_bytes());
            b.push(&h);
        }
        let g = b.finish();
        assert_eq!(g.layout, Layout::Irregular);
        assert_eq!(sorting(&extreme), Sorting::Unsorted);
    }
}
