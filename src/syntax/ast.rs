//! The syntax tree of a `.geonet` file. Every node carries the byte span of its source text.

/// A byte range into the source (the one span type, defined with the diagnostics).
pub use crate::diag::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
    /// What the lines that failed to parse would have bound and used.
    pub unparsed: Unparsed,
    /// Where each expression of the file is written, by [`ExprId`].
    pub source_map: SourceMap,
}

/// Identity of one expression of the file, numbered by the parser in source order (pre-order).
/// Later stages record which call expressions produced a layer, so the language server and
/// diagnostics find a layer's source through this id and the [`SourceMap`], never by comparing
/// spans or names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExprId(u32);

impl ExprId {
    /// An expression not written in the file (made by the checker or a tool).
    pub const NONE: ExprId = ExprId(u32::MAX);
}

/// The side table from [`ExprId`] to the expression's span in the source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceMap {
    spans: Vec<Span>,
}

impl SourceMap {
    /// The span of expression `id` (`0..0` for [`ExprId::NONE`] or an id of another file).
    pub fn span(&self, id: ExprId) -> Span {
        self.spans.get(id.0 as usize).cloned().unwrap_or(0..0)
    }

    /// Numbers every expression of `items` in source order and records its span.
    pub(crate) fn number(items: &mut [Item]) -> SourceMap {
        let mut map = SourceMap::default();
        let stmts = |map: &mut SourceMap, stmts: &mut [Stmt]| {
            for st in stmts {
                match st {
                    Stmt::Input { shape, .. } => shape.iter_mut().for_each(|e| map.visit(e)),
                    Stmt::Bind { value, .. } => map.visit(value),
                    Stmt::Output { values, .. } => values.iter_mut().for_each(|e| map.visit(e)),
                }
            }
        };
        for item in items {
            match item {
                Item::Model(m) => stmts(&mut map, &mut m.stmts),
                Item::Block(b) => {
                    b.params.iter_mut().filter_map(|p| p.default.as_mut()).for_each(|e| map.visit(e));
                    match &mut b.body {
                        BlockBody::Short(e) => map.visit(e),
                        BlockBody::Long(body) => stmts(&mut map, body),
                    }
                }
                Item::Optimizer(Optimizer { entries, .. }) | Item::Train(Train { entries, .. }) => {
                    entries.iter_mut().for_each(|kv| map.visit(&mut kv.value))
                }
            }
        }
        map
    }

    fn visit(&mut self, e: &mut Expr) {
        e.id = ExprId(u32::try_from(self.spans.len()).unwrap_or(u32::MAX - 1));
        self.spans.push(e.span.clone());
        e.for_each_child_mut(|c| self.visit(c));
    }
}

/// Names from lines that failed to parse (each already has its syntax error). The checker
/// treats them as known but poisoned, so one syntax error is one error, not a cascade of
/// "`y` is not bound" and "block `b` is never used".
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unparsed {
    /// Values (`y = ...`, `input x`) and blocks (`block b ...`) those lines define.
    pub bound: Vec<Ident>,
    /// Every name those lines mention (block calls among them).
    pub mentioned: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Model(Model),
    Block(Block),
    Optimizer(Optimizer),
    Train(Train),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: Ident,
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `input x: [1, 128, 128]` (model) or `input x` (long-form block).
    Input { name: Ident, shape: Option<Expr>, span: Span },
    /// `h = x -> conv(16, kernel=3)`
    Bind { name: Ident, value: Expr, span: Span },
    /// `output a, b`
    Output { values: Vec<Expr>, span: Span },
}

