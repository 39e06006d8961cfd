//! Streaming inference over SEG-Y (issue 12): 3-D volumes along inlines, crosslines or both,
//! gathers never tiled across, 1-D models in small windows, headers byte for byte, dead
//! traces kept. Expected values come from the test volumes' generator formula
//! (scripts/seismic_reference.py: sample j of the trace at (il, xl) is il + xl/1000 + j/100)
//! or from the constants a test writes, never from geonetc.

mod common;
use common::{geonetc, s, tmp};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn volume(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seismic/volumes").join(name)
}

const NS: usize = 16;

/// Big-endian IEEE SEG-Y traces: (header fields as (byte, value), samples).
struct Trace {
    fields: Vec<(usize, i32)>,
    samples: Vec<f32>,
}

fn write_segy(path: &Path, ns: usize, traces: &[Trace]) {
    let mut b = vec![0x40u8; 3200];
    b.resize(3600, 0);
    b[3216..3218].copy_from_slice(&4000u16.to_be_bytes());
    b[3220..3222].copy_from_slice(&(ns as u16).to_be_bytes());
    b[3224..3226].copy_from_slice(&5u16.to_be_bytes());
    for t in traces {
        let mut h = [0u8; 240];
        for &(byte, v) in &t.fields {
            h[byte - 1..byte + 3].copy_from_slice(&v.to_be_bytes());
        }
        h[114..116].copy_from_slice(&(ns as u16).to_be_bytes());
        b.extend_from_slice(&h);
        for v in &t.samples {
            b.extend_from_slice(&v.to_be_bytes());
        }
    }
    std::fs::write(path, b).unwrap();
}

/// (headers, samples) of every trace of a big-endian IEEE SEG-Y of `ns` samples.
fn read_segy(path: &Path, ns: usize) -> (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<f32>>) {
    let b = std::fs::read(path).unwrap();
    let tl = 240 + 4 * ns;
    assert_eq!((b.len() - 3600) % tl, 0);
    let traces = (b.len() - 3600) / tl;
    let headers = (0..traces).map(|i| b[3600 + i * tl..3600 + i * tl + 240].to_vec()).collect();
    let samples = (0..traces)
        .map(|i| {
            let at = 3600 + i * tl + 240;
            b[at..at + 4 * ns].chunks_exact(4).map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect()
        })
        .collect();
    (b[..3600].to_vec(), headers, samples)
}

fn key(h: &[u8], byte: usize) -> i32 {
    i32::from_be_bytes([h[byte - 1], h[byte], h[byte + 1], h[byte + 2]])
}

fn model(dir: &Path, name: &str, w: usize, init: &str) -> PathBuf {
    let p = dir.join(format!("{name}.geonet"));
    let (kernel, pad) = if init == "[[2]]" { (1, "") } else { (3, ", pad=same") };
    std::fs::write(
        &p,
        format!(
            "model {name} {{\n    input x: [1, {NS}, {w}]\n    y = x -> conv(1, kernel={kernel}{pad}, bias=false, init={init})\n    output y\n}}\n"
        ),
    )
    .unwrap();
    p
}

/// Sums each trace with its neighbours along the traces axis (zero outside the section).
const NEIGHBOURS: &str = "[[0, 0, 0], [1, 1, 1], [0, 0, 0]]";

fn close(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() <= 1e-5 * b.abs().max(1.0)
}

