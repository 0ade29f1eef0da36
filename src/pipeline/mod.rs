//! What the user writes: the YAML pipeline spec, its validation, variable
//! interpolation, `foreach`/`matrix` expansion and the stage-instance DAG.
//! Stage kinds come from the [`OpRegistry`](crate::engine::OpRegistry) the
//! caller passes to [`load`].

mod check;
pub mod dag;
pub mod diag;
mod interp;
mod refs;
mod run_settings;
pub mod spec;
pub mod types;
mod vars;
pub mod yaml;

pub use interp::shell_quote;
pub use spec::{LoadError, LoadOptions, load};
pub use types::{InputRef, Instance, Pipeline, StageDef, Target};
