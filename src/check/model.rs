//! The model body: bindings, pipelines, layer calls, block expansion and the built-in `unet`,
//! checked at each call site, producing named layers with shapes.
//!
//! A value whose definition failed is *poisoned* (`None`): everything downstream of it is
//! skipped silently, so one mistake gives one error.

use super::layers::{self, Attrs, LAYERS, Signature, attribute_alias, layer_alias, split_rank};
use super::program::{Init, Layer, NamedValue, Tensor, ValueRef};
use super::values::{self, Params, Value};
use crate::diag::{Diagnostic, closest, codes};
use crate::ops::{Op, Shape, ShapeError, ShapeWarning};
use crate::syntax::ast::{self, Arg, BlockBody, Expr, ExprKind, Span, Stmt};
use std::collections::{HashMap, HashSet};

/// A checked value: where it comes from, its shape, and where it was written.
#[derive(Clone, Debug)]
pub struct TVal {
    pub vref: ValueRef,
    pub shape: Shape,
    pub span: Span,
}

/// Layer naming: `{prefix}.{kind}{n}` with one counter per kind in each scope.
struct Scope {
    prefix: String,
    /// The model-level binding the layers belong to.
    value: String,
    counters: HashMap<String, usize>,
}

impl Scope {
    fn new(prefix: &str, value: &str) -> Scope {
        Scope { prefix: prefix.to_string(), value: value.to_string(), counters: HashMap::new() }
    }
    fn next(&mut self, kind: &str) -> String {
        let n = self.counters.entry(kind.to_string()).or_insert(0);
        let name = format!("{}.{kind}{n}", self.prefix);
        *n += 1;
        name
    }
    fn child(&mut self, kind: &str) -> Scope {
        let name = self.next(kind);
        Scope::new(&name, &self.value)
    }
    fn sub(&self, name: &str) -> Scope {
        Scope::new(&format!("{}.{name}", self.prefix), &self.value)
    }
}

struct Binding {
    val: Option<TVal>,
    name_span: Span,
    used: bool,
    is_input: bool,
}

/// Names in one model or block body.
#[derive(Default)]
struct Env {
    values: HashMap<String, Binding>,
    order: Vec<String>,
    /// Names bound anywhere in this body, to tell "used before bound" from "never bound".
    later: HashMap<String, Span>,
}

pub struct ModelChecker<'a> {
    pub diags: Vec<Diagnostic>,
    pub layers: Vec<Layer>,
    blocks: HashMap<&'a str, &'a ast::Block>,
    pub used_blocks: HashSet<String>,
    /// Blocks being expanded (recursion detection) with their call sites.
    stack: Vec<(String, Span)>,
    /// Names defined by lines that failed to parse: known but poisoned, never "not bound".
    pub poisoned: HashSet<String>,
    /// How many more name comparisons did-you-mean searches for unbound names may make.
    suggestion_budget: usize,
}

pub struct CheckedModel {
    pub inputs: Vec<Tensor>,
    pub values: Vec<NamedValue>,
    pub outputs: Vec<NamedValue>,
}

const MERGES: &[&str] = &["concat", "add", "sub"];
/// Expansion limits: no real network comes near them, and they keep the checker fast and its
/// stack bounded on any input (e.g. blocks that call each other twice per level).
const MAX_LAYERS: usize = 100_000;
const MAX_BLOCK_DEPTH: usize = 64;

impl<'a> ModelChecker<'a> {
    pub fn new(blocks: HashMap<&'a str, &'a ast::Block>) -> Self {
        ModelChecker {
            diags: vec![],
            layers: vec![],
            blocks,
            used_blocks: HashSet::new(),
            stack: vec![],
            poisoned: HashSet::new(),
            suggestion_budget: 1_000_000,
        }
    }

    /// Reports a diagnostic, noting the block call sites it was reached through.
    fn report(&mut self, mut d: Diagnostic) {
        if let Some((name, site)) = self.stack.last() {
            d = d.with_label(site.clone(), format!("in this call of `{name}`"));
        }
        self.diags.push(d);
    }

    pub fn check_model(
        &mut self,
        model: &ast::Model,
        input_overrides: Option<&[Vec<usize>]>,
    ) -> Option<CheckedModel> {
        let mut env = Env::default();
        collect_later(&model.stmts, &mut env);
        let mut inputs = vec![];
        let mut values = vec![];
        let mut outputs = vec![];
        let mut saw_output = false;
        let mut failed = false;
        for stmt in &model.stmts {
            match stmt {
                Stmt::Input { name, shape, span } => {
                    let overridden = input_overrides.and_then(|o| o.get(inputs.len())).cloned();
                    let shape = match shape {
                        _ if overridden.is_some() => overridden,
                        Some(e) => self.input_shape(e),
                        None => {
                            self.report(
                                Diagnostic::error(
                                    codes::INPUT_DECL,
                                    "model input without a shape",
                                    span.clone(),
                                    "no shape",
                                )
                                .with_help(format!(
                                    "give its shape, e.g. `input {}: [1, 128, 128]`",
                                    name.name
                                )),
                            );
                            None
                        }
                    };
                    failed |= shape.is_none();
                    let val = shape.map(|s| {
                        inputs.push(Tensor { name: name.name.clone(), shape: s.clone() });
                        TVal { vref: ValueRef::Input(inputs.len() - 1), shape: s, span: name.span.clone() }
                    });
                    self.bind(&mut env, &name.name, &name.span, val, true);
                }
                Stmt::Bind { name, value, .. } => {
                    let mut scope = Scope::new(&name.name, &name.name);
                    let val = self.tensor(value, None, &mut env, &Params::new(), &mut scope);
                    if let Some(v) = &val {
                        values.push(NamedValue {
                            name: name.name.clone(),
                            value: v.vref,
                            shape: v.shape.clone(),
                        });
                    }
                    failed |= val.is_none();
                    self.bind(&mut env, &name.name, &name.span, val, false);
                }
                Stmt::Output { values: exprs, .. } => {
                    saw_output = true;
                    for e in exprs {
                        let index = outputs.len();
                        let (name, val) = match &e.kind {
                            ExprKind::Ident(n) => (
                                n.clone(),
                                self.tensor(e, None, &mut env, &Params::new(), &mut Scope::new(n, n)),
                            ),
                            _ => {
                                let n = format!("output{index}");
                                (
                                    n.clone(),
                                    self.tensor(e, None, &mut env, &Params::new(), &mut Scope::new(&n, &n)),
                                )
                            }
                        };
                        match val {
                            Some(v) => outputs.push(NamedValue { name, value: v.vref, shape: v.shape }),
                            None => failed = true,
                        }
                    }
                }
            }
        }
        // (A model whose `output` line failed to parse has its syntax error already.)
        if !saw_output && !self.poisoned.contains("output") {
            self.report(
                Diagnostic::error(
                    codes::MISSING_OUTPUT,
                    format!("model `{}` has no output", model.name.name),
                    model.name.span.clone(),
                    "no `output` in this model",
                )
                .with_help("add `output NAME` with the value the model returns"),
            );
            failed = true;
        }
        self.warn_unused(&env);
        if failed { None } else { Some(CheckedModel { inputs, values, outputs }) }
    }

