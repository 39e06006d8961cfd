//! `check(source)` unit tests in the rust-analyzer style: a small program in, the facts out.

use super::*;

fn errors(src: &str) -> Vec<(&'static str, String)> {
    let out = check_source(src);
    out.diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.code, src[d.primary.span.clone()].to_string()))
        .collect()
}

fn warnings(src: &str) -> Vec<(&'static str, String)> {
    let out = check_source(src);
    out.diagnostics
        .iter()
        .filter(|d| !d.is_error())
        .map(|d| (d.code, src[d.primary.span.clone()].to_string()))
        .collect()
}

fn shapes(src: &str) -> Vec<(String, Vec<usize>)> {
    let out = check_source(src);
    let p = out.program.unwrap_or_else(|| panic!("{:#?}", out.diagnostics));
    p.model.layers.iter().map(|l| (l.name.clone(), l.shape.clone())).collect()
}

fn model(body: &str) -> String {
    format!("model m {{\n{body}\n}}\n")
}

#[test]
fn three_independent_mistakes_give_three_located_errors() {
    let src = model(
        "    input x: [1, 32, 32]\n    a = x -> conv(8, kernel_size=3)\n    b = x -> conv(8, kernel=3) -> dense(4)\n    c = q -> relu\n    output a, b, c",
    );
    let e = errors(&src);
    assert_eq!(
        e,
        vec![
            (codes::UNKNOWN_ATTRIBUTE, "kernel_size".to_string()),
            (codes::NOT_FLAT, "dense(4)".to_string()),
            (codes::UNBOUND, "q".to_string())
        ]
    );
}

#[test]
fn no_cascade_from_a_poisoned_value() {
    let src = model(
        "    input x: [1, 8, 8]\n    a = x -> conv(4, kernel=9)\n    b = a -> relu -> conv(2, kernel=3)\n    output b",
    );
    assert_eq!(errors(&src).len(), 1);
}

#[test]
fn used_before_bound_and_rebinding() {
    let src = model(
        "    input x: [1, 8]\n    a = b -> relu\n    b = x -> relu\n    b = x -> tanh\n    output a, b",
    );
    let e = errors(&src);
    assert_eq!(e, vec![(codes::UNBOUND, "b".into()), (codes::REBOUND, "b".into())]);
}

#[test]
fn unused_binding_and_unused_block_warn() {
    let src = format!(
        "block enc(c) = conv(c, kernel=3) -> relu\n{}",
        model("    input x: [1, 8]\n    h = x -> relu\n    output x")
    );
    let w = warnings(&src);
    assert!(w.contains(&(codes::UNUSED_BLOCK, "enc".into())), "{w:?}");
    assert!(w.contains(&(codes::UNUSED_BINDING, "h".into())), "{w:?}");
}

#[test]
fn recursion_is_an_error() {
    let src = format!(
        "block a(c) = conv(c, kernel=1) -> b(c)\nblock b(c) = a(c)\n{}",
        model("    input x: [1, 8]\n    y = x -> a(2)\n    output y")
    );
    assert_eq!(errors(&src).iter().filter(|e| e.0 == codes::RECURSION).count(), 1);
}

#[test]
fn block_parameters_defaults_and_arithmetic() {
    let src = format!(
        "block widen(c, k = c / 2 + 1) = conv(2*c - 1, kernel=k, pad=same)\n{}",
        model("    input x: [1, 16]\n    y = x -> widen(4)\n    z = x -> widen(6, k=1)\n    output y, z")
    );
    // widen(4): k = 4/2 + 1 = 3, out 7; widen(6, k=1): out 11.
    assert_eq!(
        shapes(&src),
        vec![("y.widen0.conv0".into(), vec![7, 16]), ("z.widen0.conv0".into(), vec![11, 16])]
    );
}

#[test]
fn pad_same_needs_an_odd_kernel() {
    let src = model(
        "    input x: [1, 16, 16]\n    y = x -> conv(4, kernel=4, pad=same)\n    z = x -> conv(4, kernel=4, dilation=2, pad=same)\n    output y, z",
    );
    assert_eq!(errors(&src), vec![(codes::PAD_SAME, "pad=same".into())]);
    // dilation 2 · (4 − 1) = 6 is even: pad 3 keeps 16.
}

