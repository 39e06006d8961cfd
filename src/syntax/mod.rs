//! Text → syntax tree. The grammar is `grammar/geonet.pest`; this module turns pest's pairs into
//! the [`ast`] with a byte span on every node, and syntax errors into diagnostics.
//!
//! A line that does not parse becomes a `bad_stmt`/`bad_item` in the grammar; we re-parse that
//! line strictly to report what was expected there, and carry on with the rest of the file, so
//! independent syntax errors are all reported in one run.

pub mod ast;
mod recover;

use crate::diag::{Diagnostic, codes};
use ast::*;
use pest::Parser;
use pest::iterators::Pair;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/geonet.pest"]
struct GeonetParser;

/// Deepest bracket nesting accepted. Deeper input is rejected before parsing, so recursion in
/// the parser and the checker stays bounded on any input.
pub const MAX_NESTING: usize = 256;
/// Largest source accepted, in bytes.
pub const MAX_SOURCE: usize = 16 << 20;

/// Parses a whole file. Returns the tree of everything that parsed and the syntax diagnostics.
pub fn parse(source: &str) -> (File, Vec<Diagnostic>) {
    let mut diags = vec![];
    if let Some(d) = check_limits(source) {
        return (
            File { items: vec![], unparsed: Unparsed::default(), source_map: SourceMap::default() },
            vec![d],
        );
    }
    // Bounds pest's work on pathological inputs (it reports an error instead of running long).
    pest::set_call_limit(std::num::NonZeroUsize::new(20_000_000));
    let pairs = match GeonetParser::parse(Rule::file, source) {
        Ok(p) => p,
        Err(e) => {
            return (
                File { items: vec![], unparsed: Unparsed::default(), source_map: SourceMap::default() },
                vec![pest_error(e, 0, source)],
            );
        }
    };
    let mut items = vec![];
    let mut unparsed = Unparsed::default();
    let mut after_bad_item = false;
    // Where the previous item ended with its `}` (not left open): the next starts on a new line.
    let mut previous_end: Option<usize> = None;
    for pair in pairs.flatten().take(1).flat_map(|file| file.into_inner()) {
        if let Some(end) = previous_end.take()
            && pair.as_rule() != Rule::EOI
            && !source[end..pair.as_span().start()].contains('\n')
        {
            let at = pair.as_span().start();
            diags.push(
                Diagnostic::error(
                    codes::SYNTAX,
                    "each item starts on its own line",
                    at..at + 1,
                    "on the same line",
                )
                .with_help("put a line break before it"),
            );
        }
        let mut b = Builder { diags: &mut diags, unparsed: &mut unparsed, unclosed: false };
        match pair.as_rule() {
            Rule::bad_item => {
                // One error per run of unparseable lines: the first says what was expected.
                let start = pair.as_span().start();
                if !after_bad_item {
                    b.diags.push(strict_error(Rule::strict_item, source, start, pair.as_str()));
                }
                b.record_unparsed(pair.as_str(), start);
                after_bad_item = true;
                continue;
            }
            Rule::model => items.push(Item::Model(b.model(pair))),
            Rule::block_short | Rule::block_long => items.push(Item::Block(b.block(pair))),
            Rule::optimizer => items.push(Item::Optimizer(b.optimizer(pair))),
            Rule::train => items.push(Item::Train(b.train(pair))),
            _ => continue,
        }
        after_bad_item = false;
        if !b.unclosed
            && let Some(last) = items.last()
        {
            previous_end = Some(item_span(last).end);
        }
    }
    let source_map = SourceMap::number(&mut items);
    (File { items, unparsed, source_map }, diags)
}