    fn warn_unused(&mut self, env: &Env) {
        for name in &env.order {
            // A poisoned binding (its definition failed) has its error already.
            if let Some(b) = env.values.get(name)
                && !b.used
                && !b.is_input
                && b.val.is_some()
                && !name.starts_with('_')
            {
                self.report(
                        Diagnostic::warning(codes::UNUSED_BINDING, format!("`{name}` is never used"), b.name_span.clone(), "bound here, never used")
                            .with_help(format!("return it with `output {name}`, use it, or remove it (names starting with `_` are not warned about)")),
                    );
            }
        }
    }

    fn bind(&mut self, env: &mut Env, name: &str, span: &Span, val: Option<TVal>, is_input: bool) {
        if let Some(prev) = env.values.get(name) {
            let d = Diagnostic::error(
                codes::REBOUND,
                format!("`{name}` is bound twice"),
                span.clone(),
                "bound again here",
            )
            .with_label(prev.name_span.clone(), "first bound here")
            .with_help(format!("names are bound once; give this value another name, e.g. `{name}2`"));
            self.report(d);
            return;
        }
        env.order.push(name.to_string());
        env.values.insert(name.to_string(), Binding { val, name_span: span.clone(), used: false, is_input });
    }

    fn input_shape(&mut self, e: &Expr) -> Option<Shape> {
        let bad = |this: &mut Self, msg: String| {
            this.report(
                Diagnostic::error(
                    codes::INPUT_DECL,
                    msg,
                    e.span.clone(),
                    "expected [F], [C, N] or [C, H, W]",
                )
                .with_help(
                    "a flat vector is [F], a trace [C, N], a section [C, H, W]; the batch axis is implicit",
                ),
            );
            None
        };
        let items = match values::eval(e, &Params::new()) {
            Ok(Value::List(items)) => items,
            Ok(other) => {
                return bad(self, format!("an input shape is a list of sizes, found {}", other.describe()));
            }
            Err(d) => {
                self.report(d);
                return None;
            }
        };
        if items.is_empty() || items.len() > 3 {
            return bad(self, format!("an input shape has 1 to 3 sizes, found {}", items.len()));
        }
        let mut shape = vec![];
        for v in &items {
            match v {
                Value::Int(i) if *i > 0 && *i <= (1 << 40) => shape.push(*i as usize),
                Value::Int(i) if *i > 0 => {
                    self.report(Diagnostic::error(
                        codes::OVERFLOW,
                        format!("input size {i} is too large"),
                        e.span.clone(),
                        "too large",
                    ));
                    return None;
                }
                other => {
                    return bad(
                        self,
                        format!("input sizes are positive integers, found {}", other.describe()),
                    );
                }
            }
        }
        if crate::ops::checked_product(&shape).map_or(true, |n| n > (1 << 40)) {
            self.report(Diagnostic::error(
                codes::OVERFLOW,
                "input too large",
                e.span.clone(),
                "more than 2^40 elements",
            ));
            return None;
        }
        Some(shape)
    }

    /// Evaluates a tensor expression; `piped` is the value on the left of `->`, if any.
    fn tensor(
        &mut self,
        e: &Expr,
        piped: Option<TVal>,
        env: &mut Env,
        params: &Params,
        scope: &mut Scope,
    ) -> Option<TVal> {
        match &e.kind {
            ExprKind::Pipe(terms) => {
                let mut cur = piped;
                for (i, t) in terms.iter().enumerate() {
                    let next = self.tensor(t, cur.clone(), env, params, scope);
                    next.as_ref()?;
                    if i + 1 < terms.len() && next.is_some() {
                        cur = next;
                    } else {
                        return next;
                    }
                }
                cur
            }
            ExprKind::Group(inner) => self.tensor(inner, piped, env, params, scope),
            ExprKind::Ident(name) => match piped {
                None => self.lookup(name, &e.span, env),
                Some(input) => {
                    if env.values.contains_key(name) {
                        self.report(
                            Diagnostic::error(
                                codes::VALUE_KIND,
                                format!("`{name}` is a value, not a layer"),
                                e.span.clone(),
                                "a value cannot take an input",
                            )
                            .with_help(format!(
                                "to join two values use `concat(a, {name})` or `add(a, {name})`"
                            )),
                        );
                        return None;
                    }
                    self.call(
                        &ast::Ident { name: name.clone(), span: e.span.clone() },
                        &[],
                        &e.span,
                        Some(input),
                        env,
                        params,
                        scope,
                    )
                }
            },
            ExprKind::Call { name, args } => self.call(name, args, &e.span, piped, env, params, scope),
            ExprKind::Binary { op, .. } => {
                self.report(
                    Diagnostic::error(
                        codes::TENSOR_ARITHMETIC,
                        format!("`{}` works on attribute numbers, not on values", op.symbol()),
                        e.span.clone(),
                        "arithmetic on values",
                    )
                    .with_help("use `add(a, b)` or `sub(a, b)` to combine values"),
                );
                None
            }
            _ => {
                self.report(Diagnostic::error(
                    codes::VALUE_KIND,
                    "expected a value or a layer",
                    e.span.clone(),
                    "a number, string or list is not a network value",
                ));
                None
            }
        }
    }