#[test]
fn volume_along_inlines_crosslines_and_both() {
    let d = tmp("stream", "volume");
    let input = volume("missing.sgy");
    let (bin, in_headers, _) = read_segy(&input, NS);
    // Generator's value at (il, xl, j), 0 where the grid has no trace.
    let present: std::collections::HashSet<(i32, i32)> =
        in_headers.iter().map(|h| (key(h, 189), key(h, 193))).collect();
    let v = |il: i32, xl: i32, j: usize| {
        if present.contains(&(il, xl)) { il as f64 + xl as f64 / 1000.0 + j as f64 / 100.0 } else { 0.0 }
    };
    // Inline sections hold 7 crosslines, crossline sections 6 inlines (step 2): one tile each.
    type Want<'a> = &'a dyn Fn(i32, i32, usize) -> f64;
    let cases: [(&str, usize, Want); 2] = [
        ("inline", 7, &|il, xl, j| v(il, xl - 1, j) + v(il, xl, j) + v(il, xl + 1, j)),
        ("crossline", 6, &|il, xl, j| v(il - 2, xl, j) + v(il, xl, j) + v(il + 2, xl, j)),
    ];
    let mut results = HashMap::new();
    for (along, w, want) in cases {
        let m = model(&d, along, w, NEIGHBOURS);
        let out = d.join(format!("{along}.sgy"));
        let (code, _, err) =
            geonetc(&["infer", s(&m), "--input", s(&input), "--output", s(&out), "--along", along]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(&format!("3-D volume along {along}")), "{err}");
        let (out_bin, headers, samples) = read_segy(&out, NS);
        assert_eq!(out_bin, bin, "textual and binary headers kept");
        assert_eq!(headers, in_headers, "every trace header kept");
        for (h, tr) in headers.iter().zip(&samples) {
            let (il, xl) = (key(h, 189), key(h, 193));
            for (j, &got) in tr.iter().enumerate() {
                assert!(
                    close(got, want(il, xl, j)),
                    "{along} il {il} xl {xl} sample {j}: {got} vs {}",
                    want(il, xl, j)
                );
            }
        }
        results.insert(along, samples);
    }
    // Both: the average of the two, with a model that fits both sections (6 wide: inline
    // sections are then two blended tiles, a scale model keeps that exact).
    let m = model(&d, "scale", 6, "[[2]]");
    let out = d.join("both.sgy");
    let (code, _, err) =
        geonetc(&["infer", s(&m), "--input", s(&input), "--output", s(&out), "--along", "both"]);
    assert_eq!(code, 0, "{err}");
    let (_, headers, samples) = read_segy(&out, NS);
    for (h, tr) in headers.iter().zip(&samples) {
        for (j, &got) in tr.iter().enumerate() {
            assert!(close(got, 2.0 * v(key(h, 189), key(h, 193), j)), "both: {got}");
        }
    }
}

#[test]
fn dead_traces_and_unsorted_volumes() {
    let d = tmp("stream", "dead");
    let input = volume("unsorted.sgy");
    let (_, in_headers, in_samples) = read_segy(&input, NS);
    let m = model(&d, "scale", 6, "[[2]]");
    let out = d.join("out.sgy");
    let (code, _, err) =
        geonetc(&["infer", s(&m), "--input", s(&input), "--output", s(&out), "--along", "both"]);
    assert_eq!(code, 0, "{err}");
    let (_, headers, samples) = read_segy(&out, NS);
    assert_eq!(headers, in_headers);
    for (t, (h, tr)) in headers.iter().zip(&samples).enumerate() {
        let dead = i16::from_be_bytes([h[28], h[29]]) == 2;
        for (j, &got) in tr.iter().enumerate() {
            let want = if dead { in_samples[t][j] as f64 } else { 2.0 * in_samples[t][j] as f64 };
            assert!(close(got, want), "trace {} (dead {dead}) sample {j}: {got} vs {want}", t + 1);
        }
    }
    assert_eq!(headers.iter().filter(|h| i16::from_be_bytes([h[28], h[29]]) == 2).count(), 2);
}

