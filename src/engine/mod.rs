//! The engine's contract with stage kinds: what an op is ([`Op`]), the typed
//! parameter schema it declares ([`ParamSpec`]), the parameters and context it
//! runs with ([`Params`], [`StageCtx`]), how it reports progress
//! ([`ProgressSink`]) and learns that it must stop ([`StageStop`], [`control`]),
//! and the [`OpRegistry`] that names the available ops.
//!
//! Loading (`pipeline`), planning and execution (`exec`) are written against
//! this module only; the stage kinds themselves live in `ops`, and the binary
//! hands the engine a registry of them. Tests hand it fake ops instead.

pub mod control;
pub mod ctx;
pub mod op;
pub mod params;
pub mod progress;
pub mod registry;
pub mod remote;
pub mod schema;

pub use control::{NotDownloaded, StageStop, cancel_requested, downloads_allowed, forbid_downloads, request_cancel};
pub use ctx::{StageCtx, StreamedInputs, artifact_key};
pub use op::{Op, ParamProblem, Resource};
pub use params::Params;
pub use progress::{NoProgress, ProgressSink};
pub use registry::{OpRegistry, UnknownOp};
pub use remote::{RemoteSettings, stream_param};
pub use schema::{HUB_DATASET_SCHEME, ParamSpec, ParamType, is_hub_dataset};
