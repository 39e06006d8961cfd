//! The model body: inputs, bindings and outputs, and the evaluation of value expressions
//! (pipelines, names, calls) — producing named layers with shapes.
//!
//! The work is split by job: [`super::scope`] names layers and binds value names,
//! [`super::calls`] turns one layer call into an op and a layer, [`super::args`] binds a
//! call's arguments to a signature, [`super::blocks`] expands user blocks, [`super::unet`] the
//! built-in U-Net, and [`super::shape_errors`] renders the ops' shape errors as diagnostics.
//!
//! A value whose definition failed is *poisoned* (`None`): everything downstream of it is
//! skipped silently, so one mistake gives one error.

use super::program::{Layer, NamedValue, Tensor, ValueRef};
use super::scope::{Env, Scope};
use super::values::{self, BlockArgs, Value};
use crate::diag::{Diagnostic, Span, codes};
use crate::ops::Shape;
use crate::syntax::ast::{self, Expr, ExprId, ExprKind, Stmt};
use std::collections::{HashMap, HashSet};

/// A checked value: where it comes from, its shape, and where it was written.
#[derive(Clone, Debug)]
pub struct TVal {
    pub vref: ValueRef,
    pub shape: Shape,
    pub span: Span,
}

pub struct ModelChecker<'a> {
    pub diags: Vec<Diagnostic>,
    pub layers: Vec<Layer>,
    pub(super) blocks: HashMap<&'a str, &'a ast::Block>,
    pub used_blocks: HashSet<String>,
    /// Blocks being expanded (recursion detection) with their call sites.
    pub(super) stack: Vec<(String, Span)>,
    /// The call expressions being evaluated, outermost first: a layer's origin.
    pub(super) sites: Vec<ExprId>,
    /// Repetitions being expanded: (this repetition, of how many, the count's span).
    pub(super) repeats: Vec<(usize, usize, Span)>,
    /// Names defined by lines that failed to parse: known but poisoned, never "not bound".
    pub poisoned: HashSet<String>,
    /// How many more name comparisons did-you-mean searches for unbound names may make.
    pub(super) suggestion_budget: usize,
}

pub struct CheckedModel {
    pub inputs: Vec<Tensor>,
    pub values: Vec<NamedValue>,
    pub outputs: Vec<NamedValue>,
}

impl<'a> ModelChecker<'a> {
    pub fn new(blocks: HashMap<&'a str, &'a ast::Block>) -> Self {
        ModelChecker {
            diags: vec![],
            layers: vec![],
            blocks,
            used_blocks: HashSet::new(),
            stack: vec![],
            sites: vec![],
            repeats: vec![],
            poisoned: HashSet::new(),
            suggestion_budget: 1_000_000,
        }
    }

    /// Runs `f` with call expression `id` on the site stack, so the layers it adds record it.
    fn at_site<T>(&mut self, id: ExprId, f: impl FnOnce(&mut Self) -> T) -> T {
        self.sites.push(id);
        let r = f(self);
        self.sites.pop();
        r
    }

    /// Reports a diagnostic, noting the block call site it was reached through.
    pub(super) fn report(&mut self, mut d: Diagnostic) {
        if let Some((name, site)) = self.stack.last() {
            d = d.with_label(site.clone(), format!("in this call of `{name}`"));
        }
        for (k, n, count) in &self.repeats {
            d = d.with_label(count.clone(), format!("in repetition {k} of {n}"));
        }
        self.diags.push(d);
    }

    pub fn check_model(
        &mut self,
        model: &ast::Model,
        input_overrides: Option<&[Vec<usize>]>,
    ) -> Option<CheckedModel> {
        let mut env = Env::for_body(&model.stmts);
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
                    let val = self.tensor(value, None, &mut env, &BlockArgs::new(), &mut scope);
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
                                self.tensor(e, None, &mut env, &BlockArgs::new(), &mut Scope::new(n, n)),
                            ),
                            _ => {
                                let n = format!("output{index}");
                                (
                                    n.clone(),
                                    self.tensor(
                                        e,
                                        None,
                                        &mut env,
                                        &BlockArgs::new(),
                                        &mut Scope::new(&n, &n),
                                    ),
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
        let items = match values::eval(e, &BlockArgs::new()) {
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
    pub(super) fn tensor(
        &mut self,
        e: &Expr,
        piped: Option<TVal>,
        env: &mut Env,
        params: &BlockArgs,
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
                                "to join two values use `{}(a, {name})` or `{}(a, {name})`",
                                crate::ops::merge::CONCAT.name,
                                crate::ops::merge::ADD.name
                            )),
                        );
                        return None;
                    }
                    let callee = ast::Ident { name: name.clone(), span: e.span.clone() };
                    self.at_site(e.id, |c| c.call(&callee, &[], &e.span, Some(input), env, params, scope))
                }
            },
            ExprKind::Call { name, args } => {
                self.at_site(e.id, |c| c.call(name, args, &e.span, piped, env, params, scope))
            }
            ExprKind::Binary { .. } if e.repetition().is_some() => {
                let (repeated, count) = e.repetition()?;
                self.repeat(repeated, count, &e.span, piped, env, params, scope)
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let help = match (&lhs.kind, &rhs.kind) {
                    (ExprKind::Ident(n), _) if *op == ast::BinOp::Mul && !env.values.contains_key(n) => {
                        format!("to repeat a layer or block, call it: `{n}() * {}`", source_hint(rhs))
                    }
                    (_, ExprKind::Call { name, .. }) if *op == ast::BinOp::Mul => {
                        format!("to repeat a call, write the count after it: `{}(...) * N`", name.name)
                    }
                    _ => format!(
                        "use `{}(a, b)` or `{}(a, b)` to combine values",
                        crate::ops::merge::ADD.name,
                        crate::ops::merge::SUB.name
                    ),
                };
                self.report(
                    Diagnostic::error(
                        codes::TENSOR_ARITHMETIC,
                        format!("`{}` works on attribute numbers, not on values", op.symbol()),
                        e.span.clone(),
                        "arithmetic on values",
                    )
                    .with_help(help),
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
}

/// A short rendering of a count for a help line (`N` when it is not a plain integer).
fn source_hint(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(n) => n.to_string(),
        ExprKind::Ident(n) => n.clone(),
        _ => "N".to_string(),
    }
}
