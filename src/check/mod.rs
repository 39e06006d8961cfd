//! Names, blocks, the built-in `unet`, shapes, lints → a checked [`program::Program`] and
//! diagnostics.

pub mod program;
