//! saepipe-sae: sparse coders (SAEs, transcoders, skip transcoders) for
//! saepipe — inference, the SAELens and sparsify file formats, and the
//! training core.
//!
//! Layout conventions follow SAELens v6: `W_enc [d_in, d_sae]`,
//! `W_dec [d_sae, d_out]`, `b_enc [d_sae]`, `b_dec [d_out]`,
//! `W_skip [d_out, d_in]`, all row-major f32.
//!
//! - Inference: [`load_coder`] (format detected from the files present) gives
//!   a [`SparseCoder`]; [`SparseCoder::encode`] returns per-row sparse
//!   activations ([`SparseActs`], CSR), [`SparseCoder::decode`] gathers the
//!   active decoder rows. All entry points check shapes and return
//!   [`SaeError`]s naming the dimension, file or tensor involved.
//! - Formats: SAELens v6 and pre-6.0 directories (read and write), EleutherAI
//!   sparsify directories (read), and the on-disk layouts of the pretrained
//!   releases in SAELens's registry ([`registry`], [`format::pretrained`]).
//! - Training: [`Trainer`] (ReLU+L1, TopK+AuxK, BatchTopK, JumpReLU; SAEs, transcoders,
//!   skip transcoders), checkpointed with [`TrainerState`]; see [`train`].

#![warn(missing_docs)]
// Let-chains and `is_multiple_of` are newer than the workspace's rust-version.
#![allow(clippy::collapsible_if, clippy::manual_is_multiple_of)]

pub mod arch;
pub mod coder;
pub mod error;
pub mod format;
pub mod linalg;
pub mod meta;
pub mod registry;
pub mod st;
pub mod train;

pub use arch::{Activation, Normalization};
pub use coder::{SparseActs, SparseCoder};
pub use error::{Result, SaeError};
pub use format::pretrained::{Conversion, FilePlan};
pub use format::{Format, detect_format, load_coder, read_saelens, read_sparsify, write_saelens};
pub use meta::Metadata;
pub use registry::{PretrainedSae, Registry};
pub use train::{BDecInit, LossParts, LrDecay, Params, StepStats, TrainArch, TrainConfig, Trainer, TrainerState};
