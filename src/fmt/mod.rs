//! `geonetc fmt`: the one canonical layout of a `.geonet` file (docs/language.md, "Layout").
//!
//! The formatter prints the syntax tree again, taking from the source only what the tree does
//! not hold: comments, blank lines between statements and items, the author's line breaks
//! before `->` and inside brackets, and the spelling of literals (`1e-3` stays `1e-3`).
//! Everything else is normalised: indentation (4 spaces per level), spaces around `=`, `->`,
//! `,` and `:`, the alignment of `=` in consecutive bindings and train/optimizer entries, and
//! the column of trailing comments.
//!
//! Safety: a file that does not parse is refused with its syntax diagnostics, and every result
//! is re-parsed and compared with the original tree (spans aside) and comments before it is
//! returned, so a formatter bug can refuse a file but never change its meaning.

use crate::diag::Diagnostic;
use crate::syntax::{self, ast};
use ast::{Arg, BlockBody, ClearSpans, Expr, ExprKind, Item, KeyValue, Param, Span, Stmt};

/// Why a file cannot be formatted.
#[derive(Debug)]
pub enum FmtError {
    /// The file does not parse: these are its syntax diagnostics.
    Syntax(Vec<Diagnostic>),
    /// The formatter's own check failed (a bug): the file is left alone.
    Internal(String),
}

/// Formats a whole file.
pub fn format_source(source: &str) -> Result<String, FmtError> {
    let (file, diags) = syntax::parse(source);
    let errors: Vec<Diagnostic> = diags.into_iter().filter(Diagnostic::is_error).collect();
    if !errors.is_empty() {
        return Err(FmtError::Syntax(errors));
    }
    let comments = scan_comments(source);
    let mut p = Printer::new(source, comments);
    p.file(&file);
    let out = p.render();
    verify(source, &file, &out)?;
    Ok(out)
}

/// The result must parse to the same tree and keep every comment.
fn verify(source: &str, file: &ast::File, out: &str) -> Result<(), FmtError> {
    let (again, diags) = syntax::parse(out);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(FmtError::Internal("the formatted text does not parse".into()));
    }
    // Structural equality with every span cleared: the same program, wherever its tokens sit.
    let shape_of = |f: &ast::File| {
        let mut f = f.clone();
        f.clear_spans();
        f
    };
    if shape_of(file) != shape_of(&again) {
        return Err(FmtError::Internal("the formatted text would mean something else".into()));
    }
    let texts = |s: &str| scan_comments(s).into_iter().map(|c| c.text).collect::<Vec<_>>();
    if texts(source) != texts(out) {
        return Err(FmtError::Internal("the formatted text would lose a comment".into()));
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct Comment {
    start: usize,
    /// `# ...` without trailing whitespace.
    text: String,
    /// Code precedes it on its line.
    trailing: bool,
    /// Its column (in characters) in the source line.
    column: usize,
}

/// Every `#` comment outside strings.
fn scan_comments(source: &str) -> Vec<Comment> {
    let mut out = vec![];
    let mut line_start = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut iter = source.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') | (false, '\n') => in_string = false,
                _ => {}
            }
            if c == '\n' {
                line_start = i + 1;
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '\n' => line_start = i + 1,
            '#' => {
                let end = source[i..].find('\n').map_or(source.len(), |e| i + e);
                let before = &source[line_start..i];
                out.push(Comment {
                    start: i,
                    text: source[i..end].trim_end().to_string(),
                    trailing: !before.trim().is_empty(),
                    column: before.chars().count(),
                });
                while iter.peek().is_some_and(|&(j, _)| j < end) {
                    iter.next();
                }
            }
            _ => {}
        }
    }
    out
}

/// One output line: indentation level, code, trailing comment (text, source column).
#[derive(Clone, Debug, Default)]
struct Line {
    indent: usize,
    code: String,
    comment: Option<(String, usize)>,
    /// A line holding only a comment.
    comment_only: bool,
}