#[test]
fn dilation_and_same_padding_shapes() {
    let src = model(
        "    input x: [2, 20]\n    y = x -> conv(3, kernel=3, dilation=2) -> conv(3, kernel=5, dilation=3, pad=same)\n    output y",
    );
    // 20 − 2·2 = 16; same padding keeps 16.
    assert_eq!(shapes(&src), vec![("y.conv0".into(), vec![3, 16]), ("y.conv1".into(), vec![3, 16])]);
}

#[test]
fn explicit_rank_forms_check_the_rank() {
    let src = model(
        "    input t: [1, 64]\n    y = t -> conv2d(8, kernel=3)\n    z = t -> maxpool1d(2)\n    output y, z",
    );
    assert_eq!(errors(&src), vec![(codes::RANK, "conv2d".into())]);
}

#[test]
fn per_axis_attributes() {
    let src = model(
        "    input x: [1, 10, 20]\n    y = x -> conv(2, kernel=(3, 5), stride=(1, 5), pad=(1, 0))\n    z = x -> conv(2, kernel=(3, 3, 3))\n    output y, z",
    );
    let out = check_source(&src);
    assert_eq!(errors(&src), vec![(codes::ATTR_ARITY, "kernel=(3, 3, 3)".into())]);
    // y: H = 10 + 2 − 3 + 1 = 10; W = floor((20 − 5)/5) + 1 = 4.
    let _ = out;
    let ok = model(
        "    input x: [1, 10, 20]\n    y = x -> conv(2, kernel=(3, 5), stride=(1, 5), pad=(1, 0))\n    output y",
    );
    assert_eq!(shapes(&ok), vec![("y.conv0".into(), vec![2, 10, 4])]);
}

#[test]
fn upconv_upsample_pool_flatten() {
    let src = model(
        "    input x: [4, 8, 8]\n    a = x -> upconv(2, kernel=3, stride=2, pad=1)\n    b = x -> upsample(3, mode=linear)\n    c = x -> avgpool(3, stride=2, pad=1) -> flatten\n    output a, b, c",
    );
    // upconv: (8 − 1)·2 − 2 + 3 = 15; pool: floor((8 + 2 − 3)/2) + 1 = 4, flat 4·4·4 = 64.
    assert_eq!(
        shapes(&src),
        vec![
            ("a.upconv0".into(), vec![2, 15, 15]),
            ("b.upsample0".into(), vec![4, 24, 24]),
            ("c.avgpool0".into(), vec![4, 4, 4]),
            ("c.flatten0".into(), vec![64])
        ]
    );
}

#[test]
fn init_shapes() {
    let ok = model(
        "    input x: [1, 4, 4]\n    y = x -> conv(1, kernel=3, bias=false, init=[[1, 0, 0], [0, 1, 0], [0, 0, 1]])\n    output y",
    );
    let out = check_source(&ok);
    let init = out.program.unwrap().model.layers[0].init.clone().unwrap();
    assert_eq!(init.shape, vec![1, 1, 3, 3]);
    assert_eq!(init.values, vec![1., 0., 0., 0., 1., 0., 0., 0., 1.]);
    let bad = model(
        "    input x: [1, 4, 4]\n    y = x -> conv(2, kernel=3, init=[[1, 0, 0], [0, 1, 0], [0, 0, 1]])\n    output y",
    );
    assert_eq!(errors(&bad), vec![(codes::INIT_SHAPE, "init=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]".into())]);
    let ragged = model("    input x: [2]\n    y = x -> dense(2, init=[[1, 2], [3]])\n    output y");
    assert_eq!(errors(&ragged).len(), 1);
}

#[test]
fn merges() {
    let src = model(
        "    input x: [2, 8, 8]\n    a = x -> conv(3, kernel=1)\n    c = concat(x, a)\n    d = x -> concat(a)\n    s = sub(c, d)\n    output s",
    );
    let s = shapes(&src);
    assert_eq!(s[1], ("c.concat0".into(), vec![5, 8, 8]));
    assert_eq!(s[3], ("s.sub0".into(), vec![5, 8, 8]));
    let bad =
        model("    input x: [2, 8, 8]\n    a = x -> conv(3, kernel=1)\n    s = add(x, a)\n    output s");
    assert_eq!(errors(&bad), vec![(codes::MERGE_SHAPES, "add(x, a)".into())]);
}