impl Stmt {
    pub fn span(&self) -> &Span {
        match self {
            Stmt::Input { span, .. } | Stmt::Bind { span, .. } | Stmt::Output { span, .. } => span,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: BlockBody,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub default: Option<Expr>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum BlockBody {
    /// `block b(c) = conv(c, kernel=3) -> relu`: one input, piped in.
    Short(Expr),
    /// `block b(c) { input x ... output ... }`
    Long(Vec<Stmt>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    pub kind: Ident,
    pub entries: Vec<KeyValue>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Train {
    pub keyword: Span,
    pub entries: Vec<KeyValue>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
    /// This expression's identity (see [`SourceMap`]).
    pub id: ExprId,
}

impl Expr {
    /// An expression not yet numbered (the parser numbers the whole file at the end).
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        Expr { kind, span, id: ExprId::NONE }
    }

    /// Calls `f` on each direct sub-expression, in source order.
    pub fn for_each_child_mut(&mut self, mut f: impl FnMut(&mut Expr)) {
        match &mut self.kind {
            ExprKind::Int(_)
            | ExprKind::Float(_)
            | ExprKind::Str(_)
            | ExprKind::Bool(_)
            | ExprKind::Ident(_) => {}
            ExprKind::List(items) | ExprKind::Tuple(items) | ExprKind::Pipe(items) => {
                items.iter_mut().for_each(f)
            }
            ExprKind::Call { args, .. } => args.iter_mut().for_each(|a| f(&mut a.value)),
            ExprKind::Binary { lhs, rhs, .. } => {
                f(lhs);
                f(rhs);
            }
            ExprKind::Neg(e) | ExprKind::Group(e) => f(e),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Ident(String),
    List(Vec<Expr>),
    Tuple(Vec<Expr>),
    /// `conv(16, kernel=3)`, `concat(a, b)`, `synthetic(count=8)`
    Call {
        name: Ident,
        args: Vec<Arg>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Neg(Box<Expr>),
    /// `a -> b -> c`: at least two terms.
    Pipe(Vec<Expr>),
    /// `( e )`
    Group(Box<Expr>),
}

impl Expr {
    /// `cbr(64) * 15`: a layer or block call (or a parenthesised pipeline, or another
    /// repetition) times a count, as `(repeated, count)`. Recognised by form alone, so the
    /// checker, the formatter and the language server agree on what a repetition is: an
    /// attribute value is never one (a call or pipeline is no attribute value), and a bare name
    /// is not one (`k * 2` is arithmetic; a layer without arguments is repeated as `relu() * 2`).
    pub fn repetition(&self) -> Option<(&Expr, &Expr)> {
        let ExprKind::Binary { op: BinOp::Mul, lhs, rhs } = &self.kind else { return None };
        lhs.is_repeatable().then_some((&**lhs, &**rhs))
    }

    fn is_repeatable(&self) -> bool {
        match &self.kind {
            ExprKind::Call { .. } | ExprKind::Pipe(_) => true,
            ExprKind::Group(inner) => inner.is_repeatable(),
            _ => self.repetition().is_some(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

/// Sets every span to `0..0`, so that two trees compare by structure alone (the formatter
/// checks that its output means the same program).
pub trait ClearSpans {
    fn clear_spans(&mut self);
}

const NO_SPAN: Span = 0..0;

impl ClearSpans for File {
    fn clear_spans(&mut self) {
        self.items.iter_mut().for_each(ClearSpans::clear_spans);
        self.source_map = SourceMap::default();
    }
}

impl ClearSpans for Item {
    fn clear_spans(&mut self) {
        match self {
            Item::Model(m) => {
                m.name.clear_spans();
                m.stmts.iter_mut().for_each(ClearSpans::clear_spans);
                m.span = NO_SPAN;
            }
            Item::Block(b) => {
                b.name.clear_spans();
                for p in &mut b.params {
                    p.name.clear_spans();
                    p.default.iter_mut().for_each(ClearSpans::clear_spans);
                }
                match &mut b.body {
                    BlockBody::Short(e) => e.clear_spans(),
                    BlockBody::Long(stmts) => stmts.iter_mut().for_each(ClearSpans::clear_spans),
                }
                b.span = NO_SPAN;
            }
            Item::Optimizer(o) => {
                o.kind.clear_spans();
                o.entries.iter_mut().for_each(ClearSpans::clear_spans);
                o.span = NO_SPAN;
            }
            Item::Train(t) => {
                t.keyword = NO_SPAN;
                t.entries.iter_mut().for_each(ClearSpans::clear_spans);
                t.span = NO_SPAN;
            }
        }
    }
}

impl ClearSpans for Ident {
    fn clear_spans(&mut self) {
        self.span = NO_SPAN;
    }
}

impl ClearSpans for KeyValue {
    fn clear_spans(&mut self) {
        self.key.clear_spans();
        self.value.clear_spans();
        self.span = NO_SPAN;
    }
}

impl ClearSpans for Stmt {
    fn clear_spans(&mut self) {
        match self {
            Stmt::Input { name, shape, span } => {
                name.clear_spans();
                shape.iter_mut().for_each(ClearSpans::clear_spans);
                *span = NO_SPAN;
            }
            Stmt::Bind { name, value, span } => {
                name.clear_spans();
                value.clear_spans();
                *span = NO_SPAN;
            }
            Stmt::Output { values, span } => {
                values.iter_mut().for_each(ClearSpans::clear_spans);
                *span = NO_SPAN;
            }
        }
    }
}

impl ClearSpans for Expr {
    fn clear_spans(&mut self) {
        self.span = NO_SPAN;
        self.id = ExprId::NONE;
        if let ExprKind::Call { name, args } = &mut self.kind {
            name.clear_spans();
            for a in args {
                a.name.iter_mut().for_each(ClearSpans::clear_spans);
                a.span = NO_SPAN;
            }
        }
        self.for_each_child_mut(|e| e.clear_spans());
    }
}