/// Four gathers of 8 traces (field records 10..13), gather g constant g + 1: summing each trace
/// with its neighbours gives 3(g+1) inside a gather and 2(g+1) at its ends when no tile
/// crosses a gather; tiles across gathers would mix the constants.
#[test]
fn gathers_are_never_tiled_across() {
    let d = tmp("stream", "gathers");
    let traces: Vec<Trace> = (0..32i32)
        .map(|t| Trace { fields: vec![(9, 10 + t / 8), (21, t)], samples: vec![(t / 8 + 1) as f32; NS] })
        .collect();
    let input = d.join("shots.sgy");
    write_segy(&input, NS, &traces);
    let m = model(&d, "neighbours", 8, NEIGHBOURS);
    let out = d.join("out.sgy");
    let (code, _, err) =
        geonetc(&["infer", s(&m), "--input", s(&input), "--output", s(&out), "--gather-key", "field-record"]);
    assert_eq!(code, 0, "{err}");
    let (_, _, samples) = read_segy(&out, NS);
    for (t, tr) in samples.iter().enumerate() {
        let c = (t / 8 + 1) as f64;
        let want = if t % 8 == 0 || t % 8 == 7 { 2.0 * c } else { 3.0 * c };
        assert!(tr.iter().all(|&v| close(v, want)), "trace {t}: {tr:?} vs {want}");
    }
    // The same by byte position; and without a key (one line) the gather ends do mix.
    let out2 = d.join("out2.sgy");
    let (code, _, err) =
        geonetc(&["infer", s(&m), "--input", s(&input), "--output", s(&out2), "--gather-key", "9"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
    let out3 = d.join("out3.sgy");
    let (code, _, err) = geonetc(&["infer", s(&m), "--input", s(&input), "--output", s(&out3)]);
    assert_eq!(code, 0, "{err}");
    let (_, _, line) = read_segy(&out3, NS);
    assert!(!close(line[7][0], 2.0), "trace 8 next to gather 2 sees it: {}", line[7][0]);
}

/// A 1-D model reads 3 traces at a time; a 2-D line streams in tiles and gives what the
/// in-memory path (taken with --plot) gives.
#[test]
fn small_windows_and_lines_match_the_in_memory_path() {
    let d = tmp("stream", "line");
    let traces: Vec<Trace> = (0..50)
        .map(|t| Trace {
            fields: vec![(1, t + 1), (21, 100 + t)],
            samples: (0..NS).map(|j| ((t * 7 + j as i32 * 3) % 11) as f32 - 5.0).collect(),
        })
        .collect();
    let input = d.join("line.sgy");
    write_segy(&input, NS, &traces);
    let one_d = d.join("trace.geonet");
    std::fs::write(
        &one_d,
        format!("model t {{\n    input x: [1, {NS}]\n    y = x -> conv(1, kernel=1, bias=false, init=[[2]])\n    output y\n}}\n"),
    )
    .unwrap();
    let out = d.join("scaled.sgy");
    let (code, _, err) =
        geonetc(&["infer", s(&one_d), "--input", s(&input), "--output", s(&out), "--window-traces", "3"]);
    assert_eq!(code, 0, "{err}");
    let (bin, headers, samples) = read_segy(&out, NS);
    let (in_bin, in_headers, in_samples) = read_segy(&input, NS);
    assert_eq!((bin, headers), (in_bin, in_headers));
    for (a, b) in samples.iter().flatten().zip(in_samples.iter().flatten()) {
        assert_eq!(*a, 2.0 * b);
    }
    let m = model(&d, "neighbours", 8, NEIGHBOURS);
    let streamed = d.join("streamed.sgy");
    let held = d.join("held.sgy");
    let (code, _, err) = geonetc(&["infer", s(&m), "--input", s(&input), "--output", s(&streamed)]);
    assert_eq!(code, 0, "{err}");
    let png = d.join("p.png");
    let (code, _, err) =
        geonetc(&["infer", s(&m), "--input", s(&input), "--output", s(&held), "--plot", s(&png)]);
    assert_eq!(code, 0, "{err}");
    let (a, b) = (read_segy(&streamed, NS), read_segy(&held, NS));
    assert_eq!(a.1, b.1);
    for (x, y) in a.2.iter().flatten().zip(b.2.iter().flatten()) {
        assert!(close(*x, *y as f64), "{x} vs {y}");
    }
    // No temporary file left beside the outputs.
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty());
}

/// Every number of `eval --format json`'s scores, by name.
fn eval_numbers(args: &[&str]) -> Vec<(String, f64)> {
    let (code, out, err) = geonetc(args);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut found = vec![("data_range".to_string(), v["data_range"].as_f64().unwrap())];
    for group in ["noisy_scores", "denoised_scores", "leakage"] {
        for (k, x) in v[group].as_object().unwrap() {
            if let Some(x) = x.as_f64() {
                found.push((format!("{group}.{k}"), x));
            }
        }
    }
    found
}

#[test]
fn streamed_eval_gives_the_numbers_of_the_in_memory_path() {
    // 70 traces of 40 samples: SSIM has 64 × 34 windows, local similarity's smoothing reaches
    // across many windows' worth of traces; the noise is a fixed pseudo-random pattern.
    let d = tmp("stream", "eval");
    let ns = 40;
    let clean_trace = |t: i32| -> Vec<f32> {
        (0..ns).map(|j| ((j as f32 - 20.0 + 0.1 * t as f32) / 4.0).sin() * (1.0 + 0.01 * t as f32)).collect()
    };
    let noise = |t: i32, j: usize| (((t * 31 + j as i32 * 17) % 23) as f32 - 11.0) / 20.0;
    let write = |name: &str, noisy: bool| {
        let traces: Vec<Trace> = (0..70)
            .map(|t| Trace {
                fields: vec![(1, t + 1)],
                samples: clean_trace(t)
                    .into_iter()
                    .enumerate()
                    .map(|(j, v)| if noisy { v + noise(t, j) } else { v })
                    .collect(),
            })
            .collect();
        let p = d.join(name);
        write_segy(&p, ns, &traces);
        p
    };
    let (clean, noisy) = (write("clean.sgy", false), write("noisy.sgy", true));
    let two_d = d.join("smooth2d.geonet");
    std::fs::write(
        &two_d,
        "model s {\n    input x: [1, 16, 16]\n    y = x -> conv(1, kernel=3, pad=same, bias=false, init=[[0.1, 0.1, 0.1], [0.1, 0.2, 0.1], [0.1, 0.1, 0.1]])\n    output y\n}\n",
    )
    .unwrap();
    let one_d = d.join("scale1d.geonet");
    std::fs::write(
        &one_d,
        format!("model t {{\n    input x: [1, {ns}]\n    y = x -> conv(1, kernel=1, bias=false, init=[[0.75]])\n    output y\n}}\n"),
    )
    .unwrap();
    for m in [&two_d, &one_d] {
        let base = ["eval", s(m), "--clean", s(&clean), "--noisy", s(&noisy), "--format", "json"];
        let streamed = eval_numbers(&base);
        // A picture needs the whole sections: that run takes the in-memory path.
        let png = d.join("eval.png");
        let mut held_args = base.to_vec();
        held_args.extend(["--plot", s(&png)]);
        let held = eval_numbers(&held_args);
        assert_eq!(streamed.len(), held.len());
        assert!(streamed.len() >= 10, "{streamed:?}");
        for ((name, a), (_, b)) in streamed.iter().zip(&held) {
            assert!(a.is_finite(), "{name} = {a}");
            // The streamed sums add in the in-memory order; the tiles are blended the same way.
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1e-12),
                "{}: {name} streamed {a} vs in memory {b}",
                m.display()
            );
        }
    }
}

