//! What the language server knows about one document, independent of the protocol: where a
//! name is defined, what to show on hover, what to complete, which shapes to hint. Offsets are
//! byte offsets into the document text.

use crate::check::layers::{Callee, layer_names};
use crate::check::program::{Layer, Program, ValueRef};
use crate::check::sizes::{Field, Sizes, analyze};
use crate::check::train::{LOSSES, OPTIMIZERS, SOURCES, TRAIN_KEYS, keys_of, source_keys};
use crate::check::{CheckOutput, axis_name, check_source, describe_axis, fmt_shape};
use crate::ops::Op;
use crate::ops::window::fmt_signed;
use crate::syntax::ast::{self, Arg, BlockBody, Expr, ExprKind, Ident, Item, Span, Stmt};
use crate::syntax::parse;

/// One analysed document.
pub struct Analysis {
    pub text: String,
    pub file: ast::File,
    pub check: CheckOutput,
    pub sizes: Option<Sizes>,
}

impl Analysis {
    pub fn new(text: &str) -> Analysis {
        let (file, _) = parse(text);
        let check = check_source(text);
        let sizes = check.program.as_ref().map(|p| analyze(&p.model));
        Analysis { text: text.to_string(), file, check, sizes }
    }

    fn program(&self) -> Option<&Program> {
        self.check.program.as_ref()
    }
}

/// The body a name lives in.
#[derive(Clone, Copy)]
enum Body<'a> {
    Model(&'a ast::Model),
    Block(&'a ast::Block),
}

impl<'a> Body<'a> {
    fn stmts(&self) -> &'a [Stmt] {
        match self {
            Body::Model(m) => &m.stmts,
            Body::Block(b) => match &b.body {
                BlockBody::Long(s) => s,
                BlockBody::Short(_) => &[],
            },
        }
    }
}

/// What is under the cursor.
enum Target<'a> {
    /// A name being bound or declared (`e1` in `e1 = ...`, `x` in `input x`).
    Def { name: &'a Ident, body: Body<'a> },
    /// A name used in an expression (`expr` is that name's expression).
    Ref { name: &'a str, expr: &'a Expr, body: Body<'a> },
    /// A call, on its name.
    Call { expr: &'a Expr, name: &'a Ident, binding: Option<&'a str>, body: Body<'a> },
    /// The name of a block definition.
    BlockName(&'a ast::Block),
}

fn contains(span: &Span, offset: usize) -> bool {
    span.start <= offset && offset <= span.end
}

fn find_at(file: &ast::File, offset: usize) -> Option<Target<'_>> {
    for item in &file.items {
        match item {
            Item::Model(m) if contains(&m.span, offset) => return in_stmts(&m.stmts, Body::Model(m), offset),
            Item::Block(b) if contains(&b.span, offset) => {
                if contains(&b.name.span, offset) {
                    return Some(Target::BlockName(b));
                }
                for p in &b.params {
                    if let Some(d) = &p.default
                        && let Some(t) = in_expr(d, None, Body::Block(b), offset)
                    {
                        return Some(t);
                    }
                }
                return match &b.body {
                    BlockBody::Short(e) => in_expr(e, None, Body::Block(b), offset),
                    BlockBody::Long(stmts) => in_stmts(stmts, Body::Block(b), offset),
                };
            }
            _ => {}
        }
    }
    None
}

fn in_stmts<'a>(stmts: &'a [Stmt], body: Body<'a>, offset: usize) -> Option<Target<'a>> {
    for s in stmts {
        match s {
            Stmt::Input { name, .. } if contains(&name.span, offset) => {
                return Some(Target::Def { name, body });
            }
            Stmt::Bind { name, value, .. } => {
                if contains(&name.span, offset) {
                    return Some(Target::Def { name, body });
                }
                if let Some(t) = in_expr(value, Some(&name.name), body, offset) {
                    return Some(t);
                }
            }
            Stmt::Output { values, .. } => {
                for v in values {
                    if let Some(t) = in_expr(v, None, body, offset) {
                        return Some(t);
                    }
                }
            }
            _ => {}
        }
    }
    None
}

