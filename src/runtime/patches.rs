//! Training patches of recorded data by position (docs/seismic.md, "Training on a file"): an
//! index of where each patch lies — cheap, whatever the file's size — and, for a SEG-Y/SU file,
//! the reader that cuts a batch's patches out of the file with positioned reads. The same index
//! cuts patches out of a section held in memory (a 2-D `.npy`), so both give the same patches
//! in the same order.
//!
//! Patches are cut across *strips*: a 2-D line is one strip; a 3-D volume's strips are the runs
//! of present traces of every inline section and of every crossline section, so no patch spans
//! an inline edge or a missing trace. Within a strip a 2-D patch's rows (time) start every
//! `step[0]` samples and its columns every `step[1]` traces, the last flush with each edge
//! (`seismic::tile_starts`); 1-D windows take every trace.

use super::split::{self, Split};
use crate::check::program::Holdout;
use crate::seismic::geometry::{AxisRange, Geometry};
use crate::seismic::segy::SeismicFile;
use ndarray::{ArrayD, IxDyn};
use std::ops::Range;

/// The traces of one strip, in order along it.
#[derive(Clone, Debug, PartialEq)]
pub enum Traces {
    /// `len` consecutive traces from `first` (a 2-D line; an inline of an inline-sorted volume).
    Run { first: usize, len: usize },
    /// Any traces (a crossline of an inline-sorted volume; an unsorted volume).
    List(Vec<usize>),
}

impl Traces {
    fn len(&self) -> usize {
        match self {
            Traces::Run { len, .. } => *len,
            Traces::List(l) => l.len(),
        }
    }
    fn at(&self, k: usize) -> usize {
        match self {
            Traces::Run { first, .. } => first + k,
            Traces::List(l) => l[k],
        }
    }
    /// Consecutive runs become [`Traces::Run`] (read in one positioned read).
    fn from_list(list: Vec<usize>) -> Traces {
        match (list.first(), list.windows(2).all(|w| w[1] == w[0] + 1)) {
            (Some(&first), true) => Traces::Run { first, len: list.len() },
            _ => Traces::List(list),
        }
    }
}

/// A run of traces patches are cut across, and where it lies along the validation split's axis
/// (the traces of a 2-D line, the inlines of a volume).
#[derive(Clone, Debug, PartialEq)]
pub struct Strip {
    pub traces: Traces,
    /// Position of the strip's first trace along the split axis.
    pub split_start: usize,
    /// The strip runs along the split axis (a line; a crossline section of a volume), or
    /// across it (an inline section: every trace at `split_start`).
    pub along_split: bool,
}

/// What the split axis counts, for messages and for `holdout`.
#[derive(Clone, Debug, PartialEq)]
pub enum SplitAxis {
    /// The traces of a 2-D line.
    Traces,
    /// The inlines of a volume (their header numbers).
    Inlines(AxisRange),
}

/// Where every patch lies: strips, the patch size and steps.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchIndex {
    strips: Vec<Strip>,
    /// `[time samples, traces]`; traces = 1 for 1-D windows.
    pub size: [usize; 2],
    step: [usize; 2],
    /// Samples per trace.
    samples: usize,
    /// 1-D windows: each trace's windows together (trace-major); 2-D: row-major per strip.
    trace_major: bool,
    /// `ends[k]`: patches in strips `0..=k`.
    ends: Vec<usize>,
    /// Length of the split axis, and what it counts.
    pub split_extent: usize,
    pub split_axis: SplitAxis,
}

/// How many tiles of `tile` every `step` cover `n` (`tile_starts(n, tile, step).len()`), and
/// the `k`-th origin; `n ≥ tile`.
fn tile_count(n: usize, tile: usize, step: usize) -> usize {
    if n <= tile {
        return 1;
    }
    let step = step.max(1);
    let regular = (n - tile) / step + 1;
    regular + usize::from(!(n - tile).is_multiple_of(step))
}
fn tile_origin(k: usize, n: usize, tile: usize, step: usize) -> usize {
    (k * step.max(1)).min(n.saturating_sub(tile))
}

