//! Diagnostics: what went wrong, where, and how to fix it.
//!
//! A [`Diagnostic`] has a stable code (see [`codes`]), a primary label on the exact source
//! range at fault, optional secondary labels (where a mismatching shape came from) and a help
//! line. It renders through miette for people and as JSON for editors and scripts.

pub mod codes;

use serde::Serialize;
use std::fmt;
use std::ops::Range;

pub type Span = Range<usize>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            primary: Label { span, message: label.into() },
            secondary: vec![],
            help: None,
        }
    }

    pub fn warning(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message, span, label) }
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Self {
        self.secondary.push(Label { span, message: message.into() });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// 1-based line and column (in characters) of a byte offset. One lookup scans the text: for
/// many lookups on one text use a [`LineIndex`].
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(source).line_column(offset)
}

/// The line starts of a text, so that byte offset → line is a binary search. Columns are
/// counted from the last lookup when it was earlier on the same line, so lookups in increasing
/// order (diagnostics are sorted by position) cost linear time in total even on one long line.
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
    /// The last lookup: byte offset and its 0-based column in characters.
    last: std::cell::Cell<(usize, usize)>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        LineIndex { text, starts, last: std::cell::Cell::new((0, 0)) }
    }

    /// `offset` clamped into the text and moved back to a character boundary.
    pub fn clamp(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        (0..=offset).rev().find(|&o| self.text.is_char_boundary(o)).unwrap_or(0)
    }

    /// 0-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset).saturating_sub(1)
    }

    /// Byte offset where 0-based `line` starts (the text's end past the last line).
    pub fn line_start(&self, line: usize) -> usize {
        self.starts.get(line).copied().unwrap_or(self.text.len())
    }

    /// 0-based line and the text of that line from its start up to `offset`.
    pub fn line_prefix(&self, offset: usize) -> (usize, &'a str) {
        let offset = self.clamp(offset);
        let line = self.line(offset);
        (line, &self.text[self.line_start(line)..offset])
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = self.clamp(offset);
        let line = self.line(offset);
        let start = self.line_start(line);
        let (last, last_column) = self.last.get();
        let column = if last >= start && last <= offset {
            last_column + self.text[last..offset].chars().count()
        } else {
            self.text[start..offset].chars().count()
        };
        self.last.set((offset, column));
        (line + 1, column + 1)
    }
}

/// The JSON form of one diagnostic, as `check --format json` prints it.
#[derive(Serialize)]
pub struct JsonDiagnostic<'a> {
    pub severity: Severity,
    pub code: &'a str,
    pub message: &'a str,
    pub help: Option<&'a str>,
    pub line: usize,
    pub column: usize,
    pub span: [usize; 2],
    pub labels: Vec<JsonLabel<'a>>,
}

#[derive(Serialize)]
pub struct JsonLabel<'a> {
    pub message: &'a str,
    pub line: usize,
    pub column: usize,
    pub span: [usize; 2],
}

impl Diagnostic {
    /// The JSON form; `lines` indexes the source (one index serves all of a file's diagnostics).
    pub fn to_json<'a>(&'a self, lines: &LineIndex) -> JsonDiagnostic<'a> {
        let (line, column) = lines.line_column(self.primary.span.start);
        let label = |l: &'a Label| {
            let (line, column) = lines.line_column(l.span.start);
            JsonLabel { message: &l.message, line, column, span: [l.span.start, l.span.end] }
        };
        JsonDiagnostic {
            severity: self.severity,
            code: self.code,
            message: &self.message,
            help: self.help.as_deref(),
            line,
            column,
            span: [self.primary.span.start, self.primary.span.end],
            labels: std::iter::once(&self.primary).chain(&self.secondary).map(label).collect(),
        }
    }
}

// ---- miette rendering ------------------------------------------------------------------------

/// At most this many diagnostics are rendered for people (and listed in JSON and the editor);
/// the rest are counted. Past a few hundred, more errors of one file help nobody, and the cap
/// keeps the output and the time bounded on any input.
pub const SHOWN: usize = 500;