fn in_expr<'a>(e: &'a Expr, binding: Option<&'a str>, body: Body<'a>, offset: usize) -> Option<Target<'a>> {
    if !contains(&e.span, offset) {
        return None;
    }
    match &e.kind {
        ExprKind::Ident(n) => Some(Target::Ref { name: n, expr: e, body }),
        ExprKind::Call { name, args } => {
            if contains(&name.span, offset) {
                return Some(Target::Call { expr: e, name, binding, body });
            }
            args.iter().find_map(|a: &Arg| in_expr(&a.value, binding, body, offset))
        }
        ExprKind::List(items) | ExprKind::Tuple(items) | ExprKind::Pipe(items) => {
            items.iter().find_map(|x| in_expr(x, binding, body, offset))
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            in_expr(lhs, binding, body, offset).or_else(|| in_expr(rhs, binding, body, offset))
        }
        ExprKind::Neg(x) | ExprKind::Group(x) => in_expr(x, binding, body, offset),
        _ => None,
    }
}

/// Where the name at `offset` is defined: a binding, an input, a block parameter or a block.
pub fn definition(a: &Analysis, offset: usize) -> Option<Span> {
    match find_at(&a.file, offset)? {
        Target::Ref { name, body, .. } => resolve(name, body),
        Target::Call { name, .. } => block_named(&a.file, &name.name).map(|b| b.name.span.clone()),
        Target::Def { name, .. } => Some(name.span.clone()),
        Target::BlockName(b) => Some(b.name.span.clone()),
    }
}

fn resolve(name: &str, body: Body) -> Option<Span> {
    for s in body.stmts() {
        match s {
            Stmt::Input { name: n, .. } | Stmt::Bind { name: n, .. } if n.name == name => {
                return Some(n.span.clone());
            }
            _ => {}
        }
    }
    if let Body::Block(b) = body {
        return b.params.iter().find(|p| p.name.name == name).map(|p| p.name.span.clone());
    }
    None
}

fn block_named<'a>(file: &'a ast::File, name: &str) -> Option<&'a ast::Block> {
    file.items.iter().find_map(|i| match i {
        Item::Block(b) if b.name.name == name => Some(b),
        _ => None,
    })
}

/// Hover text (markdown) for the thing at `offset`.
pub fn hover(a: &Analysis, offset: usize) -> Option<(String, Span)> {
    let target = find_at(&a.file, offset)?;
    let no_shapes = || {
        if a.check.has_errors() {
            "\n\n_shapes are shown once the file checks without errors_".to_string()
        } else {
            String::new()
        }
    };
    match target {
        Target::Def { name, body } => {
            Some((value_hover(a, &name.name, body) + &no_shapes(), name.span.clone()))
        }
        Target::Ref { name, expr, body } => {
            let span = expr.span.clone();
            if resolve(name, body).is_none() {
                // A layer written without parentheses (`-> relu`) is a call too.
                Callee::find(name)?;
                let ident = Ident { name: name.to_string(), span: span.clone() };
                return Some((call_hover(a, expr, &ident, None, body) + &no_shapes(), span));
            }
            Some((value_hover(a, name, body) + &no_shapes(), span))
        }
        Target::BlockName(b) => Some((block_signature(a, b), b.name.span.clone())),
        Target::Call { expr, name, binding, body } => {
            Some((call_hover(a, expr, name, binding, body) + &no_shapes(), name.span.clone()))
        }
    }
}

fn value_hover(a: &Analysis, name: &str, body: Body) -> String {
    if let Body::Block(b) = body {
        return format!("`{name}` is local to block `{}`: its shape depends on each call site", b.name.name);
    }
    let Some(p) = a.program() else { return format!("`{name}`") };
    let m = &p.model;
    if let Some(t) = m.inputs.iter().find(|t| t.name == name) {
        let mut s = format!("**{name}**: input `{}`", fmt_shape(&t.shape));
        if let Some(sizes) = &a.sizes {
            for ax in sizes.inputs.iter().filter(|ax| ax.input == name) {
                s.push_str(&format!("\n\n{} accepts: {}", ax.axis, describe_axis(ax)));
            }
        }
        return s;
    }
    let Some(v) = m.values.iter().find(|v| v.name == name) else { return format!("`{name}`") };
    let params: usize = m.layers.iter().filter(|l| l.value == name).map(|l| l.params).sum();
    let mut s = format!("**{name}**: `{}`\n\nparameters in this binding: {}", fmt_shape(&v.shape), params);
    if let (ValueRef::Layer(l), Some(sizes)) = (v.value, &a.sizes)
        && let Some(f) = sizes.layers.get(l)
    {
        s.push_str(&format!("\n\nreceptive field: {}", f.describe()));
    }
    s
}

