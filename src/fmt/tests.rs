//! Formatter unit tests: source in, formatted text out.

use super::*;

fn fmt(s: &str) -> String {
    match format_source(s) {
        Ok(o) => o,
        Err(e) => panic!("{e:?}"),
    }
}

#[test]
fn normalises_spacing_and_indentation() {
    let src = "model m{\n  input x:[1,8,8]\n  y=x->conv(4,kernel = 3,pad=same)  ->relu\n output y\n}\n";
    assert_eq!(
        fmt(src),
        "model m {\n    input x: [1, 8, 8]\n    y = x -> conv(4, kernel=3, pad=same) -> relu\n    output y\n}\n"
    );
}

#[test]
fn aligns_bindings_heads_and_comments() {
    let src = "model m {\n input x: [1, 8]\n a = x -> relu # one\n bb = a -> relu    # two\n output bb\n}\n";
    // Names padded to 2; heads (x, a) are all 1 wide: nothing to pad. Comments: two spaces
    // after the longest code line (col 20 > their source columns 15, 19).
    assert_eq!(
        fmt(src),
        "model m {\n    input x: [1, 8]\n    a  = x -> relu  # one\n    bb = a -> relu  # two\n    output bb\n}\n"
    );
    // Heads x and e1: x is padded to 2 (the names are 2 wide), arrows line up.
    let src = "model m {\n input x: [1, 8]\n e1 = x -> relu\n e2 = e1 -> relu\n output e2\n}\n";
    assert_eq!(
        fmt(src),
        "model m {\n    input x: [1, 8]\n    e1 = x  -> relu\n    e2 = e1 -> relu\n    output e2\n}\n"
    );
    // A head wider than the names is not a reason to pad the others (examples/blocks.geonet).
    let src = "model m {\n input x: [1, 8]\n a = x -> relu\n b = tr -> relu\n output b\n}\n";
    assert_eq!(
        fmt(src),
        "model m {\n    input x: [1, 8]\n    a = x -> relu\n    b = tr -> relu\n    output b\n}\n"
    );
    // A comment further right than two spaces stays there, and pulls its neighbours along.
    let src = "model m {\n    input x: [1, 8]\n    a  = x -> relu       # one\n    bb = a -> relu  # two\n    output bb\n}\n";
    let want = "model m {\n    input x: [1, 8]\n    a  = x -> relu       # one\n    bb = a -> relu       # two\n    output bb\n}\n";
    assert_eq!(fmt(src), want);
}

#[test]
fn keeps_comments_blank_lines_and_breaks() {
    let src = "# head\n\n\n\nmodel m {  # the model\n    input x: [1, 8]\n\n    # a comment line\n    y = x -> relu\n          -> relu  # end\n    output y\n}\noptimizer sgd {lr=0.1,momentum=0.9}\ntrain {\n  data = synthetic(count=8)\n  epochs=2\n}\n";
    let want = "# head\n\nmodel m {  # the model\n    input x: [1, 8]\n\n    # a comment line\n    y = x -> relu\n        -> relu    # end\n    output y\n}\noptimizer sgd { lr = 0.1, momentum = 0.9 }\ntrain {\n    data   = synthetic(count = 8)\n    epochs = 2\n}\n";
    assert_eq!(fmt(src), want);
    assert_eq!(fmt(want), want);
}

#[test]
fn multiline_brackets_one_element_per_line() {
    let src = "model m {\n input x: [1, 3, 3]\n s = x -> conv(1, kernel=3, init=[[1, 0, 0], # row 0\n   [0, 1, 0], [0, 0, 1]])\n output s\n}\n";
    // The comment keeps its source column, 1 + 44 = 45.
    let want = format!(
        "model m {{\n    input x: [1, 3, 3]\n    s = x -> conv(1, kernel=3, init=[\n{:<45}# row 0\n        [0, 1, 0],\n        [0, 0, 1],\n    ])\n    output s\n}}\n",
        "        [1, 0, 0],"
    );
    assert_eq!(fmt(src), want);
    assert_eq!(fmt(&want), want);
}

#[test]
fn literals_keep_their_spelling() {
    let src = "model m {\n input x: [4]\n y = x -> dense(2, init=[[- 1, 2.50, 1e-3, 2E+2]]) -> leaky_relu(slope=.5e1*2)\n output y\n}\n";
    let out = format_source(src);
    // `.5e1` is not a number in geonet: the file does not parse, and fmt refuses it.
    assert!(matches!(out, Err(FmtError::Syntax(_))));
    let src = src.replace(".5e1", "0.5");
    assert_eq!(
        fmt(&src),
        "model m {\n    input x: [4]\n    y = x -> dense(2, init=[[-1, 2.50, 1e-3, 2E+2]]) -> leaky_relu(slope=0.5*2)\n    output y\n}\n"
    );
}

#[test]
fn blocks_short_and_long() {
    let src = "block b( c,k=3 )=conv(c,kernel=k)->relu\nblock r(c) {\ninput x\nh = x->b(c)\noutput add(x,h)\n}\nmodel m {\n input x: [2, 8]\n y = x -> r(2)\n output y\n}\n";
    let want = "block b(c, k = 3) = conv(c, kernel=k) -> relu\nblock r(c) {\n    input x\n    h = x -> b(c)\n    output add(x, h)\n}\nmodel m {\n    input x: [2, 8]\n    y = x -> r(2)\n    output y\n}\n";
    assert_eq!(fmt(src), want);
}

#[test]
fn refuses_files_that_do_not_parse() {
    assert!(matches!(format_source("model m {\n  y = = x\n}\n"), Err(FmtError::Syntax(_))));
}

#[test]
fn trees_compare_without_spans() {
    let shape_of = |src: &str| {
        let mut f = syntax::parse(src).0;
        f.clear_spans();
        f
    };
    let a = "model m {\n input x: [1, 8]\n y = x -> conv(2, kernel=3)\n output y\n}\n";
    assert_eq!(shape_of(a), shape_of(&a.replace("->", "   ->")));
    assert_ne!(shape_of(a), shape_of(&a.replace("kernel=3", "kernel=5")));
}
