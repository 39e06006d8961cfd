//! Noise expressions: each kind's defining property measured on generated data (spectrum band,
//! spike count against rate, trace polarity, dip and frequency of linear noise, swell band and
//! grouping), the checker's messages, and a `fmt` round trip.

use geonetc::check::program::{DataSpec, NoiseKind, NoiseSpec};
use ndarray::{Array2, ArrayView1};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

const DT: f64 = 0.004;

fn spec(parts: Vec<NoiseKind>) -> NoiseSpec {
    NoiseSpec { parts }
}

/// `parts` drawn onto a zero panel `[nt, ntr]` (reference RMS 1), so the panel is the noise.
fn noise_only(parts: Vec<NoiseKind>, nt: usize, ntr: usize, seed: u64) -> Array2<f64> {
    let mut x = Array2::<f64>::zeros((nt, ntr));
    spec(parts).apply(&mut x.view_mut(), 1.0, DT, &mut ChaCha8Rng::seed_from_u64(seed));
    x
}

/// Power spectrum of one trace at frequencies k/(n·dt), k = 0..=n/2 (an independent FFT).
fn power(trace: ArrayView1<f64>) -> Vec<(f64, f64)> {
    let n = trace.len();
    let mut buf: Vec<Complex<f64>> = trace.iter().map(|v| Complex::new(*v, 0.0)).collect();
    FftPlanner::<f64>::new().plan_fft_forward(n).process(&mut buf);
    (0..=n / 2).map(|k| (k as f64 / (n as f64 * DT), buf[k].norm_sqr())).collect()
}

/// The share of the traces' energy at frequencies in `[lo, hi]` Hz.
fn energy_fraction(x: &Array2<f64>, lo: f64, hi: f64) -> f64 {
    let (mut inside, mut all) = (0.0, 0.0);
    for trace in x.columns() {
        for (f, p) in power(trace) {
            all += p;
            if (lo..=hi).contains(&f) {
                inside += p;
            }
        }
    }
    inside / all
}