fn block_signature(a: &Analysis, b: &ast::Block) -> String {
    let params: Vec<String> = b
        .params
        .iter()
        .map(|p| match &p.default {
            Some(d) => format!("{} = {}", p.name.name, a.text.get(d.span.clone()).unwrap_or("…")),
            None => p.name.name.clone(),
        })
        .collect();
    format!("block `{}({})`", b.name.name, params.join(", "))
}

fn call_hover(a: &Analysis, expr: &Expr, name: &Ident, binding: Option<&str>, body: Body) -> String {
    let n = name.name.as_str();
    let layers: Vec<(usize, &Layer)> =
        a.program().map(|p| p.layers_from(expr.id).collect()).unwrap_or_default();
    if let Some(b) = block_named(&a.file, n) {
        let mut s = block_signature(a, b);
        if let (Some(p), Some(binding), Body::Model(_)) = (a.program(), binding, body) {
            // The k-th call of this block in the binding is `{binding}.{block}{k}`; a repeated
            // call is several instances, shown together.
            let instances = block_call_instances(&a.file, binding, n, expr.span.start);
            let inner: Vec<(usize, &Layer)> = p.layers_from(expr.id).collect();
            if let (Some(first), Some(last), true) =
                (instances.first(), instances.last(), instances.len() > 1)
            {
                s.push_str(&format!(
                    "\n\nrepeated {} times: `{binding}.{n}{first}` … `{binding}.{n}{last}`",
                    instances.len()
                ));
            }
            s.push_str(&group_summary(a, &inner));
        }
        return s;
    }
    if layers.is_empty() {
        return match Callee::find(n).filter(|c| !c.takes_values()) {
            Some(callee) => {
                let sig = callee.signature();
                format!(
                    "layer `{n}`: positional {}; attributes {}\n\n{}",
                    list_or_none(sig.positional),
                    list_or_none(sig.named),
                    callee.summary()
                )
            }
            None => format!("`{n}`"),
        };
    }
    if let Some(Callee::Unet) = Callee::find(n) {
        let mut s = "built-in `unet`".to_string();
        s.push_str(&group_summary(a, &layers));
        if let Some(sizes) = &a.sizes {
            for ax in &sizes.inputs {
                s.push_str(&format!("\n\ninput `{}` {} accepts: {}", ax.input, ax.axis, describe_axis(ax)));
            }
        }
        return s;
    }
    let mut parts = vec![];
    for (i, l) in layers.iter().take(4) {
        parts.push(layer_hover(a, *i, l));
    }
    if layers.len() > 4 {
        parts.push(format!("… and {} more instances", layers.len() - 4));
    }
    parts.join("\n\n---\n\n")
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

/// The numbers `k` of the instances `{binding}.{block}{k}` that the call of `block` starting
/// at `start` expands to: its binding's calls of `block` counted in the checker's order
/// (arguments before the call, every repetition of `call * N` once more). Only run on a
/// program that checked, so the walk is bounded by its (limited) number of layers.
fn block_call_instances(file: &ast::File, binding: &str, block: &str, start: usize) -> Vec<usize> {
    struct Walk<'b> {
        block: &'b str,
        start: usize,
        next: usize,
        found: Vec<usize>,
    }
    impl Walk<'_> {
        fn expr(&mut self, e: &Expr) {
            if let Some((repeated, count)) = e.repetition() {
                for _ in 0..crate::check::repeat::model_count(count).unwrap_or(1) {
                    self.expr(repeated);
                }
                return;
            }
            match &e.kind {
                ExprKind::Call { name, args } => {
                    args.iter().for_each(|a| self.expr(&a.value));
                    if name.name == self.block {
                        if e.span.start == self.start {
                            self.found.push(self.next);
                        }
                        self.next += 1;
                    }
                }
                ExprKind::List(x) | ExprKind::Tuple(x) | ExprKind::Pipe(x) => {
                    x.iter().for_each(|y| self.expr(y))
                }
                ExprKind::Binary { lhs, rhs, .. } => {
                    self.expr(lhs);
                    self.expr(rhs);
                }
                ExprKind::Neg(x) | ExprKind::Group(x) => self.expr(x),
                _ => {}
            }
        }
    }
    let mut walk = Walk { block, start, next: 0, found: vec![] };
    for item in &file.items {
        if let Item::Model(m) = item {
            for s in &m.stmts {
                if let Stmt::Bind { name, value, .. } = s
                    && name.name == binding
                {
                    walk.expr(value);
                }
            }
        }
    }
    walk.found
}

