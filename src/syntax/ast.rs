//! The syntax tree of a `.geonet` file. Every node carries the byte span of its source text.

/// A byte range into the source (the one span type, defined with the diagnostics).
pub use crate::diag::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
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

#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}