    fn lookup(&mut self, name: &str, span: &Span, env: &mut Env) -> Option<TVal> {
        if let Some(b) = env.values.get_mut(name) {
            b.used = true;
            return b.val.clone();
        }
        if let Some(later) = env.later.get(name).cloned() {
            self.report(
                Diagnostic::error(
                    codes::UNBOUND,
                    format!("`{name}` is used before it is bound"),
                    span.clone(),
                    "used here",
                )
                .with_label(later, "bound later here")
                .with_help("move the binding above its first use"),
            );
            return None;
        }
        if self.poisoned.contains(name) {
            // Its line has a syntax error already.
            return None;
        }
        let base = split_rank(name).0;
        if LAYERS.contains(&name) || self.blocks.contains_key(name) || layers::signature(base).is_some() {
            self.report(
                Diagnostic::error(
                    codes::VALUE_KIND,
                    format!("`{name}` is a layer and needs an input"),
                    span.clone(),
                    "no input",
                )
                .with_help(format!("pipe a value into it: `x -> {name}`")),
            );
            return None;
        }
        let mut d = Diagnostic::error(
            codes::UNBOUND,
            format!("`{name}` is not bound"),
            span.clone(),
            "not bound in this model",
        );
        // Each search compares with every bound name: a file of thousands of unbound names and
        // thousands of bindings would be quadratic, so the comparisons have a fixed budget
        // (only the first few hundred diagnostics are shown anyway).
        let suggestion = if self.suggestion_budget >= env.order.len() {
            self.suggestion_budget -= env.order.len();
            closest(name, env.order.iter().map(String::as_str))
        } else {
            None
        };
        if let Some(s) = suggestion {
            d = d.with_help(format!("did you mean `{s}`?"));
        } else {
            d = d.with_help(format!("bind it first, e.g. `{name} = x -> conv(8, kernel=3)`"));
        }
        self.report(d);
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        name: &ast::Ident,
        args: &[Arg],
        span: &Span,
        piped: Option<TVal>,
        env: &mut Env,
        params: &Params,
        scope: &mut Scope,
    ) -> Option<TVal> {
        let n = name.name.as_str();
        if MERGES.contains(&n) {
            return self.merge(name, args, span, piped, env, params, scope);
        }
        if let Some(block) = self.blocks.get(n).copied() {
            return self.call_block(block, args, span, piped, env, params, scope);
        }
        let (base, rank) = split_rank(n);
        let Some(sig) = layers::signature(base) else {
            if self.poisoned.contains(n) {
                // A block whose definition has a syntax error already.
                return None;
            }
            let mut d = Diagnostic::error(
                codes::UNKNOWN_LAYER,
                format!("unknown layer or block `{n}`"),
                name.span.clone(),
                "not a layer or block",
            );
            let known = LAYERS.iter().copied().chain(self.blocks.keys().copied());
            let suggestion = layer_alias(n).or_else(|| closest(n, known));
            if let Some(s) = suggestion {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            self.report(d);
            return None;
        };
        let attrs = self.attrs(n, &sig, args, span, params);
        let Some(input) = piped else {
            self.report(
                Diagnostic::error(
                    codes::VALUE_KIND,
                    format!("`{n}` needs an input"),
                    span.clone(),
                    "no input",
                )
                .with_help(format!("pipe a value into it: `x -> {n}(...)`")),
            );
            return None;
        };
        let attrs = attrs?;
        if base == "unet" {
            return self.unet(&attrs, input, scope);
        }
        let spatial_op = matches!(base, "conv" | "upconv" | "maxpool" | "avgpool" | "upsample");
        if spatial_op {
            let expected = rank.map(|r| r + 1);
            let ok = match expected {
                Some(r) => input.shape.len() == r,
                None => input.shape.len() == 2 || input.shape.len() == 3,
            };
            if !ok {
                let want = match rank {
                    Some(1) => "a [C, N] value (1-D)".to_string(),
                    Some(_) => "a [C, H, W] value (2-D)".to_string(),
                    None => "a [C, N] or [C, H, W] value".to_string(),
                };
                let mut d = Diagnostic::error(
                    codes::RANK,
                    format!("`{n}` needs {want}, but its input is {}", fmt_shape(&input.shape)),
                    name.span.clone(),
                    format!("input is {}", fmt_shape(&input.shape)),
                )
                .with_label(input.span.clone(), format!("this is {}", fmt_shape(&input.shape)));
                if input.shape.len() == 1 {
                    d = d.with_help(
                        "a flat value has no spatial axes; sliding-window layers need [C, N] or [C, H, W]",
                    );
                } else if rank.is_some() {
                    let fixed = format!("{base}{}d", input.shape.len() - 1);
                    d = d.with_help(format!("use `{fixed}`, or `{base}` which works on both ranks"));
                }
                self.report(d);
                return None;
            }
        }
        let spatial = input.shape.len().saturating_sub(1);
        let op = match layers::build_op(base, &attrs, spatial) {
            Ok(op) => op,
            Err(d) => {
                self.report(d);
                return None;
            }
        };
        self.push_layer(op, vec![input], &attrs, span, scope)
    }

    /// Parses a call's arguments against a layer signature and evaluates them.
    fn attrs(
        &mut self,
        layer: &str,
        sig: &Signature,
        args: &[Arg],
        span: &Span,
        params: &Params,
    ) -> Option<Attrs> {
        let mut attrs = Attrs { values: HashMap::new(), call: span.clone() };
        let mut ok = true;
        let mut positional = sig.positional.iter();
        let all: Vec<&'static str> = sig.positional.iter().chain(sig.named).copied().collect();
        for arg in args {
            let key: &'static str = match &arg.name {
                None => match positional.next() {
                    Some(k) => k,
                    None => {
                        let d = Diagnostic::error(
                            codes::CALL_ARGS,
                            format!("too many positional arguments for `{layer}`"),
                            arg.span.clone(),
                            "unexpected argument",
                        );
                        let d = if sig.positional.is_empty() {
                            d.with_help(format!("`{layer}` takes no positional arguments"))
                        } else {
                            d.with_help(format!(
                                "`{layer}` takes {} positionally; name the others, e.g. `kernel=3`",
                                sig.positional.join(", ")
                            ))
                        };
                        self.report(d);
                        ok = false;
                        continue;
                    }
                },
                Some(k) => match all.iter().find(|a| **a == k.name) {
                    Some(a) => a,
                    None => {
                        let mut d = Diagnostic::error(
                            codes::UNKNOWN_ATTRIBUTE,
                            format!("unknown attribute `{}` on {layer}", k.name),
                            k.span.clone(),
                            "unknown attribute",
                        );
                        let suggestion = attribute_alias(&k.name)
                            .filter(|a| all.contains(a))
                            .or_else(|| closest(&k.name, all.iter().copied()));
                        d = match suggestion {
                            Some(s) => d.with_help(format!("did you mean `{s}`?")),
                            None if all.is_empty() => d.with_help(format!("`{layer}` takes no attributes")),
                            None => d.with_help(format!("`{layer}` takes: {}", all.join(", "))),
                        };
                        self.report(d);
                        ok = false;
                        continue;
                    }
                },
            };
            if attrs.values.contains_key(key) {
                self.report(
                    Diagnostic::error(
                        codes::DUPLICATE_ATTRIBUTE,
                        format!("`{key}` is given twice"),
                        arg.span.clone(),
                        "given again here",
                    )
                    .with_label(attrs.span_of(key), "first given here"),
                );
                ok = false;
                continue;
            }
            match values::eval(&arg.value, params) {
                Ok(v) => {
                    attrs.values.insert(key, (v, arg.span.clone()));
                }
                Err(d) => {
                    self.report(d);
                    ok = false;
                }
            }
        }
        for req in sig.required {
            if ok && !attrs.values.contains_key(req) {
                let how = if sig.positional.first() == Some(req) {
                    format!(
                        "e.g. `{layer}(16{})`",
                        if *req == "out" && sig.required.contains(&"kernel") { ", kernel=3" } else { "" }
                    )
                } else {
                    format!("e.g. `{req}=3`")
                };
                self.report(
                    Diagnostic::error(
                        codes::MISSING_ATTRIBUTE,
                        format!("`{layer}` needs `{req}`"),
                        span.clone(),
                        format!("`{req}` missing"),
                    )
                    .with_help(format!("give it: {how}")),
                );
                ok = false;
            }
        }
        ok.then_some(attrs)
    }