/// Output shape, parameters and receptive field of an expanded block or unet.
fn group_summary(a: &Analysis, layers: &[(usize, &Layer)]) -> String {
    let Some((last_i, last)) = layers.last() else { return String::new() };
    let params: usize = layers.iter().map(|(_, l)| l.params).sum();
    let mut s =
        format!("\n\noutput `{}` · {} layers · {} parameters", fmt_shape(&last.shape), layers.len(), params);
    if let Some(f) = a.sizes.as_ref().and_then(|z| z.layers.get(*last_i)) {
        s.push_str(&format!(" · receptive field {}", f.describe()));
    }
    s
}

fn layer_hover(a: &Analysis, index: usize, l: &Layer) -> String {
    let Some(p) = a.program() else { return String::new() };
    let in_shape = |r: &ValueRef| -> Vec<usize> {
        match r {
            ValueRef::Input(i) => p.model.inputs.get(*i).map(|t| t.shape.clone()).unwrap_or_default(),
            ValueRef::Layer(j) => p.model.layers.get(*j).map(|t| t.shape.clone()).unwrap_or_default(),
        }
    };
    let input = l.inputs.first().map(in_shape).unwrap_or_default();
    let mut s = format!(
        "**{}** ({}): `{}` → `{}`\n\nparameters {} · FLOPs {}",
        l.name,
        l.op.kind(),
        fmt_shape(&input),
        fmt_shape(&l.shape),
        l.params,
        l.flops
    );
    if let Some(f) = a.sizes.as_ref().and_then(|z| z.layers.get(index))
        && *f != Field::Axes(vec![])
    {
        s.push_str(&format!(" · receptive field {}", f.describe()));
    }
    let lines = size_arithmetic(&l.op, &input, &l.shape);
    if !lines.is_empty() {
        s.push_str("\n\n");
        s.push_str(&lines.join("  \n"));
    }
    s
}

/// `N_y = (64 + 2·1 − 3)/1 + 1 = 64` per spatial axis: the op's own size rule, written out.
pub fn size_arithmetic(op: &Op, input: &[usize], _output: &[usize]) -> Vec<String> {
    let spatial = input.len().saturating_sub(1);
    let mut out = vec![];
    for axis in 0..spatial {
        let Some(&n) = input.get(axis + 1) else { continue };
        let Some(rule) = op.rules().axis_rule(axis, n) else { continue };
        let name = axis_name(axis, spatial);
        out.push(format!("{name}: N_y = {} = {}", rule.formula(), fmt_signed(rule.value())));
    }
    out
}

/// One completion candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub label: String,
    pub kind: CandidateKind,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateKind {
    Layer,
    Block,
    Attribute,
    Key,
    Value,
    Keyword,
}

