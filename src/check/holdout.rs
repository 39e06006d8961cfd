//! The train block's `holdout` setting of `segy(...)` data: `inlines(first, last)` or
//! `traces(first, last)`, checked with located messages (docs/seismic.md, "Holding out for
//! validation"). Whether the range lies inside the file is checked when the file is read.

use super::program::Holdout;
use super::values::{self, BlockArgs, Value};
use crate::diag::{Diagnostic, closest, codes};
use crate::syntax::ast::{self, ExprKind};

/// `holdout = inlines(first, last)` (a volume's inlines, by their header numbers) or
/// `traces(first, last)` (a 2-D line's traces, counted from 1): both ends included, first ≤
/// last. Whether the range lies inside the file is checked when the file is read.
pub fn check_holdout(expr: &ast::Expr, diags: &mut Vec<Diagnostic>) -> Option<Holdout> {
    let usage = "holdout = inlines(FIRST, LAST) for a volume, or traces(FIRST, LAST) for a 2-D line";
    let ExprKind::Call { name, args } = &expr.kind else {
        diags.push(
            Diagnostic::error(
                codes::BAD_VALUE,
                "`holdout` must be inlines(first, last) or traces(first, last)",
                expr.span.clone(),
                "expected inlines(...) or traces(...)",
            )
            .with_help(usage),
        );
        return None;
    };
    let traces = match name.name.as_str() {
        "inlines" => false,
        "traces" => true,
        other => {
            let mut d = Diagnostic::error(
                codes::BAD_VALUE,
                format!("unknown holdout `{other}`"),
                name.span.clone(),
                "expected inlines or traces",
            );
            d = match closest(other, ["inlines", "traces"]) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d.with_help(usage),
            };
            diags.push(d);
            return None;
        }
    };
    let unit = if traces { "trace" } else { "inline" };
    if args.len() != 2 || args.iter().any(|a| a.name.is_some()) {
        diags.push(
            Diagnostic::error(
                codes::CALL_ARGS,
                format!("`{}` takes two numbers: the first and the last {unit} held out", name.name),
                expr.span.clone(),
                "expected two numbers",
            )
            .with_help(usage),
        );
        return None;
    }
    let mut ends = [0i64; 2];
    for (end, a) in ends.iter_mut().zip(args) {
        match values::eval(&a.value, &BlockArgs::new()) {
            Ok(Value::Int(v)) if !traces || v >= 1 => *end = v,
            Ok(Value::Int(_)) => {
                diags.push(
                    Diagnostic::error(
                        codes::OUT_OF_RANGE,
                        "traces are counted from 1",
                        a.value.span.clone(),
                        "expected a trace number ≥ 1",
                    )
                    .with_help("traces(1, 80) holds out the first 80 traces"),
                );
                return None;
            }
            Ok(_) => {
                diags.push(Diagnostic::error(
                    codes::BAD_VALUE,
                    format!("a {unit} number must be an integer"),
                    a.value.span.clone(),
                    "expected an integer",
                ));
                return None;
            }
            Err(d) => {
                diags.push(d);
                return None;
            }
        }
    }
    let [first, last] = ends;
    if first > last {
        diags.push(
            Diagnostic::error(
                codes::OUT_OF_RANGE,
                format!("empty holdout: the first {unit} {first} is after the last {last}"),
                expr.span.clone(),
                "first > last",
            )
            .with_help(format!("both ends are included: {}({last}, {first})", name.name)),
        );
        return None;
    }
    Some(if traces { Holdout::Traces { first, last } } else { Holdout::Inlines { first, last } })
}
