//! Pictures as PNG (plotters): seismic panels side by side (time down, red-white-blue or grey,
//! every panel clipped at one symmetric amplitude: a percentile of the first panel's |values|,
//! stated in the picture's title), with a colour bar, axes in the file's units (time in ms
//! from the sample interval and recording delay; traces numbered by a header field where the
//! file has one), an optional average amplitude spectrum panel, and training curves. Text uses
//! the DejaVu Sans font bundled in `assets/fonts` (no system fonts needed). docs/qc.md.

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
        // Positive amplitudes red, negative blue (the usual seismic display). NaN is grey.
        Palette::RedWhiteBlue if x.is_nan() => RGBColor(128, 128, 128),
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

/// The `q`-quantile of the finite |values| (1 when there is none or it is 0).
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

/// One integer trace-header field.
type HeaderField = dyn Fn(&super::segy::TraceHeader) -> i32;

/// The axes of a section in its file's units.
#[derive(Clone, Debug)]
pub struct Axes {
    /// Sample interval (0: unknown, the time axis counts samples).
    pub dt_us: u32,
    /// Time of the first sample (SEG-Y trace header bytes 109–110).
    pub delay_ms: f64,
    /// What the trace axis counts (`trace`, `CDP`, `inline`, `crossline`) and each trace's value.
    pub trace_name: String,
    pub trace_values: Vec<f64>,
}

impl Axes {
    /// Traces numbered 1..=n, time in samples (or ms with `dt_us`).
    pub fn plain(traces: usize, dt_us: u32) -> Axes {
        Axes {
            dt_us,
            delay_ms: 0.0,
            trace_name: "trace".into(),
            trace_values: (1..=traces).map(|t| t as f64).collect(),
        }
    }

    /// From a SEG-Y/SU file's headers: the trace axis is the crossline number when only it
    /// varies (an inline section), the inline number when only it varies, else the CDP, else
    /// the trace sequence number, else 1..=n; time starts at the first trace's delay.
    pub fn from_file(file: &super::segy::SeismicFile) -> Axes {
        let headers: Vec<_> = (0..file.traces()).filter_map(|i| file.trace_header(i)).collect();
        let mut axes = Axes::plain(file.traces(), file.dt_us);
        if headers.len() != file.traces() || headers.is_empty() {
            return axes;
        }
        axes.delay_ms = headers[0].delay_ms as f64;
        let varies =
            |f: &dyn Fn(&super::segy::TraceHeader) -> i32| headers.iter().any(|h| f(h) != f(&headers[0]));
        let pick: Option<(&str, &HeaderField)> = match (varies(&|h| h.inline), varies(&|h| h.crossline)) {
            (false, true) => Some(("crossline", &|h| h.crossline)),
            (true, false) => Some(("inline", &|h| h.inline)),
            _ if varies(&|h| h.cdp) => Some(("CDP", &|h| h.cdp)),
            _ if varies(&|h| h.sequence_line) => Some(("trace number", &|h| h.sequence_line)),
            _ => None,
        };
        if let Some((name, field)) = pick {
            axes.trace_name = name.into();
            axes.trace_values = headers.iter().map(|h| field(h) as f64).collect();
        }
        axes
    }

    fn time_name(&self) -> &'static str {
        if self.dt_us > 0 { "time (ms)" } else { "sample" }
    }

    /// Time (ms) or sample number of sample `s`.
    fn time(&self, s: f64) -> f64 {
        if self.dt_us > 0 { self.delay_ms + s * self.dt_us as f64 / 1000.0 } else { s }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub palette: Palette,
    /// Every panel is clipped at ± this percentile of the first panel's |values|.
    pub clip_percentile: f64,
    /// Add the average amplitude spectra of the first three panels.
    pub spectrum: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { palette: Palette::RedWhiteBlue, clip_percentile: 99.0, spectrum: false }
    }
}

/// What a picture shows, for the command's summary.
#[derive(Clone, Debug)]
pub struct Drawn {
    pub clip: f32,
    pub percentile: f64,
    pub of: String,
    pub width: u32,
    pub height: u32,
}

impl Drawn {
    /// The clip as the picture states it.
    pub fn clip_text(&self) -> String {
        format!("clip ±{:.3e} ({}th percentile of |{}|)", self.clip, self.percentile, self.of)
    }
}