    /// Adds one layer: shape rule, warnings, parameters, `init`.
    fn push_layer(
        &mut self,
        op: Op,
        inputs: Vec<TVal>,
        attrs: &Attrs,
        span: &Span,
        scope: &mut Scope,
    ) -> Option<TVal> {
        if self.layers.len() >= MAX_LAYERS {
            if !self
                .diags
                .iter()
                .any(|d| d.code == codes::OVERFLOW && d.message.starts_with("the network has more than"))
            {
                self.report(Diagnostic::error(
                    codes::OVERFLOW,
                    format!("the network has more than {MAX_LAYERS} layers after expanding blocks"),
                    span.clone(),
                    "expansion stops here",
                ));
            }
            return None;
        }
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape.as_slice()).collect();
        let (shape, warnings) = match op.output_shape(&shapes) {
            Ok(r) => r,
            Err(e) => {
                let d = self.shape_error(&op, e, &inputs, attrs, span);
                self.report(d);
                return None;
            }
        };
        if !warnings.is_empty() {
            let spatial = inputs[0].shape.len() - 1;
            let parts: Vec<String> = warnings
                .iter()
                .map(|w| {
                    let ShapeWarning::StrideDropsSamples { axis, dropped, .. } = w;
                    let unit = match (spatial, axis) {
                        (1, _) => "sample",
                        (_, 0) => "row",
                        _ => "column",
                    };
                    if *dropped == 1 {
                        format!("the last {unit}")
                    } else {
                        format!("the last {dropped} {unit}s")
                    }
                })
                .collect();
            let what = parts.join(" and ").replacen(" and the last ", " and ", 1);
            let extent = fmt_spatial(&inputs[0].shape);
            let label_span =
                if attrs.values.contains_key("stride") { attrs.span_of("stride") } else { span.clone() };
            self.report(
                Diagnostic::warning(
                    codes::STRIDE_DROPS,
                    format!("`{}` drops {what} of its {extent} input", op.kind()),
                    label_span,
                    "this stride skips trailing input",
                )
                .with_label(inputs[0].span.clone(), format!("input is {}", fmt_shape(&inputs[0].shape)))
                .with_help("pad the input, or change kernel/stride so (N_x + 2·pad − N_h) is a multiple of the stride"),
            );
        }
        if crate::ops::checked_product(&shape).map_or(true, |n| n > (1 << 40)) {
            self.report(Diagnostic::error(
                codes::OVERFLOW,
                "layer output too large",
                span.clone(),
                "more than 2^40 elements",
            ));
            return None;
        }
        let init = match attrs.get("init") {
            None => None,
            Some((v, ispan)) => {
                let (given, values) = match layers::init_values(v, ispan) {
                    Ok(r) => r,
                    Err(d) => {
                        self.report(d);
                        return None;
                    }
                };
                let weight = layers::weight_shape(&op, &inputs[0].shape).unwrap_or_default();
                if !layers::fit_init(&given, &weight) {
                    self.report(
                        Diagnostic::error(
                            codes::INIT_SHAPE,
                            format!(
                                "`init` has shape {} but the weights are {}",
                                fmt_shape(&given),
                                fmt_shape(&weight)
                            ),
                            ispan.clone(),
                            format!("expected {} (leading 1s may be left out)", fmt_shape(&weight)),
                        )
                        .with_help("weights are [out, in, k...] for conv and upconv, [out, in] for dense"),
                    );
                    return None;
                }
                Some(Init { shape: weight, values })
            }
        };
        let params = op.trainable_params(&shapes);
        let flops = op.flops(&shapes, &shape);
        let name = scope.next(op.kind());
        self.layers.push(Layer {
            name,
            inputs: inputs.iter().map(|t| t.vref).collect(),
            shape: shape.clone(),
            value: scope.value.clone(),
            params,
            flops,
            init,
            span: span.clone(),
            op,
        });
        Some(TVal { vref: ValueRef::Layer(self.layers.len() - 1), shape, span: span.clone() })
    }

    fn shape_error(&self, op: &Op, e: ShapeError, inputs: &[TVal], attrs: &Attrs, span: &Span) -> Diagnostic {
        let kind = op.kind();
        let from = |d: Diagnostic| {
            inputs
                .iter()
                .fold(d, |d, t| d.with_label(t.span.clone(), format!("this is {}", fmt_shape(&t.shape))))
        };
        match e {
            ShapeError::AxisTooSmall { axis, formula, min_input, .. } => {
                let spatial = inputs[0].shape.len() - 1;
                let axis_name = axis_name(axis, spatial);
                let value = formula.rsplit("= ").next().unwrap_or("");
                let label_span =
                    if attrs.values.contains_key("kernel") { attrs.span_of("kernel") } else { span.clone() };
                let kernel = match op {
                    Op::Conv(c) => Some(&c.kernel),
                    Op::UpConv(c) => Some(&c.kernel),
                    Op::Pool(p) => Some(&p.kernel),
                    _ => None,
                };
                let extent = |v: &[usize]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
                let what = match kernel {
                    Some(k) => format!("a {} kernel on a {} input", extent(k), fmt_spatial(&inputs[0].shape)),
                    None => format!("a {} input", fmt_spatial(&inputs[0].shape)),
                };
                from(Diagnostic::error(
                    codes::EMPTY_OUTPUT,
                    format!("`{kind}` output would be empty: {what} gives {axis_name} N_y = {formula}"),
                    label_span,
                    format!("{axis_name} would be {value}"),
                ))
                .with_help(format!(
                    "an input {axis_name} of at least {min_input} would work; or pad the input (e.g. `pad=same`) or use a smaller kernel"
                ))
            }
            ShapeError::NotFlat { found } => Diagnostic::error(
                codes::NOT_FLAT,
                format!("`dense` needs a flat input but gets {}", fmt_shape(&found)),
                span.clone(),
                format!("input is {}", fmt_shape(&found)),
            )
            .with_label(inputs[0].span.clone(), format!("this is {}", fmt_shape(&found)))
            .with_help(format!(
                "insert `-> flatten` before `dense` (it gives [{}])",
                found.iter().product::<usize>()
            )),
            ShapeError::Mismatch { what, first, other, other_index } => {
                let msg = if kind == "concat" {
                    format!(
                        "`concat` needs equal spatial sizes, but joins {} with {}",
                        fmt_spatial(&first),
                        fmt_spatial(&other)
                    )
                } else {
                    format!(
                        "`{kind}` needs equal shapes, but gets {} and {}",
                        fmt_shape(&first),
                        fmt_shape(&other)
                    )
                };
                let a = &inputs[0];
                let b = &inputs[other_index.min(inputs.len() - 1)];
                Diagnostic::error(
                    codes::MERGE_SHAPES,
                    msg,
                    span.clone(),
                    format!("`{kind}` of {} and {}", fmt_shape(&first), fmt_shape(&other)),
                )
                .with_label(a.span.clone(), format!("this is {}", fmt_shape(&first)))
                .with_label(b.span.clone(), format!("this is {}", fmt_shape(&other)))
                .with_help(format!(
                    "the {what}s must agree; resize one side (pooling, upsample, upconv, or padding)"
                ))
            }
            ShapeError::AttrArity { attr, expected, found } => {
                layers::arity_error(attr, expected, found, attrs.span_of(attr))
            }
            ShapeError::NotPositive { attr } => Diagnostic::error(
                codes::BAD_VALUE,
                format!("`{attr}` must be positive"),
                attrs.span_of(attr),
                "must be at least 1",
            ),
            ShapeError::Rank { expected, found } => from(Diagnostic::error(
                codes::RANK,
                format!("`{kind}` needs {expected}, found {}", fmt_shape(&found)),
                span.clone(),
                "wrong rank",
            )),
            ShapeError::Arity { expected, found } => Diagnostic::error(
                codes::CALL_ARGS,
                format!("`{kind}` takes {expected}, got {found}"),
                span.clone(),
                "wrong number of values",
            ),
            ShapeError::Overflow => {
                Diagnostic::error(codes::OVERFLOW, "size too large", span.clone(), "overflows")
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn merge(
        &mut self,
        name: &ast::Ident,
        args: &[Arg],
        span: &Span,
        piped: Option<TVal>,
        env: &mut Env,
        params: &Params,
        scope: &mut Scope,
    ) -> Option<TVal> {
        let mut inputs = vec![];
        let mut ok = true;
        if let Some(p) = piped {
            inputs.push(p);
        }
        for arg in args {
            if let Some(k) = &arg.name {
                self.report(Diagnostic::error(
                    codes::UNKNOWN_ATTRIBUTE,
                    format!("`{}` takes no attributes", name.name),
                    k.span.clone(),
                    "unknown attribute",
                ));
                ok = false;
                continue;
            }
            match self.tensor(&arg.value, None, env, params, scope) {
                Some(t) => inputs.push(t),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        let op = match name.name.as_str() {
            "concat" => Op::Concat,
            "add" => Op::Add,
            _ => Op::Sub,
        };
        let attrs = Attrs { values: HashMap::new(), call: span.clone() };
        self.push_layer(op, inputs, &attrs, span, scope)
    }

    #[allow(clippy::too_many_arguments)]
    fn call_block(
        &mut self,
        block: &'a ast::Block,
        args: &[Arg],
        span: &Span,
        piped: Option<TVal>,
        env: &mut Env,
        outer_params: &Params,
        scope: &mut Scope,
    ) -> Option<TVal> {
        let bname = block.name.name.clone();
        self.used_blocks.insert(bname.clone());
        if self.stack.iter().any(|(n, _)| *n == bname) {
            let chain: Vec<String> =
                self.stack.iter().map(|(n, _)| n.clone()).chain([bname.clone()]).collect();
            self.report(
                Diagnostic::error(
                    codes::RECURSION,
                    format!("block `{bname}` calls itself"),
                    span.clone(),
                    "recursive call",
                )
                .with_label(block.name.span.clone(), "defined here")
                .with_help(format!("call chain: {}; blocks may not recurse", chain.join(" → "))),
            );
            return None;
        }
        let input_names: Vec<&ast::Ident> = match &block.body {
            BlockBody::Short(_) => vec![],
            BlockBody::Long(stmts) => stmts
                .iter()
                .filter_map(|s| match s {
                    Stmt::Input { name, .. } => Some(name),
                    _ => None,
                })
                .collect(),
        };
        let n_inputs = match &block.body {
            BlockBody::Short(_) => 1,
            BlockBody::Long(_) => input_names.len(),
        };
        // Value arguments come first; the piped value fills the first input.
        let mut tensors = vec![];
        let mut ok = true;
        if let Some(p) = piped {
            tensors.push(p);
        }
        let mut rest = args.iter().peekable();
        while tensors.len() < n_inputs {
            match rest.peek() {
                Some(arg) if arg.name.is_none() => {
                    match self.tensor(&arg.value, None, env, outer_params, scope) {
                        Some(t) => tensors.push(t),
                        None => ok = false,
                    }
                    rest.next();
                    if !ok {
                        break;
                    }
                }
                _ => {
                    self.report(
                        Diagnostic::error(
                            codes::CALL_ARGS,
                            format!(
                                "block `{bname}` takes {n_inputs} input value{}, got {}",
                                if n_inputs == 1 { "" } else { "s" },
                                tensors.len()
                            ),
                            span.clone(),
                            "missing input",
                        )
                        .with_label(block.name.span.clone(), "defined here")
                        .with_help(if n_inputs == 1 {
                            format!("pipe a value into it: `x -> {bname}(...)`")
                        } else {
                            format!("pass the input values first: `{bname}(a, b, ...)`")
                        }),
                    );
                    return None;
                }
            }
        }
        if !ok {
            return None;
        }
        // Parameters.
        let mut params = Params::new();
        let mut given: HashMap<String, Span> = HashMap::new();
        let mut positional = block.params.iter();
        for arg in rest {
            let param = match &arg.name {
                None => match positional.next() {
                    Some(p) => p,
                    None => {
                        self.report(
                            Diagnostic::error(
                                codes::CALL_ARGS,
                                format!("too many arguments for block `{bname}`"),
                                arg.span.clone(),
                                "unexpected argument",
                            )
                            .with_label(block.name.span.clone(), "defined here"),
                        );
                        ok = false;
                        continue;
                    }
                },
                Some(k) => match block.params.iter().find(|p| p.name.name == k.name) {
                    Some(p) => p,
                    None => {
                        let mut d = Diagnostic::error(
                            codes::UNKNOWN_ATTRIBUTE,
                            format!("block `{bname}` has no parameter `{}`", k.name),
                            k.span.clone(),
                            "unknown parameter",
                        )
                        .with_label(block.name.span.clone(), "defined here");
                        if let Some(s) = closest(&k.name, block.params.iter().map(|p| p.name.name.as_str())) {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        }
                        self.report(d);
                        ok = false;
                        continue;
                    }
                },
            };
            if given.contains_key(&param.name.name) {
                self.report(Diagnostic::error(
                    codes::DUPLICATE_ATTRIBUTE,
                    format!("`{}` is given twice", param.name.name),
                    arg.span.clone(),
                    "given again",
                ));
                ok = false;
                continue;
            }
            match values::eval(&arg.value, outer_params) {
                Ok(v) => {
                    given.insert(param.name.name.clone(), arg.span.clone());
                    params.insert(param.name.name.clone(), v);
                }
                Err(d) => {
                    self.report(d);
                    ok = false;
                }
            }
        }
        for p in &block.params {
            if params.contains_key(&p.name.name) {
                continue;
            }
            match &p.default {
                Some(def) => match values::eval(def, &params) {
                    Ok(v) => {
                        params.insert(p.name.name.clone(), v);
                    }
                    Err(d) => {
                        self.report(d);
                        ok = false;
                    }
                },
                None => {
                    if ok {
                        self.report(
                            Diagnostic::error(
                                codes::CALL_ARGS,
                                format!("block `{bname}` needs `{}`", p.name.name),
                                span.clone(),
                                format!("`{}` missing", p.name.name),
                            )
                            .with_label(p.name.span.clone(), "parameter without a default"),
                        );
                    }
                    ok = false;
                }
            }
        }
        if !ok {
            return None;
        }
        if self.stack.len() >= MAX_BLOCK_DEPTH {
            self.report(Diagnostic::error(
                codes::OVERFLOW,
                format!("blocks nested more than {MAX_BLOCK_DEPTH} deep"),
                span.clone(),
                "too deep",
            ));
            return None;
        }
        let mut inner_scope = scope.child(&bname);
        self.stack.push((bname.clone(), span.clone()));
        let result = match &block.body {
            BlockBody::Short(expr) => {
                let mut benv = Env::default();
                let input = tensors.pop();
                self.tensor(expr, input, &mut benv, &params, &mut inner_scope)
            }
            BlockBody::Long(stmts) => {
                self.block_body(stmts, &input_names, tensors, &params, &mut inner_scope, block)
            }
        };
        self.stack.pop();
        result.map(|t| TVal { span: span.clone(), ..t })
    }

    fn block_body(
        &mut self,
        stmts: &[Stmt],
        input_names: &[&ast::Ident],
        tensors: Vec<TVal>,
        params: &Params,
        scope: &mut Scope,
        block: &ast::Block,
    ) -> Option<TVal> {
        let mut env = Env::default();
        collect_later(stmts, &mut env);
        for (name, t) in input_names.iter().zip(tensors) {
            self.bind(&mut env, &name.name, &name.span, Some(t), true);
        }
        let mut result = None;
        let mut outputs = 0;
        for stmt in stmts {
            match stmt {
                Stmt::Input { shape: Some(e), .. } => {
                    self.report(Diagnostic::error(
                        codes::INPUT_DECL,
                        "a block input has no shape: it takes the shape of the value passed in",
                        e.span.clone(),
                        "remove this shape",
                    ));
                }
                Stmt::Input { .. } => {}
                Stmt::Bind { name, value, .. } => {
                    let val = self.tensor(value, None, &mut env, params, scope);
                    self.bind(&mut env, &name.name, &name.span, val, false);
                }
                Stmt::Output { values, span } => {
                    outputs += values.len();
                    if values.len() != 1 {
                        self.report(Diagnostic::error(
                            codes::CALL_ARGS,
                            "a block returns exactly one value",
                            span.clone(),
                            "several outputs",
                        ));
                        continue;
                    }
                    result = self.tensor(&values[0], None, &mut env, params, scope);
                }
            }
        }
        if outputs == 0 {
            self.report(
                Diagnostic::error(
                    codes::MISSING_OUTPUT,
                    format!("block `{}` has no output", block.name.name),
                    block.name.span.clone(),
                    "no `output`",
                )
                .with_help("add `output EXPR` with the value the block returns"),
            );
        }
        self.warn_unused(&env);
        result
    }

    /// The built-in U-Net (language.md, "unet").
    fn unet(&mut self, attrs: &Attrs, input: TVal, scope: &mut Scope) -> Option<TVal> {
        let read = || -> Result<UnetSpec, Diagnostic> {
            let out = attrs.positive("out")?;
            let depth = attrs.positive_or("depth", 4)?;
            let base = attrs.positive_or("base", 64)?;
            let kernel = attrs.positive_or("kernel", 3)?;
            let avg = attrs.word_or("pool", "max", &["max", "avg"])? == "avg";
            let upsample = attrs.word_or("up", "upconv", &["upconv", "upsample"])? == "upsample";
            let batch = attrs.word_or("norm", "none", &["none", "batch"])? == "batch";
            if depth > 16 {
                return Err(Diagnostic::error(
                    codes::BAD_VALUE,
                    format!("unet depth {depth} is too deep"),
                    attrs.span_of("depth"),
                    "at most 16",
                ));
            }
            if base.checked_mul(1 << depth).is_none_or(|c| c > (1 << 24)) {
                return Err(Diagnostic::error(
                    codes::OVERFLOW,
                    "unet channel count too large",
                    attrs.span_of("base"),
                    "base·2^depth too large",
                ));
            }
            if kernel % 2 == 0 {
                return Err(Diagnostic::error(
                    codes::PAD_SAME,
                    format!("unet convolutions use `pad = same`, which needs an odd kernel, not {kernel}"),
                    attrs.span_of("kernel"),
                    "even kernel",
                )
                .with_help(format!("use kernel={} or {}", kernel - 1, kernel + 1)));
            }
            Ok(UnetSpec { out, depth, base, kernel, avg, upsample, batch })
        };
        let UnetSpec { out, depth, base, kernel, avg, upsample, batch } = match read() {
            Ok(r) => r,
            Err(d) => {
                self.report(d);
                return None;
            }
        };
        if input.shape.len() < 2 {
            self.report(
                Diagnostic::error(
                    codes::RANK,
                    format!("`unet` needs a [C, N] or [C, H, W] value, found {}", fmt_shape(&input.shape)),
                    attrs.call.clone(),
                    "flat input",
                )
                .with_label(input.span.clone(), format!("this is {}", fmt_shape(&input.shape))),
            );
            return None;
        }
        let m = 1usize << depth;
        let spatial = &input.shape[1..];
        if let Some(&bad) = spatial.iter().find(|&&n| n % m != 0) {
            let lower = bad / m * m;
            let upper = lower + m;
            let sizes = if lower > 0 { format!("{lower} or {upper}") } else { format!("{upper}") };
            self.report(
                Diagnostic::error(
                    codes::UNET_SIZE,
                    format!("unet(depth={depth}) needs every spatial size divisible by 2^{depth} = {m}, but {bad} is not"),
                    attrs.call.clone(),
                    format!("{bad} is not a multiple of {m}"),
                )
                .with_label(input.span.clone(), format!("this is {}", fmt_shape(&input.shape)))
                .with_help(format!("use an input size of {sizes} (the nearest multiples of {m})")),
            );
            return None;
        }
        let mut us = scope.child("unet");
        let rank = spatial.len();
        let conv = |out: usize, k: usize| {
            Op::Conv(crate::ops::conv::Conv {
                out,
                kernel: vec![k; rank],
                stride: vec![1; rank],
                pad: vec![(k - 1) / 2; rank],
                dilation: vec![1; rank],
                bias: true,
            })
        };
        let no_attrs = Attrs { values: HashMap::new(), call: attrs.call.clone() };
        let span = attrs.call.clone();
        let double = |this: &mut Self, x: TVal, c: usize, s: &mut Scope| -> Option<TVal> {
            let mut x = x;
            for _ in 0..2 {
                x = this.push_layer(conv(c, kernel), vec![x], &no_attrs, &span, s)?;
                if batch {
                    x = this.push_layer(
                        Op::BatchNorm(crate::ops::batchnorm::BatchNorm { momentum: 0.1, eps: 1e-5 }),
                        vec![x],
                        &no_attrs,
                        &span,
                        s,
                    )?;
                }
                x = this.push_layer(
                    Op::Activation(crate::ops::activation::Activation::Relu),
                    vec![x],
                    &no_attrs,
                    &span,
                    s,
                )?;
            }
            Some(x)
        };
        let mut x = input;
        let mut skips = vec![];
        for i in 0..depth {
            let mut s = us.sub(&format!("enc{i}"));
            let e = double(self, x, base << i, &mut s)?;
            skips.push(e.clone());
            let pool = crate::ops::pool::Pool {
                kind: if avg { crate::ops::pool::PoolKind::Avg } else { crate::ops::pool::PoolKind::Max },
                kernel: vec![2; rank],
                stride: vec![2; rank],
                pad: vec![0; rank],
            };
            x = self.push_layer(Op::Pool(pool), vec![e], &no_attrs, &span, &mut s)?;
        }
        let mut s = us.sub("bottleneck");
        x = double(self, x, base << depth, &mut s)?;
        for i in (0..depth).rev() {
            let mut s = us.sub(&format!("dec{i}"));
            let c = base << i;
            let up = if upsample {
                let u = self.push_layer(
                    Op::Upsample(crate::ops::upsample::Upsample {
                        factor: vec![2; rank],
                        mode: crate::ops::upsample::UpsampleMode::Nearest,
                    }),
                    vec![x],
                    &no_attrs,
                    &span,
                    &mut s,
                )?;
                self.push_layer(conv(c, 1), vec![u], &no_attrs, &span, &mut s)?
            } else {
                let op = Op::UpConv(crate::ops::conv::UpConv {
                    out: c,
                    kernel: vec![2; rank],
                    stride: vec![2; rank],
                    pad: vec![0; rank],
                    bias: true,
                });
                self.push_layer(op, vec![x], &no_attrs, &span, &mut s)?
            };
            let skip = skips.pop()?;
            let cat = self.push_layer(Op::Concat, vec![up, skip], &no_attrs, &span, &mut s)?;
            x = double(self, cat, c, &mut s)?;
        }
        let mut s = us.sub("head");
        let y = self.push_layer(conv(out, 1), vec![x], &no_attrs, &span, &mut s)?;
        let _ = &mut us;
        Some(y)
    }
}

/// `unet(...)` attributes, read and validated.
struct UnetSpec {
    out: usize,
    depth: usize,
    base: usize,
    kernel: usize,
    avg: bool,
    upsample: bool,
    batch: bool,
}

fn collect_later(stmts: &[Stmt], env: &mut Env) {
    for s in stmts {
        match s {
            Stmt::Bind { name, .. } | Stmt::Input { name, .. } => {
                env.later.entry(name.name.clone()).or_insert_with(|| name.span.clone());
            }
            Stmt::Output { .. } => {}
        }
    }
}

pub fn axis_name(axis: usize, spatial: usize) -> &'static str {
    match (spatial, axis) {
        (1, _) => "length",
        (_, 0) => "height",
        _ => "width",
    }
}

pub fn fmt_shape(s: &[usize]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

fn fmt_spatial(s: &[usize]) -> String {
    let sp: Vec<String> = s.iter().skip(1).map(|d| d.to_string()).collect();
    if sp.is_empty() { fmt_shape(s) } else { sp.join("×") }
}
