//! `geonetc lsp`: a language server over stdio (lsp-server + lsp-types).
//!
//! Full-text sync; diagnostics (the codes and messages of `check`) on open and change; hover
//! on bindings, layers and block calls (shape, parameters, size arithmetic, receptive field,
//! accepted sizes); go to definition of bindings, inputs, block parameters and blocks;
//! completion of layers, attributes, optimizer and train keys from the checker's own tables;
//! inlay hints with the shape of every model binding; whole-document formatting with `fmt`. Unknown requests get MethodNotFound; a
//! request that fails for any reason gets an error response, never a crash.

pub mod analysis;
pub mod transport;

use crate::diag::{Diagnostic as GDiag, LineIndex, Severity};
use analysis::{Analysis, CandidateKind};
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types as lt;
use std::collections::HashMap;

/// Runs the server on stdin/stdout until `exit` (framing: [`transport`]).
pub fn run_stdio() -> Result<(), String> {
    let (connection, io_threads) = transport::stdio();
    let result = serve(&connection);
    drop(connection);
    io_threads.join()?;
    result
}

/// The server capabilities we announce.
pub fn capabilities() -> lt::ServerCapabilities {
    lt::ServerCapabilities {
        text_document_sync: Some(lt::TextDocumentSyncCapability::Kind(lt::TextDocumentSyncKind::FULL)),
        hover_provider: Some(lt::HoverProviderCapability::Simple(true)),
        definition_provider: Some(lt::OneOf::Left(true)),
        completion_provider: Some(lt::CompletionOptions {
            trigger_characters: Some(vec!["(".into(), ",".into(), ">".into(), " ".into()]),
            ..Default::default()
        }),
        inlay_hint_provider: Some(lt::OneOf::Left(true)),
        document_formatting_provider: Some(lt::OneOf::Left(true)),
        ..Default::default()
    }
}

/// Serves one connection (stdio or in-memory) until `exit`.
pub fn serve(connection: &Connection) -> Result<(), String> {
    let caps = serde_json::to_value(capabilities()).map_err(|e| e.to_string())?;
    connection.initialize(caps).map_err(|e| e.to_string())?;
    let mut server = Server { docs: HashMap::new() };
    for msg in &connection.receiver {
        match msg {
            Message::Request(req) => {
                match connection.handle_shutdown(&req) {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(e) => return Err(e.to_string()),
                }
                let id = req.id.clone();
                let resp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.request(req)))
                    .unwrap_or_else(|_| {
                        Response::new_err(id, ErrorCode::InternalError as i32, "internal error".into())
                    });
                connection.sender.send(resp.into()).map_err(|e| e.to_string())?;
            }
            Message::Notification(n) => {
                if n.method == "exit" {
                    return Ok(());
                }
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.notification(n)))
                    .unwrap_or_default();
                for m in out {
                    connection.sender.send(m.into()).map_err(|e| e.to_string())?;
                }
            }
            Message::Response(_) => {}
        }
    }
    Ok(())
}

struct Server {
    docs: HashMap<lt::Uri, Analysis>,
}