fn std(x: &Array2<f64>) -> f64 {
    let n = x.len() as f64;
    let mean = x.sum() / n;
    (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt()
}

#[test]
fn white_gaussian_has_the_requested_std_and_a_flat_spectrum() {
    let x = noise_only(vec![NoiseKind::Gaussian { std: 0.5, band: None }], 1000, 40, 1);
    assert!((std(&x) - 0.5).abs() < 0.01, "std {}", std(&x));
    // White: the band 0–62.5 Hz holds half of the energy up to Nyquist (125 Hz), within noise.
    let low = energy_fraction(&x, 0.0, 62.5);
    assert!((low - 0.5).abs() < 0.02, "low half holds {low}");
}

#[test]
fn band_limited_gaussian_keeps_its_energy_inside_the_band() {
    let x = noise_only(vec![NoiseKind::Gaussian { std: 2.0, band: Some([10.0, 30.0]) }], 1000, 40, 2);
    let inside = energy_fraction(&x, 10.0, 30.0);
    assert!(inside > 0.999, "energy inside 10–30 Hz: {inside}");
    assert!((std(&x) - 2.0).abs() < 0.05, "std {}", std(&x));
    // A white draw would put only 20/125 of its energy there.
    let white = noise_only(vec![NoiseKind::Gaussian { std: 2.0, band: None }], 1000, 40, 2);
    assert!(energy_fraction(&white, 10.0, 30.0) < 0.2);
}

#[test]
fn spike_count_follows_the_rate_and_each_spike_has_the_amplitude() {
    let (nt, ntr, rate) = (2000, 50, 0.002);
    let x = noise_only(vec![NoiseKind::Spikes { rate, amplitude: 7.0 }], nt, ntr, 3);
    let hits: Vec<f64> = x.iter().copied().filter(|v| *v != 0.0).collect();
    let n = (nt * ntr) as f64;
    let (mean, sd) = (n * rate, (n * rate * (1.0 - rate)).sqrt());
    assert!((hits.len() as f64 - mean).abs() < 5.0 * sd, "{} spikes, expected {mean} ± {sd}", hits.len());
    assert!(hits.iter().all(|v| v.abs() == 7.0), "spikes are ±amplitude");
    let positive = hits.iter().filter(|v| **v > 0.0).count() as f64 / hits.len() as f64;
    assert!((positive - 0.5).abs() < 0.1, "both polarities: {positive}");
}

#[test]
fn bursts_are_runs_no_longer_than_their_length() {
    // 40 ms at 4 ms = 10 samples; at rate 1e-4 bursts rarely overlap.
    let (nt, ntr, rate) = (4000, 50, 1e-4);
    let x = noise_only(vec![NoiseKind::Bursts { rate, amplitude: 5.0, length: 40.0 }], nt, ntr, 4);
    let mut runs = vec![];
    for trace in x.columns() {
        let mut run = 0;
        for v in trace.iter().chain(std::iter::once(&0.0)) {
            if *v != 0.0 {
                run += 1;
            } else if run > 0 {
                runs.push(run);
                run = 0;
            }
        }
    }
    let (mean, sd) = ((nt * ntr) as f64 * rate, ((nt * ntr) as f64 * rate).sqrt());
    assert!((runs.len() as f64 - mean).abs() < 5.0 * sd, "{} bursts, expected {mean}", runs.len());
    assert!(runs.iter().filter(|r| **r <= 10).count() as f64 >= 0.95 * runs.len() as f64, "runs {runs:?}");
    assert!(runs.iter().any(|r| *r >= 8), "bursts span their length: {runs:?}");
}

/// A clean panel whose traces are all nonzero and distinct: trace j = sin(0.05·i + j).
fn clean_panel(nt: usize, ntr: usize) -> Array2<f64> {
    Array2::from_shape_fn((nt, ntr), |(i, j)| (0.05 * i as f64 + j as f64).sin() + 2.0)
}

#[test]
fn reversed_traces_are_the_clean_traces_negated() {
    let (nt, ntr, fraction) = (64, 2000, 0.2);
    let clean = clean_panel(nt, ntr);
    let mut x = clean.clone();
    spec(vec![NoiseKind::ReversedTraces { fraction }]).apply(
        &mut x.view_mut(),
        1.0,
        DT,
        &mut ChaCha8Rng::seed_from_u64(5),
    );
    let mut reversed = 0;
    for (a, b) in clean.columns().into_iter().zip(x.columns()) {
        if a == b {
            continue;
        }
        assert_eq!(b, a.mapv(|v| -v), "a changed trace is the clean one with opposite polarity");
        reversed += 1;
    }
    let sd = (ntr as f64 * fraction * (1.0 - fraction)).sqrt();
    assert!((reversed as f64 - ntr as f64 * fraction).abs() < 5.0 * sd, "{reversed} reversed");
}

#[test]
fn dead_traces_are_zero_and_the_others_unchanged_noise_and_all() {
    let (nt, ntr, fraction) = (64, 2000, 0.1);
    let clean = clean_panel(nt, ntr);
    let mut x = clean.clone();
    // Written first, dead traces still kill the Gaussian noise added after them.
    let parts = vec![NoiseKind::DeadTraces { fraction }, NoiseKind::Gaussian { std: 0.1, band: None }];
    spec(parts).apply(&mut x.view_mut(), 1.0, DT, &mut ChaCha8Rng::seed_from_u64(6));
    let dead = x.columns().into_iter().filter(|t| t.iter().all(|v| *v == 0.0)).count();
    let sd = (ntr as f64 * fraction * (1.0 - fraction)).sqrt();
    assert!((dead as f64 - ntr as f64 * fraction).abs() < 5.0 * sd, "{dead} dead");
    let alive_changed = clean
        .columns()
        .into_iter()
        .zip(x.columns())
        .filter(|(_, b)| b.iter().any(|v| *v != 0.0))
        .all(|(a, b)| a != b);
    assert!(alive_changed, "live traces carry the Gaussian noise");
}

#[test]
fn linear_noise_has_its_dip_and_frequency() {
    // dip 10 ms per trace = 2.5 samples at 4 ms; 12 Hz.
    let (nt, ntr) = (1000, 40);
    let (dip, freq) = (10.0, 12.0);
    let mut fitted = 0;
    for seed in 0..20 {
        let x = noise_only(vec![NoiseKind::Linear { amplitude: 3.0, dip, freq, count: 1 }], nt, ntr, seed);
        // Peak amplitude: the wavelet's envelope is 1 at the event, so the peak is ≈ amplitude.
        let peak = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(peak <= 3.0 + 1e-9 && peak > 2.9, "peak {peak}");
        // The event time on each trace where it lies well inside the panel.
        let picks: Vec<(f64, f64)> = x
            .columns()
            .into_iter()
            .enumerate()
            .filter_map(|(j, t)| {
                let (i, v) = t
                    .iter()
                    .enumerate()
                    .fold((0, 0.0f64), |b, (i, v)| if v.abs() > b.1 { (i, v.abs()) } else { b });
                (v > 2.9 && i > 50 && i < nt - 50).then_some((j as f64, i as f64 * DT * 1000.0))
            })
            .collect();
        if picks.len() < 10 {
            continue;
        }
        // Least-squares slope of pick time (ms) against trace number.
        let n = picks.len() as f64;
        let (mx, my) =
            (picks.iter().map(|p| p.0).sum::<f64>() / n, picks.iter().map(|p| p.1).sum::<f64>() / n);
        let slope = picks.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
            / picks.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum::<f64>();
        assert!((slope - dip).abs() < 0.2, "seed {seed}: dip {slope} ms/trace, expected {dip}");
        // The stacked amplitude spectrum peaks at the wavelet's frequency (bins of 0.25 Hz).
        let mut stacked = vec![0.0; nt / 2 + 1];
        for trace in x.columns() {
            for (k, (_, p)) in power(trace).into_iter().enumerate() {
                stacked[k] += p;
            }
        }
        let k = (0..stacked.len()).max_by(|a, b| stacked[*a].total_cmp(&stacked[*b])).unwrap();
        let f = k as f64 / (nt as f64 * DT);
        assert!((f - freq).abs() <= 0.5, "seed {seed}: peak at {f} Hz, expected {freq}");
        fitted += 1;
    }
    assert!(fitted >= 10, "only {fitted} of 20 draws had an event across the panel");
}

#[test]
fn swell_is_low_frequency_and_comes_in_groups_of_adjacent_traces() {
    let (nt, ntr, width) = (1000, 200, 5);
    for seed in 0..5 {
        let parts = vec![NoiseKind::Swell { amplitude: 4.0, fraction: 0.1, width, band: [1.0, 8.0] }];
        let x = noise_only(parts, nt, ntr, seed);
        let hit: Vec<bool> = x.columns().into_iter().map(|t| t.iter().any(|v| *v != 0.0)).collect();
        // Runs of affected traces: each at least `width` long; about fraction·traces in all.
        let mut runs = vec![];
        let mut run = 0;
        for h in hit.iter().chain(std::iter::once(&false)) {
            if *h {
                run += 1;
            } else if run > 0 {
                runs.push(run);
                run = 0;
            }
        }
        assert!(!runs.is_empty() && runs.iter().all(|r| *r >= width), "seed {seed}: runs {runs:?}");
        let affected: usize = runs.iter().sum();
        assert!(affected <= 20 && affected >= width, "seed {seed}: {affected} traces affected");
        // Low frequency: the time taper widens the band a little, so allow 1 Hz either side.
        let inside = energy_fraction(&x, 0.0, 9.0);
        assert!(inside > 0.98, "seed {seed}: {inside} of the energy below 9 Hz");
        // High amplitude: the affected traces' RMS is of the order of the amplitude.
        let rms = (x.iter().map(|v| v * v).sum::<f64>() / (affected * nt) as f64).sqrt();
        assert!(rms > 1.0 && rms < 4.0, "seed {seed}: swell RMS {rms}");
    }
}

#[test]
fn the_same_seed_draws_the_same_noise() {
    let parts = || {
        vec![
            NoiseKind::Gaussian { std: 0.3, band: Some([5.0, 50.0]) },
            NoiseKind::Spikes { rate: 0.01, amplitude: 3.0 },
            NoiseKind::Swell { amplitude: 2.0, fraction: 0.2, width: 3, band: [1.0, 10.0] },
        ]
    };
    assert_eq!(noise_only(parts(), 200, 30, 9), noise_only(parts(), 200, 30, 9));
    assert_ne!(noise_only(parts(), 200, 30, 9), noise_only(parts(), 200, 30, 10));
}

#[test]
fn amplitudes_are_relative_to_the_reference_rms() {
    let mut a = Array2::<f64>::zeros((500, 20));
    let mut b = Array2::<f64>::zeros((500, 20));
    let s = spec(vec![NoiseKind::Gaussian { std: 0.5, band: Some([5.0, 40.0]) }]);
    s.apply(&mut a.view_mut(), 1.0, DT, &mut ChaCha8Rng::seed_from_u64(1));
    s.apply(&mut b.view_mut(), 3.0, DT, &mut ChaCha8Rng::seed_from_u64(1));
    assert!(a.iter().zip(&b).all(|(x, y)| (3.0 * x - y).abs() < 1e-12));
}

// ---- the language: checker, defaults, formatter ------------------------------------------

fn program(noise: &str) -> String {
    format!(
        "model m {{\n    input x: [1, 32, 32]\n    y = x -> conv(1, kernel=3, pad=same)\n    output y\n}}\n\ntrain {{\n    data = synthetic(count = 4, noise = {noise})\n}}\n"
    )
}

fn errors(noise: &str) -> Vec<(String, String, Option<String>)> {
    let src = program(noise);
    geonetc::check::check_source(&src)
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.message.clone(), src[d.primary.span.clone()].to_string(), d.help.clone()))
        .collect()
}