#[test]
fn unet_variants_and_sizes() {
    // norm=batch adds 2 batchnorms per level (8 in all at depth 2 incl. bottleneck: 2·(2+1+2) = 10).
    let src = model(
        "    input x: [1, 32]\n    y = x -> unet(2, depth=2, base=4, pool=avg, up=upsample, norm=batch)\n    output y",
    );
    let out = check_source(&src);
    let p = out.program.unwrap_or_else(|| panic!("{:#?}", out.diagnostics));
    assert_eq!(p.model.outputs[0].shape, vec![2, 32]);
    assert_eq!(p.model.layers.iter().filter(|l| l.op.kind() == "batchnorm").count(), 10);
    assert_eq!(p.model.layers.iter().filter(|l| l.op.kind() == "upsample").count(), 2);
    let bad = model("    input x: [1, 40, 64]\n    y = x -> unet(1, depth=4)\n    output y");
    let out = check_source(&bad);
    assert_eq!(out.diagnostics[0].code, codes::UNET_SIZE);
    assert!(out.diagnostics[0].help.as_deref().unwrap().contains("32 or 48"));
}

#[test]
fn layers_need_inputs_and_values_are_not_layers() {
    let src = model("    input x: [1, 8]\n    a = relu\n    b = x -> x\n    c = x + x\n    output a, b, c");
    let codes: Vec<&str> = errors(&src).iter().map(|e| e.0).collect();
    assert_eq!(codes, vec![codes::VALUE_KIND, codes::VALUE_KIND, codes::TENSOR_ARITHMETIC]);
}

#[test]
fn unknown_layer_suggests_our_name() {
    let src = model("    input x: [1, 8, 8]\n    y = x -> Conv2D(4, kernel=3)\n    output y");
    let out = check_source(&src);
    assert_eq!(out.diagnostics[0].code, codes::UNKNOWN_LAYER);
    assert_eq!(out.diagnostics[0].help.as_deref(), Some("did you mean `conv2d`?"));
    let filters =
        model("    input x: [1, 8, 8]\n    y = x -> conv(filters=4, kernel=3, padding=1)\n    output y");
    let helps: Vec<String> =
        check_source(&filters).diagnostics.iter().filter_map(|d| d.help.clone()).collect();
    assert_eq!(helps, vec!["did you mean `out`?", "did you mean `pad`?"]);
}

#[test]
fn optimizer_and_train_validation() {
    let base = model("    input x: [1, 16, 16]\n    y = x -> conv(1, kernel=3, pad=same)\n    output y");
    let src = format!(
        "{base}optimizer adamw {{ lr = 1e-3 }}\ntrain {{\n  data = synthetic(shape = [1, 8, 8], count = 4)\n  loss = l2\n  batch = 0\n  epoch = 3\n}}\n"
    );
    let out = check_source(&src);
    let got: Vec<(&str, Option<String>)> = out.diagnostics.iter().map(|d| (d.code, d.help.clone())).collect();
    assert_eq!(got.len(), 5, "{got:#?}");
    assert_eq!(got[0].0, codes::UNKNOWN_OPTIMIZER);
    assert_eq!(got[1].0, codes::DATA_SHAPE);
    assert_eq!(got[2], (codes::BAD_DATA, Some("did you mean `mse`?".into())));
    assert_eq!(got[3].0, codes::OUT_OF_RANGE);
    assert_eq!(got[4], (codes::UNKNOWN_KEY, Some("did you mean `epochs`?".into())));
}

