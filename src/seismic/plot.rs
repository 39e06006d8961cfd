//! Seismic panels as PNG (plotters): input, output and their difference side by side, time
//! down, in red-white-blue or grey, all clipped at the same amplitude (the 99th percentile of
//! |input|) so the removed noise is comparable with the data. Text uses the DejaVu Sans font
//! bundled in `assets/fonts` (no system fonts needed).

use ndarray::Array2;
use plotters::prelude::*;
use std::path::Path;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Palette {
    RedWhiteBlue,
    Grey,
}

fn color(v: f32, clip: f32, palette: Palette) -> RGBColor {
    let x = (v / clip).clamp(-1.0, 1.0);
    match palette {
        // Positive amplitudes red, negative blue (the usual seismic display).
        Palette::RedWhiteBlue => {
            let fade = ((1.0 - x.abs()) * 255.0) as u8;
            if x >= 0.0 { RGBColor(255, fade, fade) } else { RGBColor(fade, fade, 255) }
        }
        // Positive amplitudes black.
        Palette::Grey => {
            let g = ((0.5 - 0.5 * x) * 255.0) as u8;
            RGBColor(g, g, g)
        }
    }
}

/// The `q`-quantile of |values|.
pub fn abs_percentile(values: &Array2<f32>, q: f64) -> f32 {
    let mut a: Vec<f32> = values.iter().map(|v| v.abs()).filter(|v| v.is_finite()).collect();
    if a.is_empty() {
        return 1.0;
    }
    let k = ((a.len() - 1) as f64 * q).round() as usize;
    let (_, v, _) = a.select_nth_unstable_by(k, |x, y| x.total_cmp(y));
    if *v > 0.0 { *v } else { 1.0 }
}

/// The image format a plot path names: `.png`, `.jpg`/`.jpeg` or `.bmp`. Commands call this
/// before any work, so a misspelt extension fails before any output is written.
pub fn image_format(path: &Path) -> Result<image::ImageOutputFormat, String> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => Ok(image::ImageOutputFormat::Png),
        Some("jpg" | "jpeg") => Ok(image::ImageOutputFormat::Jpeg(90)),
        Some("bmp") => Ok(image::ImageOutputFormat::Bmp),
        _ => Err(format!(
            "cannot draw {}: plots are .png, .jpg or .bmp files (the name's extension chooses)",
            path.display()
        )),
    }
}

/// Draws `panels` (title, `[traces, samples]` section) side by side into an image file (the
/// format named by the extension, see [`image_format`]), written atomically.
pub fn panels(
    path: &Path,
    panels: &[(&str, &Array2<f32>)],
    dt_us: u32,
    palette: Palette,
) -> Result<(), String> {
    let format = image_format(path)?;
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| fail(&"the bundled font"))?;
    let Some((_, first)) = panels.first() else { return Err(fail(&"nothing to draw")) };
    let clip = abs_percentile(first, 0.99);
    if first.is_empty() {
        return Err(fail(&"the section is empty"));
    }
    let (pw, ph) = (360u32, 520u32);
    let size = (pw * panels.len() as u32, ph);
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    draw(&mut rgb, size, panels, dt_us, palette, clip).map_err(|e| fail(&e))?;
    let img = image::RgbImage::from_raw(size.0, size.1, rgb).ok_or_else(|| fail(&"image size"))?;
    let mut bytes = std::io::Cursor::new(vec![]);
    img.write_to(&mut bytes, format).map_err(|e| fail(&e))?;
    crate::output::write_atomically(path, bytes.get_ref())
}

/// Renders the panels into an RGB buffer of `size`.
fn draw(
    rgb: &mut [u8],
    size: (u32, u32),
    panels: &[(&str, &Array2<f32>)],
    dt_us: u32,
    palette: Palette,
    clip: f32,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let Some((_, first)) = panels.first() else { return Err("nothing to draw".into()) };
    let (traces, samples) = first.dim();
    let dt = if dt_us > 0 { dt_us as f64 * 1e-6 } else { 1.0 };
    let t_max = samples as f64 * dt;
    let (pw, ph) = (size.0 / panels.len().max(1) as u32, size.1);
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    for (area, (title, data)) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..traces as f64, t_max..0f64)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("trace")
            .y_desc(if dt_us > 0 { "time (s)" } else { "sample" })
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| fail(&e))?;
        // One rectangle per displayed cell: decimate to about the panel's pixel resolution.
        let (cols, rows) = (traces.min(pw as usize), samples.min(ph as usize));
        let cells = (0..cols).flat_map(|c| {
            (0..rows).map(move |r| {
                let t = c * traces / cols;
                let s = r * samples / rows;
                let x0 = t as f64;
                let x1 = ((c + 1) * traces / cols) as f64;
                let y0 = s as f64 * dt;
                let y1 = ((r + 1) * samples / rows) as f64 * dt;
                Rectangle::new([(x0, y0), (x1, y1)], color(data[[t, s]], clip, palette).filled())
            })
        });
        chart.draw_series(cells).map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_and_colours() {
        let a = Array2::from_shape_fn((10, 10), |(i, j)| (i * 10 + j) as f32 - 50.0);
        assert_eq!(abs_percentile(&a, 1.0), 50.0);
        assert_eq!(color(1.0, 1.0, Palette::RedWhiteBlue), RGBColor(255, 0, 0));
        assert_eq!(color(-2.0, 1.0, Palette::RedWhiteBlue), RGBColor(0, 0, 255));
        assert_eq!(color(0.0, 1.0, Palette::RedWhiteBlue), RGBColor(255, 255, 255));
        assert_eq!(color(1.0, 1.0, Palette::Grey), RGBColor(0, 0, 0));
    }
}