/// The diagnostics shown of a list (in their order): all of them up to [`SHOWN`]; past that,
/// errors first (the first [`SHOWN`] errors, or all errors and the earliest warnings).
pub fn shown(diags: &[Diagnostic]) -> Vec<&Diagnostic> {
    if diags.len() <= SHOWN {
        return diags.iter().collect();
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let mut warnings_left = SHOWN.saturating_sub(errors);
    let mut errors_left = SHOWN;
    diags
        .iter()
        .filter(|d| {
            let left = if d.is_error() { &mut errors_left } else { &mut warnings_left };
            let keep = *left > 0;
            *left = left.saturating_sub(1);
            keep
        })
        .collect()
}

/// Snippets are drawn from lines up to this long; a diagnostic on a longer line is printed as
/// `file:line:column` and its message: a 16 MiB line is no use in a terminal, and miette pads
/// label columns with `{:width$}`, which panics past 65,535.
const MAX_SNIPPET_LINE: usize = 4096;

/// Labels further apart than this many lines are not drawn in one snippet.
const MAX_WINDOW_LINES: usize = 2000;

/// The part of the source a diagnostic's snippet can show: whole lines around its labels.
/// miette finds lines by scanning from the start of the text it is given, so it is given only
/// this window (offsets and line numbers are shifted back), which keeps rendering linear.
struct Window<'a> {
    name: &'a str,
    text: &'a str,
    start: usize,
    first_line: usize,
}

impl miette::SourceCode for Window<'_> {
    fn read_span<'b>(
        &'b self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'b> + 'b>, miette::MietteError> {
        let offset = span.offset().checked_sub(self.start).ok_or(miette::MietteError::OutOfBounds)?;
        let local = miette::SourceSpan::new(offset.into(), span.len());
        let c = self.text.read_span(&local, before, after)?;
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.to_string(),
            c.data(),
            miette::SourceSpan::new((c.span().offset() + self.start).into(), c.span().len()),
            c.line() + self.first_line,
            c.column(),
            c.line_count() + self.first_line,
        )))
    }
}

struct Report<'a> {
    diag: &'a Diagnostic,
    window: Option<Window<'a>>,
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.diag.message)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.diag.message)
    }
}

impl std::error::Error for Report<'_> {}

impl miette::Diagnostic for Report<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.window.as_ref().map(|w| w as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let w = self.window.as_ref()?;
        let (lo, hi) = (w.start, w.start + w.text.len());
        let clamp = move |s: &Span| {
            let start = s.start.clamp(lo, hi);
            let end = s.end.clamp(start, hi);
            (start, end - start)
        };
        let primary = {
            let (o, l) = clamp(&self.diag.primary.span);
            miette::LabeledSpan::new_primary_with_span(Some(self.diag.primary.message.clone()), (o, l))
        };
        // A secondary label outside the window (far from the primary one) is left out rather
        // than drawn at the window's edge, where it would point at the wrong text.
        let secondary =
            self.diag.secondary.iter().filter(move |lab| lab.span.start >= lo && lab.span.end <= hi).map(
                move |lab| {
                    let (o, l) = clamp(&lab.span);
                    miette::LabeledSpan::new_with_span(Some(lab.message.clone()), (o, l))
                },
            );
        Some(Box::new(std::iter::once(primary).chain(secondary)))
    }
}