fn noise_of(noise: &str) -> NoiseSpec {
    let out = geonetc::check::check_source(&program(noise));
    match out.program.and_then(|p| p.train).map(|t| t.data) {
        Some(DataSpec::Synthetic { noise, .. }) => noise,
        other => panic!("no synthetic data: {other:?}"),
    }
}

#[test]
fn a_bare_number_is_white_gaussian_noise_and_serialises_as_before() {
    assert_eq!(noise_of("0.5"), NoiseSpec::gaussian(0.5));
    assert_eq!(serde_json::to_string(&noise_of("0.5")).unwrap(), "0.5");
    assert_eq!(noise_of("gaussian(0.5)"), NoiseSpec::gaussian(0.5));
}

#[test]
fn a_sum_of_kinds_is_checked_into_its_parts_with_defaults() {
    let n = noise_of(
        "gaussian(0.3, band = [5, 60]) + spikes(rate = 0.001) + swell(3) + linear(2) + dead_traces(0.01)",
    );
    assert_eq!(
        n.parts,
        vec![
            NoiseKind::Gaussian { std: 0.3, band: Some([5.0, 60.0]) },
            NoiseKind::Spikes { rate: 0.001, amplitude: 10.0 },
            NoiseKind::Swell { amplitude: 3.0, fraction: 0.1, width: 4, band: [1.0, 10.0] },
            NoiseKind::Linear { amplitude: 2.0, dip: 20.0, freq: 8.0, count: 1 },
            NoiseKind::DeadTraces { fraction: 0.01 },
        ]
    );
    // The canonical text parses back to the same noise.
    assert_eq!(noise_of(&n.to_string()), n);
}

