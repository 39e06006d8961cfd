//! Naming: the two kinds of scope a model body has.
//!
//! - [`Scope`] names layers. Layer names are checkpoint tensor names, so they must be stable
//!   under edits elsewhere in the file: `{binding}.{kind}{n}` with one counter per kind in each
//!   scope, and a block call or `unet` opens a child scope (`e1.double_conv0.conv1`).
//! - [`Env`] binds value names (`x = ...`) in one model or block body: bound once, used after
//!   they are bound, warned about when never used.

use super::model::{ModelChecker, TVal};
use crate::diag::{Diagnostic, Span, closest, codes};
use crate::syntax::ast::Stmt;
use std::collections::HashMap;

/// Layer naming: `{prefix}.{kind}{n}` with one counter per kind in each scope.
pub(super) struct Scope {
    prefix: String,
    /// The model-level binding the layers belong to.
    pub(super) value: String,
    counters: HashMap<String, usize>,
}

impl Scope {
    pub(super) fn new(prefix: &str, value: &str) -> Scope {
        Scope { prefix: prefix.to_string(), value: value.to_string(), counters: HashMap::new() }
    }

    /// The next layer name of this kind.
    pub(super) fn next(&mut self, kind: &str) -> String {
        let n = self.counters.entry(kind.to_string()).or_insert(0);
        let name = format!("{}.{kind}{n}", self.prefix);
        *n += 1;
        name
    }

    /// A scope for one block call (or `unet`) counted like a layer of kind `kind`.
    pub(super) fn child(&mut self, kind: &str) -> Scope {
        let name = self.next(kind);
        Scope::new(&name, &self.value)
    }

    /// A fixed-name part of an expansion (`unet0.enc1`).
    pub(super) fn sub(&self, name: &str) -> Scope {
        Scope::new(&format!("{}.{name}", self.prefix), &self.value)
    }
}

pub(super) struct Binding {
    /// `None` when its definition failed (poisoned: uses are silently skipped).
    pub(super) val: Option<TVal>,
    pub(super) name_span: Span,
    pub(super) used: bool,
    pub(super) is_input: bool,
}

/// Names in one model or block body.
#[derive(Default)]
pub(super) struct Env {
    pub(super) values: HashMap<String, Binding>,
    pub(super) order: Vec<String>,
    /// Names bound anywhere in this body, to tell "used before bound" from "never bound".
    pub(super) later: HashMap<String, Span>,
}

impl Env {
    /// An environment for `stmts` that knows which names they bind further down.
    pub(super) fn for_body(stmts: &[Stmt]) -> Env {
        let mut env = Env::default();
        for s in stmts {
            match s {
                Stmt::Bind { name, .. } | Stmt::Input { name, .. } => {
                    env.later.entry(name.name.clone()).or_insert_with(|| name.span.clone());
                }
                Stmt::Output { .. } => {}
            }
        }
        env
    }
}

impl ModelChecker<'_> {
    pub(super) fn warn_unused(&mut self, env: &Env) {
        for name in &env.order {
            if let Some(b) = env.values.get(name)
                && !b.used
                && !b.is_input
                && b.val.is_some()
                && !name.starts_with('_')
            {
                self.report(
                    Diagnostic::warning(
                        codes::UNUSED_BINDING,
                        format!("`{name}` is never used"),
                        b.name_span.clone(),
                        "bound here, never used",
                    )
                    .with_help(format!(
                        "return it with `output {name}`, use it, or remove it (names starting with `_` are not warned about)"
                    )),
                );
            }
        }
    }

    pub(super) fn bind(&mut self, env: &mut Env, name: &str, span: &Span, val: Option<TVal>, is_input: bool) {
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

    /// A value name used in an expression.
    pub(super) fn lookup(&mut self, name: &str, span: &Span, env: &mut Env) -> Option<TVal> {
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
        if super::layers::Callee::find(name).is_some() || self.blocks.contains_key(name) {
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
            let conv = crate::ops::conv::CONV.name;
            d = d.with_help(format!("bind it first, e.g. `{name} = x -> {conv}(8, kernel=3)`"));
        }
        self.report(d);
        None
    }
}