/// Completion candidates at `offset`, from the checker's own tables. Works on text that does
/// not parse (the line being typed rarely does).
pub fn completions(a: &Analysis, offset: usize) -> Vec<Candidate> {
    let text = &a.text;
    let offset = floor_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    // The item the cursor is in: the last line before it that starts an item.
    let item_line = before
        .lines()
        .rev()
        .map(str::trim_end)
        .find(|l| ["model", "block", "optimizer", "train"].iter().any(|k| l.starts_with(k)))
        .unwrap_or("");
    let line = before.rsplit('\n').next().unwrap_or("");
    let cand = |label: &str, kind: CandidateKind, detail: &str| Candidate {
        label: label.to_string(),
        kind,
        detail: detail.to_string(),
    };
    if line.trim_start().starts_with("optimizer") && !line.contains('{') {
        return OPTIMIZERS.iter().map(|o| cand(o, CandidateKind::Value, "optimizer")).collect();
    }
    if item_line.starts_with("optimizer") {
        let kind = item_line.split_whitespace().nth(1).unwrap_or("adam");
        return keys_of(kind).iter().map(|k| cand(k, CandidateKind::Key, "optimizer key")).collect();
    }
    let call = open_call(line);
    if item_line.starts_with("train") {
        if let Some(src) = call
            && let Some(keys) = source_keys(src).or_else(|| crate::check::selfsup::target_keys(src))
        {
            return keys.iter().map(|k| cand(k, CandidateKind::Attribute, src)).collect();
        }
        if let Some((key, _)) = line.split_once('=') {
            return match key.trim() {
                "data" => SOURCES.iter().map(|s| cand(s, CandidateKind::Value, "data source")).collect(),
                "loss" => LOSSES.iter().map(|s| cand(s, CandidateKind::Value, "loss")).collect(),
                "target" => crate::check::selfsup::TARGETS
                    .iter()
                    .map(|s| cand(s, CandidateKind::Value, "self-supervised target"))
                    .collect(),
                _ => vec![],
            };
        }
        return TRAIN_KEYS.iter().map(|k| cand(k, CandidateKind::Key, "train key")).collect();
    }
    if let Some(name) = call {
        if let Some(callee) = Callee::find(name).filter(|c| !c.takes_values()) {
            let sig = callee.signature();
            return sig
                .positional
                .iter()
                .chain(sig.named)
                .map(|k| cand(k, CandidateKind::Attribute, name))
                .collect();
        }
        if let Some(b) = block_named(&a.file, name) {
            return b.params.iter().map(|p| cand(&p.name.name, CandidateKind::Attribute, name)).collect();
        }
    }
    if item_line.is_empty() {
        return ["model", "block", "optimizer", "train"]
            .iter()
            .map(|k| cand(k, CandidateKind::Keyword, "item"))
            .collect();
    }
    let mut out: Vec<Candidate> =
        layer_names().iter().map(|l| cand(l, CandidateKind::Layer, "layer")).collect();
    for item in &a.file.items {
        if let Item::Block(b) = item {
            out.push(cand(&b.name.name, CandidateKind::Block, "block"));
        }
    }
    out
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The name of the innermost call whose `(` is still open before the cursor on the line being
/// typed, if any. (Only that line: a call left open on an earlier line is usually unfinished
/// typing, not a multi-line attribute list.)
fn open_call(before: &str) -> Option<&str> {
    let mut depth = 0i32;
    let bytes = before.as_bytes();
    let mut i = bytes.len();
    while i > 0 {
        i -= 1;
        match bytes[i] {
            b')' | b']' => depth += 1,
            b'[' => depth -= 1,
            b'(' => {
                if depth == 0 {
                    let head = before[..i].trim_end();
                    let start = head
                        .char_indices()
                        .rev()
                        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
                        .map_or(0, |(j, c)| j + c.len_utf8());
                    let name = &head[start..];
                    return (!name.is_empty()).then_some(name);
                }
                depth -= 1;
            }
            b'{' | b'}' => return None,
            _ => {}
        }
        if depth < 0 {
            depth = 0;
        }
    }
    None
}

/// `(offset, label)`: the shape after the name of every model binding.
pub fn inlay_hints(a: &Analysis) -> Vec<(usize, String)> {
    let Some(p) = a.program() else { return vec![] };
    let mut out = vec![];
    for item in &a.file.items {
        if let Item::Model(m) = item {
            for s in &m.stmts {
                if let Stmt::Bind { name, .. } = s
                    && let Some(v) = p.model.values.iter().find(|v| v.name == name.name)
                {
                    out.push((name.span.end, format!(": {}", fmt_shape(&v.shape))));
                }
            }
        }
    }
    out
}
