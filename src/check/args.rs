//! Argument binding: a call's written arguments against a layer's signature — positional
//! ones in order, named ones by name (with other frameworks' names suggested), each given at
//! most once, the required ones present — evaluated into [`Attrs`] that keep every value's
//! span for the diagnostics of the op's builder.

use super::layers::{Attrs, Signature, attribute_alias};
use super::model::ModelChecker;
use super::values::{self, BlockArgs};
use crate::diag::{Diagnostic, Span, closest, codes};
use crate::syntax::ast::Arg;

impl ModelChecker<'_> {
    /// Parses a call's arguments against a layer signature and evaluates them.
    pub(super) fn attrs(
        &mut self,
        layer: &str,
        sig: &Signature,
        args: &[Arg],
        span: &Span,
        params: &BlockArgs,
    ) -> Option<Attrs> {
        let mut attrs = Attrs::empty(span.clone());
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
}
