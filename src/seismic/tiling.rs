//! Overlapping tiles blended with smooth weights: a network trained on patches runs on a
//! section of any size without seams, in memory or streamed a band of traces at a time.

/// A weight along one axis of a tile: a raised-cosine ramp over the first and last `overlap`
/// samples (only on sides that have a neighbour), 1 elsewhere. Neighbouring ramps sum to 1
/// where tiles overlap by exactly `overlap`, and dividing by the summed weights makes any
/// overlap exact.
fn taper(len: usize, overlap: usize, ramp_start: bool, ramp_end: bool) -> Vec<f64> {
    (0..len)
        .map(|i| {
            let ramp =
                |k: usize| 0.5 - 0.5 * (std::f64::consts::PI * (k as f64 + 0.5) / overlap as f64).cos();
            let mut w = 1.0;
            if ramp_start && i < overlap {
                w *= ramp(i);
            }
            if ramp_end && i + overlap >= len {
                w *= ramp(len - 1 - i);
            }
            w
        })
        .collect()
}

/// Tile origins along an axis of length `n` for tiles of `tile` with `step`, the last flush with
/// the end (`n ≥ tile`).
pub fn tile_starts(n: usize, tile: usize, step: usize) -> Vec<usize> {
    if n <= tile {
        return vec![0];
    }
    let mut s: Vec<usize> = (0..=n - tile).step_by(step.max(1)).collect();
    if s.last() != Some(&(n - tile)) {
        s.push(n - tile);
    }
    s
}

/// Applies `f` to overlapping `tile`-sized windows of a 2-D array and blends the results with
/// smooth weights, so a network trained on patches runs on a section of any size without seams.
/// Arrays smaller than a tile are mirror-padded up to it. `f` must return its input's shape.
pub fn apply_tiled(
    x: &ndarray::Array2<f64>,
    tile: [usize; 2],
    overlap: usize,
    f: impl FnMut(ndarray::ArrayView2<f64>) -> Result<ndarray::Array2<f64>, String>,
) -> Result<ndarray::Array2<f64>, String> {
    let (h, w) = x.dim();
    let mut y = ndarray::Array2::zeros((h, w));
    apply_tiled_streaming(
        [h, w],
        tile,
        overlap,
        |a, b| Ok(x.slice(ndarray::s![.., a..b]).to_owned()),
        f,
        |first, done| {
            y.slice_mut(ndarray::s![.., first..first + done.ncols()]).assign(&done);
            Ok(())
        },
    )?;
    Ok(y)
}

/// [`apply_tiled`] on an array read a band of columns at a time: `read(a, b)` gives columns
/// `a..b` (`[h, b - a]`), `emit(first, block)` receives finished columns in order. Tiles are
/// taken in column order and columns are emitted as soon as no later tile covers them, so
/// memory holds about one tile width plus one step of columns, whatever the width `shape[1]`.
/// The result is [`apply_tiled`]'s (same tiles, same weights). Columns fewer than a tile are
/// read at once and mirror-padded, as are rows.
pub fn apply_tiled_streaming(
    shape: [usize; 2],
    tile: [usize; 2],
    overlap: usize,
    mut read: impl FnMut(usize, usize) -> Result<ndarray::Array2<f64>, String>,
    mut f: impl FnMut(ndarray::ArrayView2<f64>) -> Result<ndarray::Array2<f64>, String>,
    mut emit: impl FnMut(usize, ndarray::Array2<f64>) -> Result<(), String>,
) -> Result<(), String> {
    use ndarray::{Array2, Axis, s};
    let [h, w] = shape;
    if h == 0 || w == 0 {
        return Ok(());
    }
    let (th, tw) = (tile[0].max(1), tile[1].max(1));
    let (ph, pw) = (h.max(th), w.max(tw));
    let (oh, ow) = (overlap.min(th / 2), overlap.min(tw / 2));
    let rows_pad: Vec<usize> = (0..ph).map(|i| mirror(i, h)).collect();
    // Narrower than a tile: everything at once, columns mirrored too.
    let small = if w < tw {
        let x = read(0, w)?;
        let cols: Vec<usize> = (0..pw).map(|j| mirror(j, w)).collect();
        Some(x.select(Axis(1), &cols))
    } else {
        None
    };
    let mut read_padded = |a: usize, b: usize| -> Result<Array2<f64>, String> {
        let x = match &small {
            Some(x) => x.slice(s![.., a..b]).to_owned(),
            None => read(a, b)?,
        };
        if x.dim() != (h, b - a) {
            return Err(format!("read {:?} for columns {a}..{b} of {h} rows", x.dim()));
        }
        Ok(if ph == h { x } else { x.select(Axis(0), &rows_pad) })
    };
    let (rows, cols) = (tile_starts(ph, th, th - oh), tile_starts(pw, tw, tw - ow));
    // Held columns: `start..start + x.ncols()` of the padded input, with their sums.
    let mut start = 0usize;
    let mut x = Array2::<f64>::zeros((ph, 0));
    let mut acc = Array2::<f64>::zeros((ph, 0));
    let mut wsum = Array2::<f64>::zeros((ph, 0));
    for (ci, &c) in cols.iter().enumerate() {
        let end = start + x.ncols();
        if c + tw > end {
            let more = read_padded(end, c + tw)?;
            let zeros = Array2::<f64>::zeros(more.dim());
            x = ndarray::concatenate(Axis(1), &[x.view(), more.view()]).map_err(|e| e.to_string())?;
            acc = ndarray::concatenate(Axis(1), &[acc.view(), zeros.view()]).map_err(|e| e.to_string())?;
            wsum = ndarray::concatenate(Axis(1), &[wsum.view(), zeros.view()]).map_err(|e| e.to_string())?;
        }
        let wc = taper(tw, ow, ci > 0, ci + 1 < cols.len());
        let local = c - start;
        for (ri, &r) in rows.iter().enumerate() {
            let wr = taper(th, oh, ri > 0, ri + 1 < rows.len());
            let y = f(x.slice(s![r..r + th, local..local + tw]))?;
            if y.dim() != (th, tw) {
                return Err(format!("the model turned a {th}×{tw} tile into {:?}", y.dim()));
            }
            for i in 0..th {
                for j in 0..tw {
                    let wt = wr[i] * wc[j];
                    acc[[r + i, local + j]] += wt * y[[i, j]];
                    wsum[[r + i, local + j]] += wt;
                }
            }
        }
        // Columns before the next tile's start are final.
        let done_to = cols.get(ci + 1).copied().unwrap_or(pw);
        let n = done_to - start;
        let finished = done_to.min(w).saturating_sub(start);
        if finished > 0 {
            let block = Array2::from_shape_fn((h, finished), |(i, j)| acc[[i, j]] / wsum[[i, j]]);
            emit(start, block)?;
        }
        x = x.slice(s![.., n..]).to_owned();
        acc = acc.slice(s![.., n..]).to_owned();
        wsum = wsum.slice(s![.., n..]).to_owned();
        start = done_to;
    }
    Ok(())
}