#[test]
fn unknown_kinds_and_settings_get_located_did_you_mean_messages() {
    let e = errors("gausian(0.3)");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, "unknown noise kind `gausian`");
    assert_eq!(e[0].1, "gausian");
    assert_eq!(e[0].2.as_deref(), Some("did you mean `gaussian`?"));

    let e = errors("ground_roll(2)");
    assert_eq!(e[0].2.as_deref(), Some("did you mean `linear`?"));

    let e = errors("spikes(rate = 0.01, amplitde = 3)");
    assert_eq!(e[0].0, "unknown setting `amplitde` for spikes noise");
    assert_eq!(e[0].1, "amplitde");
    assert_eq!(e[0].2.as_deref(), Some("did you mean `amplitude`?"));
}

#[test]
fn every_parameter_is_range_checked_on_its_value() {
    let cases = [
        ("spikes(rate = 2)", "`rate` of spikes noise must be in (0, 1], found 2", "2"),
        ("spikes(rate = 0.1, amplitude = -1)", "`amplitude` of spikes noise must be > 0, found -1", "-1"),
        (
            "gaussian(0.3, band = [60, 5])",
            "`band` must go from a low to a higher frequency ≥ 0 Hz, found [60, 5]",
            "[60, 5]",
        ),
        ("gaussian(0.3, band = 5)", "`band` must be two frequencies in Hz, found the integer 5", "5"),
        (
            "swell(2, width = 2.5)",
            "`width` of swell noise must be an integer from 1 to 1048576, found the number 2.5",
            "2.5",
        ),
        ("dead_traces(0)", "`fraction` of dead_traces noise must be in (0, 1], found 0", "0"),
        ("linear(1, freq = 0)", "`freq` of linear noise must be > 0 Hz, found 0", "0"),
        ("bursts(rate = 0.1, length = 0)", "`length` of bursts noise must be > 0 ms, found 0", "0"),
    ];
    for (noise, message, at) in cases {
        let e = errors(noise);
        assert_eq!(e.len(), 1, "{noise}: {e:?}");
        assert_eq!(e[0].0, message, "{noise}");
        assert_eq!(e[0].1, at, "{noise}");
    }
}

#[test]
fn missing_required_settings_and_products_are_refused() {
    let e = errors("linear(freq = 8)");
    assert_eq!(e[0].0, "`linear` noise needs `amplitude`");
    assert_eq!(e[0].1, "linear(freq = 8)");
    let e = errors("2 * spikes(0.01)");
    assert_eq!(e[0].0, "noise kinds can only be added together");
    let e = errors("\"loud\"");
    assert!(e[0].0.starts_with("`noise` must be a number ≥ 0 or noise kinds"), "{e:?}");
    // All independent mistakes of one expression at once.
    assert_eq!(errors("gausian(1) + spikes(rate = 5) + swell(0)").len(), 3);
}