/// A NaN in the streamed clean reference is one error naming its trace and sample, not scores
/// of `NaN dB` (the range pass would skip it, every sum would not).
#[test]
fn streamed_eval_refuses_a_non_finite_clean_reference() {
    let d = tmp("stream", "eval-nan");
    let ns = 16;
    let write = |name: &str, nan_at: Option<(usize, usize)>| {
        let traces: Vec<Trace> = (0..20)
            .map(|t| Trace {
                fields: vec![(1, t as i32 + 1)],
                samples: (0..ns)
                    .map(
                        |j| if nan_at == Some((t, j)) { f32::NAN } else { (j as f32 * 0.3 + t as f32).sin() },
                    )
                    .collect(),
            })
            .collect();
        let p = d.join(name);
        write_segy(&p, ns, &traces);
        p
    };
    let (clean, noisy) = (write("clean.sgy", Some((6, 3))), write("noisy.sgy", None));
    let m = d.join("id.geonet");
    std::fs::write(&m, format!("model t {{\n    input x: [1, {ns}]\n    y = x -> conv(1, kernel=1, bias=false, init=[[1]])\n    output y\n}}\n"))
        .unwrap();
    let (code, _, err) = geonetc(&["eval", s(&m), "--clean", s(&clean), "--noisy", s(&noisy)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("trace 7 (of 20), sample 4 is NaN"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