/// Index `i` of a mirror extension of `0..n` (`n - 2, n - 3, ...` after the end).
fn mirror(i: usize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let p = 2 * (n - 1);
    let r = i % p;
    if r < n { r } else { p - r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn tiles_cover_the_edges() {
        assert_eq!(tile_starts(300, 128, 96), vec![0, 96, 172]);
        assert_eq!(tile_starts(128, 128, 96), vec![0]);
        assert_eq!(tile_starts(50, 128, 96), vec![0]);
    }

    #[test]
    fn identity_is_exact_and_offsets_are_seamless() {
        let x = Array2::from_shape_fn((301, 77), |(i, j)| ((i * 31 + j * 17) % 23) as f64 - 11.0);
        let y = apply_tiled(&x, [64, 32], 16, |t| Ok(t.to_owned())).unwrap();
        assert!(y.iter().zip(x.iter()).all(|(a, b)| (a - b).abs() < 1e-12));
        let y = apply_tiled(&x, [64, 32], 16, |t| Ok(t.mapv(|v| v + 3.0))).unwrap();
        assert!(y.iter().zip(x.iter()).all(|(a, b)| (a - b - 3.0).abs() < 1e-12));
        // Smaller than a tile: mirrored up, cropped back.
        let small = Array2::from_shape_fn((5, 7), |(i, j)| (i * 7 + j) as f64);
        assert_eq!(apply_tiled(&small, [16, 16], 4, |t| Ok(t.to_owned())).unwrap(), small);
    }

    /// Streaming gives the blend of the whole array at once (computed here without streaming:
    /// every tile's weighted output summed into full-size arrays), for a model whose output
    /// depends on its neighbours, reading at most a tile and a step of columns.
    #[test]
    fn streaming_equals_the_whole_blend_with_bounded_reads() {
        let x = Array2::from_shape_fn((37, 301), |(i, j)| ((i * 13 + j * 7) % 19) as f64 - 9.0);
        let model = |t: ndarray::ArrayView2<f64>| {
            Ok(Array2::from_shape_fn(t.dim(), |(i, j)| t[[i, j]] * 2.0 + t[[i, (j + 1) % t.ncols()]]))
        };
        let (tile, overlap) = ([16, 32], 8);
        let (rows, cols) = (tile_starts(37, 16, 8), tile_starts(301, 32, 24));
        let mut acc = Array2::<f64>::zeros((37, 301));
        let mut wsum = Array2::<f64>::zeros((37, 301));
        for (ri, &r) in rows.iter().enumerate() {
            for (ci, &c) in cols.iter().enumerate() {
                let y = model(x.slice(ndarray::s![r..r + 16, c..c + 32])).unwrap();
                let wr = taper(16, 8, ri > 0, ri + 1 < rows.len());
                let wc = taper(32, 8, ci > 0, ci + 1 < cols.len());
                for i in 0..16 {
                    for j in 0..32 {
                        acc[[r + i, c + j]] += wr[i] * wc[j] * y[[i, j]];
                        wsum[[r + i, c + j]] += wr[i] * wc[j];
                    }
                }
            }
        }
        let want = &acc / &wsum;
        let mut got = Array2::<f64>::zeros((37, 301));
        let mut widest = 0;
        let mut next = 0;
        apply_tiled_streaming(
            [37, 301],
            tile,
            overlap,
            |a, b| {
                widest = widest.max(b - a);
                Ok(x.slice(ndarray::s![.., a..b]).to_owned())
            },
            model,
            |first, block| {
                assert_eq!(first, next, "columns emitted in order");
                next += block.ncols();
                got.slice_mut(ndarray::s![.., first..first + block.ncols()]).assign(&block);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(next, 301);
        assert!(widest <= 32, "read {widest} columns at once");
        assert!(got.iter().zip(want.iter()).all(|(a, b)| (a - b).abs() < 1e-12));
    }
}