#[test]
fn frequencies_above_the_synthetic_nyquist_are_refused() {
    let e = errors("gaussian(0.3, band = [10, 200])");
    assert_eq!(e.len(), 1);
    assert!(e[0].0.contains("above the synthetic data's Nyquist frequency (125 Hz at 4 ms)"), "{e:?}");
}

#[test]
fn fmt_keeps_a_noise_expression_and_is_a_fixed_point() {
    let src = program("gaussian(0.3,band=[5,60])+spikes(rate=0.001,amplitude=10)+swell(3,width=4)");
    let once = geonetc::fmt::format_source(&src).expect("formats");
    assert!(
        once.contains("noise = gaussian(0.3, band = [5, 60]) + spikes(rate = 0.001, amplitude = 10) + swell(3, width = 4)"),
        "{once}"
    );
    assert_eq!(geonetc::fmt::format_source(&once).expect("formats again"), once);
    let (before, after) = (geonetc::check::check_source(&src), geonetc::check::check_source(&once));
    let noise = |o: geonetc::check::CheckOutput| o.program.and_then(|p| p.train).map(|t| t.data);
    assert_eq!(noise(before), noise(after));
}

#[test]
fn npy_data_takes_noise_and_then_its_input_is_the_target() {
    let src = "model m {\n    input x: [1, 32, 32]\n    y = x -> conv(1, kernel=3, pad=same)\n    output y\n}\n\ntrain {\n    data = npy(input = \"clean.npy\", noise = spikes(rate = 0.01), dt_ms = 2)\n}\n";
    let out = geonetc::check::check_source(src);
    match out.program.and_then(|p| p.train).map(|t| t.data) {
        Some(DataSpec::Npy { input, target, noise: Some(n), dt_ms, .. }) => {
            assert_eq!((input.as_str(), target.as_deref(), dt_ms), ("clean.npy", Some("clean.npy"), 2.0));
            assert_eq!(n.parts, vec![NoiseKind::Spikes { rate: 0.01, amplitude: 10.0 }]);
        }
        other => panic!("{other:?}"),
    }
}

/// The pictures of docs/noise.md: one synthetic section with each kind of noise (and the mix
/// the shipped models were trained on). Run with `cargo test --test noise -- --ignored`.
#[test]
#[ignore = "writes docs/img/noise_*.png"]
fn draw_the_pictures_of_docs_noise_md() {
    use geonetc::seismic::plot::{Axes, Options, Palette, sections};
    let kinds = [
        ("white", "gaussian(0.5)"),
        ("band", "gaussian(1, band = [20, 40])"),
        ("spikes", "spikes(rate = 0.002, amplitude = 10)"),
        ("bursts", "bursts(rate = 0.0003, amplitude = 5, length = 60)"),
        ("traces", "dead_traces(0.1) + reversed_traces(0.1)"),
        ("linear", "linear(2, dip = 12, freq = 8, count = 3)"),
        ("swell", "swell(5, fraction = 0.15, width = 4, band = [1, 8])"),
        (
            "mix",
            "gaussian(1) + gaussian(0.3, band = [5, 60]) + spikes(rate = 0.0005, amplitude = 8) + swell(3, fraction = 0.05, width = 3) + linear(0.5, dip = 30, freq = 8)",
        ),
    ];
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img");
    for (name, noise) in kinds {
        let spec = noise_of(noise);
        let ds = geonetc::runtime::data::synthetic(&[1, 256, 128], 1, &spec, 3).expect("synthetic");
        let section = |a: &ndarray::ArrayD<f64>| {
            a.index_axis(ndarray::Axis(0), 0)
                .index_axis(ndarray::Axis(0), 0)
                .t()
                .mapv(|v| v as f32)
                .into_dimensionality::<ndarray::Ix2>()
                .expect("a 2-D section")
        };
        let (noisy, clean) = (section(&ds.inputs), section(&ds.targets));
        let added = &noisy - &clean;
        // Dense noise compresses badly as PNG: those pictures are JPEG (under ~200 KB each).
        let ext = if ["white", "band", "mix"].contains(&name) { "jpg" } else { "png" };
        let shown = [("clean", &clean), ("with noise", &noisy), ("noise alone", &added)];
        let options = Options { palette: Palette::Grey, ..Options::default() };
        sections(&dir.join(format!("noise_{name}.{ext}")), &shown, &Axes::plain(128, 4000), &options)
            .expect("drawn");
    }
}
