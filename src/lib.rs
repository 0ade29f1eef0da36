//! saepipe: a pipeline engine for sparse-autoencoder and transcoder
//! interpretability research.
//!
//! The engine (`engine`, `pipeline`, `exec`) knows nothing about SAEs: it loads,
//! plans and runs pipelines with whatever stage kinds it is given in an
//! [`engine::OpRegistry`]. The stage kinds (`ops`, listed by [`ops::registry`])
//! know nothing about caching or scheduling.

#![warn(missing_docs)]

pub mod cli;
pub mod engine;
pub mod exec;
pub mod ops;
pub mod pipeline;
