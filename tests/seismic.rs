//! The SEG-Y/SU reader on every shared data file: geometry, values and headers against segyio
//! (fixtures from scripts/seismic_reference.py) and the data README; the README's pitfalls;
//! write → read round trips; malformed files get one clean error, never a panic.

use geonetc::seismic::segy::{self, Endian, SampleFormat, SeismicFile};
use proptest::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn data(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/seismic").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipped: {} is not beside the repo", p.display());
        None
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("geonetc-seis-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const FILES: &[&str] = &[
    "field/penobscot_xl1155.sgy",
    "field/viking_small.segy",
    "field/f3.sgy",
    "fixtures/small.sgy",
    "fixtures/small-lsb.sgy",
    "fixtures/multi-text.sgy",
    "fixtures/f3-lsb.sgy",
    "field/gom_cdp_nmo.su",
    "fixtures/small.su",
];

#[test]
fn every_file_matches_segyio() {
    for rel in FILES {
        let Some(path) = data(rel) else { return };
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        let fx: Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/tests/fixtures/seismic/{name}.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        let f = SeismicFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.traces() as u64, fx["traces"].as_u64().unwrap(), "{name} traces");
        assert_eq!(f.samples as u64, fx["samples"].as_u64().unwrap(), "{name} samples");
        assert_eq!(f.dt_us as u64, fx["dt_us"].as_u64().unwrap(), "{name} dt");
        let s = f.section().unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1e-6);
        let min = s.iter().fold(f32::INFINITY, |m, &v| m.min(v)) as f64;
        let max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let rms = (s.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
        assert!(
            close(min, fx["min"].as_f64().unwrap()) && close(max, fx["max"].as_f64().unwrap()),
            "{name} range {min} {max}"
        );
        assert!(close(rms, fx["rms"].as_f64().unwrap()), "{name} rms {rms}");
        for pick in fx["picks"].as_array().unwrap() {
            let i = pick["trace"].as_u64().unwrap() as usize;
            let want: Vec<f32> =
                pick["samples"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(&s.row(i).to_vec()[..want.len()], &want[..], "{name} trace {i}");
            let h = f.trace_header(i).unwrap();
            for (key, got) in [
                ("cdp", h.cdp),
                ("offset", h.offset),
                ("inline", h.inline),
                ("crossline", h.crossline),
                ("sequence_line", h.sequence_line),
            ] {
                if let Some(w) = pick["header"].get(key) {
                    assert_eq!(got as i64, w.as_i64().unwrap(), "{name} trace {i} {key}");
                }
            }
        }
    }
}