impl Server {
    fn notification(&mut self, n: Notification) -> Vec<Notification> {
        use lt::notification::Notification as _;
        let uri = match n.method.as_str() {
            lt::notification::DidOpenTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<lt::DidOpenTextDocumentParams>(n.params) else {
                    return vec![];
                };
                self.docs.insert(p.text_document.uri.clone(), Analysis::new(&p.text_document.text));
                p.text_document.uri
            }
            lt::notification::DidChangeTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<lt::DidChangeTextDocumentParams>(n.params) else {
                    return vec![];
                };
                // Full sync: the last change holds the whole text.
                let Some(change) = p.content_changes.into_iter().last() else { return vec![] };
                self.docs.insert(p.text_document.uri.clone(), Analysis::new(&change.text));
                p.text_document.uri
            }
            lt::notification::DidCloseTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<lt::DidCloseTextDocumentParams>(n.params) else {
                    return vec![];
                };
                self.docs.remove(&p.text_document.uri);
                let clear = lt::PublishDiagnosticsParams {
                    uri: p.text_document.uri,
                    diagnostics: vec![],
                    version: None,
                };
                return vec![Notification::new(lt::notification::PublishDiagnostics::METHOD.into(), clear)];
            }
            _ => return vec![],
        };
        let Some(doc) = self.docs.get(&uri) else { return vec![] };
        // Capped like `check`'s output; one line index serves them all (linear, not one scan of
        // the text per diagnostic).
        let lines = LineIndex::new(&doc.text);
        let diagnostics = crate::diag::shown(&doc.check.diagnostics)
            .into_iter()
            .map(|d| to_lsp_diagnostic_in(d, &lines, &uri))
            .collect();
        let params = lt::PublishDiagnosticsParams { uri, diagnostics, version: None };
        vec![Notification::new(lt::notification::PublishDiagnostics::METHOD.into(), params)]
    }

    fn request(&mut self, req: Request) -> Response {
        use lt::request::Request as _;
        let id = req.id.clone();
        let result: Result<serde_json::Value, (ErrorCode, String)> = match req.method.as_str() {
            lt::request::HoverRequest::METHOD => self.with_position(req.params, |doc, offset| {
                analysis::hover(doc, offset).map(|(text, span)| lt::Hover {
                    contents: lt::HoverContents::Markup(lt::MarkupContent {
                        kind: lt::MarkupKind::Markdown,
                        value: text,
                    }),
                    range: Some(range(&doc.text, &span)),
                })
            }),
            lt::request::GotoDefinition::METHOD => {
                let uri = position_uri(&req.params);
                self.with_position(req.params, |doc, offset| {
                    let span = analysis::definition(doc, offset)?;
                    let uri = uri.clone()?;
                    Some(lt::GotoDefinitionResponse::Scalar(lt::Location {
                        uri,
                        range: range(&doc.text, &span),
                    }))
                })
            }
            lt::request::Completion::METHOD => self.with_position(req.params, |doc, offset| {
                let items: Vec<lt::CompletionItem> = analysis::completions(doc, offset)
                    .into_iter()
                    .map(|c| lt::CompletionItem {
                        label: c.label,
                        kind: Some(match c.kind {
                            CandidateKind::Layer => lt::CompletionItemKind::FUNCTION,
                            CandidateKind::Block => lt::CompletionItemKind::MODULE,
                            CandidateKind::Attribute => lt::CompletionItemKind::PROPERTY,
                            CandidateKind::Key => lt::CompletionItemKind::FIELD,
                            CandidateKind::Value => lt::CompletionItemKind::ENUM_MEMBER,
                            CandidateKind::Keyword => lt::CompletionItemKind::KEYWORD,
                        }),
                        detail: Some(c.detail),
                        ..Default::default()
                    })
                    .collect();
                Some(lt::CompletionResponse::Array(items))
            }),
            lt::request::InlayHintRequest::METHOD => {
                match serde_json::from_value::<lt::InlayHintParams>(req.params) {
                    Err(e) => Err((ErrorCode::InvalidParams, e.to_string())),
                    Ok(p) => {
                        let hints: Vec<lt::InlayHint> = match self.docs.get(&p.text_document.uri) {
                            None => vec![],
                            Some(doc) => {
                                let lines = LineIndex::new(&doc.text);
                                analysis::inlay_hints(doc)
                                    .into_iter()
                                    .map(|(offset, label)| (position_in(&lines, offset), label))
                                    .filter(|(pos, _)| *pos >= p.range.start && *pos <= p.range.end)
                                    .map(|(pos, label)| lt::InlayHint {
                                        position: pos,
                                        label: lt::InlayHintLabel::String(label),
                                        kind: Some(lt::InlayHintKind::TYPE),
                                        text_edits: None,
                                        tooltip: None,
                                        padding_left: Some(false),
                                        padding_right: Some(true),
                                        data: None,
                                    })
                                    .collect()
                            }
                        };
                        serde_json::to_value(hints).map_err(|e| (ErrorCode::InternalError, e.to_string()))
                    }
                }
            }
            lt::request::Formatting::METHOD => {
                match serde_json::from_value::<lt::DocumentFormattingParams>(req.params) {
                    Err(e) => Err((ErrorCode::InvalidParams, e.to_string())),
                    Ok(p) => {
                        // One edit replacing the whole text; nothing when the file does not
                        // parse (its diagnostics say why) or is already formatted.
                        let edits: Option<Vec<lt::TextEdit>> =
                            self.docs.get(&p.text_document.uri).and_then(|doc| {
                                let formatted = crate::fmt::format_source(&doc.text).ok()?;
                                Some(if formatted == doc.text {
                                    vec![]
                                } else {
                                    vec![lt::TextEdit {
                                        range: range(&doc.text, &(0..doc.text.len())),
                                        new_text: formatted,
                                    }]
                                })
                            });
                        serde_json::to_value(edits).map_err(|e| (ErrorCode::InternalError, e.to_string()))
                    }
                }
            }
            other => Err((ErrorCode::MethodNotFound, format!("unknown method `{other}`"))),
        };
        match result {
            Ok(v) => Response::new_ok(id, v),
            Err((code, msg)) => Response::new_err(id, code as i32, msg),
        }
    }

    /// Decodes `TextDocumentPositionParams`, finds the document and the byte offset, and runs `f`.
    fn with_position<T: serde::Serialize>(
        &self,
        params: serde_json::Value,
        f: impl FnOnce(&Analysis, usize) -> Option<T>,
    ) -> Result<serde_json::Value, (ErrorCode, String)> {
        let p: lt::TextDocumentPositionParams = match serde_json::from_value::<PositionOnly>(params) {
            Ok(p) => p.inner,
            Err(e) => return Err((ErrorCode::InvalidParams, e.to_string())),
        };
        let Some(doc) = self.docs.get(&p.text_document.uri) else { return Ok(serde_json::Value::Null) };
        let offset = offset_of(&doc.text, p.position);
        serde_json::to_value(f(doc, offset)).map_err(|e| (ErrorCode::InternalError, e.to_string()))
    }
}

