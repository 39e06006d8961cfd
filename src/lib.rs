//! geonetc: a compiler for a small language of convolutional networks for seismic data.
//!
//! The pipeline runs in one direction (see ARCHITECTURE.md):
//! [`syntax`] → [`check`] → [`ir`] → backends [`interp`] and [`jit`] → [`runtime`].
//! [`ops`] holds what each layer kind is (shape rule, reference math, JIT emitter) and is used
//! by all of them; [`seismic`] reads and writes data files; [`output`] writes every output file (atomically,
//! never over an input).

// Diagnostics travel in `Result::Err` on the checker's cold error path; boxing them would
// only add noise.
#![allow(clippy::result_large_err)]

pub mod check;
pub mod diag;
pub mod diff;
pub mod export;
pub mod fmt;
pub mod interp;
pub mod ir;
pub mod jit;
pub mod lsp;
pub mod ops;
pub mod output;
pub mod runtime;
pub mod seismic;
pub mod syntax;
pub mod weights;
