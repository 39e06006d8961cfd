//! No input makes the checker panic or hang: random mutations of every example, plus
//! pathological inputs. (The time bound is a hang guard, not a benchmark.)

use proptest::prelude::*;
use std::time::{Duration, Instant};

fn examples() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut out = vec![];
    for d in [dir.to_string(), format!("{dir}/errors")] {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "geonet") {
                out.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn check_quickly(bytes: &[u8]) {
    let t = Instant::now();
    let out = geonetc::check::check_bytes(bytes);
    // Rendering and JSON must not panic either.
    let _ = geonetc::diag::render(&out.diagnostics, "f.geonet", &out.source, false);
    let _ = geonetc::check::to_json(&out, "f.geonet");
    let _ = geonetc::check::summary_table(&out);
    assert!(t.elapsed() < Duration::from_secs(2), "check took {:?}", t.elapsed());
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Replace(usize, u8),
    SwapLines(usize, usize),
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"->".to_vec()),
        Just(b"(".to_vec()),
        Just(b")".to_vec()),
        Just(b"[".to_vec()),
        Just(b"]".to_vec()),
        Just(b"{".to_vec()),
        Just(b"}".to_vec()),
        Just(b",".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"=".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"99999999999999999999".to_vec()),
        Just(b"4294967296".to_vec()),
        Just(b"-7".to_vec()),
        Just(b"0".to_vec()),
        Just(b"1e309".to_vec()),
        Just(b"pad=same".to_vec()),
        Just(b"unet(1)".to_vec()),
        Just(b"concat(x, x)".to_vec()),
        Just(vec![0xff, 0xfe]),
        Just("é".as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 1..8),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), token()).prop_map(|(a, t)| Mutation::Insert(a, t)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Replace(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

fn apply(src: &[u8], muts: &[Mutation]) -> Vec<u8> {
    let mut s = src.to_vec();
    for m in muts {
        let len = s.len().max(1);
        match m {
            Mutation::Delete(a, n) => {
                let a = a % len;
                let b = (a + n).min(s.len());
                if a < b {
                    s.drain(a..b);
                }
            }
            Mutation::Insert(a, t) => {
                let a = a % (s.len() + 1);
                s.splice(a..a, t.iter().copied());
            }
            Mutation::Replace(a, b) => {
                if !s.is_empty() {
                    let a = a % s.len();
                    s[a] = *b;
                }
            }
            Mutation::SwapLines(a, b) => {
                let mut lines: Vec<Vec<u8>> = s.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
                let n = lines.len();
                lines.swap(a % n, b % n);
                s = lines.join(&b'\n');
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn mutated_examples_never_panic(which in any::<usize>(), muts in prop::collection::vec(mutation(), 1..6)) {
        let ex = examples();
        let src = &ex[which % ex.len()];
        check_quickly(&apply(src, &muts));
    }
}

#[test]
fn pathological_inputs() {
    let deep =
        format!("model m {{ input x: [1]\n y = {}x{}\n output y }}", "(".repeat(5000), ")".repeat(5000));
    let long_pipe =
        format!("model m {{\n input x: [1, 64]\n y = x{}\n output y\n}}", " -> relu".repeat(20000));
    let many_blocks: String =
        (0..300).map(|i| format!("block b{i}(c) = b{}(c)\n", i + 1)).collect::<String>()
            + "block b300(c) = relu\nmodel m {\n input x: [1, 8]\n y = x -> b0(1)\n output y\n}\n";
    let exp_blocks: String =
        (0..30).map(|i| format!("block e{i}(c) = e{}(c) -> e{}(c)\n", i + 1, i + 1)).collect::<String>()
            + "block e30(c) = relu\nmodel m {\n input x: [1, 8]\n y = x -> e0(1)\n output y\n}\n";
    for src in [
        "",
        "\n\n\n",
        "model",
        "model m {",
        "}",
        "#",
        "\"",
        "model m { input x: [1] output x }",
        &deep,
        &long_pipe,
        &many_blocks,
    ] {
        check_quickly(src.as_bytes());
    }
    // 2^30 layers must be refused, not built.
    let t = Instant::now();
    let out = geonetc::check::check_source(&exp_blocks);
    assert!(t.elapsed() < Duration::from_secs(2), "exponential block expansion took {:?}", t.elapsed());
    assert!(out.has_errors());
}
