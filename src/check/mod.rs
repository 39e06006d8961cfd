//! Names, blocks, the built-in `unet`, shapes, lints → a checked [`program::Program`] and
//! diagnostics.
//!
//! Entry point: [`check_source`] (or [`check_bytes`] for raw file contents). The checker never
//! stops at the first error: independent mistakes are all reported, and a value whose
//! definition failed is poisoned so that it causes no further errors.

mod args;
mod blocks;
mod calls;
mod holdout;
pub mod layers;
mod model;
pub mod noise;
pub mod program;
pub mod repeat;
mod report;
mod scope;
pub mod selfsup;
mod shape_errors;
pub mod sizes;
pub mod train;
pub mod unet;
mod values;

pub use report::{describe_axis, summary_table, to_json};
pub use shape_errors::{axis_name, fmt_shape};

use crate::diag::{Diagnostic, codes};
use crate::syntax::{self, ast};
use program::{Model, Program};
use std::collections::HashMap;

/// Everything `check` learns about a file.
pub struct CheckOutput {
    /// The source text (lossily decoded if the file was not UTF-8).
    pub source: String,
    /// Present only when there are no errors.
    pub program: Option<Program>,
    /// Errors and warnings, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
    /// The model's name, when the file has one.
    pub model_name: Option<String>,
}

