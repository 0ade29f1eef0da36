//! The seeded generator and shuffle buffer behind every shuffle of saepipe's data
//! layer (documents before tokenization, activation rows when reading): saepipe's
//! one generator, [`saepipe_core::rng`], whose exact sequence docs/formats.md
//! specifies.

pub use saepipe_core::rng::{ShuffleBuffer, SplitMix64};