impl PatchIndex {
    /// Patches of `size` every `step` (`[rows, traces]`; 1-D windows: `[n, 1]` every `[s, 1]`)
    /// across `strips` of traces of `samples` samples. Strips narrower than a patch are left out.
    pub fn new(
        strips: Vec<Strip>,
        samples: usize,
        size: [usize; 2],
        step: [usize; 2],
        trace_major: bool,
        split: (usize, SplitAxis),
    ) -> PatchIndex {
        let strips: Vec<Strip> = strips.into_iter().filter(|s| s.traces.len() >= size[1]).collect();
        let rows = if samples >= size[0] { tile_count(samples, size[0], step[0]) } else { 0 };
        let mut ends = Vec::with_capacity(strips.len());
        let mut total = 0usize;
        for s in &strips {
            total = total.saturating_add(rows.saturating_mul(tile_count(s.traces.len(), size[1], step[1])));
            ends.push(total);
        }
        PatchIndex {
            strips,
            size,
            step,
            samples,
            trace_major,
            ends,
            split_extent: split.0,
            split_axis: split.1,
        }
    }

    /// One strip: a 2-D line of `traces` traces.
    pub fn line(
        traces: usize,
        samples: usize,
        size: [usize; 2],
        step: [usize; 2],
        trace_major: bool,
    ) -> PatchIndex {
        let strip =
            Strip { traces: Traces::Run { first: 0, len: traces }, split_start: 0, along_split: true };
        PatchIndex::new(vec![strip], samples, size, step, trace_major, (traces, SplitAxis::Traces))
    }

    /// A volume's inline and crossline sections (2-D patches), or its traces inline by inline
    /// (1-D windows), split into runs of present traces.
    pub fn volume(
        geometry: &Geometry,
        samples: usize,
        size: [usize; 2],
        step: [usize; 2],
        one_d: bool,
    ) -> Option<PatchIndex> {
        let grid = geometry.grid()?;
        let inlines = geometry.inlines.clone()?;
        let mut strips = vec![];
        // Runs of present traces of one section, each starting at its position along it.
        let runs = |section: Vec<Option<usize>>| -> Vec<(usize, Vec<usize>)> {
            let mut out: Vec<(usize, Vec<usize>)> = vec![];
            let mut current: Option<(usize, Vec<usize>)> = None;
            for (k, t) in section.into_iter().enumerate() {
                match (t, current.as_mut()) {
                    (Some(t), Some((_, run))) => run.push(t),
                    (Some(t), None) => current = Some((k, vec![t])),
                    (None, _) => out.extend(current.take()),
                }
            }
            out.extend(current);
            out
        };
        for i in 0..grid.inlines {
            // 1-D windows take these strips too, one trace wide.
            for (_, run) in runs(grid.inline(i)) {
                strips.push(Strip { traces: Traces::from_list(run), split_start: i, along_split: false });
            }
        }
        if !one_d {
            for x in 0..grid.crosslines {
                for (start, run) in runs(grid.crossline(x)) {
                    strips.push(Strip {
                        traces: Traces::from_list(run),
                        split_start: start,
                        along_split: true,
                    });
                }
            }
        }
        let (size, step) = if one_d { ([size[0], 1], [step[0], 1]) } else { (size, step) };
        Some(PatchIndex::new(strips, samples, size, step, one_d, (grid.inlines, SplitAxis::Inlines(inlines))))
    }

    pub fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Patch `i`: its strip, first sample, and first trace's position along the strip.
    pub fn locate(&self, i: usize) -> (&Strip, usize, usize) {
        let k = self.ends.partition_point(|&e| e <= i);
        let j = i - if k == 0 { 0 } else { self.ends[k - 1] };
        let strip = &self.strips[k];
        let width = strip.traces.len();
        let rows = tile_count(self.samples, self.size[0], self.step[0]);
        let cols = tile_count(width, self.size[1], self.step[1]);
        let (ri, ci) = if self.trace_major { (j % rows, j / rows) } else { (j / cols, j % cols) };
        (
            strip,
            tile_origin(ri, self.samples, self.size[0], self.step[0]),
            tile_origin(ci, width, self.size[1], self.step[1]),
        )
    }

    /// The file's traces patch `i` spans, in order, and its first sample.
    pub fn traces_of(&self, i: usize) -> (Vec<usize>, usize) {
        let (strip, r, c) = self.locate(i);
        ((c..c + self.size[1]).map(|k| strip.traces.at(k)).collect(), r)
    }

    /// Patch `i`'s extent along the split axis.
    pub fn split_span(&self, i: usize) -> Range<usize> {
        let (strip, _, c) = self.locate(i);
        if strip.along_split {
            strip.split_start + c..strip.split_start + c + self.size[1]
        } else {
            strip.split_start..strip.split_start + 1
        }
    }

