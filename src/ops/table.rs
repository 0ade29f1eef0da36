//! The tables stages write as Parquet (metrics per coder, match pairs, loss
//! curves) and read back (for plotting): saepipe's one table type and its
//! Parquet form, re-exported for the ops.

pub use saepipe_core::table::{Column, Table};
pub use saepipe_data::table::{read_parquet, write_parquet};