impl CheckOutput {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Checks raw file contents: non-UTF-8 input is one located error.
pub fn check_bytes(bytes: &[u8]) -> CheckOutput {
    check_bytes_in(bytes, None)
}

/// Checks the contents of a program file that lives in `base_dir`: besides everything
/// [`check_bytes`] checks, the data files its `train` block names (relative to `base_dir`) must
/// exist, so a typo in a path is found by `check`, not hours later by `run`.
pub fn check_bytes_in(bytes: &[u8], base_dir: Option<&std::path::Path>) -> CheckOutput {
    match std::str::from_utf8(bytes) {
        Ok(s) => check_items(s, None, true, base_dir),
        Err(e) => {
            let at = e.valid_up_to();
            let source = String::from_utf8_lossy(bytes).into_owned();
            // Offsets in the lossy text equal the original ones up to the first bad byte.
            let d = Diagnostic::error(
                codes::NOT_UTF8,
                "the file is not valid UTF-8",
                at..at + 1,
                "invalid byte here",
            )
            .with_help("save the file as UTF-8 text");
            CheckOutput { source, program: None, diagnostics: vec![d], model_name: None }
        }
    }
}

pub fn check_source(source: &str) -> CheckOutput {
    check_source_with_inputs(source, None)
}

/// Checks with the model's input shapes replaced, so a fully convolutional model is re-checked
/// at another size.
pub fn check_source_with_inputs(source: &str, input_shapes: Option<&[Vec<usize>]>) -> CheckOutput {
    check_items(source, input_shapes, true, None)
}

/// Checks the model alone (for inference, e.g. at the size of the data `infer` is given): the
/// `optimizer` and `train` items are parsed but not checked, so what the train block says about
/// training data (its sizes, its files) cannot change or stop inference. `program.train` is
/// None.
pub fn check_model(source: &str, input_shapes: Option<&[Vec<usize>]>) -> CheckOutput {
    check_items(source, input_shapes, false, None)
}

fn check_items(
    source: &str,
    input_shapes: Option<&[Vec<usize>]>,
    with_training: bool,
    base_dir: Option<&std::path::Path>,
) -> CheckOutput {
    let (file, mut diags) = syntax::parse(source);
    let mut models = vec![];
    let mut blocks: HashMap<&str, &ast::Block> = HashMap::new();
    let mut optimizers = vec![];
    let mut trains = vec![];
    for item in &file.items {
        match item {
            ast::Item::Model(m) => models.push(m),
            ast::Item::Block(b) => {
                if let Some(prev) = blocks.get(b.name.name.as_str()) {
                    diags.push(
                        Diagnostic::error(
                            codes::DUPLICATE_ITEM,
                            format!("block `{}` is defined twice", b.name.name),
                            b.name.span.clone(),
                            "defined again here",
                        )
                        .with_label(prev.name.span.clone(), "first defined here"),
                    );
                } else if layers::Callee::find(&b.name.name).is_some() {
                    diags.push(
                        Diagnostic::error(
                            codes::DUPLICATE_ITEM,
                            format!("block `{}` has the name of a built-in layer", b.name.name),
                            b.name.span.clone(),
                            "built-in name",
                        )
                        .with_help("choose another name"),
                    );
                } else {
                    blocks.insert(&b.name.name, b);
                }
            }
            ast::Item::Optimizer(o) => optimizers.push(o),
            ast::Item::Train(t) => trains.push(t),
        }
    }
    for (what, spans) in [
        ("optimizer", optimizers.iter().map(|o| o.kind.span.clone()).collect::<Vec<_>>()),
        ("train", trains.iter().map(|t| t.keyword.clone()).collect()),
    ] {
        for extra in spans.iter().skip(1) {
            diags.push(
                Diagnostic::error(
                    codes::DUPLICATE_ITEM,
                    format!("a file has at most one `{what}`"),
                    extra.clone(),
                    format!("second `{what}`"),
                )
                .with_label(spans[0].clone(), "first one here"),
            );
        }
    }
    if models.len() > 1 {
        for m in &models[1..] {
            diags.push(
                Diagnostic::error(
                    codes::MODEL_COUNT,
                    "a file holds exactly one model",
                    m.name.span.clone(),
                    "second model",
                )
                .with_label(models[0].name.span.clone(), "first model here"),
            );
        }
    }
    let parsed_ok = !diags.iter().any(|d| d.code == codes::SYNTAX || d.code == codes::TOO_DEEP);
    if models.is_empty() && parsed_ok {
        diags.push(
            Diagnostic::error(codes::MODEL_COUNT, "the file has no model", 0..0, "no `model` item")
                .with_help("add `model NAME { input x: [1, 128, 128]  ...  output y }`"),
        );
    }

    let mut checker = model::ModelChecker::new(blocks.clone());
    checker.poisoned = file.unparsed.bound.iter().map(|i| i.name.clone()).collect();
    let mentioned_unparsed: std::collections::HashSet<&str> =
        file.unparsed.mentioned.iter().map(String::as_str).collect();
    let checked = models.first().and_then(|m| checker.check_model(m, input_shapes));
    let model_name = models.first().map(|m| m.name.name.clone());
    diags.append(&mut checker.diags);
    let mentioned = mentioned_blocks(models.first().copied(), &blocks);
    for (name, b) in &blocks {
        // A call in a line that failed to parse still counts as a use.
        if !checker.used_blocks.contains(*name)
            && !mentioned.contains(*name)
            && !mentioned_unparsed.contains(name)
        {
            diags.push(
                Diagnostic::warning(
                    codes::UNUSED_BLOCK,
                    format!("block `{name}` is never used"),
                    b.name.span.clone(),
                    "defined here, never called",
                )
                .with_help("call it from the model or remove it; an unused block's shapes are never checked"),
            );
        }
    }
    if !with_training {
        optimizers.clear();
        trains.clear();
    }
    let optimizer = optimizers.first().and_then(|o| train::check_optimizer(o, &mut diags));
    let train_spec = trains.first().and_then(|t| {
        let name = model_name.as_deref().unwrap_or("model");
        train::check_train(t, checked.as_ref(), name, base_dir, &mut diags)
    });

    // The same mistake inside a block called twice is one mistake.
    let mut seen = std::collections::HashSet::new();
    diags.retain(|d| seen.insert((d.code, d.primary.span.clone(), d.message.clone())));
    diags.sort_by_key(|d| (d.primary.span.start, d.severity));

    let has_errors = diags.iter().any(Diagnostic::is_error);
    let program = match (checked, has_errors) {
        (Some(cm), false) => models.first().map(|m| Program {
            model: Model {
                name: m.name.name.clone(),
                inputs: cm.inputs,
                layers: checker.layers,
                values: cm.values,
                outputs: cm.outputs,
            },
            optimizer: optimizer.clone().unwrap_or_else(train::default_optimizer),
            optimizer_given: !optimizers.is_empty(),
            train: train_spec,
            source_map: file.source_map.clone(),
        }),
        _ => None,
    };
    CheckOutput { source: source.to_string(), program, diagnostics: diags, model_name }
}

/// The blocks the model mentions by name, directly or through blocks it mentions. Read from the
/// syntax rather than from block expansion, so that a block whose call was never reached (an
/// earlier error in the same pipeline poisoned its input) is not also called unused.
fn mentioned_blocks<'a>(
    model: Option<&ast::Model>,
    blocks: &HashMap<&'a str, &'a ast::Block>,
) -> std::collections::HashSet<&'a str> {
    fn from_stmts<'e>(stmts: &'e [ast::Stmt], pending: &mut Vec<&'e ast::Expr>) {
        for stmt in stmts {
            match stmt {
                ast::Stmt::Input { .. } => {}
                ast::Stmt::Bind { value, .. } => pending.push(value),
                ast::Stmt::Output { values, .. } => pending.extend(values),
            }
        }
    }
    let mut mentioned = std::collections::HashSet::new();
    let mut pending: Vec<&ast::Expr> = vec![];
    if let Some(m) = model {
        from_stmts(&m.stmts, &mut pending);
    }
    while let Some(e) = pending.pop() {
        let name = match &e.kind {
            ast::ExprKind::Ident(n) => Some(n.as_str()),
            ast::ExprKind::Call { name, args } => {
                pending.extend(args.iter().map(|a| &a.value));
                Some(name.name.as_str())
            }
            ast::ExprKind::List(items) | ast::ExprKind::Tuple(items) | ast::ExprKind::Pipe(items) => {
                pending.extend(items);
                None
            }
            ast::ExprKind::Binary { lhs, rhs, .. } => {
                pending.push(lhs);
                pending.push(rhs);
                None
            }
            ast::ExprKind::Neg(inner) | ast::ExprKind::Group(inner) => {
                pending.push(inner);
                None
            }
            _ => None,
        };
        if let Some((&key, block)) = name.and_then(|n| blocks.get_key_value(n))
            && mentioned.insert(key)
        {
            pending.extend(block.params.iter().filter_map(|p| p.default.as_ref()));
            match &block.body {
                ast::BlockBody::Short(body) => pending.push(body),
                ast::BlockBody::Long(stmts) => from_stmts(stmts, &mut pending),
            }
        }
    }
    mentioned
}

impl Program {
    pub fn total_params(&self) -> u64 {
        self.model.layers.iter().map(|l| l.params as u64).fold(0, u64::saturating_add)
    }
    pub fn total_flops(&self) -> u64 {
        self.model.layers.iter().map(|l| l.flops).fold(0, u64::saturating_add)
    }
}

#[cfg(test)]
mod tests;