const PANEL: (u32, u32) = (360, 540);
const BAR: u32 = 110;
const SPECTRUM: u32 = 420;

/// Draws `panels` (title, `[traces, samples]` section) side by side into an image file (the
/// format named by the extension, see [`image_format`]), written atomically.
pub fn sections(
    path: &Path,
    panels: &[(&str, &Array2<f32>)],
    axes: &Axes,
    options: &Options,
) -> Result<Drawn, String> {
    let format = image_format(path)?;
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| fail(&"the bundled font"))?;
    let Some((first_title, first)) = panels.first() else { return Err(fail(&"nothing to draw")) };
    if first.is_empty() {
        return Err(fail(&"the section is empty"));
    }
    let drawn = Drawn {
        clip: abs_percentile(first, options.clip_percentile / 100.0),
        percentile: options.clip_percentile,
        of: first_title.to_string(),
        width: PANEL.0 * panels.len() as u32 + BAR + if options.spectrum { SPECTRUM } else { 0 },
        height: PANEL.1,
    };
    let size = (drawn.width, drawn.height);
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    draw_sections(&mut rgb, size, panels, axes, options, &drawn).map_err(|e| fail(&e))?;
    write_image(path, size, rgb, format).map_err(|e| fail(&e))?;
    Ok(drawn)
}

fn write_image(
    path: &Path,
    size: (u32, u32),
    rgb: Vec<u8>,
    format: image::ImageOutputFormat,
) -> Result<(), String> {
    let img = image::RgbImage::from_raw(size.0, size.1, rgb).ok_or("image size")?;
    let mut bytes = std::io::Cursor::new(vec![]);
    img.write_to(&mut bytes, format).map_err(|e| e.to_string())?;
    crate::output::write_atomically(path, bytes.get_ref())
}

/// `1234`, for tick labels that are whole numbers.
fn whole(v: f64) -> String {
    format!("{:.0}", v)
}

fn draw_sections(
    rgb: &mut [u8],
    size: (u32, u32),
    panels: &[(&str, &Array2<f32>)],
    axes: &Axes,
    options: &Options,
    drawn: &Drawn,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let (traces, samples) = panels[0].1.dim();
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root.titled(&drawn.clip_text(), ("sans-serif", 15)).map_err(|e| fail(&e))?;
    let (left, rest) = root.split_horizontally(PANEL.0 * panels.len() as u32);
    let (bar, spectrum) = rest.split_horizontally(BAR);
    let (t0, t1) = (axes.time(0.0), axes.time(samples as f64));
    let trace_label = |v: &f64| {
        let i = (v.round().max(0.0) as usize).min(traces.saturating_sub(1));
        axes.trace_values.get(i).map_or_else(|| whole(*v), |&h| whole(h))
    };
    for (area, (title, data)) in left.split_evenly((1, panels.len())).iter().zip(panels) {
        let (pw, ph) = area.dim_in_pixel();
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 17))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..traces as f64, t1..t0)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(axes.trace_name.as_str())
            .y_desc(axes.time_name())
            .x_labels(5)
            .y_labels(8)
            .x_label_formatter(&trace_label)
            .y_label_formatter(&|v| whole(*v))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| fail(&e))?;
        // One rectangle per displayed cell: decimate to about the panel's pixel resolution.
        let (cols, rows) = (traces.min(pw as usize), samples.min(ph as usize));
        let cells = (0..cols).flat_map(|c| {
            (0..rows).map(move |r| {
                let (t, s) = (c * traces / cols, r * samples / rows);
                let (x0, x1) = (t as f64, ((c + 1) * traces / cols) as f64);
                let (y0, y1) = (axes.time(s as f64), axes.time(((r + 1) * samples / rows) as f64));
                Rectangle::new(
                    [(x0, y0), (x1, y1)],
                    color(data[[t, s]], drawn.clip, options.palette).filled(),
                )
            })
        });
        chart.draw_series(cells).map_err(|e| fail(&e))?;
    }
    colour_bar(&bar, drawn.clip, options.palette)?;
    if options.spectrum {
        let with_spectra: Vec<_> = panels.iter().take(3).collect();
        let spectra: Vec<(&str, Vec<f64>)> =
            with_spectra.iter().map(|(t, d)| (*t, average_amplitude_spectrum(d))).collect();
        spectrum_panel(&spectrum, &spectra, axes.dt_us)?;
    }
    root.present().map_err(|e| fail(&e))
}