/// The window of whole lines around a diagnostic's labels (two lines of context each side:
/// miette shows one), or None when a line in it is too long for a snippet.
fn window<'a>(diag: &Diagnostic, name: &'a str, lines: &LineIndex<'a>) -> Option<Window<'a>> {
    let spans = std::iter::once(&diag.primary).chain(&diag.secondary).map(|l| &l.span);
    let (lo, hi) = spans.fold((usize::MAX, 0), |(lo, hi), s| (lo.min(s.start), hi.max(s.end.max(s.start))));
    let (lo, hi) = (lines.clamp(lo), lines.clamp(hi));
    // Labels far apart (a use and a definition 10,000 lines up) would make a long window: only
    // the primary label's surroundings are shown then (the others are left out, see `labels`).
    let (lo, hi) = if lines.line(hi) - lines.line(lo) > MAX_WINDOW_LINES {
        (lines.clamp(diag.primary.span.start), lines.clamp(diag.primary.span.end))
    } else {
        (lo, hi)
    };
    let first_line = lines.line(lo).saturating_sub(2);
    let last_line = lines.line(hi) + 2;
    let start = lines.line_start(first_line);
    let end = lines.line_start(last_line + 1);
    let text = &lines.text[start..end];
    if text.split('\n').any(|l| l.len() > MAX_SNIPPET_LINE) {
        return None;
    }
    Some(Window { name, text, start, first_line })
}

/// Renders diagnostics with source snippets. `color` selects the themed (terminal) renderer;
/// without it the output is plain Unicode, stable for snapshots. At most [`SHOWN`] are drawn,
/// then a line saying how many more there are.
pub fn render(diags: &[Diagnostic], file_name: &str, source: &str, color: bool) -> String {
    let theme =
        if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let lines = LineIndex::new(source);
    let mut out = String::new();
    let shown = shown(diags);
    for &diag in &shown {
        let window = window(diag, file_name, &lines);
        if window.is_none() {
            let (line, column) = lines.line_column(diag.primary.span.start);
            let severity = if diag.is_error() { "error" } else { "warning" };
            out.push_str(&format!(
                "{severity}[{}]: {}\n  --> {file_name}:{line}:{column}: {}\n",
                diag.code, diag.message, diag.primary.message
            ));
            if let Some(h) = &diag.help {
                out.push_str(&format!("  help: {h}\n"));
            }
            out.push('\n');
            continue;
        }
        let report = Report { diag, window };
        if handler.render_report(&mut out, &report).is_err() {
            out.push_str(&format!("{}: {}\n", diag.code, diag.message));
        }
        out.push('\n');
    }
    let more = diags.len() - shown.len();
    if more > 0 {
        let errors =
            diags.iter().filter(|d| d.is_error()).count() - shown.iter().filter(|d| d.is_error()).count();
        out.push_str(&format!(
            "… and {more} more diagnostics not shown ({errors} errors, {} warnings)\n",
            more - errors
        ));
    }
    out
}

/// `text` padded with spaces at its end to `width` characters. Use this, not `{:<width$}`: std's
/// formatting panics on widths past 65,535, and a name or a value may be longer than that.
pub fn pad_end(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len().max(width));
    out.push_str(text);
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(text.chars().count())));
    out
}

/// `text` padded with spaces at its start to `width` characters (see [`pad_end`]).
pub fn pad_start(text: &str, width: usize) -> String {
    let mut out: String = std::iter::repeat_n(' ', width.saturating_sub(text.chars().count())).collect();
    out.push_str(text);
    out
}

/// Names longer than this get no did-you-mean: nobody mistypes a 70,000-character name, and
/// the edit distance of two such names would take gigabytes.
const MAX_SUGGESTED_LEN: usize = 64;

/// Closest known name by edit distance, for did-you-mean help lines. Candidates whose length
/// alone puts them out of reach are skipped before any distance is computed.
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if name.len() > MAX_SUGGESTED_LEN {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    known
        .into_iter()
        .filter(|k| k.len() <= MAX_SUGGESTED_LEN)
        .filter_map(|k| {
            let kl = k.to_ascii_lowercase();
            let contained = kl.len() >= 3 && (lower.contains(&kl) || kl.contains(&lower));
            let longest = kl.len().max(lower.len());
            let reach = (longest / 3).max(1);
            if !contained && kl.len().abs_diff(lower.len()) > reach {
                return None;
            }
            let d = strsim::damerau_levenshtein(&lower, &kl);
            ((d <= reach && d < longest) || contained).then_some((d, k))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}
