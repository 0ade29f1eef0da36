//! Stage kinds: the ops saepipe ships, and [`registry`], which names them for
//! the engine. Each op implements [`crate::engine::Op`]: a typed parameter
//! schema and a `run` that reads its inputs and writes its output directory;
//! ops know nothing about caching, locking or scheduling (the engine does all
//! of that).

pub mod coder_ref;
pub mod collect_activations;
pub mod command;
pub mod debug_shards;
pub mod device;
pub mod evaluate;
pub mod feature_journey;
pub mod hub_dataset;
pub mod inspect_features;
pub mod links;
pub mod match_features;
pub mod model_params;
pub mod model_ref;
pub mod plot;
pub mod table;
pub mod tokenize;
pub mod train_sae;

// The engine's vocabulary, in scope for the stage kinds below as `super::...`.
use crate::engine::{
    NotDownloaded, Op, OpRegistry, ParamProblem, Params, Resource, StageCtx, StageStop, artifact_key, cancel_requested,
    downloads_allowed,
};

/// Every stage kind saepipe ships, in the order `saepipe ops` lists them.
pub fn registry() -> OpRegistry {
    OpRegistry::new([
        &tokenize::TokenizeOp as &dyn Op,
        &collect_activations::CollectActivationsOp,
        &train_sae::TrainSaeOp,
        &evaluate::EvaluateOp,
        &match_features::MatchFeaturesOp,
        &inspect_features::InspectFeaturesOp,
        &feature_journey::FeatureJourneyOp,
        &plot::PlotOp,
        &command::CommandOp,
        &debug_shards::DebugShardsOp,
    ])
}