#[test]
fn readme_geometry_and_pitfalls() {
    let Some(p) = data("field/penobscot_xl1155.sgy") else { return };
    let f = SeismicFile::open(&p).unwrap();
    assert_eq!(
        (f.revision, f.endian, f.format, f.textual_ebcdic),
        (Some(1), Endian::Big, SampleFormat::Ibm, false)
    );
    assert!(f.textual_header.contains("OpendTect"));
    let (first, last) = (f.trace_header(0).unwrap(), f.trace_header(600).unwrap());
    assert_eq!((first.inline, last.inline, first.crossline), (1000, 1600, 1155));
    assert_eq!(first.coord_scalar, -10);

    // Stale trace-header ns (1500) in a rev-0 file with fixed-length flag 0: the binary 600 fits.
    let v = SeismicFile::open(&data("field/viking_small.segy").unwrap()).unwrap();
    assert_eq!((v.revision, v.samples, v.traces(), v.textual_ebcdic), (Some(0), 600, 480, true));
    assert!(v.warnings.iter().any(|w| w.contains("1500")), "{:?}", v.warnings);
    let offsets: Vec<i32> = (0..v.traces()).map(|i| v.trace_header(i).unwrap().offset).collect();
    assert_eq!((*offsets.iter().min().unwrap(), *offsets.iter().max().unwrap()), (-3237, -262));

    // f3: int16, 23 inlines × 18 crosslines, stale ns 462, delay 4 ms; the LE copy reads the same.
    let f3 = SeismicFile::open(&data("field/f3.sgy").unwrap()).unwrap();
    let lsb = SeismicFile::open(&data("fixtures/f3-lsb.sgy").unwrap()).unwrap();
    assert_eq!((f3.format, f3.samples, lsb.endian), (SampleFormat::Int16, 75, Endian::Little));
    assert_eq!(f3.section().unwrap(), lsb.section().unwrap());
    let h = f3.trace_header(0).unwrap();
    assert_eq!((h.inline, h.crossline, h.delay_ms), (111, 875, 4));
    let h = f3.trace_header(413).unwrap();
    assert_eq!((h.inline, h.crossline), (133, 892));

    // small.sgy: trace-header ns and dt are 0, the binary header is the only source; the
    // byte-swapped copy (IBM floats included) and the SU copy decode to the same values.
    let small = SeismicFile::open(&data("fixtures/small.sgy").unwrap()).unwrap();
    assert_eq!((small.samples, small.dt_us, small.trace_header(0).unwrap().ns), (50, 4000, 0));
    let small_lsb = SeismicFile::open(&data("fixtures/small-lsb.sgy").unwrap()).unwrap();
    let small_su = SeismicFile::open(&data("fixtures/small.su").unwrap()).unwrap();
    assert_eq!(small.section().unwrap(), small_lsb.section().unwrap());
    assert_eq!(small.section().unwrap(), small_su.section().unwrap());
    assert_eq!(small_su.kind, segy::Kind::Su);

    // 4 extended textual headers, 1 trace of 1 sample.
    let mt = SeismicFile::open(&data("fixtures/multi-text.sgy").unwrap()).unwrap();
    assert_eq!((mt.extended_headers, mt.traces(), mt.samples), (4, 1, 1));

    // SU from SeismicLab: CDP 1010, offsets −15993..−68.
    let gom = SeismicFile::open(&data("field/gom_cdp_nmo.su").unwrap()).unwrap();
    assert_eq!((gom.traces(), gom.samples, gom.trace_header(0).unwrap().cdp), (92, 1751, 1010));
    let offs: Vec<i32> = (0..92).map(|i| gom.trace_header(i).unwrap().offset).collect();
    assert_eq!((*offs.iter().min().unwrap(), *offs.iter().max().unwrap()), (-15993, -68));
}

#[test]
fn write_read_round_trips_keep_every_header_byte() {
    let d = tmp("roundtrip");
    for rel in
        ["field/penobscot_xl1155.sgy", "fixtures/small-lsb.sgy", "field/f3.sgy", "field/gom_cdp_nmo.su"]
    {
        let Some(p) = data(rel) else { return };
        let f = SeismicFile::open(&p).unwrap();
        let out = d.join(Path::new(rel).file_name().unwrap());
        f.write_like(&out, &f.section().unwrap()).unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(&p).unwrap(),
            "{rel}: identity write changed bytes"
        );
        // Halved values come back halved (exactly for IEEE, IBM within its precision, int16 rounded).
        let half = f.section().unwrap().mapv(|v| v / 2.0);
        f.write_like(&out, &half).unwrap();
        let back = SeismicFile::open(&out).unwrap().section().unwrap();
        for (a, b) in back.iter().zip(half.iter()) {
            let tol = if f.format == SampleFormat::Int16 { 0.5 } else { 1e-6 * b.abs() };
            assert!((a - b).abs() <= tol, "{rel}: {a} vs {b}");
        }
    }
}

#[test]
fn malformed_files_get_one_clean_error() {
    let d = tmp("bad");
    let Some(small) = data("fixtures/small.sgy") else { return };
    let bytes = std::fs::read(&small).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.sgy", vec![], "empty"),
        ("short.sgy", bytes[..1000].to_vec(), "too short"),
        ("truncated.sgy", bytes[..bytes.len() - 100].to_vec(), "truncated"),
        ("garbage.sgy", (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(), ""),
        ("bad.su", vec![7; 1000], "Seismic Unix"),
    ];
    for (name, content, want) in cases {
        let p = d.join(name);
        std::fs::write(&p, &content).unwrap();
        let e = match SeismicFile::open(&p) {
            Err(e) => e.to_string(),
            // Garbage may happen to parse as some geometry; it only must not panic.
            Ok(_) if name == "garbage.sgy" => continue,
            Ok(_) => panic!("{name} was accepted"),
        };
        assert!(e.contains(name) && e.contains(want) && !e.contains('\n'), "{name}: {e}");
    }
    // Header-only traces (zero samples) open (inspect describes them) but are no section.
    let mut zero = bytes[..3600].to_vec();
    zero[3220] = 0;
    zero[3221] = 0;
    zero.extend(std::iter::repeat_n(0u8, 240 * 3));
    std::fs::write(d.join("zero.sgy"), &zero).unwrap();
    let z = SeismicFile::open(&d.join("zero.sgy")).unwrap();
    assert_eq!((z.traces(), z.samples), (3, 0));
    let e = z.section().unwrap_err().to_string();
    assert!(e.contains("zero.sgy") && e.contains("empty section: 3 traces of 0 samples"), "{e}");
    let e = SeismicFile::open(&d.join("truncated.sgy")).err().unwrap().to_string();
    assert!(e.contains("byte 14500"), "{e}");
}