    /// The validation split: the `holdout` range when given (checked against the file), else
    /// seeded blocks along the split axis (`split::split_spans`).
    pub fn split(
        &self,
        holdout: Option<Holdout>,
        fraction: f64,
        seed: u64,
        file: &str,
    ) -> Result<Split, String> {
        let span = |i: usize| self.split_span(i);
        let Some(h) = holdout else {
            let widest = if self.strips.iter().any(|s| s.along_split) { self.size[1] } else { 1 };
            return Ok(split::split_spans(self.len(), &span, widest, self.split_extent, fraction, seed));
        };
        let held = self.holdout_range(h, file)?;
        let s = split::holdout_spans(self.len(), &span, held.clone());
        if s.val.is_empty() {
            return Err(format!(
                "{file}: no patch lies wholly inside the held-out {} (patches are {} traces wide): hold out a wider range",
                self.describe_range(&held),
                self.size[1]
            ));
        }
        if s.train.is_empty() {
            return Err(format!(
                "{file}: the held-out {} leave no patch to train on",
                self.describe_range(&held)
            ));
        }
        Ok(s)
    }

    /// A held-out range along the split axis in file numbers, as positions; refused when it
    /// does not fit this file.
    fn holdout_range(&self, h: Holdout, file: &str) -> Result<Range<usize>, String> {
        match (h, &self.split_axis) {
            (Holdout::Traces { first, last }, SplitAxis::Traces) => {
                let n = self.split_extent;
                if first < 1 || last as u64 > n as u64 {
                    return Err(format!(
                        "{file}: holdout = traces({first}, {last}) lies outside the line's traces 1–{n}"
                    ));
                }
                Ok(first as usize - 1..last as usize)
            }
            (Holdout::Inlines { first, last }, SplitAxis::Inlines(axis)) => {
                let (lo, hi) = (i64::from(axis.first.min(axis.last)), i64::from(axis.first.max(axis.last)));
                if first > hi || last < lo {
                    return Err(format!(
                        "{file}: holdout = inlines({first}, {last}) lies outside the volume's inlines {}–{} (step {})",
                        axis.first, axis.last, axis.step
                    ));
                }
                // Positions of the inlines inside [first, last], whichever way the axis runs.
                let inside: Vec<usize> =
                    (0..axis.count).filter(|&k| (first..=last).contains(&i64::from(axis.value(k)))).collect();
                match (inside.first(), inside.last()) {
                    (Some(&a), Some(&b)) => Ok(a..b + 1),
                    _ => Err(format!(
                        "{file}: holdout = inlines({first}, {last}) holds no inline of the volume (inlines {}–{} every {})",
                        axis.first, axis.last, axis.step
                    )),
                }
            }
            (Holdout::Inlines { .. }, SplitAxis::Traces) => Err(format!(
                "{file}: holdout = inlines(...) needs a 3-D volume, but the headers make this file a 2-D line (`geonetc inspect` shows its geometry); hold out traces(first, last)"
            )),
            (Holdout::Traces { .. }, SplitAxis::Inlines(_)) => Err(format!(
                "{file}: is a 3-D volume, whose patches run along inlines and crosslines: hold out inlines(first, last), not traces"
            )),
        }
    }

    /// A range of split positions in file numbers (`traces 1–80`, `inlines 100–120`).
    pub fn describe_range(&self, r: &Range<usize>) -> String {
        match &self.split_axis {
            SplitAxis::Traces => format!("traces {}–{}", r.start + 1, r.end),
            SplitAxis::Inlines(axis) => {
                format!("inlines {}–{}", axis.value(r.start), axis.value(r.end.saturating_sub(1)))
            }
        }
    }

    /// Patch `i` cut from `section` (`[samples, traces]` in memory), as `[1, H, W]` or `[1, N]`.
    pub fn cut(&self, section: ndarray::ArrayView2<f64>, i: usize, out: &mut [f64]) {
        let (traces, r) = self.traces_of(i);
        let w = traces.len();
        for (k, &t) in traces.iter().enumerate() {
            for row in 0..self.size[0] {
                out[row * w + k] = section[[r + row, t]];
            }
        }
    }

    /// What the patches are, after their count (`patches of 64×64 of the inline and crossline sections`).
    pub fn describe_kind(&self) -> String {
        let [h, w] = self.size;
        match (&self.split_axis, self.trace_major) {
            (_, true) => format!("windows of {h} samples of the traces"),
            (SplitAxis::Traces, false) => format!("patches of {h}×{w} (samples × traces) of the 2-D line"),
            (SplitAxis::Inlines(_), false) => {
                format!("patches of {h}×{w} (samples × traces) of the volume's inline and crossline sections")
            }
        }
    }

