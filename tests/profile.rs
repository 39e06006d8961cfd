//! `geonetc bench --profile`: every layer's forward and backward time, the layers that run on the
//! reference code marked, the share of time outside generated kernels; and the JIT tuning flags
//! refused with one line when malformed.

use std::process::Command;

fn geonetc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_geonetc")).args(args).output().expect("runs geonetc");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

#[test]
fn bench_profile_lists_every_layer_and_no_reference_code() {
    let dir = std::env::temp_dir().join(format!("geonetc-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("m.geonet");
    // conv → relu (one kernel), avgpool (gather kernels), groupnorm (per-channel kernels),
    // flatten (native), dense. Every op of the language now has generated code on the JIT, so no
    // line may carry the reference-code mark.
    let src = "model m {\n    input x: [2, 8, 8]\n    y = x -> conv(4, kernel=3, pad=1) -> relu -> avgpool(2) -> groupnorm(2) -> flatten -> dense(3)\n    output y\n}\n";
    std::fs::write(&file, src).expect("write model");
    let (code, out, err) =
        geonetc(&["bench", file.to_str().expect("path"), "--batch", "2", "--steps", "1", "--profile"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let line =
        |name: &str| out.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no {name} in\n{out}"));
    assert!(line("y.conv0").contains("kernels"), "{out}");
    assert!(line("y.relu0").contains("fused"), "{out}");
    assert!(line("y.flatten0").contains("native"), "{out}");
    assert!(line("y.avgpool0").contains("kernels"), "{out}");
    assert!(line("y.groupnorm0").contains("kernels"), "{out}");
    assert!(!out.contains("<- reference code"), "{out}");
    // One warm-up and one timed step of each kind (`bench` warms up min(2, steps) times):
    // 2 inference passes + 2 training steps = 4 forward passes, 2 backward passes.
    assert!(out.contains("over 4 forward and 2 backward passes"), "{out}");
    assert!(out.contains("% of the time outside generated kernels"), "{out}");
    // The loss and the optimizer's update (generated kernels) are rows of the step's table.
    assert!(line("(loss)").contains("kernels"), "{out}");
    assert!(line("(optimizer)").contains("kernels"), "{out}");
    assert!(line("(between nodes)").contains("native"), "{out}");
    // Without --profile there is no table.
    let (code, out, _) = geonetc(&["bench", file.to_str().expect("path"), "--batch", "2", "--steps", "1"]);
    assert_eq!(code, 0);
    assert!(!out.contains("outside generated kernels"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn malformed_tuning_flags_are_one_line_errors() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/seed_edge_filter.geonet");
    for args in [["--corr-block", "5"], ["--gradw-block", "0x2"], ["--jit-opt", "fast"], ["--conv", "fft"]] {
        let (code, out, err) = geonetc(&["bench", example, "--steps", "1", args[0], args[1]]);
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}

/// `--conv` forces the algorithm of 3×3 stride-1 layers, and the profile says which ran
/// (forward / input gradient).
#[test]
fn bench_profile_names_each_layers_convolution_algorithm() {
    let dir = std::env::temp_dir().join(format!("geonetc-profile-conv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("m.geonet");
    let src = "model m {\n    input x: [6, 12, 12]\n    y = x -> conv(8, kernel=3, pad=1) -> relu -> conv(5, kernel=3, stride=2) -> conv(3, kernel=1)\n    output y\n}\n";
    std::fs::write(&file, src).expect("write model");
    let run = |conv: &str| {
        let args = [
            "bench",
            file.to_str().expect("path"),
            "--batch",
            "2",
            "--steps",
            "1",
            "--profile",
            "--conv",
            conv,
        ];
        let (code, out, err) = geonetc(&args);
        assert_eq!(code, 0, "{out}\n{err}");
        out
    };
    let line = |out: &str, name: &str| {
        out.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("no {name} in\n{out}")).to_string()
    };
    let out = run("winograd");
    // The first conv both ways; the strided one only for its input gradient (a stride-1
    // correlation); the 1×1 conv never.
    assert!(line(&out, "y.conv0").contains("F(4x4, 3x3) / F(4x4, 3x3)"), "{out}");
    assert!(line(&out, "y.conv1").contains("direct / F(4x4, 3x3)"), "{out}");
    assert!(line(&out, "y.conv2").contains("direct / direct"), "{out}");
    let out = run("winograd2");
    assert!(line(&out, "y.conv0").contains("F(2x2, 3x3) / F(2x2, 3x3)"), "{out}");
    let out = run("direct");
    assert!(line(&out, "y.conv0").contains("direct / direct"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}
