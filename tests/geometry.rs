//! Geometry of 3-D volumes (issue 12): `inspect` against segyio's reading of the volumes
//! `scripts/seismic_reference.py` writes with segyio (tests/fixtures/seismic/volumes), and
//! the reports for unsorted, missing, dead and irregular files.

mod common;
use common::{geonetc, s};
use std::path::PathBuf;

fn volume(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seismic/volumes").join(name)
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(volume("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("json")
}

fn inspect_json(path: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["inspect", s(path), "--format", "json"];
    args.extend_from_slice(extra);
    let (code, out, err) = geonetc(&args);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("inspect json")
}

#[test]
fn volumes_match_segyio() {
    let want = expected();
    for name in ["full.sgy", "missing.sgy", "unsorted.sgy", "xline_major.sgy"] {
        let w = &want[name];
        let got = inspect_json(&volume(name), &[]);
        let g = &got["geometry"];
        assert_eq!(got["traces"], w["traces"], "{name}");
        for axis in ["inlines", "crosslines"] {
            let a = &g[axis];
            assert_eq!(
                serde_json::json!([a["first"], a["last"], a["step"], a["count"]]),
                w[axis],
                "{name} {axis}"
            );
        }
        assert_eq!(g["layout"], "volume", "{name}");
        let missing = w["missing"].as_array().unwrap();
        assert_eq!(g["missing"], missing.len(), "{name}");
        assert_eq!(&g["missing_first"], &w["missing"], "{name}");
        assert_eq!(&g["dead_first"], &w["dead"], "{name}");
        assert_eq!(g["dead"], w["dead"].as_array().unwrap().len(), "{name}");
        match w["sorting"].as_str() {
            Some(sorting) => assert_eq!(g["sorting"], sorting, "{name}"),
            // segyio opens neither a volume with missing traces nor an unsorted one; the
            // generator wrote missing.sgy in inline order and unsorted.sgy shuffled.
            None if name == "missing.sgy" => assert_eq!(g["sorting"], "inline_major"),
            None => assert_eq!(g["sorting"], "unsorted"),
        }
    }
}

#[test]
fn human_report_names_missing_and_dead_traces() {
    let (code, out, err) = geonetc(&["inspect", s(&volume("unsorted.sgy"))]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("3-D volume, unsorted"), "{out}");
    assert!(out.contains("inlines      10..20 step 2 (6 values"), "{out}");
    assert!(out.contains("missing      4 traces (inline/crossline 12/103, 16/100, 16/101, 20/106)"), "{out}");
    assert!(out.contains("dead         2 traces (trace id code 2: traces 4, 18)"), "{out}");
}

/// Writes a copy of full.sgy with the crossline of trace `t` set to `xl`.
fn with_crossline(name: &str, changes: &[(usize, i32)]) -> PathBuf {
    let mut bytes = std::fs::read(volume("full.sgy")).unwrap();
    let trace_len = 240 + 16 * 4;
    for &(t, xl) in changes {
        let at = 3600 + t * trace_len + 192;
        bytes[at..at + 4].copy_from_slice(&xl.to_be_bytes());
    }
    let p = common::tmp("geometry", name).join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn not_a_regular_volume_names_the_traces_at_fault() {
    // Trace 9 (inline 12, crossline 101) claims crossline 100, which trace 8 holds.
    let p = with_crossline("dup.sgy", &[(8, 100)]);
    let got = inspect_json(&p, &[]);
    assert_eq!(got["geometry"]["layout"], "irregular");
    let why = got["geometry"]["irregular"].as_str().unwrap();
    assert!(why.contains("traces 8 and 9 both have inline 12 crossline 100"), "{why}");
    // A crossline far off the grid leaves it mostly empty.
    let p = with_crossline("sparse.sgy", &[(0, 100_000)]);
    let why = inspect_json(&p, &[])["geometry"]["irregular"].as_str().unwrap().to_string();
    assert!(why.starts_with("not a regular volume: 42 traces on a grid of 6 inlines × "), "{why}");
}

#[test]
fn other_header_bytes_and_widths() {
    // The generator writes the field record (byte 9) = inline and CDP (byte 21) = 1000·il + xl.
    let got = inspect_json(&volume("full.sgy"), &["--iline", "9", "--xline", "21"]);
    let g = &got["geometry"];
    assert_eq!(g["inline_field"]["byte"], 9);
    assert_eq!((g["inlines"]["first"].as_i64(), g["inlines"]["last"].as_i64()), (Some(10), Some(20)));
    assert_eq!(
        (g["crosslines"]["first"].as_i64(), g["crosslines"]["last"].as_i64()),
        (Some(10_100), Some(20_106))
    );
    assert_eq!(got["gathers"]["field_record"], 6);
    // Two-byte fields: the low half of the big-endian inline number (bytes 191-192).
    let g = &inspect_json(&volume("full.sgy"), &["--iline", "191:2"])["geometry"];
    assert_eq!(g["inlines"]["last"], 20);
    let (code, _, err) = geonetc(&["inspect", s(&volume("full.sgy")), "--iline", "239:4"]);
    assert_eq!(code, 2);
    assert!(err.contains("not a trace-header field"), "{err}");
}