/// Hover, definition and completion params all flatten a `TextDocumentPositionParams`.
#[derive(serde::Deserialize)]
struct PositionOnly {
    #[serde(flatten)]
    inner: lt::TextDocumentPositionParams,
}

fn position_uri(params: &serde_json::Value) -> Option<lt::Uri> {
    serde_json::from_value::<PositionOnly>(params.clone()).ok().map(|p| p.inner.text_document.uri)
}

/// `check`'s diagnostic as an LSP diagnostic; the help line is appended to the message and
/// the secondary labels become related information.
pub fn to_lsp_diagnostic(d: &GDiag, text: &str, uri: &lt::Uri) -> lt::Diagnostic {
    to_lsp_diagnostic_in(d, &LineIndex::new(text), uri)
}

fn to_lsp_diagnostic_in(d: &GDiag, lines: &LineIndex, uri: &lt::Uri) -> lt::Diagnostic {
    let mut message = d.message.clone();
    if let Some(h) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(h);
    }
    let related: Vec<lt::DiagnosticRelatedInformation> = d
        .secondary
        .iter()
        .map(|l| lt::DiagnosticRelatedInformation {
            location: lt::Location { uri: uri.clone(), range: range_in(lines, &l.span) },
            message: l.message.clone(),
        })
        .collect();
    lt::Diagnostic {
        range: range_in(lines, &d.primary.span),
        severity: Some(match d.severity {
            Severity::Error => lt::DiagnosticSeverity::ERROR,
            Severity::Warning => lt::DiagnosticSeverity::WARNING,
        }),
        code: Some(lt::NumberOrString::String(d.code.to_string())),
        source: Some("geonetc".into()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Default::default()
    }
}

fn range(text: &str, span: &std::ops::Range<usize>) -> lt::Range {
    lt::Range { start: position(text, span.start), end: position(text, span.end.max(span.start)) }
}

fn range_in(lines: &LineIndex, span: &std::ops::Range<usize>) -> lt::Range {
    lt::Range { start: position_in(lines, span.start), end: position_in(lines, span.end.max(span.start)) }
}

/// Byte offset → line and UTF-16 column.
pub fn position(text: &str, offset: usize) -> lt::Position {
    position_in(&LineIndex::new(text), offset)
}

fn position_in(lines: &LineIndex, offset: usize) -> lt::Position {
    let (line, prefix) = lines.line_prefix(offset);
    let character: usize = prefix.chars().map(char::len_utf16).sum();
    lt::Position { line: line as u32, character: character as u32 }
}

/// Line and UTF-16 column → byte offset (clamped to the line and the text).
pub fn offset_of(text: &str, pos: lt::Position) -> usize {
    let mut start = 0;
    for _ in 0..pos.line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return text.len(),
        }
    }
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let mut units = 0usize;
    for (i, c) in text[start..line_end].char_indices() {
        if units >= pos.character as usize {
            return start + i;
        }
        units += c.len_utf16();
    }
    line_end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_utf16_units() {
        let text = "# é𝄞x\nab";
        // `x` is after `# ` (2), `é` (1 unit, 2 bytes), `𝄞` (2 units, 4 bytes).
        let x = text.find('x').unwrap_or(0);
        assert_eq!(position(text, x), lt::Position { line: 0, character: 5 });
        assert_eq!(offset_of(text, lt::Position { line: 0, character: 5 }), x);
        assert_eq!(position(text, text.len()), lt::Position { line: 1, character: 2 });
        assert_eq!(offset_of(text, lt::Position { line: 7, character: 0 }), text.len());
        assert_eq!(offset_of(text, lt::Position { line: 1, character: 99 }), text.len());
        // Inside a multi-byte character: clamped to its start.
        assert_eq!(position(text, x - 1).character, 3);
    }
}
