//! How the ops' shape errors and warnings read: each [`ShapeError`] becomes one diagnostic
//! with the arithmetic written out, a label on the attribute at fault (when one is) and labels
//! on the inputs that carry the shapes, and a help line with a size or attribute that works.

use super::layers::Attrs;
use super::model::TVal;
use crate::diag::{Diagnostic, Span, codes};
use crate::ops::{Op, ShapeError, ShapeWarning};

/// The warning for strides that skip trailing input samples.
pub(super) fn stride_warning(
    op: &Op,
    warnings: &[ShapeWarning],
    input: &TVal,
    attrs: &Attrs,
    span: &Span,
) -> Diagnostic {
    let spatial = input.shape.len() - 1;
    let parts: Vec<String> = warnings
        .iter()
        .map(|w| {
            let ShapeWarning::StrideDropsSamples { axis, dropped, .. } = w;
            let unit = match (spatial, axis) {
                (1, _) => "sample",
                (_, 0) => "row",
                _ => "column",
            };
            if *dropped == 1 { format!("the last {unit}") } else { format!("the last {dropped} {unit}s") }
        })
        .collect();
    let what = parts.join(" and ").replacen(" and the last ", " and ", 1);
    let extent = fmt_spatial(&input.shape);
    let label_span = if attrs.values.contains_key("stride") { attrs.span_of("stride") } else { span.clone() };
    Diagnostic::warning(
        codes::STRIDE_DROPS,
        format!("`{}` drops {what} of its {extent} input", op.kind()),
        label_span,
        "this stride skips trailing input",
    )
    .with_label(input.span.clone(), format!("input is {}", fmt_shape(&input.shape)))
    .with_help("pad the input, or change kernel/stride so (N_x + 2·pad − N_h) is a multiple of the stride")
}

pub(super) fn shape_error(op: &Op, e: ShapeError, inputs: &[TVal], attrs: &Attrs, span: &Span) -> Diagnostic {
    let kind = op.kind();
    let from = |d: Diagnostic| {
        inputs.iter().fold(d, |d, t| d.with_label(t.span.clone(), format!("this is {}", fmt_shape(&t.shape))))
    };
    match e {
        ShapeError::AxisTooSmall { axis, formula, min_input, .. } => {
            let spatial = inputs[0].shape.len() - 1;
            let axis_name = axis_name(axis, spatial);
            let value = formula.rsplit("= ").next().unwrap_or("");
            let label_span =
                if attrs.values.contains_key("kernel") { attrs.span_of("kernel") } else { span.clone() };
            let kernel = op.rules().kernel();
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
            format!("`{kind}` needs a flat input but gets {}", fmt_shape(&found)),
            span.clone(),
            format!("input is {}", fmt_shape(&found)),
        )
        .with_label(inputs[0].span.clone(), format!("this is {}", fmt_shape(&found)))
        .with_help(format!(
            "insert `-> {}` before `{kind}` (it gives [{}])",
            Op::Flatten.kind(),
            found.iter().product::<usize>()
        )),
        ShapeError::Mismatch { what, first, other, other_index } => {
            let msg = if what == "spatial size" {
                format!(
                    "`{kind}` needs equal spatial sizes, but joins {} with {}",
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
                "the {what}s must agree; resize one side (pooling, {}, {}, or padding)",
                crate::ops::upsample::UPSAMPLE.name,
                crate::ops::conv::UPCONV.name
            ))
        }
        ShapeError::Channels { attr, channels, value } => from(Diagnostic::error(
            codes::BAD_VALUE,
            format!(
                "`{kind}` needs `{attr}` to divide the channel count, but {value} does not divide {channels}"
            ),
            attrs.span_of(attr),
            format!("{value} does not divide {channels}"),
        ))
        .with_help(format!(
            "use a divisor of {channels}: {}",
            (1..=channels)
                .filter(|g| channels % g == 0)
                .take(8)
                .map(|g| g.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
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

pub(super) fn fmt_spatial(s: &[usize]) -> String {
    let sp: Vec<String> = s.iter().skip(1).map(|d| d.to_string()).collect();
    if sp.is_empty() { fmt_shape(s) } else { sp.join("×") }
}