    /// The shape of one sample: `[1, H, W]`, or `[1, N]` for 1-D windows.
    pub fn sample_shape(&self) -> Vec<usize> {
        if self.trace_major { vec![1, self.size[0]] } else { vec![1, self.size[0], self.size[1]] }
    }
}

/// A SEG-Y/SU file's patches, read a batch at a time: each patch's traces by positioned reads,
/// decoded as `SeismicFile` does, traces the header marks dead as zeros, divided by `scale`.
pub struct FilePatches {
    pub file: SeismicFile,
    /// The data are divided by this (the file's clipped RMS of live samples).
    pub scale: f64,
}

impl std::fmt::Debug for FilePatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FilePatches({}, scale {})", self.file.path.display(), self.scale)
    }
}

impl FilePatches {
    /// Patches `idx` of `index` stacked: `[n, 1, H, W]` or `[n, 1, N]`.
    pub fn read(&self, index: &PatchIndex, idx: &[usize]) -> Result<ArrayD<f64>, String> {
        let shape: Vec<usize> = std::iter::once(idx.len()).chain(index.sample_shape()).collect();
        let per: usize = index.size[0] * index.size[1];
        let mut out = vec![0.0; idx.len() * per];
        let (mut raw, mut trace) = (Vec::new(), vec![0.0; self.file.samples]);
        let tb = self.file.trace_bytes();
        for (&i, patch) in idx.iter().zip(out.chunks_exact_mut(per)) {
            let (strip, r, c) = index.locate(i);
            let w = index.size[1];
            let mut put = |k: usize, bytes: &[u8], trace: &mut Vec<f64>| {
                if crate::seismic::geometry::HeaderField::TRACE_ID.read(bytes, self.file.endian) == 2 {
                    return; // dead: zeros, as hygiene gives the model
                }
                self.file.decode_samples(bytes, trace);
                for row in 0..index.size[0] {
                    patch[row * w + k] = trace[r + row] / self.scale;
                }
            };
            match &strip.traces {
                Traces::Run { first, .. } => {
                    self.file.read_raw_traces(first + c, w, &mut raw).map_err(|e| e.to_string())?;
                    for (k, bytes) in raw.chunks_exact(tb).enumerate() {
                        put(k, bytes, &mut trace);
                    }
                }
                Traces::List(list) => {
                    for (k, &t) in list[c..c + w].iter().enumerate() {
                        self.file.read_raw_traces(t, 1, &mut raw).map_err(|e| e.to_string())?;
                        put(k, &raw, &mut trace);
                    }
                }
            }
        }
        ArrayD::from_shape_vec(IxDyn(&shape), out).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_count_and_origins_are_tile_starts() {
        for n in 1..60 {
            for tile in 1..=n {
                for step in 1..12 {
                    let starts = crate::seismic::tile_starts(n, tile, step);
                    assert_eq!(tile_count(n, tile, step), starts.len(), "{n} {tile} {step}");
                    for (k, s) in starts.iter().enumerate() {
                        assert_eq!(tile_origin(k, n, tile, step), *s);
                    }
                }
            }
        }
    }

    #[test]
    fn a_line_enumerates_patches_as_nested_loops() {
        // 2-D: rows outer, traces inner (the order `section_patches` always had).
        let idx = PatchIndex::line(100, 50, [16, 32], [8, 16], false);
        let mut k = 0;
        for r in crate::seismic::tile_starts(50, 16, 8) {
            for c in crate::seismic::tile_starts(100, 32, 16) {
                assert_eq!(idx.traces_of(k), ((c..c + 32).collect(), r));
                assert_eq!(idx.split_span(k), c..c + 32);
                k += 1;
            }
        }
        assert_eq!(idx.len(), k);
        // 1-D: each trace's windows together.
        let idx = PatchIndex::line(7, 50, [20, 1], [10, 1], true);
        let mut k = 0;
        for c in 0..7 {
            for r in crate::seismic::tile_starts(50, 20, 10) {
                assert_eq!(idx.traces_of(k), (vec![c], r));
                k += 1;
            }
        }
        assert_eq!(idx.len(), k);
        assert_eq!(idx.sample_shape(), vec![1, 20]);
    }
}
