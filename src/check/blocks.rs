//! Block calls: a user block is expanded at each call site, with its value inputs bound to the
//! values passed (the piped one first) and its parameters to the call's arguments or their
//! defaults, so every shape is checked at the sizes it is actually used with. Its layers get a
//! child naming scope (`e1.double_conv0.conv1`); errors inside carry a label on the call.

use super::model::{ModelChecker, TVal};
use super::scope::{Env, Scope};
use super::values::{self, BlockArgs};
use crate::diag::{Diagnostic, Span, closest, codes};
use crate::syntax::ast::{self, Arg, BlockBody, Stmt};
use std::collections::HashMap;

/// Nesting limit: keeps the checker's stack bounded on any input.
const MAX_BLOCK_DEPTH: usize = 64;

impl<'a> ModelChecker<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call_block(
        &mut self,
        block: &'a ast::Block,
        args: &[Arg],
        span: &Span,
        piped: Option<TVal>,
        env: &mut Env,
        outer_params: &BlockArgs,
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
        let mut params = BlockArgs::new();
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
        params: &BlockArgs,
        scope: &mut Scope,
        block: &ast::Block,
    ) -> Option<TVal> {
        let mut env = Env::for_body(stmts);
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
}
