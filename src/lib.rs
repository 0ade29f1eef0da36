//! saepipe: a pipeline engine for sparse-autoencoder and transcoder
//! interpretability research.
//!
//! The engine (`pipeline`, `exec`) knows nothing about SAEs; the ops (`ops`) know
//! nothing about caching or scheduling.

pub mod cli;
pub mod exec;
pub mod ops;
pub mod pipeline;