#[test]
fn train_defaults_and_optimizer_aliases() {
    let src = format!(
        "{}optimizer adam {{ beta1 = 0.8, beta2 = 0.99, weight_decay = 1e-4, clip = 1 }}\ntrain {{ data = synthetic(count = 8) }}\n",
        model("    input x: [1, 16, 16]\n    y = x -> conv(1, kernel=3, pad=same)\n    output y")
    );
    let p = check_source(&src).program.unwrap();
    assert_eq!(p.optimizer.kind, program::OptimizerKind::Adam { lr: 1e-3, rho1: 0.8, rho2: 0.99, eps: 1e-6 });
    assert_eq!(p.optimizer.clip, Some(1.0));
    let t = p.train.unwrap();
    assert_eq!((t.batch, t.epochs, t.validate, t.seed, t.save.as_str()), (16, 10, 0.1, 0, "m.safetensors"));
    assert_eq!(
        t.data,
        program::DataSpec::Synthetic {
            shape: vec![1, 16, 16],
            count: 8,
            noise: program::NoiseSpec::gaussian(0.5),
            seed: 0
        }
    );
}

#[test]
fn no_model_and_two_models() {
    assert_eq!(errors("optimizer sgd { lr = 0.1 }\n")[0].0, codes::MODEL_COUNT);
    let two = "model a {\n input x: [1]\n output x\n}\nmodel b {\n input x: [1]\n output x\n}\n";
    assert_eq!(errors(two), vec![(codes::MODEL_COUNT, "b".into())]);
}

#[test]
fn absurd_sizes_are_errors() {
    let src = model("    input x: [1, 4611686018427387904, 4611686018427387904]\n    output x");
    assert_eq!(errors(&src)[0].0, codes::OVERFLOW);
    let src = model("    input x: [1, 64]\n    y = x -> conv(9223372036854775807, kernel=3)\n    output y");
    assert!(!errors(&src).is_empty());
    let src = model("    input x: [1, 64]\n    y = x -> upsample(4611686018427387904)\n    output y");
    assert!(!errors(&src).is_empty());
}

#[test]
fn not_utf8_is_located() {
    let out = check_bytes(b"model m {\n  input x: [1]\xff\n}");
    assert_eq!(out.diagnostics[0].code, codes::NOT_UTF8);
    assert_eq!(out.diagnostics[0].primary.span.start, 24);
}

/// Each layer records the call expressions it came from; the side table gives their text.
#[test]
fn layers_find_their_source_through_expression_ids() {
    let src = "block cbr(c) = conv(c, kernel=3) -> relu\n\nmodel m {\n    input x: [1, 16, 16]\n    a = x -> cbr(4) * 2\n    b = a -> conv(1, kernel=1)\n    output b\n}\n";
    let out = check_source(src);
    let p = out.program.unwrap_or_else(|| panic!("{:#?}", out.diagnostics));
    let own: Vec<(String, &str)> =
        p.model.layers.iter().map(|l| (l.name.clone(), &src[p.span_of(l)])).collect();
    assert_eq!(
        own,
        [
            ("a.cbr0.conv0", "conv(c, kernel=3)"),
            ("a.cbr0.relu0", "relu"),
            ("a.cbr1.conv0", "conv(c, kernel=3)"),
            ("a.cbr1.relu0", "relu"),
            ("b.conv0", "conv(1, kernel=1)"),
        ]
        .map(|(n, t)| (n.to_string(), t))
    );
    // The outermost origin of a block's layers is the block call in the model.
    let outer: Vec<&str> = p.model.layers.iter().map(|l| &src[p.source_map.span(l.origin[0])]).collect();
    assert_eq!(outer, ["cbr(4)", "cbr(4)", "cbr(4)", "cbr(4)", "conv(1, kernel=1)"]);
    let file = crate::syntax::parse(src).0;
    let ast::Item::Model(m) = &file.items[1] else { panic!("not a model") };
    let ast::Stmt::Bind { value, .. } = &m.stmts[1] else { panic!("not a binding") };
    let ast::ExprKind::Pipe(terms) = &value.kind else { panic!("not a pipe") };
    let ast::ExprKind::Binary { lhs: call, .. } = &terms[1].kind else { panic!("not a repetition") };
    let from_call: Vec<usize> = p.layers_from(call.id).map(|(i, _)| i).collect();
    assert_eq!(from_call, [0, 1, 2, 3], "both instances of the repeated call");
}
