//! The built-in `unet` (language.md, "unet"): validated attributes, then an expansion into
//! ordinary layers — each built by its op's own builder, exactly as if the user had written the
//! calls — named `{binding}.unet0.enc1.conv0`, `...bottleneck...`, `...dec0...`, `...head.conv0`.

use super::layers::{Attrs, Signature};
use super::model::{ModelChecker, TVal};
use super::scope::Scope;
use super::shape_errors::fmt_shape;
use super::values::Value;
use crate::diag::{Diagnostic, Span, codes};
use crate::ops::{LayerDef, activation, batchnorm, conv, merge, pool, upsample};

/// The name it is called by.
pub const NAME: &str = "unet";

/// Its attributes (language.md).
pub const SIGNATURE: Signature = Signature {
    positional: &["out"],
    named: &["depth", "base", "kernel", "pool", "up", "norm"],
    required: &["out"],
};

/// One line for hover and completion.
pub const SUMMARY: &str =
    "the built-in U-Net: `depth` levels of two convolutions and pooling, `base` channels doubling per level";

impl ModelChecker<'_> {
    /// The built-in U-Net (language.md, "unet").
    pub(super) fn unet(&mut self, attrs: &Attrs, input: TVal, scope: &mut Scope) -> Option<TVal> {
        let read = || -> Result<UnetSpec, Diagnostic> {
            let out = attrs.positive("out")?;
            let depth = attrs.positive_or("depth", 4)?;
            let base = attrs.positive_or("base", 64)?;
            let kernel = attrs.positive_or("kernel", 3)?;
            let avg = attrs.word_or("pool", "max", &["max", "avg"])? == "avg";
            let (upconv, upsample) = (conv::UPCONV.name, upsample::UPSAMPLE.name);
            let upsample = attrs.word_or("up", upconv, &[upconv, upsample])? == upsample;
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
        let spec = read();
        // Every bad attribute of the call at once (the getters go on past a bad value).
        let deferred = attrs.take_deferred();
        let clean = deferred.is_empty();
        for d in deferred {
            self.report(d);
        }
        let UnetSpec { out, depth, base, kernel, avg, upsample, batch } = match spec {
            Ok(r) if clean => r,
            Ok(_) => return None,
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
        let mut us = scope.child(NAME);
        let span = attrs.call.clone();
        // Every layer goes through its op's builder, as if written `conv(c, kernel=k, pad=same)`.
        let int = |v: usize| Value::Int(v as i64);
        let conv = |c: usize, k: usize| -> Vec<(&'static str, Value)> {
            vec![("out", int(c)), ("kernel", int(k)), ("pad", Value::Word("same".into()))]
        };
        let double = |this: &mut Self, x: TVal, c: usize, s: &mut Scope| -> Option<TVal> {
            let mut x = x;
            for _ in 0..2 {
                x = this.expand(conv::CONV, conv(c, kernel), vec![x], &span, s)?;
                if batch {
                    x = this.expand(batchnorm::BATCHNORM, vec![], vec![x], &span, s)?;
                }
                x = this.expand(activation::RELU, vec![], vec![x], &span, s)?;
            }
            Some(x)
        };
        let mut x = input;
        let mut skips = vec![];
        for i in 0..depth {
            let mut s = us.sub(&format!("enc{i}"));
            let e = double(self, x, base << i, &mut s)?;
            skips.push(e.clone());
            let pool = if avg { pool::AVGPOOL } else { pool::MAXPOOL };
            x = self.expand(pool, vec![("kernel", int(2))], vec![e], &span, &mut s)?;
        }
        let mut s = us.sub("bottleneck");
        x = double(self, x, base << depth, &mut s)?;
        for i in (0..depth).rev() {
            let mut s = us.sub(&format!("dec{i}"));
            let c = base << i;
            let up = if upsample {
                let u = self.expand(upsample::UPSAMPLE, vec![("factor", int(2))], vec![x], &span, &mut s)?;
                self.expand(conv::CONV, conv(c, 1), vec![u], &span, &mut s)?
            } else {
                let a = vec![("out", int(c)), ("kernel", int(2)), ("stride", int(2))];
                self.expand(conv::UPCONV, a, vec![x], &span, &mut s)?
            };
            let skip = skips.pop()?;
            x = self.expand(merge::CONCAT, vec![], vec![up, skip], &span, &mut s)?;
            x = double(self, x, c, &mut s)?;
        }
        let mut s = us.sub("head");
        let _ = &mut us;
        self.expand(conv::CONV, conv(out, 1), vec![x], &span, &mut s)
    }

    /// Adds one layer of an expansion through its op's builder.
    fn expand(
        &mut self,
        def: &LayerDef,
        values: Vec<(&'static str, Value)>,
        inputs: Vec<TVal>,
        span: &Span,
        scope: &mut Scope,
    ) -> Option<TVal> {
        let attrs = Attrs::given(span.clone(), values);
        let spatial = inputs.first().map_or(0, |t| t.shape.len().saturating_sub(1));
        let op = self.build(def, &attrs, spatial)?;
        self.push_layer(op, inputs, &Attrs::empty(span.clone()), span, scope)
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
