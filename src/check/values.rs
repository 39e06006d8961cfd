//! Attribute values: literals, identifiers like `same`, lists and tuples, and integer arithmetic
//! over block parameters (`conv(2*c, kernel=k)`).

use crate::diag::{Diagnostic, codes};
use crate::syntax::ast::{BinOp, Expr, ExprKind, Span};
use std::collections::HashMap;

pub use crate::ops::attrs::Value;

/// The values of a block's parameters in scope while evaluating attribute values (empty at
/// model level). Not to be confused with parameter tensors ([`crate::ir::Params`]).
pub type BlockArgs = HashMap<String, Value>;

/// Evaluates an attribute value. `Call` and `Pipe` are not values here.
pub fn eval(expr: &Expr, params: &BlockArgs) -> Result<Value, Diagnostic> {
    Ok(match &expr.kind {
        ExprKind::Int(v) => Value::Int(*v),
        ExprKind::Float(v) => Value::Float(*v),
        ExprKind::Bool(v) => Value::Bool(*v),
        ExprKind::Str(s) => Value::Str(s.clone()),
        ExprKind::Ident(name) => params.get(name).cloned().unwrap_or_else(|| Value::Word(name.clone())),
        ExprKind::List(items) => {
            Value::List(items.iter().map(|e| eval(e, params)).collect::<Result<_, _>>()?)
        }
        ExprKind::Tuple(items) => {
            Value::Tuple(items.iter().map(|e| eval(e, params)).collect::<Result<_, _>>()?)
        }
        ExprKind::Group(inner) => eval(inner, params)?,
        ExprKind::Neg(inner) => match eval(inner, params)? {
            Value::Int(v) => Value::Int(v.checked_neg().ok_or_else(|| overflow(&expr.span))?),
            Value::Float(v) => Value::Float(-v),
            other => return Err(not_a_number(&other, &inner.span)),
        },
        ExprKind::Binary { op, lhs, rhs } => {
            let (a, b) = (eval(lhs, params)?, eval(rhs, params)?);
            arith(*op, &a, &b, lhs, rhs, &expr.span)?
        }
        ExprKind::Call { name, .. } => {
            return Err(Diagnostic::error(
                codes::BAD_VALUE,
                format!("`{}(...)` is not a value here", name.name),
                expr.span.clone(),
                "expected a number, name, list or tuple",
            ));
        }
        ExprKind::Pipe(_) => {
            return Err(Diagnostic::error(
                codes::BAD_VALUE,
                "a pipeline is not an attribute value",
                expr.span.clone(),
                "expected a number, name, list or tuple",
            ));
        }
    })
}

fn arith(op: BinOp, a: &Value, b: &Value, lhs: &Expr, rhs: &Expr, span: &Span) -> Result<Value, Diagnostic> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            let r = match op {
                BinOp::Add => x.checked_add(*y),
                BinOp::Sub => x.checked_sub(*y),
                BinOp::Mul => x.checked_mul(*y),
                BinOp::Div => {
                    if *y == 0 {
                        return Err(Diagnostic::error(
                            codes::BAD_VALUE,
                            "division by zero",
                            rhs.span.clone(),
                            "this is 0",
                        ));
                    }
                    // Integer division rounds toward negative infinity, like Python's `//`.
                    x.checked_div(*y).map(|q| if x % y != 0 && ((*x < 0) != (*y < 0)) { q - 1 } else { q })
                }
            };
            r.map(Value::Int).ok_or_else(|| overflow(span))
        }
        _ => {
            let x = a.as_f64().ok_or_else(|| not_a_number(a, &lhs.span))?;
            let y = b.as_f64().ok_or_else(|| not_a_number(b, &rhs.span))?;
            Ok(Value::Float(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
            }))
        }
    }
}

fn overflow(span: &Span) -> Diagnostic {
    Diagnostic::error(codes::OVERFLOW, "integer arithmetic overflows", span.clone(), "too large")
}

fn not_a_number(v: &Value, span: &Span) -> Diagnostic {
    Diagnostic::error(
        codes::BAD_VALUE,
        format!("arithmetic needs numbers, found {}", v.describe()),
        span.clone(),
        "not a number",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::ast::Expr;

    fn int(v: i64) -> Expr {
        Expr::new(ExprKind::Int(v), 0..1)
    }
    fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr::new(ExprKind::Binary { op, lhs: Box::new(a), rhs: Box::new(b) }, 0..1)
    }

    #[test]
    fn integer_arithmetic() {
        let p = BlockArgs::new();
        assert_eq!(eval(&bin(BinOp::Div, int(7), int(2)), &p).unwrap(), Value::Int(3));
        assert_eq!(eval(&bin(BinOp::Mul, int(2), int(16)), &p).unwrap(), Value::Int(32));
        assert!(eval(&bin(BinOp::Div, int(7), int(0)), &p).is_err());
        assert!(eval(&bin(BinOp::Mul, int(i64::MAX), int(2)), &p).is_err());
    }

    #[test]
    fn parameters_are_substituted() {
        let mut p = BlockArgs::new();
        p.insert("c".into(), Value::Int(8));
        let e = bin(BinOp::Mul, int(2), Expr::new(ExprKind::Ident("c".into()), 0..1));
        assert_eq!(eval(&e, &p).unwrap(), Value::Int(16));
    }
}