fn colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    clip: f32,
    palette: Palette,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let c = clip as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("amplitude", ("sans-serif", 13))
        .margin_top(8)
        .margin_bottom(44)
        .margin_right(58)
        .y_label_area_size(0)
        .right_y_label_area_size(0)
        .build_cartesian_2d(0f64..1f64, -c..c)
        .map_err(|e| fail(&e))?;
    let steps = 128;
    chart
        .draw_series((0..steps).map(|k| {
            let (a, b) =
                (-c + 2.0 * c * k as f64 / steps as f64, -c + 2.0 * c * (k + 1) as f64 / steps as f64);
            Rectangle::new([(0.0, a), (1.0, b)], color(((a + b) / 2.0) as f32, clip, palette).filled())
        }))
        .map_err(|e| fail(&e))?;
    // Labels beside the bar: the clip, half of it, zero.
    for v in [-c, -c / 2.0, 0.0, c / 2.0, c] {
        // backend_coord is in the whole picture's pixels; `area` draws relative to its corner.
        let ((x, y), (x0, y0)) = (chart.backend_coord(&(1.0, v)), area.get_base_pixel());
        area.draw(&Text::new(format!("{v:.2e}"), (x - x0 + 4, y - y0 - 6), ("sans-serif", 11)))
            .map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// The mean over traces of |FFT| of each trace (at most 512 traces, evenly spaced), bins
/// 0..=n/2.
pub fn average_amplitude_spectrum(section: &Array2<f32>) -> Vec<f64> {
    let (traces, samples) = section.dim();
    let mut planner = rustfft::FftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(samples.max(1));
    let take = traces.clamp(1, 512);
    let mut sum = vec![0.0; samples / 2 + 1];
    let mut buf = vec![rustfft::num_complex::Complex::new(0.0, 0.0); samples];
    for k in 0..take.min(traces) {
        let t = k * traces / take;
        for (b, &v) in buf.iter_mut().zip(section.row(t)) {
            *b = rustfft::num_complex::Complex::new(if v.is_finite() { v as f64 } else { 0.0 }, 0.0);
        }
        fft.process(&mut buf);
        for (s, b) in sum.iter_mut().zip(&buf) {
            *s += b.norm();
        }
    }
    sum.iter().map(|s| s / take as f64).collect()
}

fn spectrum_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    spectra: &[(&str, Vec<f64>)],
    dt_us: u32,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let bins = spectra.first().map_or(1, |s| s.1.len()).max(2);
    let samples = 2 * (bins - 1);
    let (df, unit) = if dt_us > 0 {
        (1e6 / (dt_us as f64 * samples as f64), "frequency (Hz)")
    } else {
        (1.0 / samples as f64, "frequency (cycles per sample)")
    };
    let peak = spectra.iter().flat_map(|s| s.1.iter()).fold(0f64, |m, &v| m.max(v)).max(f64::MIN_POSITIVE);
    let db = |v: f64| (20.0 * (v / peak).max(1e-6).log10()).max(-80.0);
    let mut chart = ChartBuilder::on(area)
        .caption("average amplitude spectrum", ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..df * (bins - 1) as f64, -80f64..0f64)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(unit)
        .y_desc("dB below the peak")
        .x_labels(6)
        .x_label_formatter(&|v| if dt_us > 0 { whole(*v) } else { format!("{v:.2}") })
        .y_label_formatter(&|v| whole(*v))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| fail(&e))?;
    let colours = [BLACK, RED, BLUE];
    for ((title, spectrum), colour) in spectra.iter().zip(colours) {
        chart
            .draw_series(LineSeries::new(
                spectrum.iter().enumerate().map(|(k, &v)| (k as f64 * df, db(v))),
                colour,
            ))
            .map_err(|e| fail(&e))?
            .label(*title)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| fail(&e))
}

/// One point of a training curve: epoch, training loss, validation loss, validation SNR (dB).
pub type EpochPoint = (usize, f64, Option<f64>, Option<f64>);

