//! `geonetc check` through the binary: exit codes 0/1/2, streams, JSON on errors too.

// Only the binary runner of the shared helpers is used here.
#[allow(dead_code)]
mod common;
use common::geonetc;

#[test]
fn success_prints_the_table_and_exits_0() {
    let (code, out, err) = geonetc(&["check", "examples/unet_s.geonet"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("e1.conv0") && out.contains("116,753"), "{out}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn warnings_still_exit_0() {
    let (code, _, err) = geonetc(&["check", "examples/classifier.geonet"]);
    assert_eq!(code, 0);
    assert!(err.contains("W0001"), "{err}");
}

#[test]
fn errors_exit_1_with_diagnostics_on_stderr() {
    let (code, out, err) = geonetc(&["check", "examples/errors/two_errors.geonet"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("E0404") && err.contains("E0201") && err.contains("2 errors"), "{err}");
}

#[test]
fn json_is_printed_also_on_errors() {
    let (code, out, _) = geonetc(&["check", "examples/errors/kernel_too_big.geonet", "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["diagnostics"][0]["code"], "E0401");
    assert_eq!(v["diagnostics"][0]["line"], 4);
    assert_eq!(v["diagnostics"][0]["column"], 22);
    let (code, out, _) = geonetc(&["check", "examples/unet_s.geonet", "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["params"], 116753);
    assert_eq!(v["layers"][0]["name"], "e1.conv0");
    assert_eq!(v["layers"][0]["params"], 160);
    assert_eq!(v["values"][1]["name"], "e2");
    assert_eq!(v["values"][1]["shape"], serde_json::json!([32, 64, 64]));
}

#[test]
fn missing_file_and_bad_usage_exit_2() {
    let (code, _, err) = geonetc(&["check", "no/such/file.geonet"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: cannot read no/such/file.geonet"), "{err}");
    assert_eq!(err.lines().count(), 1);
    let (code, _, _) = geonetc(&["check"]);
    assert_eq!(code, 2);
    let (code, _, _) = geonetc(&["check", "examples/unet_s.geonet", "--format", "xml"]);
    assert_eq!(code, 2);
}

#[test]
fn binary_input_is_a_diagnostic_not_a_crash() {
    let dir = std::env::temp_dir().join(format!("geonetc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bin.geonet");
    std::fs::write(&f, [0u8, 159, 146, 150, 255, 10, 0]).unwrap();
    let (code, _, err) = geonetc(&["check", f.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("E0004"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bench_reports_the_keys_compare_py_reads() {
    let (code, out, err) = geonetc(&[
        "bench",
        "examples/trace_denoiser.geonet",
        "--batch",
        "2",
        "--steps",
        "2",
        "--backend",
        "interp",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "compile_ms",
        "forward_ms_median",
        "train_step_ms_median",
        "batch",
        "threads",
        "backend",
        "gflops_train",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {out}");
    }
    assert_eq!(v["batch"], 2);
    assert_eq!(v["backend"], "interp");
    // FLOPs per sample are the checker's: 8,028,160 for trace_denoiser.
    assert_eq!(v["flops_per_sample"], 8028160);
    assert!(v["train_step_ms_median"].as_f64().unwrap() > 0.0);
}

#[test]
fn check_json_memory_bytes_is_the_jit_plan_that_bench_uses() {
    let (code, out, err) = geonetc(&["check", "examples/trace_denoiser.geonet", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["memory_batch"], 32, "the train block's batch");
    let planned = j["memory_bytes"].as_u64().expect("memory_bytes");
    // At least the input and the output, [32, 1, 1024] in f32 with 4 lanes per channel.
    assert!(planned > 2 * 32 * 1024 * 4 * 4, "{planned}");
    let (code, out, err) = geonetc(&[
        "bench",
        "examples/trace_denoiser.geonet",
        "--batch",
        "32",
        "--steps",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let b: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(b["memory_bytes"].as_u64(), Some(planned));
}

#[test]
fn the_readme_experiments_check_without_errors_or_warnings() {
    for entry in std::fs::read_dir("experiments").unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        let out = geonetc::check::check_source(&src);
        assert!(
            out.program.is_some() && out.diagnostics.is_empty(),
            "{}: {:#?}",
            path.display(),
            out.diagnostics
        );
    }
}
