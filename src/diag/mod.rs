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

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let offset = (0..=offset).rev().find(|&o| source.is_char_boundary(o)).unwrap_or(0);
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..offset].chars().count() + 1;
    (line, column)
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
    pub fn to_json<'a>(&'a self, source: &str) -> JsonDiagnostic<'a> {
        let (line, column) = line_column(source, self.primary.span.start);
        let label = |l: &'a Label| {
            let (line, column) = line_column(source, l.span.start);
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

struct Report<'a> {
    diag: &'a Diagnostic,
    source: miette::NamedSource<String>,
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
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let len = self.source.inner().len();
        let clamp = move |s: &Span| {
            let start = s.start.min(len);
            let end = s.end.clamp(start, len);
            (start, end - start)
        };
        let primary = {
            let (o, l) = clamp(&self.diag.primary.span);
            miette::LabeledSpan::new_primary_with_span(Some(self.diag.primary.message.clone()), (o, l))
        };
        let secondary = self.diag.secondary.iter().map(move |lab| {
            let (o, l) = clamp(&lab.span);
            miette::LabeledSpan::new_with_span(Some(lab.message.clone()), (o, l))
        });
        Some(Box::new(std::iter::once(primary).chain(secondary)))
    }
}

/// Renders diagnostics with source snippets. `color` selects the themed (terminal) renderer;
/// without it the output is plain Unicode, stable for snapshots.
pub fn render(diags: &[Diagnostic], file_name: &str, source: &str, color: bool) -> String {
    let theme =
        if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for diag in diags {
        let report = Report { diag, source: miette::NamedSource::new(file_name, source.to_string()) };
        if handler.render_report(&mut out, &report).is_err() {
            out.push_str(&format!("{}: {}\n", diag.code, diag.message));
        }
        out.push('\n');
    }
    out
}

/// Closest known name by edit distance, for did-you-mean help lines.
pub fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(&lower, &k.to_ascii_lowercase()), k))
        .filter(|&(d, k)| {
            let k = k.to_ascii_lowercase();
            let contained = k.len() >= 3 && (lower.contains(&k) || k.contains(&lower));
            let longest = k.len().max(lower.len());
            (d <= (longest / 3).max(1) && d < longest) || contained
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}