fn check_limits(source: &str) -> Option<Diagnostic> {
    if source.len() > MAX_SOURCE {
        return Some(Diagnostic::error(codes::TOO_DEEP, "file too large", 0..0, "this file is over 16 MiB"));
    }
    let mut depth = 0usize;
    let mut in_comment = false;
    let mut in_string = false;
    let mut escaped = false;
    for (i, b) in source.bytes().enumerate() {
        if in_comment {
            in_comment = b != b'\n';
            continue;
        }
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') | (false, b'\n') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'#' => in_comment = true,
            b'"' => in_string = true,
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(Diagnostic::error(
                        codes::TOO_DEEP,
                        format!("brackets nested more than {MAX_NESTING} deep"),
                        i..i + 1,
                        "too deep",
                    ));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn item_span(item: &Item) -> &Span {
    match item {
        Item::Model(m) => &m.span,
        Item::Block(b) => &b.span,
        Item::Optimizer(o) => &o.span,
        Item::Train(t) => &t.span,
    }
}

/// Re-parses an unparseable line with the strict rule to say what was expected, and where:
/// directly ("missing `)`", "missing `->`") when the cause is recognisable, else pest's
/// expectation at the furthest point it reached.
fn strict_error(rule: Rule, source: &str, start: usize, text: &str) -> Diagnostic {
    // Parse from the start of the bad text to the end of the file: a statement or item may span
    // lines, and the error position is what matters.
    let rest = &source[start..];
    match GeonetParser::parse(rule, rest) {
        Err(e) => {
            let at = match e.location {
                pest::error::InputLocation::Pos(p) => p,
                pest::error::InputLocation::Span((s, _)) => s,
            } + start;
            recover::statement_error(source, start, text, at).unwrap_or_else(|| pest_error(e, start, source))
        }
        // It parses on its own but not in context (e.g. a trailing token after it).
        Ok(pairs) => {
            let end = pairs.last().map_or(0, |p| p.as_span().end());
            let at = start + end;
            let line_end = text.len() + start;
            let span = if at < line_end { at..line_end } else { start..line_end };
            Diagnostic::error(codes::SYNTAX, "unexpected text", span, "not part of any statement").with_help(
                "each statement goes on its own line; continue a pipeline on the next line with `->`",
            )
        }
    }
}

fn pest_error(e: pest::error::Error<Rule>, offset: usize, source: &str) -> Diagnostic {
    let pos = match e.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    } + offset;
    let pos = pos.min(source.len());
    let found = source[pos..].chars().next();
    let end = pos + found.map_or(0, char::len_utf8);
    let found_text = match found {
        None => "the end of the file".to_string(),
        Some('\n') => "the end of the line".to_string(),
        Some(c) => format!("`{c}`"),
    };
    let expected = match &e.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => describe_rules(positives),
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    let message = if expected.is_empty() {
        format!("unexpected {found_text}")
    } else {
        format!("expected {expected}, found {found_text}")
    };
    let mut d = Diagnostic::error(codes::SYNTAX, message, pos..end, "here");
    if let Some(h) = syntax_help(source, pos) {
        d = d.with_help(h);
    }
    d
}

fn describe_rules(rules: &[Rule]) -> String {
    let mut names: Vec<&str> = rules
        .iter()
        .filter_map(|r| {
            Some(match r {
                Rule::ident => "a name",
                Rule::key => "an attribute name",
                Rule::number => "a number",
                Rule::string => "a string",
                Rule::expr | Rule::sum | Rule::product | Rule::unary | Rule::call => "an expression",
                Rule::list => "`[`",
                Rule::args => "`(`",
                Rule::params => "block parameters",
                Rule::kv_block => "`{`",
                Rule::kv => "a setting `name = value`",
                Rule::add_op | Rule::mul_op => "an operator",
                Rule::arg => "an argument",
                Rule::tuple_tail => "`,`",
                Rule::input_decl | Rule::output | Rule::binding => "a statement",
                Rule::model | Rule::block_long | Rule::block_short | Rule::optimizer | Rule::train => {
                    "`model`, `block`, `optimizer` or `train`"
                }
                Rule::EOI => "the end of the file",
                _ => return None,
            })
        })
        .collect();
    names.dedup();
    let mut seen = vec![];
    names.retain(|n| {
        let new = !seen.contains(n);
        seen.push(n);
        new
    });
    match names.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

fn syntax_help(source: &str, pos: usize) -> Option<String> {
    let before = &source[..pos];
    let line = before.rsplit('\n').next().unwrap_or("");
    let opens = line.matches('(').count() + line.matches('[').count();
    let closes = line.matches(')').count() + line.matches(']').count();
    if opens > closes && source[pos..].starts_with('\n') {
        return Some("a bracket opened on this line is not closed".into());
    }
    None
}

struct Builder<'d> {
    diags: &'d mut Vec<Diagnostic>,
    unparsed: &'d mut Unparsed,
    /// The item just built was left open (its `}` is missing).
    unclosed: bool,
}

fn span(p: &Pair<Rule>) -> Span {
    let s = p.as_span();
    s.start()..s.end()
}

/// Children of a pair without its keyword and brace tokens.
fn inner(p: Pair<Rule>) -> impl Iterator<Item = Pair<Rule>> {
    p.into_inner().filter(|q| {
        !matches!(
            q.as_rule(),
            Rule::kw_model
                | Rule::kw_block
                | Rule::kw_input
                | Rule::kw_output
                | Rule::kw_optimizer
                | Rule::kw_train
                | Rule::open_brace
                | Rule::unclosed
        )
    })
}

fn ident(p: Pair<Rule>) -> Ident {
    Ident { name: p.as_str().to_string(), span: span(&p) }
}

impl Builder<'_> {
    /// Records what an unparseable line binds and mentions (see [`Unparsed`]).
    fn record_unparsed(&mut self, text: &str, start: usize) {
        let trimmed = text.trim_start();
        let lead = text.len() - trimmed.len();
        let bound = match trimmed.strip_prefix("block") {
            Some(rest) if rest.starts_with([' ', '\t']) => {
                let name = rest.trim_start();
                let end = name.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(name.len());
                let at = lead + "block".len() + (rest.len() - name.len());
                (end > 0).then(|| (at, &name[..end]))
            }
            _ => recover::bound_name(text),
        };
        // A failed `output` line: the keyword stands for "the model has an output" (it can be no
        // value's name), so the checker does not add "model has no output".
        let bound = bound.or_else(|| {
            let rest = trimmed.strip_prefix("output")?;
            rest.starts_with([' ', '\t']).then_some((lead, "output"))
        });
        if let Some((at, name)) = bound {
            let at = start + at;
            self.unparsed.bound.push(Ident { name: name.to_string(), span: at..at + name.len() });
        }
        self.unparsed.mentioned.extend(recover::words(text).into_iter().map(str::to_string));
    }

    /// Reports a body whose `}` is missing (the grammar's `unclosed`), pointing at its `{`.
    fn check_closed(&mut self, p: &Pair<Rule>, what: &str) {
        let mut open = None;
        let mut unclosed = None;
        for q in p.clone().into_inner().flat_map(|q| {
            // The optimizer's and train's braces are inside their `kv_block`.
            if q.as_rule() == Rule::kv_block { q.into_inner().collect::<Vec<_>>() } else { vec![q] }
        }) {
            match q.as_rule() {
                Rule::open_brace => open = Some(span(&q)),
                Rule::unclosed => unclosed = Some(span(&q)),
                _ => {}
            }
        }
        let (Some(open), Some(end)) = (open, unclosed) else { return };
        self.unclosed = true;
        let source = p.get_input();
        // At the end of the file the label goes after its last character (a snippet cannot
        // show the empty line past the end).
        let (at, next) = if end.start >= source.len() {
            (source.trim_end().len(), "the file ends here")
        } else {
            (end.start, "the next item starts here")
        };
        self.diags.push(
            Diagnostic::error(
                codes::SYNTAX,
                format!("missing `}}` to close {what}"),
                open,
                "this `{` is never closed",
            )
            .with_label(at..at, next)
            .with_help("add `}` on a line of its own after the last line of the body"),
        );
    }

    fn model(&mut self, p: Pair<Rule>) -> Model {
        let sp = span(&p);
        let name =
            p.clone().into_inner().find(|q| q.as_rule() == Rule::ident).map(|q| q.as_str().to_string());
        self.check_closed(&p, &format!("model `{}`", name.unwrap_or_default()));
        let mut inner = inner(p);
        let name = inner.next().map(ident).unwrap_or(Ident { name: String::new(), span: sp.clone() });
        let stmts = self.stmts(inner);
        Model { name, stmts, span: sp }
    }

    fn stmts<'a>(&mut self, pairs: impl Iterator<Item = Pair<'a, Rule>>) -> Vec<Stmt> {
        let mut out = vec![];
        for p in pairs {
            let sp = span(&p);
            match p.as_rule() {
                Rule::input_decl => {
                    let mut it = inner(p);
                    let Some(name) = it.next().map(ident) else { continue };
                    let shape = it.next().map(|l| self.expr(l));
                    out.push(Stmt::Input { name, shape, span: sp });
                }
                Rule::binding => {
                    let mut it = inner(p);
                    let (Some(name), Some(value)) = (it.next(), it.next()) else { continue };
                    out.push(Stmt::Bind { name: ident(name), value: self.expr(value), span: sp });
                }
                Rule::output => {
                    let values = inner(p).map(|e| self.expr(e)).collect();
                    out.push(Stmt::Output { values, span: sp });
                }
                Rule::bad_stmt => {
                    let d = strict_error(Rule::strict_stmt, p.get_input(), sp.start, p.as_str());
                    self.diags.push(d);
                    self.record_unparsed(p.as_str(), sp.start);
                }
                _ => {}
            }
        }
        out
    }

    fn block(&mut self, p: Pair<Rule>) -> Block {
        let sp = span(&p);
        let long = p.as_rule() == Rule::block_long;
        let name =
            p.clone().into_inner().find(|q| q.as_rule() == Rule::ident).map(|q| q.as_str().to_string());
        self.check_closed(&p, &format!("block `{}`", name.unwrap_or_default()));
        let mut inner = inner(p).peekable();
        let name = inner.next().map(ident).unwrap_or(Ident { name: String::new(), span: sp.clone() });
        let mut params = vec![];
        if inner.peek().map(|p| p.as_rule()) == Some(Rule::params)
            && let Some(ps) = inner.next()
        {
            for param in ps.into_inner() {
                let mut it = param.into_inner();
                let Some(n) = it.next() else { continue };
                params.push(Param { name: ident(n), default: it.next().map(|d| self.expr(d)) });
            }
        }
        let body = if long {
            BlockBody::Long(self.stmts(inner))
        } else {
            match inner.next() {
                Some(e) => BlockBody::Short(self.expr(e)),
                None => BlockBody::Long(vec![]),
            }
        };
        Block { name, params, body, span: sp }
    }

    fn entries(&mut self, p: Option<Pair<Rule>>) -> Vec<KeyValue> {
        let Some(p) = p else { return vec![] };
        inner(p)
            .filter_map(|kv| {
                let sp = span(&kv);
                let mut it = kv.into_inner();
                let (key, value) = (it.next()?, it.next()?);
                Some(KeyValue { key: ident(key), value: self.expr(value), span: sp })
            })
            .collect()
    }

    fn optimizer(&mut self, p: Pair<Rule>) -> Optimizer {
        let sp = span(&p);
        self.check_closed(&p, "the optimizer");
        let mut inner = inner(p);
        let kind = inner.next().map(ident).unwrap_or(Ident { name: String::new(), span: sp.clone() });
        let entries = self.entries(inner.next());
        Optimizer { kind, entries, span: sp }
    }

    fn train(&mut self, p: Pair<Rule>) -> Train {
        let sp = span(&p);
        self.check_closed(&p, "`train`");
        let keyword = sp.start..sp.start + "train".len();
        let entries = self.entries(inner(p).next());
        Train { keyword, entries, span: sp }
    }

    fn expr(&mut self, p: Pair<Rule>) -> Expr {
        let sp = span(&p);
        match p.as_rule() {
            Rule::expr => {
                let mut terms: Vec<Expr> = p.into_inner().map(|t| self.expr(t)).collect();
                if terms.len() == 1 {
                    terms.pop().unwrap_or(Expr::new(ExprKind::Tuple(vec![]), sp))
                } else {
                    Expr::new(ExprKind::Pipe(terms), sp)
                }
            }
            Rule::sum | Rule::product => {
                let mut it = p.into_inner();
                let Some(first) = it.next() else { return Expr::new(ExprKind::Tuple(vec![]), sp) };
                let mut acc = self.expr(first);
                while let (Some(op), Some(rhs)) = (it.next(), it.next()) {
                    let op = match op.as_str().trim() {
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        _ => BinOp::Div,
                    };
                    let rhs = self.expr(rhs);
                    let span = acc.span.start..rhs.span.end;
                    acc = Expr::new(ExprKind::Binary { op, lhs: Box::new(acc), rhs: Box::new(rhs) }, span);
                }
                acc
            }
            Rule::unary => {
                let parts: Vec<Pair<Rule>> = p.into_inner().collect();
                let negs = parts.iter().filter(|q| q.as_rule() == Rule::neg).count();
                let Some(atom) = parts.into_iter().find(|q| q.as_rule() != Rule::neg) else {
                    return Expr::new(ExprKind::Tuple(vec![]), sp);
                };
                let mut e = self.expr(atom);
                for _ in 0..negs {
                    e = Expr::new(ExprKind::Neg(Box::new(e)), sp.clone());
                }
                // `-5` is a number, not an operation: fold it so attribute values stay literal.
                fold_negative_literal(e)
            }
            Rule::number => {
                let text = p.as_str();
                let is_float = text.contains(['.', 'e', 'E']);
                let kind = if is_float {
                    match text.parse::<f64>() {
                        Ok(v) if v.is_finite() => ExprKind::Float(v),
                        _ => {
                            self.diags.push(Diagnostic::error(
                                codes::LITERAL,
                                "number too large",
                                sp.clone(),
                                "does not fit a 64-bit float",
                            ));
                            ExprKind::Float(0.0)
                        }
                    }
                } else {
                    match text.parse::<i64>() {
                        Ok(v) => ExprKind::Int(v),
                        Err(_) => {
                            self.diags.push(Diagnostic::error(
                                codes::LITERAL,
                                "integer too large",
                                sp.clone(),
                                "does not fit a 64-bit integer",
                            ));
                            ExprKind::Int(0)
                        }
                    }
                };
                Expr::new(kind, sp)
            }
            Rule::string => {
                let raw = p.into_inner().next().map(|q| q.as_str()).unwrap_or("");
                let mut out = String::new();
                let mut chars = raw.char_indices();
                while let Some((i, c)) = chars.next() {
                    if c != '\\' {
                        out.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some((_, '"')) => out.push('"'),
                        Some((_, '\\')) => out.push('\\'),
                        Some((j, other)) => {
                            let at = sp.start + 1 + i;
                            self.diags.push(
                                Diagnostic::error(
                                    codes::LITERAL,
                                    format!("unknown escape `\\{other}` in string"),
                                    at..sp.start + 1 + j + other.len_utf8(),
                                    "only \\\" and \\\\ are escapes",
                                )
                                .with_help("write `\\\\` for a backslash (or use `/` in paths)"),
                            );
                            out.push(other);
                        }
                        None => {}
                    }
                }
                Expr::new(ExprKind::Str(out), sp)
            }
            Rule::boolean => Expr::new(ExprKind::Bool(p.as_str() == "true"), sp),
            Rule::ident => Expr::new(ExprKind::Ident(p.as_str().to_string()), sp),
            Rule::list => Expr::new(ExprKind::List(p.into_inner().map(|e| self.expr(e)).collect()), sp),
            Rule::group => {
                let mut it = p.into_inner();
                let first = it.next().map(|e| self.expr(e));
                match (first, it.next()) {
                    (Some(first), Some(tail)) => {
                        let mut items = vec![first];
                        items.extend(tail.into_inner().map(|e| self.expr(e)));
                        Expr::new(ExprKind::Tuple(items), sp)
                    }
                    (Some(first), None) => Expr::new(ExprKind::Group(Box::new(first)), sp),
                    (None, _) => Expr::new(ExprKind::Tuple(vec![]), sp),
                }
            }
            Rule::call => {
                let mut it = p.into_inner();
                let name = it.next().map(ident).unwrap_or(Ident { name: String::new(), span: sp.clone() });
                let args = it
                    .next()
                    .map(|a| {
                        a.into_inner()
                            .map(|arg| {
                                let asp = span(&arg);
                                let mut parts: Vec<Pair<Rule>> = arg.into_inner().collect();
                                let value = parts.pop().map(|e| self.expr(e));
                                let name = parts.pop().map(ident);
                                Arg {
                                    name,
                                    value: value.unwrap_or(Expr::new(ExprKind::Tuple(vec![]), asp.clone())),
                                    span: asp,
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Expr::new(ExprKind::Call { name, args }, sp)
            }
            _ => Expr::new(ExprKind::Tuple(vec![]), sp),
        }
    }
}

fn fold_negative_literal(e: Expr) -> Expr {
    match e.kind {
        ExprKind::Neg(inner) => {
            let inner = fold_negative_literal(*inner);
            let kind = match inner.kind {
                ExprKind::Int(v) => ExprKind::Int(v.wrapping_neg()),
                ExprKind::Float(v) => ExprKind::Float(-v),
                other => ExprKind::Neg(Box::new(Expr::new(other, inner.span))),
            };
            Expr::new(kind, e.span)
        }
        kind => Expr::new(kind, e.span),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> File {
        let (f, d) = parse(src);
        assert!(d.is_empty(), "{d:#?}");
        f
    }

    #[test]
    fn numbers_strings_and_trailing_commas() {
        let f = ok("optimizer adam { lr = 1e-3, rho1 = 0.9, eps = 2.5E+2, }\n\
             train {\n  data = npy(input = \"a\\\"b\\\\c.npy\", target = \"t.npy\",)\n  batch = -4\n}\n");
        let Item::Optimizer(o) = &f.items[0] else { panic!() };
        assert_eq!(o.entries[0].value.kind, ExprKind::Float(1e-3));
        assert_eq!(o.entries[2].value.kind, ExprKind::Float(250.0));
        let Item::Train(t) = &f.items[1] else { panic!() };
        let ExprKind::Call { args, .. } = &t.entries[0].value.kind else { panic!() };
        assert_eq!(args[0].value.kind, ExprKind::Str("a\"b\\c.npy".into()));
        assert_eq!(args[0].name.as_ref().map(|n| n.name.as_str()), Some("input"));
        assert_eq!(t.entries[1].value.kind, ExprKind::Int(-4));
    }

    #[test]
    fn pipelines_continue_on_arrow_lines() {
        let f = ok(
            "model m {\n  input x: [1, 8]\n  y = x\n    -> conv(2, kernel=3) # c\n    -> relu\n  output y\n}\n",
        );
        let Item::Model(m) = &f.items[0] else { panic!() };
        let Stmt::Bind { value, .. } = &m.stmts[1] else { panic!() };
        let ExprKind::Pipe(terms) = &value.kind else { panic!("{value:?}") };
        assert_eq!(terms.len(), 3);
        assert_eq!(
            &"model m {\n  input x: [1, 8]\n  y = x\n    -> conv(2, kernel=3) # c\n"[terms[1].span.clone()],
            "conv(2, kernel=3)"
        );
    }

    #[test]
    fn arithmetic_precedence_and_tuples() {
        let f = ok(
            "block b(c, k = 3) = conv(2*c + 1, kernel=(k, k - 1), pad=(1,))\nmodel m { input x: [1, 8]\n output x }",
        );
        let Item::Block(b) = &f.items[0] else { panic!() };
        let BlockBody::Short(e) = &b.body else { panic!() };
        let ExprKind::Call { args, .. } = &e.kind else { panic!() };
        let ExprKind::Binary { op: BinOp::Add, lhs, .. } = &args[0].value.kind else { panic!() };
        assert!(matches!(lhs.kind, ExprKind::Binary { op: BinOp::Mul, .. }));
        assert!(matches!(&args[1].value.kind, ExprKind::Tuple(v) if v.len() == 2));
        assert!(matches!(&args[2].value.kind, ExprKind::Tuple(v) if v.len() == 1));
    }

    #[test]
    fn independent_syntax_errors_are_all_reported() {
        let src =
            "model m {\n  input x: [1, 8]\n  a = x -> conv(2, kernel=3\n  b = x -> relu )\n  output x\n}\n";
        let (f, d) = parse(src);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert_eq!(f.items.len(), 1);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!(
            "model m {{ input x: [1]\n y = {}x{}\n output y }}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let (_, d) = parse(&src);
        assert_eq!(d[0].code, codes::TOO_DEEP);
    }

    #[test]
    fn huge_integer_is_a_literal_error() {
        let (_, d) = parse("model m { input x: [99999999999999999999999]\n output x }");
        assert_eq!(d[0].code, codes::LITERAL);
    }
}
