//! `segy(...)` training data read from the file a batch at a time: patches of a 3-D volume's
//! inline and crossline sections against an independent read (scripts/training_reference.py),
//! the same patches, order and noise as the in-memory path, `holdout = ...`, and one scale for
//! training and inference.

use geonetc::check::program::{Holdout, NoiseSpec};
use geonetc::runtime::data::{self, AddedNoise, NOISE_FIXED, SegyPlan};
use geonetc::seismic::segy::SeismicFile;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A shared data file, beside the repository or in /work/shared; None (test skipped) if absent.
fn data(rel: &str) -> Option<PathBuf> {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/seismic").join(rel);
    let shared = Path::new("/work/shared/data/seismic").join(rel);
    let found = [beside, shared].into_iter().find(|p| p.exists());
    if found.is_none() {
        eprintln!("skipped: {rel} is absent");
    }
    found
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("geonetc-training-file-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn quiet() -> NoiseSpec {
    NoiseSpec::gaussian(0.0)
}

#[test]
fn volume_patches_come_from_inline_and_crossline_sections_as_an_independent_read_says() {
    let Some(p) = data("field/f3.sgy") else { return };
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/training/f3_patches.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // F3: 23 inlines × 18 crosslines × 75 samples. Patches 32 × 16 every 16 × 8: rows 0, 16,
    // 32, 43; an inline (18 traces) gives columns 0 and 2, a crossline (23 traces) 0 and 7.
    let ds = data::segy(&p, &[1, 32, 16], &SegyPlan::new(None, Some(&[16, 8])), &quiet(), 1).unwrap();
    assert_eq!(ds.len(), 23 * 4 * 2 + 18 * 4 * 2);
    let index = ds.patches.as_ref().unwrap();
    let scale = fixture["scale"].as_f64().unwrap();
    assert!(
        (ds.file.as_ref().unwrap().scale / scale - 1.0).abs() < 1e-12,
        "scale {}",
        ds.file.as_ref().unwrap().scale
    );
    let f = SeismicFile::open(&p).unwrap();
    let key = |t: usize| {
        let h = f.trace_header(t).unwrap();
        (i64::from(h.inline), i64::from(h.crossline))
    };
    // No patch crosses an inline (or crossline) edge: its traces share one inline or one
    // crossline, in order.
    for i in 0..ds.len() {
        let (traces, _) = index.traces_of(i);
        let keys: Vec<_> = traces.iter().map(|&t| key(t)).collect();
        let inline = keys.iter().all(|k| k.0 == keys[0].0) && keys.windows(2).all(|w| w[1].1 == w[0].1 + 1);
        let crossline =
            keys.iter().all(|k| k.1 == keys[0].1) && keys.windows(2).all(|w| w[1].0 == w[0].0 + 1);
        assert!(inline || crossline, "patch {i} spans {keys:?}");
    }
    for want in fixture["patches"].as_array().unwrap() {
        let along_inline = want["along"] == "inline";
        let first = (want["inline"].as_i64().unwrap(), want["crossline"].as_i64().unwrap());
        let r = want["sample"].as_u64().unwrap() as usize;
        let i = (0..ds.len())
            .find(|&i| {
                let (traces, start) = index.traces_of(i);
                start == r && key(traces[0]) == first && (key(traces[1]).0 == first.0) == along_inline
            })
            .unwrap_or_else(|| panic!("no patch at {want:?}"));
        let (x, t) = ds.batch_with_noise(&[i], NOISE_FIXED).unwrap();
        assert_eq!(x, t); // no noise
        let values = want["values"].as_array().unwrap();
        assert_eq!(t.shape(), &[1, 1, 32, 16]);
        for (row, line) in values.iter().enumerate() {
            for (col, v) in line.as_array().unwrap().iter().enumerate() {
                let expected = v.as_f64().unwrap() / scale;
                assert!((t[[0, 0, row, col]] - expected).abs() < 1e-12, "{want:?} at {row},{col}");
            }
        }
    }
    // 1-D models take windows of every trace.
    let traces = data::segy(&p, &[1, 40], &SegyPlan::new(None, None), &quiet(), 1).unwrap();
    assert_eq!(traces.len(), 414 * geonetc::seismic::tile_starts(75, 40, 20).len());
    let too_big = data::segy(&p, &[1, 32, 32], &SegyPlan::new(None, None), &quiet(), 1).unwrap_err();
    assert!(too_big.contains("no 32×32 patch fits"), "{too_big}");
}

#[test]
fn file_patches_equal_the_in_memory_patches_with_the_same_noise_and_split() {
    let Some(p) = data("field/penobscot_xl1155.sgy") else { return };
    let noise = NoiseSpec::gaussian(0.5);
    let lazy = data::segy(&p, &[1, 64, 64], &SegyPlan::new(None, None), &noise, 3).unwrap();
    let f = SeismicFile::open(&p).unwrap();
    let dt = f64::from(f.dt_us) * 1e-6;
    let added = AddedNoise { spec: noise.clone(), reference_rms: Some(1.0), dt, seed: 3 };
    let section = f.section_f64().t().to_owned();
    let held = data::section_patches(section, &p, &[1, 64, 64], None, None, added).unwrap();
    assert_eq!(lazy.len(), held.len());
    assert_eq!(lazy.len(), 46 * 18); // tile_starts(1501, 64, 32) × tile_starts(601, 64, 32)
    let all: Vec<usize> = (0..lazy.len()).collect();
    for draw in [NOISE_FIXED, 1, 7] {
        for chunk in all.chunks(97) {
            assert_eq!(
                lazy.batch_with_noise(chunk, draw).unwrap(),
                held.batch_with_noise(chunk, draw).unwrap()
            );
        }
    }
    assert_eq!(lazy.split(0.1, 5, "f").unwrap(), held.split(0.1, 5, "f").unwrap());
    let clean = lazy.levels(false).unwrap();
    assert_eq!(clean, data::Levels { peak_to_rms: clean.peak_to_rms, clipped_rms: 1.0 });
    // The in-memory patches have clipped RMS 1 too (the same scale).
    let held_clean = held.levels(false).unwrap();
    assert!((held_clean.clipped_rms - 1.0).abs() < 0.02, "{held_clean:?}");
    // With noise the model sees more than 1: the file path measures it on a sample of the
    // noisy patches, the in-memory path on all of them (noise RMS 0.5 of the clean level
    // puts both near √1.25 ≈ 1.12).
    let (noisy, held_noisy) = (lazy.levels(true).unwrap(), held.levels(true).unwrap());
    assert!(held_noisy.clipped_rms > 1.05, "{held_noisy:?}");
    assert!((noisy.clipped_rms / held_noisy.clipped_rms - 1.0).abs() < 0.02, "{noisy:?} vs {held_noisy:?}");
}

#[test]
fn holdout_keeps_the_named_traces_or_inlines_out_of_training() {
    let (Some(line), Some(cube)) = (data("field/penobscot_xl1155.sgy"), data("field/f3.sgy")) else { return };
    let plan = |h| SegyPlan { holdout: Some(h), ..SegyPlan::new(None, None) };
    let ds =
        data::segy(&line, &[1, 64, 64], &plan(Holdout::Traces { first: 1, last: 160 }), &quiet(), 1).unwrap();
    let split = ds.split(0.1, 1, "line").unwrap();
    let index = ds.patches.as_ref().unwrap();
    assert_eq!(split.held_out, vec![0..160]);
    assert!(!split.val.is_empty() && !split.train.is_empty());
    for &v in &split.val {
        let (traces, _) = index.traces_of(v);
        assert!(traces.iter().all(|&t| t < 160), "{traces:?}");
    }
    for &t in &split.train {
        let (traces, _) = index.traces_of(t);
        assert!(traces.iter().all(|&t| t >= 160), "{traces:?}");
    }
    assert_eq!(split.train.len() + split.val.len() + split.dropped, ds.len());

    // A volume: inlines 120–125 held out; no training patch touches them (crossline patches
    // straddling them are dropped).
    let ds = data::segy(&cube, &[1, 32, 16], &plan(Holdout::Inlines { first: 120, last: 125 }), &quiet(), 1)
        .unwrap();
    let split = ds.split(0.1, 1, "cube").unwrap();
    let f = SeismicFile::open(&cube).unwrap();
    let inline_of = |t: usize| f.trace_header(t).unwrap().inline;
    let index = ds.patches.as_ref().unwrap();
    assert!(!split.val.is_empty() && split.dropped > 0);
    for &v in &split.val {
        assert!(index.traces_of(v).0.iter().all(|&t| (120..=125).contains(&inline_of(t))));
    }
    for &t in &split.train {
        assert!(index.traces_of(t).0.iter().all(|&t| !(120..=125).contains(&inline_of(t))));
    }
    // Wrong forms and ranges: one line naming the file and the reason.
    let err = |file: &Path, h| {
        data::segy(file, &[1, 32, 16], &plan(h), &quiet(), 1).unwrap().split(0.1, 1, "F").unwrap_err()
    };
    assert!(err(&cube, Holdout::Traces { first: 1, last: 50 }).contains("hold out inlines"));
    assert!(err(&line, Holdout::Inlines { first: 1, last: 5 }).contains("needs a 3-D volume"));
    assert!(
        err(&cube, Holdout::Inlines { first: 200, last: 210 })
            .contains("outside the volume's inlines 111–133")
    );
    assert!(
        err(&line, Holdout::Traces { first: 590, last: 700 }).contains("outside the line's traces 1–601")
    );
    assert!(
        err(&line, Holdout::Traces { first: 1, last: 10 })
            .contains("no patch lies wholly inside the held-out traces 1–10")
    );
}

#[test]
fn training_and_inference_scale_a_file_by_the_same_clipped_rms() {
    let Some(p) = data("field/penobscot_xl1155.sgy") else { return };
    let d = tmp("scale");
    let model = d.join("id.geonet");
    std::fs::write(
        &model,
        format!(
            "model id {{\n  input x: [1, 64, 64]\n  y = x -> conv(1, kernel=1)\n  output y\n}}\noptimizer sgd {{ lr = 1e-3 }}\ntrain {{\n  data = segy(\"{}\", noise = 0.1, holdout = traces(1, 100))\n  epochs = 1\n  batch = 64\n  save = \"id.safetensors\"\n}}\n",
            p.display()
        ),
    )
    .unwrap();
    let run =
        Command::new(env!("CARGO_BIN_EXE_geonetc")).args(["run", model.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr).to_string() + &String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{err}");
    assert!(err.contains("from traces 1–100 (held out)"), "{err}");
    let number_after = |text: &str, key: &str| -> f64 {
        let at = text.find(key).unwrap_or_else(|| panic!("no `{key}` in\n{text}")) + key.len();
        text[at..].split(|c: char| c.is_whitespace() || c == ',' || c == ')').next().unwrap().parse().unwrap()
    };
    let trained_scale = number_after(&err, "scale: clipped RMS ");
    let bytes = std::fs::read(d.join("id.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["data_rms"], "1");
    assert_eq!(meta["data_scale"], data::SCALE_METHOD);
    let out = d.join("out.sgy");
    let infer = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args([
            "infer",
            model.to_str().unwrap(),
            "--input",
            p.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&infer.stderr).to_string() + &String::from_utf8_lossy(&infer.stdout);
    assert_eq!(infer.status.code(), Some(0), "{said}");
    let inferred_scale = number_after(&said, "scale: clipped RMS ");
    let factor = number_after(&said, "(×");
    // Printed to 7 significant digits: the same scale, and inference multiplies by its inverse.
    assert!((trained_scale / inferred_scale - 1.0).abs() < 1e-6, "{trained_scale} vs {inferred_scale}");
    assert!((factor * trained_scale - 1.0).abs() < 1e-6, "×{factor} for scale {trained_scale}");
    assert!(!said.contains("plain RMS"), "{said}");
    // Weights from before `data_scale` are still read, and inference says how they measured.
    let program = geonetc::check::check_source(&std::fs::read_to_string(&model).unwrap()).program.unwrap();
    let graph = geonetc::ir::lower(&program, 1);
    let params = geonetc::ir::init_params(&graph, 1);
    let old = d.join("old.safetensors");
    geonetc::runtime::checkpoint::save_weights(
        &old,
        &graph,
        &params,
        vec![("data_rms".into(), "0.9".into())],
    )
    .unwrap();
    let out = d.join("out_old.sgy");
    let infer = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args(["infer", model.to_str().unwrap(), "--weights", old.to_str().unwrap()])
        .args(["--input", p.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&infer.stdout).to_string() + &String::from_utf8_lossy(&infer.stderr);
    assert_eq!(infer.status.code(), Some(0), "{said}");
    assert!(said.contains("scaled to the training RMS 9.000000e-1"), "{said}");
    assert!(said.contains("note: these weights state the plain RMS of their training data"), "{said}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn holdout_diagnostics() {
    let model = "model d {\n  input x: [1, 32, 32]\n  y = x -> conv(1, kernel=3, pad=same)\n  output y\n}\n";
    let cases = [
        ("holdout_empty_range", "segy(\"f.sgy\", holdout = inlines(120, 100))"),
        ("holdout_trace_zero", "segy(\"f.sgy\", holdout = traces(0, 80))"),
        ("holdout_unknown_kind", "segy(\"f.sgy\", holdout = inline(100, 120))"),
        ("holdout_one_number", "segy(\"f.sgy\", holdout = traces(80))"),
        ("holdout_not_a_range", "segy(\"f.sgy\", holdout = [1, 80])"),
        ("holdout_twice", "segy(\"f.sgy\", holdout = traces(1, 80), holdout = traces(1, 90))"),
        ("holdout_on_npy", "npy(input = \"x.npy\", target = \"y.npy\", holdout = traces(1, 80))"),
    ];
    for (name, data) in cases {
        let src = format!("{model}train {{\n  data = {data}\n}}\n");
        let out = geonetc::check::check_source(&src);
        assert_eq!(out.diagnostics.len(), 1, "{name}: {:#?}", out.diagnostics);
        let text = geonetc::diag::render(&out.diagnostics, &format!("{name}.geonet"), &src, false);
        insta::assert_snapshot!(name, text);
    }
    // Both forms accepted, carried into the program.
    for (data, want) in [
        ("segy(\"f.sgy\", holdout = inlines(100, 120))", Holdout::Inlines { first: 100, last: 120 }),
        ("segy(\"f.sgy\", holdout = traces(1, 80))", Holdout::Traces { first: 1, last: 80 }),
    ] {
        let out = geonetc::check::check_source(&format!("{model}train {{\n  data = {data}\n}}\n"));
        assert!(out.diagnostics.iter().all(|d| !d.is_error()), "{:#?}", out.diagnostics);
        let program = out.program.unwrap();
        match &program.train.as_ref().unwrap().data {
            geonetc::check::program::DataSpec::Segy { holdout, .. } => assert_eq!(*holdout, Some(want)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn no_patch_spans_a_missing_trace_and_an_unsorted_volume_gives_the_same_patches() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seismic/volumes");
    // 6 inlines (10..20 step 2) × 7 crosslines (100..106), 16 samples; missing 12/103,
    // 16/100, 16/101, 20/106. Patches 8 × 3 every 4 × 1; runs of present traces:
    // inlines 7, 3+3, 7, 5, 7, 6 → 5 + 2 + 5 + 3 + 5 + 4 = 24 columns;
    // crosslines 3+2, 3+2, 6, 1+4, 6, 6, 5 → 1 + 1 + 4 + 2 + 4 + 4 + 3 = 19 columns; rows 0, 4, 8.
    let plan = SegyPlan::new(None, Some(&[4, 1]));
    let patches_of = |name: &str| {
        let p = dir.join(name);
        let ds = data::segy(&p, &[1, 8, 3], &plan, &quiet(), 1).unwrap();
        assert_eq!(ds.len(), (24 + 19) * 3, "{name}");
        let f = SeismicFile::open(&p).unwrap();
        let index = ds.patches.as_ref().unwrap();
        let mut out = vec![];
        for i in 0..ds.len() {
            let (traces, r) = index.traces_of(i);
            let headers: Vec<_> = traces.iter().map(|&t| f.trace_header(t).unwrap()).collect();
            let keys: Vec<(i32, i32)> = headers.iter().map(|h| (h.inline, h.crossline)).collect();
            let dead: Vec<bool> = headers.iter().map(|h| h.trace_id == 2).collect();
            // Neighbours on the grid: the next inline (step 2) or the next crossline.
            let along_inline = keys.windows(2).all(|w| w[1] == (w[0].0, w[0].1 + 1));
            let along_crossline = keys.windows(2).all(|w| w[1] == (w[0].0 + 2, w[0].1));
            assert!(along_inline || along_crossline, "{name}: patch {i} spans {keys:?}");
            let (_, t) = ds.batch_with_noise(&[i], NOISE_FIXED).unwrap();
            let scale = ds.file.as_ref().unwrap().scale;
            out.push((keys, r, t.iter().map(|v| v * scale).collect::<Vec<f64>>(), dead));
        }
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    };
    let sorted = patches_of("missing.sgy");
    let shuffled = patches_of("unsorted.sgy");
    // unsorted.sgy marks two traces dead (trace identification code 2): they read as zeros.
    let mut dead_seen = 0;
    for (a, b) in sorted.iter().zip(&shuffled) {
        assert_eq!((&a.0, a.1), (&b.0, b.1));
        for (k, (x, y)) in a.2.iter().zip(&b.2).enumerate() {
            let want = if b.3[k % 3] { 0.0 } else { *x };
            dead_seen += usize::from(b.3[k % 3]);
            assert!((want - y).abs() <= 1e-9 * x.abs().max(1.0), "{:?}: {want} vs {y}", a.0);
        }
    }
    assert!(dead_seen > 0);
}

#[test]
fn ctrl_c_while_a_file_loads_ends_the_run_with_nothing_written() {
    let Some(p) = data("field/f3.sgy") else { return };
    let stopped = SegyPlan { stop: &|| true, ..SegyPlan::new(None, None) };
    assert!(data::segy(&p, &[1, 16, 16], &stopped, &quiet(), 1).unwrap_err().contains("interrupted"));
    let d = tmp("stop");
    let src = format!(
        "model m {{\n  input x: [1, 16, 16]\n  y = x -> conv(1, kernel=1)\n  output y\n}}\noptimizer sgd {{ lr = 1e-3 }}\ntrain {{\n  data = segy(\"{}\")\n  epochs = 1\n  save = \"m.safetensors\"\n}}\n",
        p.display()
    );
    let program = geonetc::check::check_source(&src).program.unwrap();
    let opts = geonetc::runtime::train::TrainOptions {
        epochs: None,
        out_dir: None,
        resume: None,
        stop: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        progress_bar: false,
        backend: geonetc::runtime::engine::Backend::Interp,
    };
    let report = geonetc::runtime::train::train(&program, &d, &opts, &mut |_| {}).unwrap();
    assert!(report.interrupted && report.written.is_empty() && report.trained_epochs == 0);
    assert!(!d.join("m.safetensors").exists() && !d.join("m.ckpt.safetensors").exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// A 3-D volume end to end: `run` trains on patches of F3's inline and crossline sections with
/// inlines held out, and `infer --along both` denoises the cube into a file with F3's headers.
/// A patch larger than every section is one located line naming the sections' sizes, not a
/// claim about missing traces the volume does not have.
#[test]
fn a_volume_trains_and_denoises_and_a_too_large_patch_names_the_section_sizes() {
    let Some(cube) = data("field/f3.sgy") else { return };
    let d = tmp("volume-run");
    let program = |n: usize| {
        format!(
            "model f3 {{\n  input x: [1, {n}, {n}]\n  y = x -> conv(4, kernel=3, pad=same) -> relu -> conv(1, kernel=3, pad=same)\n  output y\n}}\noptimizer adam {{ lr = 1e-3 }}\ntrain {{\n  data = segy(\"{}\", noise = 0.5, holdout = inlines(120, 125))\n  epochs = 2\n  batch = 8\n  save = \"f3.safetensors\"\n}}\n",
            cube.display()
        )
    };
    let geonetc = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_geonetc")).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout),
        )
    };
    // F3: 75 samples, inline sections of 18 traces, crossline sections of 23.
    let big = d.join("big.geonet");
    std::fs::write(&big, program(32)).unwrap();
    let (code, text) = geonetc(&["run", big.to_str().unwrap(), "--out", d.join("big").to_str().unwrap()]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no 32×32 patch fits in the volume's sections"), "{text}");
    assert!(text.contains("inline sections of 18 traces, crossline sections of 23"), "{text}");
    assert!(!text.contains("missing"), "{text}");

    let small = d.join("small.geonet");
    std::fs::write(&small, program(16)).unwrap();
    let out = d.join("out");
    let (code, text) = geonetc(&["run", small.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("inlines 120–125 (held out)"), "{text}");
    let weights = out.join("f3.safetensors");
    let denoised = d.join("f3_denoised.sgy");
    let (code, text) = geonetc(&[
        "infer",
        small.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--input",
        cube.to_str().unwrap(),
        "--output",
        denoised.to_str().unwrap(),
        "--along",
        "both",
    ]);
    assert_eq!(code, Some(0), "{text}");
    let (a, b) = (std::fs::read(&cube).unwrap(), std::fs::read(&denoised).unwrap());
    assert_eq!(a.len(), b.len());
    // Every header byte kept (textual, binary, and each trace's 240 bytes); samples changed.
    let ns = 75;
    let trace = 240 + 2 * ns;
    assert_eq!(a[..3600], b[..3600]);
    for t in 0..(a.len() - 3600) / trace {
        let h = 3600 + t * trace;
        assert_eq!(a[h..h + 240], b[h..h + 240], "trace {t}'s header");
    }
    assert_ne!(a[3600 + 240..], b[3600 + 240..]);
    std::fs::remove_dir_all(&d).ok();
}
