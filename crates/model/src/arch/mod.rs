//! One file per architecture: each maps its checkpoint's tensors into
//! TransformerLens-layout [`Params`](crate::params::Params).

pub mod gemma;
pub mod gpt2;
pub mod llama;
pub mod neox;
