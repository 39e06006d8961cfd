//! Repetition: `cbr(64) * 15` expands exactly as fifteen written-out calls `-> cbr(64) -> ...`
//! would, in the same naming scope, so the layer names (and so the checkpoint tensor names) are
//! those of the written-out pipeline. The count is evaluated (block parameters allowed) and
//! checked before anything is expanded; a diagnostic raised inside one repetition carries a
//! label on the count saying which repetition failed.

use super::model::{ModelChecker, TVal};
use super::scope::{Env, Scope};
use super::values::{self, BlockArgs, Value};
use crate::diag::{Diagnostic, Span, codes};
use crate::syntax::ast::Expr;

/// The largest count one repetition may have: far beyond any real network, small enough that a
/// typo (`* 150000`) is an error at the count, not a long expansion.
pub(super) const MAX_REPEAT: i64 = 10_000;

/// The count of a repetition in a model body (where no block parameter is in scope), as the
/// checker evaluates it; `None` when it is not a valid count.
pub fn model_count(count: &Expr) -> Option<usize> {
    match values::eval(count, &BlockArgs::new()) {
        Ok(Value::Int(n)) if (1..=MAX_REPEAT).contains(&n) => usize::try_from(n).ok(),
        _ => None,
    }
}

impl ModelChecker<'_> {
    /// `repeated * count`, with `piped` flowing through the repetitions in order.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn repeat(
        &mut self,
        repeated: &Expr,
        count: &Expr,
        span: &Span,
        piped: Option<TVal>,
        env: &mut Env,
        params: &BlockArgs,
        scope: &mut Scope,
    ) -> Option<TVal> {
        let times = self.repeat_count(count, params)?;
        let mut cur = piped;
        for k in 1..=times {
            self.repeats.push((k, times, count.span.clone()));
            let next = self.tensor(repeated, cur, env, params, scope);
            self.repeats.pop();
            cur = Some(next?);
        }
        cur.map(|t| TVal { span: span.clone(), ..t })
    }

    fn repeat_count(&mut self, count: &Expr, params: &BlockArgs) -> Option<usize> {
        let bad = |found: String| {
            Diagnostic::error(
                codes::BAD_VALUE,
                format!("a repetition count is a positive integer, found {found}"),
                count.span.clone(),
                "repeat how many times?",
            )
            .with_help("write the count after the call: `cbr(64) * 15` is fifteen calls of `cbr(64)`")
        };
        match values::eval(count, params) {
            Ok(Value::Int(n)) if (1..=MAX_REPEAT).contains(&n) => usize::try_from(n).ok(),
            Ok(Value::Int(n)) if n > MAX_REPEAT => {
                self.report(
                    Diagnostic::error(
                        codes::OVERFLOW,
                        format!("a repetition count is at most {MAX_REPEAT}, found {n}"),
                        count.span.clone(),
                        "too many repetitions",
                    )
                    .with_help("no network needs that many layers in a row; check the count"),
                );
                None
            }
            Ok(Value::Int(n)) => {
                self.report(bad(n.to_string()));
                None
            }
            Ok(other) => {
                self.report(bad(other.describe()));
                None
            }
            Err(d) => {
                self.report(d);
                None
            }
        }
    }
}