#[test]
fn inspect_command() {
    let Some(p) = data("field/f3.sgy") else { return };
    let out = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args(["inspect", p.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["format", "traces", "samples", "dt_us", "min", "max", "rms", "warnings"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(
        (v["traces"].as_u64(), v["samples"].as_u64(), v["dt_us"].as_u64()),
        (Some(414), Some(75), Some(4000))
    );
    assert_eq!((v["min"].as_f64(), v["max"].as_f64()), (Some(-10239.0), Some(10827.0)));
    let npy = data("field/mobil.npy").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args(["inspect", npy.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["traces"].as_u64(), v["samples"].as_u64()), (Some(60), Some(1000)));
    let out = Command::new(env!("CARGO_BIN_EXE_geonetc")).args(["inspect", "Cargo.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

proptest! {
    #[test]
    fn ibm_encoding_round_trips(v in -1e30f32..1e30f32) {
        let back = segy::ibm_to_f32(segy::f32_to_ibm(v));
        // IBM keeps at least 21 significant bits.
        prop_assert!((back - v).abs() <= v.abs() * 1e-6, "{} → {}", v, back);
    }

    #[test]
    fn mutated_files_never_panic(muts in prop::collection::vec((0usize..14600, any::<u8>()), 1..20), cut in 0usize..14600) {
        if let Some(p) = data("fixtures/small.sgy") {
            let mut b = std::fs::read(&p).unwrap();
            for (at, v) in muts { b[at] = v; }
            b.truncate(cut.max(1));
            let f = std::env::temp_dir().join(format!("geonetc-mut-{}.sgy", std::process::id()));
            std::fs::write(&f, &b).unwrap();
            if let Ok(s) = SeismicFile::open(&f) { let _ = s.section(); }
            let _ = geonetc::seismic::inspect(&f);
        }
    }
}

#[test]
fn identity_model_through_infer_keeps_headers_and_values() {
    let d = tmp("identity");
    for (rel, model) in [
        (
            "field/penobscot_xl1155.sgy",
            "model id {\n input x: [1, 64, 64]\n y = x -> conv(1, kernel=1, bias=false, init=[[1]])\n output y\n}\n",
        ),
        (
            "field/gom_cdp_nmo.su",
            "model id {\n input t: [1, 256]\n y = t -> conv(1, kernel=3, pad=1, bias=false, init=[0, 1, 0])\n output y\n}\n",
        ),
    ] {
        let Some(p) = data(rel) else { return };
        let file = d.join("id.geonet");
        std::fs::write(&file, model).unwrap();
        let out = d.join(Path::new(rel).file_name().unwrap());
        for backend in ["interp", "jit"] {
            let o = Command::new(env!("CARGO_BIN_EXE_geonetc"))
                .args([
                    "infer",
                    file.to_str().unwrap(),
                    "--backend",
                    backend,
                    "--input",
                    p.to_str().unwrap(),
                    "--output",
                    out.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&p).unwrap(), "{rel} on {backend}");
        }
    }
}

#[test]
fn a_two_dimensional_npy_is_a_section_for_infer_with_a_picture() {
    let Some(noisy) = data("synthetic/patchunet_synthetic_noisy.npy") else { return };
    let d = tmp("npy-section");
    let file = d.join("id.geonet");
    let model = "model id {\n input x: [1, 64, 64]\n y = x -> conv(1, kernel=1, bias=false, init=[[1]])\n output y\n}\n";
    std::fs::write(&file, model).unwrap();
    let (out, png) = (d.join("out.npy"), d.join("panels.png"));
    let o = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args(["infer", file.to_str().unwrap(), "--input", noisy.to_str().unwrap()])
        .args(["--output", out.to_str().unwrap(), "--plot", png.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    // [time, traces] in, the same array out (601 × 76 is no multiple of the 64 × 64 tile).
    let a = geonetc::runtime::data::read_npy(&noisy).unwrap();
    let b = geonetc::runtime::data::read_npy(&out).unwrap();
    assert_eq!(a.shape(), &[601, 76]);
    assert_eq!(a, b);
    assert_eq!(&std::fs::read(&png).unwrap()[1..4], b"PNG");
}

#[test]
fn segy_training_patches() {
    let Some(p) = data("field/penobscot_xl1155.sgy") else { return };
    // A 2-D line: 1501 samples × 601 traces; patches 32 × 64 every 16 × 32.
    let plan = geonetc::runtime::data::SegyPlan::new(None, Some(&[16, 32]));
    let ds = geonetc::runtime::data::segy(
        &p,
        &[1, 32, 64],
        &plan,
        &geonetc::check::program::NoiseSpec::gaussian(0.0),
        1,
    )
    .unwrap();
    let rows = geonetc::seismic::tile_starts(1501, 32, 16).len();
    let cols = geonetc::seismic::tile_starts(601, 64, 32).len();
    assert_eq!(ds.len(), rows * cols);
    let (x, t) = ds.batch_with_noise(&[0, 1], 0).unwrap();
    assert_eq!(x, t); // noise 0
    // Divided by the file's scale: the first patch is the section's corner / scale.
    let f = SeismicFile::open(&p).unwrap();
    let s = f.section().unwrap();
    let scale = ds.file.as_ref().unwrap().scale;
    assert!((t[[0, 0, 5, 7]] - s[[7, 5]] as f64 / scale).abs() < 1e-9);
    assert!((t[[1, 0, 5, 7]] - s[[32 + 7, 5]] as f64 / scale).abs() < 1e-9);
    let plan = geonetc::runtime::data::SegyPlan::new(None, None);
    let traces = geonetc::runtime::data::segy(
        &p,
        &[1, 40],
        &plan,
        &geonetc::check::program::NoiseSpec::gaussian(0.5),
        1,
    )
    .unwrap();
    assert_eq!(traces.len(), 601 * geonetc::seismic::tile_starts(1501, 40, 20).len());
    assert!(
        geonetc::runtime::data::segy(
            &p,
            &[1, 2048, 64],
            &plan,
            &geonetc::check::program::NoiseSpec::gaussian(0.5),
            1
        )
        .unwrap_err()
        .contains("smaller than")
    );
}

#[test]
fn eval_reports_the_published_input_snr() {
    let (Some(clean), Some(noisy)) =
        (data("synthetic/patchunet_synthetic_clean.npy"), data("synthetic/patchunet_synthetic_noisy.npy"))
    else {
        return;
    };
    let d = tmp("eval");
    let file = d.join("id.geonet");
    std::fs::write(&file, "model id {\n input x: [1, 64, 64]\n y = x -> conv(1, kernel=1, bias=false, init=[[1]])\n output y\n}\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args([
            "eval",
            file.to_str().unwrap(),
            "--backend",
            "interp",
            "--clean",
            clean.to_str().unwrap(),
            "--noisy",
            noisy.to_str().unwrap(),
        ])
        .args(["--plot", d.join("panels.png").to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    // The data README: SNR(noisy) = −0.298 dB; an identity model changes nothing.
    assert!(out.contains("SNR noisy      -0.30 dB") && out.contains("SNR denoised   -0.30 dB"), "{out}");
    // Five 360×540 panels (noisy, denoised, removed, clean, error) and a 110-pixel colour bar.
    let png = std::fs::read(d.join("panels.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let dim = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    assert_eq!((dim(16), dim(20)), (5 * 360 + 110, 540));
}

#[test]
fn a_two_dimensional_npy_for_a_one_dimensional_model_is_one_sample() {
    let d = tmp("npy-1d-sample");
    let file = d.join("shift.geonet");
    // Output sample i is input sample i−1 (zero at the left edge).
    let model = "model shift {\n input t: [1, 8]\n y = t -> conv(1, kernel=3, pad=1, bias=false, init=[1, 0, 0])\n output y\n}\n";
    std::fs::write(&file, model).unwrap();
    let (input, out) = (d.join("in.npy"), d.join("out.npy"));
    let x = ndarray::Array2::from_shape_fn((1, 8), |(_, i)| i as f64 + 1.0).into_dyn();
    geonetc::runtime::data::write_npy(&input, &x).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args(["infer", file.to_str().unwrap(), "--input", input.to_str().unwrap()])
        .args(["--output", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let y = geonetc::runtime::data::read_npy(&out).unwrap();
    assert_eq!(y.shape(), &[1, 8]);
    assert_eq!(y.iter().copied().collect::<Vec<f64>>(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
}

// ---- the readers on hand-made files (issue 15) ------------------------------------------------

/// Big-endian trace of `ns` IEEE samples `value`, header saying `header_ns`.
fn trace(header_ns: u16, ns: usize, value: f32) -> Vec<u8> {
    let mut t = vec![0u8; 240];
    t[114..116].copy_from_slice(&header_ns.to_be_bytes());
    t.extend(std::iter::repeat_n(value.to_be_bytes(), ns).flatten());
    t
}

fn open_bytes(name: &str, bytes: &[u8]) -> Result<SeismicFile, geonetc::seismic::segy::Error> {
    let dir = std::env::temp_dir().join(format!("geonetc-segy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    SeismicFile::open(&p)
}

#[test]
fn su_traces_of_different_lengths_are_an_error_not_misread() {
    // 50, 25 and 75 samples: the sizes add up to a whole file, which the old reader read as
    // three traces of 50 with header bytes as samples.
    let bytes = [trace(50, 50, 1.0), trace(25, 25, 2.0), trace(75, 75, 3.0)].concat();
    let e = open_bytes("mixed.su", &bytes).err().unwrap().to_string();
    assert!(e.contains("mixed.su"), "{e}");
    assert!(e.contains("trace 2 at byte 440 has 25 samples but trace 1 has 50"), "{e}");
    // The same three traces at 50 read back exactly.
    let bytes = [trace(50, 50, 1.0), trace(50, 50, 2.0), trace(50, 50, 3.0)].concat();
    let f = open_bytes("even.su", &bytes).unwrap();
    let s = f.section().unwrap();
    assert_eq!(s.dim(), (3, 50));
    assert_eq!((s[[0, 0]], s[[1, 49]], s[[2, 10]]), (1.0, 2.0, 3.0));
}

#[test]
fn su_truncation_names_trace_and_byte() {
    let mut bytes = [trace(50, 50, 1.0), trace(50, 50, 2.0)].concat();
    bytes.truncate(440 + 300);
    let e = open_bytes("cut.su", &bytes).err().unwrap().to_string();
    assert!(e.contains("cut.su: truncated: trace 2 at byte 440 needs 440 bytes"), "{e}");
    assert!(e.contains("300 bytes into it; 1 whole traces before it"), "{e}");
}

/// A big-endian SEG-Y header block: IEEE samples, `ns` in the binary header.
fn segy_header(ns: u16) -> Vec<u8> {
    let mut b = vec![0x40u8; 3200];
    b.resize(3600, 0);
    b[3216..3218].copy_from_slice(&4000u16.to_be_bytes());
    b[3220..3222].copy_from_slice(&ns.to_be_bytes());
    b[3224..3226].copy_from_slice(&5u16.to_be_bytes());
    b
}

#[test]
fn segy_truncated_inside_samples_is_not_a_zero_sample_trace() {
    // Binary header 50 samples, trace headers 0 (common), file cut after the first trace
    // header: once read as one trace of zero samples.
    let mut bytes = segy_header(50);
    bytes.extend(trace(0, 50, 1.0));
    bytes.extend(trace(0, 50, 2.0));
    bytes.truncate(3600 + 440 + 240 + 17);
    let e = open_bytes("cut.sgy", &bytes).err().unwrap().to_string();
    assert!(
        e.contains("cut.sgy: truncated: trace 2 at byte 4040 needs 440 bytes (50 samples of IEEE float (5), from the binary header)"),
        "{e}"
    );
    // Samples that look like a huge count are never quoted as a trace header.
    let mut bytes = segy_header(50);
    bytes.extend(trace(0, 50, f32::from_bits(0x7fff_7fff)));
    bytes.extend(trace(0, 10, 0.5));
    let e = open_bytes("cut2.sgy", &bytes).err().unwrap().to_string();
    assert!(e.contains("trace 2 at byte 4040") && !e.contains("32767"), "{e}");
}

#[test]
fn empty_sections_and_directories() {
    let e = open_bytes("none.sgy", &segy_header(50)).unwrap().section().unwrap_err().to_string();
    assert!(e.contains("none.sgy: empty section: 0 traces of 50 samples"), "{e}");
    let dir = std::env::temp_dir().join(format!("geonetc-segy-dir-{}.sgy", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = SeismicFile::open(&dir).err().unwrap().to_string();
    assert!(e.ends_with(": is a directory, not a data file"), "{e}");
}