/// Style of attribute lists and arithmetic: `kernel=3`, `2*c` in model and block bodies;
/// `count = 8`, `1e-3 * 2` in optimizer and train entries and in block parameter defaults.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Compact,
    Spaced,
}

enum Elem<'a> {
    Expr(&'a Expr),
    Arg(&'a Arg),
    Param(&'a Param),
}

impl Elem<'_> {
    fn span(&self) -> Span {
        match self {
            Elem::Expr(e) => e.span.clone(),
            Elem::Arg(a) => a.span.clone(),
            Elem::Param(p) => p.name.span.start..p.default.as_ref().map_or(p.name.span.end, |d| d.span.end),
        }
    }
}

struct Printer<'s> {
    src: &'s str,
    comments: Vec<Comment>,
    next_comment: usize,
    lines: Vec<Line>,
    /// After an own-line comment, code continues on a new line at this indent.
    reopen: Option<usize>,
}

impl<'s> Printer<'s> {
    fn new(src: &'s str, comments: Vec<Comment>) -> Self {
        Printer { src, comments, next_comment: 0, lines: vec![], reopen: None }
    }

    // ---- lines ---------------------------------------------------------------------------

    fn open_line(&mut self, indent: usize) {
        self.reopen = None;
        self.lines.push(Line { indent, ..Line::default() });
    }

    fn write(&mut self, s: &str) {
        if let Some(indent) = self.reopen.take() {
            self.open_line(indent);
        }
        if self.lines.is_empty() {
            self.open_line(0);
        }
        if let Some(l) = self.lines.last_mut() {
            l.code.push_str(s);
        }
    }

    fn indent(&self) -> usize {
        self.lines.last().map_or(0, |l| l.indent)
    }

    fn blank_line(&mut self) {
        let last_is_opener = self.lines.last().is_none_or(|l| {
            l.code.is_empty() && !l.comment_only || l.code.ends_with('{') && l.comment.is_none()
        });
        if !last_is_opener {
            self.reopen = None;
            self.lines.push(Line::default());
        }
    }

    /// Whether the source line before the one holding `pos` is blank.
    fn blank_before(&self, pos: usize) -> bool {
        let line_start = self.src[..pos].rfind('\n').map_or(0, |i| i + 1);
        if line_start == 0 {
            return false;
        }
        let prev_start = self.src[..line_start - 1].rfind('\n').map_or(0, |i| i + 1);
        self.src[prev_start..line_start - 1].trim().is_empty()
    }

    /// Emits the comments that start before `pos`: trailing ones on the current line, others
    /// on their own line at `indent` (with a blank line before them kept when `blanks`).
    fn flush(&mut self, pos: usize, indent: usize, blanks: bool) {
        while let Some(c) = self.comments.get(self.next_comment).filter(|c| c.start < pos).cloned() {
            self.next_comment += 1;
            let attach = c.trailing && self.reopen.is_none() && !self.lines.is_empty();
            if attach {
                if let Some(l) = self.lines.last_mut() {
                    match &mut l.comment {
                        // Two comments on one line (a line break we joined): keep both.
                        Some((text, _)) => {
                            text.push(' ');
                            text.push_str(&c.text);
                        }
                        None => l.comment = Some((c.text.clone(), c.column)),
                    }
                }
                continue;
            }
            let reopen_at = self.reopen.unwrap_or_else(|| self.indent());
            let mid_line = self.lines.last().is_some_and(|l| !l.code.is_empty() && !l.comment_only);
            if blanks && self.blank_before(c.start) {
                self.blank_line();
            }
            self.lines.push(Line {
                indent,
                code: String::new(),
                comment: Some((c.text, 0)),
                comment_only: true,
            });
            self.reopen =
                Some(if mid_line || self.reopen.is_some() { reopen_at.max(indent) } else { indent });
        }
    }

