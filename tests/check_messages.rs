//! The checker's answers to the mistakes a new user makes on the first day (issue: reliability,
//! "clear answers"): each test names the mistake and what the user must be told.

use std::path::{Path, PathBuf};
use std::process::Command;

fn geonetc(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_geonetc"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run geonetc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// A fresh folder under the target directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check_messages").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

const DENOISER: &str =
    "model m {\n    input x: [1, 16, 16]\n    y = x -> conv(1, kernel=3, pad=same)\n    output y\n}\n";

#[test]
fn a_training_file_that_does_not_exist_is_a_located_error() {
    let dir = scratch("missing_file");
    let src = format!("{DENOISER}train {{\n    data = segy(\"nothere.sgy\", patch = [16, 16])\n}}\n");
    std::fs::write(dir.join("m.geonet"), src).unwrap();
    let (code, _, err) = geonetc(&["check", "m.geonet"], &dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("data file `nothere.sgy` does not exist"), "{err}");
    // The label points at the string on line 7.
    assert!(err.contains("m.geonet:7:"), "{err}");

    // The same name as a directory is also refused, and an existing file passes.
    std::fs::create_dir(dir.join("nothere.sgy")).unwrap();
    let (code, _, err) = geonetc(&["check", "m.geonet"], &dir);
    assert_eq!(code, 1);
    assert!(err.contains("is a directory"), "{err}");
    std::fs::remove_dir(dir.join("nothere.sgy")).unwrap();
    std::fs::write(dir.join("nothere.sgy"), b"").unwrap();
    let (code, _, err) = geonetc(&["check", "m.geonet"], &dir);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn npy_paths_are_relative_to_the_program_not_to_the_working_directory() {
    let dir = scratch("relative");
    std::fs::create_dir(dir.join("sub")).unwrap();
    let src = format!("{DENOISER}train {{\n    data = npy(input = \"x.npy\", target = \"y.npy\")\n}}\n");
    std::fs::write(dir.join("sub/m.geonet"), src).unwrap();
    std::fs::write(dir.join("sub/x.npy"), b"").unwrap();
    let (code, _, err) = geonetc(&["check", "sub/m.geonet"], &dir);
    assert_eq!(code, 1);
    assert!(!err.contains("`x.npy`"), "x.npy exists beside the program: {err}");
    assert!(err.contains("data file `y.npy` does not exist"), "{err}");
}

#[test]
fn cross_entropy_on_a_section_output_is_a_checker_error() {
    let dir = scratch("cross_entropy");
    std::fs::write(dir.join("x.npy"), b"").unwrap();
    std::fs::write(dir.join("y.npy"), b"").unwrap();
    let train =
        "train {\n    data = npy(input = \"x.npy\", target = \"y.npy\")\n    loss = cross_entropy\n}\n";
    std::fs::write(dir.join("bad.geonet"), format!("{DENOISER}{train}")).unwrap();
    let (code, _, err) = geonetc(&["check", "bad.geonet"], &dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cross_entropy needs a flat output") && err.contains("[1, 16, 16]"), "{err}");
    assert!(err.contains("flatten -> dense"), "{err}");

    let flat = "model m {\n    input x: [1, 16, 16]\n    y = x -> flatten -> dense(3)\n    output y\n}\n";
    std::fs::write(dir.join("good.geonet"), format!("{flat}{train}")).unwrap();
    let (code, _, err) = geonetc(&["check", "good.geonet"], &dir);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_quoted_word_or_number_is_told_to_drop_the_quotes() {
    let dir = scratch("quotes");
    let src = "model m {\n    input x: [1, 16, 16]\n    y = x -> conv(4, kernel=\"3\", pad=\"same\")\n    output y\n}\n";
    std::fs::write(dir.join("m.geonet"), src).unwrap();
    let (code, _, err) = geonetc(&["check", "m.geonet"], &dir);
    assert_eq!(code, 1);
    assert!(err.contains("drop the quotes: `kernel=3`"), "{err}");
}

#[test]
fn pad_given_as_a_string_names_every_form_pad_takes() {
    let dir = scratch("pad_string");
    let src = "model m {\n    input x: [1, 16, 16]\n    y = x -> conv(4, kernel=3, pad=\"same\")\n    output y\n}\n";
    std::fs::write(dir.join("m.geonet"), src).unwrap();
    let (code, _, err) = geonetc(&["check", "m.geonet"], &dir);
    assert_eq!(code, 1);
    assert!(err.contains("`same` or `valid`") && err.contains("drop the quotes: `pad=same`"), "{err}");
}

#[test]
fn a_block_whose_call_was_not_reached_is_not_also_called_unused() {
    let dir = scratch("unused_block");
    // The pipeline fails at its first layer, so `cbr` is never expanded; it is still used.
    let src = "block cbr(c) = conv(c, kernl=3) -> relu\nmodel m {\n    input x: [1, 16, 16]\n    y = x -> conv(4, kernel=0) -> cbr(4)\n    output y\n}\n";
    std::fs::write(dir.join("m.geonet"), src).unwrap();
    let (code, _, err) = geonetc(&["check", "m.geonet"], &dir);
    assert_eq!(code, 1);
    assert!(!err.contains("never used"), "{err}");
    // A block mentioned only by an unused block is unused too.
    let src = "block a(c) = conv(c, kernel=3)\nblock b(c) = a(c) -> relu\nmodel m {\n    input x: [1, 16, 16]\n    output x\n}\n";
    std::fs::write(dir.join("n.geonet"), src).unwrap();
    let (code, _, err) = geonetc(&["check", "n.geonet"], &dir);
    assert_eq!(code, 0);
    assert!(err.contains("block `a` is never used") && err.contains("block `b` is never used"), "{err}");
}

#[test]
fn the_train_block_suggested_for_a_file_without_one_is_valid() {
    let dir = scratch("no_train");
    std::fs::write(dir.join("m.geonet"), DENOISER).unwrap();
    let (code, _, err) = geonetc(&["run", "m.geonet"], &dir);
    assert_eq!(code, 1, "{err}");
    // Take the suggested block from the help and append it to the program: it must check.
    let start = err.find("train {").expect("a suggested train block");
    let end = start + err[start..].find('}').expect("closing brace") + 1;
    let block: String = err[start..end].lines().map(|l| format!("{}\n", l.trim())).collect();
    std::fs::write(dir.join("fixed.geonet"), format!("{DENOISER}{block}")).unwrap();
    let (code, _, err) = geonetc(&["check", "fixed.geonet"], &dir);
    assert_eq!(code, 0, "the suggested block does not check:\n{block}\n{err}");
}

#[test]
fn every_bad_attribute_of_one_call_is_reported() {
    let dir = scratch("two_bad_attributes");
    let src = "model m {\n    input x: [1, 16, 16]\n    y = x -> conv(4, kernel=-1, stride=\"x\", bias=3)\n    z = x -> unet(1, depth=0, pool=min)\n    output y, z\n}\n";
    std::fs::write(dir.join("m.geonet"), src).unwrap();
    let (code, _, err) = geonetc(&["check", "m.geonet"], &dir);
    assert_eq!(code, 1);
    for want in
        ["`kernel` must be", "`stride` must be", "`bias` must be", "`depth` must be", "`pool` must be"]
    {
        assert!(err.contains(want), "missing {want}:\n{err}");
    }
    assert!(err.contains("5 errors"), "{err}");
}

#[test]
fn inspect_says_when_samples_are_nan() {
    let dir = scratch("inspect_nan");
    let path = dir.join("gather.npy");
    let mut values = vec![1.0f32; 12];
    values[7] = f32::NAN;
    values[9] = f32::INFINITY;
    let a = ndarray::Array2::from_shape_vec((3, 4), values).unwrap();
    ndarray_npy::write_npy(&path, &a).unwrap();
    let (code, out, err) = geonetc(&["inspect", "gather.npy"], &dir);
    assert_eq!(code, 0, "{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("2 samples are NaN or infinite (the first in trace 2, sample 4)"), "{all}");
}
