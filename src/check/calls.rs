//! One layer call: which layer a name refers to, the rank it needs, building its op through the
//! op table's builder, and adding the layer (shape rule, warnings, counts, `init`).

use super::layers::{self, Attrs, Callee, layer_alias};
use super::model::{ModelChecker, TVal};
use super::program::{Init, Layer, ValueRef};
use super::scope::{Env, Scope};
use super::shape_errors::{fmt_shape, shape_error, stride_warning};
use super::values::BlockArgs;
use crate::diag::{Diagnostic, Span, closest, codes};
use crate::ops::{LayerDef, Op, Takes};
use crate::syntax::ast::{self, Arg};

/// Expansion limit: no real network comes near it, and it keeps the checker fast on any input
/// (e.g. blocks that call each other twice per level).
pub(super) const MAX_LAYERS: usize = 100_000;

impl ModelChecker<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call(
        &mut self,
        name: &ast::Ident,
        args: &[Arg],
        span: &Span,
        piped: Option<TVal>,
        env: &mut Env,
        params: &BlockArgs,
        scope: &mut Scope,
    ) -> Option<TVal> {
        let n = name.name.as_str();
        if let Some(block) = self.blocks.get(n).copied() {
            return self.call_block(block, args, span, piped, env, params, scope);
        }
        let Some(callee) = Callee::find(n) else {
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
            let names = layers::layer_names();
            let known = names.iter().map(String::as_str).chain(self.blocks.keys().copied());
            let suggestion = layer_alias(n).or_else(|| closest(n, known));
            if let Some(s) = suggestion {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            self.report(d);
            return None;
        };
        if let Callee::Layer(def, _) = callee
            && def.takes == Takes::Values
        {
            return self.merge(def, name, args, span, piped, env, params, scope);
        }
        let attrs = self.attrs(n, &callee.signature(), args, span, params);
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
        let (def, rank) = match callee {
            Callee::Unet => return self.unet(&attrs, input, scope),
            Callee::Layer(def, rank) => (def, rank),
        };
        if let Takes::Spatial { .. } = def.takes
            && !self.rank_fits(def, n, rank, name, &input)
        {
            return None;
        }
        let spatial = input.shape.len().saturating_sub(1);
        let op = self.build(def, &attrs, spatial)?;
        self.push_layer(op, vec![input], &attrs, span, scope)
    }

    /// Builds an op through its builder, reporting every bad attribute of the call (the
    /// builder goes on past a bad value with a fallback) and using the op only when all were
    /// good.
    pub(super) fn build(&mut self, def: &LayerDef, attrs: &Attrs, spatial: usize) -> Option<Op> {
        let built = (def.build)(attrs, spatial);
        let deferred = attrs.take_deferred();
        let clean = deferred.is_empty();
        for d in deferred {
            self.report(d);
        }
        match built {
            Ok(op) if clean => Some(op),
            Ok(_) => None,
            Err(d) => {
                self.report(d);
                None
            }
        }
    }

    /// A sliding-window layer needs `[C, N]` or `[C, H, W]`; `conv1d`/`conv2d` fix which.
    fn rank_fits(
        &mut self,
        def: &LayerDef,
        n: &str,
        rank: Option<usize>,
        name: &ast::Ident,
        input: &TVal,
    ) -> bool {
        let ok = match rank {
            Some(r) => input.shape.len() == r + 1,
            None => input.shape.len() == 2 || input.shape.len() == 3,
        };
        if ok {
            return true;
        }
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
            let base = def.name;
            let fixed = format!("{base}{}d", input.shape.len() - 1);
            d = d.with_help(format!("use `{fixed}`, or `{base}` which works on both ranks"));
        }
        self.report(d);
        false
    }

    /// Adds one layer: shape rule, warnings, parameters, `init`.
    pub(super) fn push_layer(
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
                let d = shape_error(&op, e, &inputs, attrs, span);
                self.report(d);
                return None;
            }
        };
        if !warnings.is_empty() {
            let d = stride_warning(&op, &warnings, &inputs[0], attrs, span);
            self.report(d);
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
                        .with_help(format!(
                            "weights are [out, in, k...] for {} and {}, [out, in] for {}",
                            crate::ops::conv::CONV.name,
                            crate::ops::conv::UPCONV.name,
                            crate::ops::dense::DENSE.name
                        )),
                    );
                    return None;
                }
                Some(Init { shape: weight, values })
            }
        };
        // Counts that do not fit are an error at the call, never a wrapped number.
        let (Some(params), Some(flops)) = (op.trainable_params(&shapes), op.flops(&shapes, &shape)) else {
            self.report(Diagnostic::error(
                codes::OVERFLOW,
                format!("`{}` has too many parameters or FLOPs to count", op.kind()),
                span.clone(),
                "counts overflow",
            ));
            return None;
        };
        let name = scope.next(op.kind());
        self.layers.push(Layer {
            name,
            inputs: inputs.iter().map(|t| t.vref).collect(),
            shape: shape.clone(),
            value: scope.value.clone(),
            params,
            flops,
            init,
            origin: self.sites.clone(),
            op,
        });
        Some(TVal { vref: ValueRef::Layer(self.layers.len() - 1), shape, span: span.clone() })
    }

    #[allow(clippy::too_many_arguments)]
    fn merge(
        &mut self,
        def: &LayerDef,
        name: &ast::Ident,
        args: &[Arg],
        span: &Span,
        piped: Option<TVal>,
        env: &mut Env,
        params: &BlockArgs,
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
        let attrs = Attrs::empty(span.clone());
        let op = self.build(def, &attrs, 0)?;
        self.push_layer(op, inputs, &attrs, span, scope)
    }
}