    fn text(&self, span: &Span) -> &'s str {
        self.src.get(span.clone()).unwrap_or("")
    }

    fn has_newline(&self, from: usize, to: usize) -> bool {
        from < to && self.src.get(from..to).is_some_and(|s| s.contains('\n'))
    }

    // ---- items ---------------------------------------------------------------------------

    fn file(&mut self, file: &ast::File) {
        for item in &file.items {
            let start = item_span(item).start;
            self.flush(start, 0, true);
            if self.blank_before(start) {
                self.blank_line();
            }
            self.open_line(0);
            self.item(item);
        }
        self.flush(self.src.len() + 1, 0, true);
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Model(m) => {
                self.write(&format!("model {} {{", m.name.name));
                self.stmts(&m.stmts, 1, m.span.end.saturating_sub(1));
                self.open_line(0);
                self.write("}");
            }
            Item::Block(b) => {
                self.write(&format!("block {}", b.name.name));
                let close = match &b.body {
                    BlockBody::Short(e) => e.span.start,
                    BlockBody::Long(stmts) => {
                        stmts.first().map_or(b.span.end.saturating_sub(1), |s| s.span().start)
                    }
                };
                if let Some(open) = self.find_from(b.name.span.end, '(').filter(|&o| o < close) {
                    let close_paren = b.params.last().map_or(open + 1, |p| Elem::Param(p).span().end);
                    let close_paren = self.find_from(close_paren, ')').unwrap_or(close_paren);
                    let elems: Vec<Elem> = b.params.iter().map(Elem::Param).collect();
                    self.elements("(", ")", &elems, open, close_paren, Style::Spaced, false);
                }
                match &b.body {
                    BlockBody::Short(e) => {
                        self.write(" = ");
                        self.flush(e.span.start, self.indent() + 1, false);
                        self.expr(e, Style::Compact);
                    }
                    BlockBody::Long(stmts) => {
                        self.write(" {");
                        self.stmts(stmts, 1, b.span.end.saturating_sub(1));
                        self.open_line(0);
                        self.write("}");
                    }
                }
            }
            Item::Optimizer(o) => {
                self.write(&format!("optimizer {} ", o.kind.name));
                self.kv_block(&o.entries, o.kind.span.end, o.span.end);
            }
            Item::Train(t) => {
                self.write("train ");
                self.kv_block(&t.entries, t.keyword.end, t.span.end);
            }
        }
    }

    fn find_from(&self, from: usize, c: char) -> Option<usize> {
        self.src.get(from..)?.find(c).map(|i| from + i)
    }

    /// `{ lr = 1e-3, rho = 0.9 }` on one line when written on one line; otherwise one entry per
    /// line with `=` aligned in runs of consecutive lines.
    fn kv_block(&mut self, entries: &[KeyValue], after: usize, end: usize) {
        let open = self.find_from(after, '{').unwrap_or(after);
        let close = end.saturating_sub(1);
        if !self.has_newline(open, close) {
            if entries.is_empty() {
                self.write("{}");
                return;
            }
            self.write("{ ");
            for (i, kv) in entries.iter().enumerate() {
                if i > 0 {
                    self.write(", ");
                }
                self.flush(kv.span.start, self.indent() + 1, false);
                self.write(&format!("{} = ", kv.key.name));
                self.expr(&kv.value, Style::Spaced);
            }
            self.flush(close, self.indent() + 1, false);
            self.write(" }");
            return;
        }
        self.write("{");
        let base = self.indent();
        let widths = self.run_widths(entries.iter().map(|kv| (kv.span.clone(), kv.key.name.chars().count())));
        for (kv, w) in entries.iter().zip(widths) {
            self.flush(kv.span.start, base + 1, true);
            if self.blank_before(kv.span.start) {
                self.blank_line();
            }
            self.open_line(base + 1);
            // (Padded by hand: `{:<w$}` panics on widths past 65,535.)
            self.write(&format!("{} = ", crate::diag::pad_end(&kv.key.name, w)));
            self.expr(&kv.value, Style::Spaced);
        }
        self.flush(close, base + 1, true);
        self.open_line(base);
        self.write("}");
    }

    /// For each entry, the widest name among the run of consecutive lines it belongs to (a
    /// blank line, a comment line or a multi-line entry ends a run).
    fn run_widths(&self, entries: impl Iterator<Item = (Span, usize)>) -> Vec<usize> {
        let entries: Vec<(Span, usize)> = entries.collect();
        let mut out = vec![0; entries.len()];
        let mut run_start = 0;
        for i in 0..=entries.len() {
            let continues =
                i > 0 && i < entries.len() && self.consecutive(entries[i - 1].0.clone(), entries[i].0.start);
            if !continues {
                let w = entries[run_start..i].iter().map(|e| e.1).max().unwrap_or(0);
                for slot in &mut out[run_start..i] {
                    *slot = w;
                }
                run_start = i;
            }
        }
        out
    }

    /// `next` starts on the line right after the one line `prev` occupies, with nothing but
    /// whitespace and a trailing comment between them.
    fn consecutive(&self, prev: Span, next: usize) -> bool {
        if self.has_newline(prev.start, prev.end) {
            return false;
        }
        let between = self.src.get(prev.end..next).unwrap_or("");
        let mut lines = between.split('\n');
        let _rest_of_prev = lines.next();
        matches!((lines.next(), lines.next()), (Some(l), None) if l.trim().is_empty())
    }

    // ---- statements ----------------------------------------------------------------------

    fn stmts(&mut self, stmts: &[Stmt], indent: usize, close: usize) {
        // Alignment runs are made of bindings only: (name width, head width) per statement.
        let mut widths = vec![(0, 0); stmts.len()];
        let mut i = 0;
        while i < stmts.len() {
            if !matches!(stmts[i], Stmt::Bind { .. }) {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < stmts.len()
                && matches!(stmts[j], Stmt::Bind { .. })
                && self.consecutive(stmts[j - 1].span().clone(), stmts[j].span().start)
            {
                j += 1;
            }
            let w = stmts[i..j]
                .iter()
                .map(|s| match s {
                    Stmt::Bind { name, .. } => name.name.chars().count(),
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            let h = stmts[i..j]
                .iter()
                .filter_map(|s| match s {
                    Stmt::Bind { value, .. } => self.pipe_head(value).map(|(h, _)| h.chars().count()),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            for slot in &mut widths[i..j] {
                *slot = (w, h.min(w));
            }
            i = j;
        }
        for (s, w) in stmts.iter().zip(widths) {
            let start = s.span().start;
            self.flush(start, indent, true);
            if self.blank_before(start) {
                self.blank_line();
            }
            self.open_line(indent);
            self.stmt(s, w);
        }
        self.flush(close, indent, true);
    }

    /// The head of a pipeline when it is a bare name followed by `->` on the same line (with no
    /// comment between): the name and the terms.
    fn pipe_head<'e>(&self, value: &'e Expr) -> Option<(&'e str, &'e [Expr])> {
        if let ExprKind::Pipe(terms) = &value.kind
            && let [head, second, ..] = terms.as_slice()
            && let ExprKind::Ident(h) = &head.kind
            && !self.has_newline(head.span.end, second.span.start)
            && !self.comments.iter().any(|c| c.start > head.span.end && c.start < second.span.start)
        {
            return Some((h, terms));
        }
        None
    }

    fn stmt(&mut self, s: &Stmt, (width, head_width): (usize, usize)) {
        match s {
            Stmt::Input { name, shape, .. } => {
                self.write(&format!("input {}", name.name));
                if let Some(shape) = shape {
                    self.write(": ");
                    self.flush(shape.span.start, self.indent() + 1, false);
                    self.expr(shape, Style::Compact);
                }
            }
            Stmt::Output { values, .. } => {
                self.write("output ");
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        self.write(", ");
                    }
                    self.flush(v.span.start, self.indent() + 1, false);
                    self.expr(v, Style::Compact);
                }
            }
            Stmt::Bind { name, value, .. } => {
                self.write(&format!("{} = ", crate::diag::pad_end(&name.name, width)));
                self.flush(value.span.start, self.indent() + 1, false);
                // `e1 = x  -> ...`: head names are padded to the widest head of the run (up to
                // the width of the bound names) so that the arrows of a run line up.
                if let Some((h, terms)) = self.pipe_head(value) {
                    self.write(&crate::diag::pad_end(h, head_width));
                    self.pipe_rest(terms, self.indent() + 1);
                    return;
                }
                self.expr(value, Style::Compact);
            }
        }
    }

    // ---- expressions ---------------------------------------------------------------------

    fn expr(&mut self, e: &Expr, style: Style) {
        match &e.kind {
            ExprKind::Int(_) | ExprKind::Float(_) => {
                let t: String = self.text(&e.span).chars().filter(|c| !c.is_whitespace()).collect();
                self.write(&t);
            }
            ExprKind::Str(_) | ExprKind::Bool(_) | ExprKind::Ident(_) => {
                let t = self.text(&e.span);
                self.write(t);
            }
            ExprKind::List(items) => {
                let elems: Vec<Elem> = items.iter().map(Elem::Expr).collect();
                self.elements("[", "]", &elems, e.span.start, e.span.end.saturating_sub(1), style, false);
            }
            ExprKind::Tuple(items) => {
                let elems: Vec<Elem> = items.iter().map(Elem::Expr).collect();
                self.elements("(", ")", &elems, e.span.start, e.span.end.saturating_sub(1), style, true);
            }
            ExprKind::Call { name, args } => {
                self.write(&name.name);
                let open = self.find_from(name.span.end, '(').unwrap_or(name.span.end);
                let elems: Vec<Elem> = args.iter().map(Elem::Arg).collect();
                self.elements("(", ")", &elems, open, e.span.end.saturating_sub(1), style, false);
            }
            ExprKind::Binary { op, lhs, rhs } => {
                self.expr(lhs, style);
                let sym = op.symbol();
                // A repetition (`cbr(64) * 15`) is spaced wherever it stands: it reads as "times",
                // not as attribute arithmetic (which is compact inside calls: `conv(2*c)`).
                let spaced = style == Style::Spaced || e.repetition().is_some();
                self.write(&if spaced { format!(" {sym} ") } else { sym.to_string() });
                self.flush(rhs.span.start, self.indent() + 1, false);
                self.expr(rhs, style);
            }
            ExprKind::Neg(inner) => {
                self.write("-");
                self.expr(inner, style);
            }
            ExprKind::Group(inner) => {
                self.write("(");
                self.flush(inner.span.start, self.indent() + 1, false);
                self.expr(inner, style);
                self.flush(e.span.end.saturating_sub(1), self.indent() + 1, false);
                self.write(")");
            }
            ExprKind::Pipe(terms) => {
                let cont = self.indent() + 1;
                if let Some(first) = terms.first() {
                    self.expr(first, style);
                }
                self.pipe_rest(terms, cont);
            }
        }
    }

    /// Terms after the first: ` -> t` on the same line, or `-> t` on a continuation line at
    /// `cont` where the source breaks the line.
    fn pipe_rest(&mut self, terms: &[Expr], cont: usize) {
        for w in terms.windows(2) {
            let (prev, t) = (&w[0], &w[1]);
            let brk = self.has_newline(prev.span.end, t.span.start);
            self.flush(t.span.start, cont, false);
            if brk || self.reopen.is_some() {
                self.open_line(cont);
                self.write("-> ");
            } else {
                self.write(" -> ");
            }
            self.expr(t, Style::Compact);
        }
    }

    /// A bracketed list: on one line, or one element per line (trailing comma) when the source
    /// breaks the line between elements or at a bracket.
    #[allow(clippy::too_many_arguments)]
    fn elements(
        &mut self,
        open: &str,
        close: &str,
        elems: &[Elem],
        open_pos: usize,
        close_pos: usize,
        style: Style,
        tuple: bool,
    ) {
        let mut gaps = vec![];
        let mut at = open_pos + 1;
        for e in elems {
            let sp = e.span();
            gaps.push((at, sp.start));
            at = sp.end;
        }
        gaps.push((at, close_pos));
        let multiline = !elems.is_empty() && gaps.iter().any(|&(a, b)| self.has_newline(a, b));
        let outer = self.indent();
        self.write(open);
        if multiline {
            for e in elems {
                self.flush(e.span().start, outer + 1, false);
                self.open_line(outer + 1);
                self.elem(e, style);
                self.write(",");
            }
            self.flush(close_pos, outer + 1, false);
            self.open_line(outer);
        } else {
            for (i, e) in elems.iter().enumerate() {
                if i > 0 {
                    self.write(", ");
                }
                self.flush(e.span().start, outer + 1, false);
                self.elem(e, style);
            }
            if tuple && elems.len() == 1 {
                self.write(",");
            }
            self.flush(close_pos, outer + 1, false);
        }
        self.write(close);
    }

    fn elem(&mut self, e: &Elem, style: Style) {
        let eq = if style == Style::Spaced { " = " } else { "=" };
        match e {
            Elem::Expr(x) => self.expr(x, style),
            Elem::Arg(a) => {
                if let Some(k) = &a.name {
                    self.write(&format!("{}{eq}", k.name));
                    self.flush(a.value.span.start, self.indent() + 1, false);
                }
                self.expr(&a.value, style);
            }
            Elem::Param(p) => {
                self.write(&p.name.name);
                if let Some(d) = &p.default {
                    self.write(" = ");
                    self.flush(d.span.start, self.indent() + 1, false);
                    self.expr(d, Style::Compact);
                }
            }
        }
    }

    // ---- output --------------------------------------------------------------------------

    /// Joins the lines; trailing comments on consecutive lines share one column: two spaces
    /// after the longest code among them, or further right where the author put them.
    fn render(&self) -> String {
        let codes: Vec<String> = self
            .lines
            .iter()
            .map(|l| {
                if l.comment_only || !l.code.is_empty() {
                    format!("{}{}", "    ".repeat(l.indent), l.code)
                } else {
                    String::new()
                }
            })
            .map(|s| s.trim_end().to_string())
            .collect();
        let mut columns = vec![0; self.lines.len()];
        let mut i = 0;
        while i < self.lines.len() {
            let trailing = |k: usize| !self.lines[k].comment_only && self.lines[k].comment.is_some();
            if !trailing(i) {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < self.lines.len() && trailing(j) {
                j += 1;
            }
            let col = (i..j)
                .map(|k| {
                    let min = codes[k].chars().count() + 2;
                    self.lines[k].comment.as_ref().map_or(min, |c| c.1.max(min))
                })
                .max()
                .unwrap_or(0);
            for slot in &mut columns[i..j] {
                *slot = col;
            }
            i = j;
        }
        let mut out = String::new();
        for (k, l) in self.lines.iter().enumerate() {
            let mut line = codes[k].clone();
            if let Some((text, _)) = &l.comment {
                if l.comment_only {
                    line = format!("{}{text}", "    ".repeat(l.indent));
                } else {
                    let pad = columns[k].saturating_sub(line.chars().count());
                    line.push_str(&" ".repeat(pad));
                    line.push_str(text);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let trimmed = out.trim_end_matches('\n');
        if trimmed.is_empty() { String::new() } else { format!("{trimmed}\n") }
    }
}

fn item_span(item: &Item) -> Span {
    match item {
        Item::Model(m) => m.span.clone(),
        Item::Block(b) => b.span.clone(),
        Item::Optimizer(o) => o.span.clone(),
        Item::Train(t) => t.span.clone(),
    }
}

#[cfg(test)]
mod tests;
