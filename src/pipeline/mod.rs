//! What the user writes: the YAML pipeline spec, its validation, variable
//! interpolation, `foreach`/`matrix` expansion and the stage-instance DAG.

pub mod dag;
pub mod diag;
pub mod interp;
pub mod refs;
pub mod schema;
pub mod spec;
pub mod yaml;

pub use spec::{Instance, LoadError, LoadOptions, Pipeline, load};
