use super::*;
use crate::check::check_source;

fn program(src: &str) -> Program {
    check_source(src).program.expect("checks")
}

const A: &str = "model m {
    input x: [1, 16, 16]
    h = x -> conv(4, kernel=3, pad=1) -> relu
    y = h -> conv(1, kernel=1)
    output y
}
optimizer adam { lr = 1e-3 }
";

#[test]
fn identical_programs_are_equal() {
    let d = diff(&program(A), &program(A));
    assert!(d.is_equal(), "{d:?}");
}

#[test]
fn a_changed_channel_count_changes_the_layer_and_its_consumer() {
    let b = A.replace("conv(4,", "conv(6,");
    let d = diff(&program(A), &program(&b));
    assert!(!d.is_equal());
    let changed: Vec<&str> = d.layers.iter().map(|l| l.b.as_ref().map_or("", |s| s.name.as_str())).collect();
    // h.conv0 (out, shape, params, flops), h.relu0 (shape), y.conv0 (params, flops).
    assert_eq!(changed, ["h.conv0", "h.relu0", "y.conv0"]);
    let fields: Vec<&str> = d.layers[0].fields.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, ["out", "shape", "params", "flops"]);
    assert_eq!((d.layers[0].fields[0].a.clone(), d.layers[0].fields[0].b.clone()), (4.into(), 6.into()));
    // 4·1·9 + 4 = 40 → 6·9 + 6 = 60 parameters in h.conv0; y.conv0 5 → 7.
    assert_eq!((d.a.params, d.b.params), (45, 67));
}

#[test]
fn a_renamed_binding_is_paired_by_its_layers() {
    let b = A.replace("h = x", "feat = x").replace("y = h", "y = feat");
    let d = diff(&program(A), &program(&b));
    assert!(d.is_equal(), "{d:?}");
    assert_eq!(d.renamed, vec![("h".to_string(), "feat".to_string())]);
}

#[test]
fn added_and_removed_layers_and_settings() {
    let b =
        A.replace("-> relu\n", "-> relu -> dropout(0.1)\n").replace("adam { lr = 1e-3 }", "sgd { lr = 0.1 }");
    let d = diff(&program(A), &program(&b));
    assert_eq!(d.layers.len(), 2, "{d:?}");
    assert_eq!(d.layers[0].change, Change::Added);
    assert_eq!(d.layers[0].b.as_ref().map(|s| s.name.as_str()), Some("h.dropout0"));
    // y.conv0 now reads the dropout.
    assert_eq!(d.layers[1].fields[0].field, "inputs");
    assert!(
        d.optimizer.iter().any(|f| f.field == "kind" && f.a == "adam" && f.b == "sgd"),
        "{:?}",
        d.optimizer
    );
    let back = diff(&program(&b), &program(A));
    assert_eq!(back.layers[0].change, Change::Removed);
}
