//! saepipe's data layer: corpus tokenization, the Parquet token table and the
//! sharded, resumable Parquet activation store (formats: docs/formats.md).

#![warn(missing_docs)]

pub mod activations;
pub mod corpus;
mod error;
pub mod reader;
pub mod rng;
pub mod source;
pub mod table;
pub mod tokenize;
pub mod tokens;

pub use activations::{
    ACTIVATIONS_FORMAT_VERSION, Compression, Dtype, HookSpec, LEGACY_STORE_INDEX_FILE, Rows, STORE_INDEX_FILE,
    ShardedWriter, StoreInfo, StoreMeta, WriterOptions,
};
pub use corpus::{Corpus, FileFormat, FormatChoice};
pub use error::{DataError, Result};
pub use reader::{ActivationReader, Batch};
pub use source::{LocalStore, StoreSource};
pub use tokenize::{
    Mode, SaeLensOptions, Special, SpecialTokens, Tl2Pad, TlOptions, TokenizeOptions, TokenizeSummary, Tokenizer,
    for_each_context, tokenize_to_table,
};
pub use tokens::{TOKENS_FORMAT_VERSION, TokenTableMeta, TokenTableReader, TokenTableWriter};