/// A training-curve picture: losses (log scale) and, when present, the validation SNR.
pub fn training_curve(path: &Path, epochs: &[EpochPoint]) -> Result<(u32, u32), String> {
    let format = image_format(path)?;
    let fail = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| fail(&"the bundled font"))?;
    if epochs.is_empty() {
        return Err(fail(&"no epoch to draw"));
    }
    let size = (900u32, 420u32);
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    draw_curve(&mut rgb, size, epochs).map_err(|e| fail(&e))?;
    write_image(path, size, rgb, format).map_err(|e| fail(&e))?;
    Ok(size)
}

fn draw_curve(rgb: &mut [u8], size: (u32, u32), epochs: &[EpochPoint]) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::with_buffer(rgb, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let has_snr = epochs.iter().any(|e| e.3.is_some_and(f64::is_finite));
    let (losses, snr) = root.split_horizontally(if has_snr { size.0 / 2 } else { size.0 });
    let last = epochs.iter().map(|e| e.0).max().unwrap_or(1).max(1) as f64;
    let first = epochs.iter().map(|e| e.0).min().unwrap_or(1) as f64;
    let x_range = (first - 0.5)..(last + 0.5);
    let finite: Vec<f64> = epochs
        .iter()
        .flat_map(|e| [Some(e.1), e.2].into_iter().flatten())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Whole decades (at least one): plotters' log axis finds no tick in a narrower range.
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        let (a, b) = (lo.log10().floor(), hi.log10().ceil());
        (10f64.powf(a), 10f64.powf(b.max(a + 1.0)))
    } else {
        (1e-3, 1.0)
    };
    let mut chart = ChartBuilder::on(&losses)
        .caption("loss", ("sans-serif", 17))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.clone(), (lo..hi).log_scale())
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(epochs.len().min(10))
        .x_label_formatter(&|v| whole(*v))
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| fail(&e))?;
    // Losses must be positive for the log axis; SNRs only finite. (A NaN or infinite axis range
    // makes plotters loop forever looking for tick marks.)
    let series = |pick: fn(&EpochPoint) -> Option<f64>, positive: bool| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|e| {
                pick(e).filter(|v| v.is_finite() && (!positive || *v > 0.0)).map(|v| (e.0 as f64, v))
            })
            .collect()
    };
    for (name, pick, colour) in [
        ("train", (|e: &EpochPoint| Some(e.1)) as fn(&EpochPoint) -> Option<f64>, BLUE),
        ("validation", |e| e.2, RED),
    ] {
        let points = series(pick, true);
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(|e| fail(&e))?;
    if has_snr {
        let points = series(|e| e.3, false);
        let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
        let pad = ((hi - lo) * 0.1).max(0.5);
        let mut chart = ChartBuilder::on(&snr)
            .caption("validation SNR", ("sans-serif", 17))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(x_range, (lo - pad)..(hi + pad))
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("dB")
            .x_labels(epochs.len().min(10))
            .x_label_formatter(&|v| whole(*v))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(|e| fail(&e))?;
        chart.draw_series(LineSeries::new(points.clone(), BLACK.stroke_width(2))).map_err(|e| fail(&e))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLACK.filled()))).map_err(|e| fail(&e))?;
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

    #[test]
    fn a_sine_peaks_in_its_spectrum_bin() {
        // 4 ms sampling, 256 samples: bin spacing 1e6/(4000·256) = 0.977 Hz; 25 Hz ≈ bin 25.6 →
        // use an exact bin, 32 (31.25 Hz).
        let a = Array2::from_shape_fn((3, 256), |(_, s)| {
            (2.0 * std::f32::consts::PI * 32.0 * s as f32 / 256.0).sin()
        });
        let spectrum = average_amplitude_spectrum(&a);
        assert_eq!(spectrum.len(), 129);
        let peak = spectrum.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert_eq!(peak, 32);
        assert!((spectrum[32] - 128.0).abs() < 1e-3, "{}", spectrum[32]);
    }

    #[test]
    fn time_axis_in_ms_from_interval_and_delay() {
        let axes = Axes { delay_ms: 100.0, ..Axes::plain(3, 4000) };
        assert_eq!(axes.time(0.0), 100.0);
        assert_eq!(axes.time(10.0), 140.0);
        assert_eq!(Axes::plain(3, 0).time(10.0), 10.0);
    }
}
