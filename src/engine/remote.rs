//! A run's remote cache: where it is and which way artifacts may travel. The
//! transfers themselves are the executor's (`exec::remote`); this is only the
//! setting that pipelines, the command line and serialized stage jobs carry.

use serde::{Deserialize, Serialize};

/// The remote of a run (pipeline `cache: {remote: URL, pull:, push:}` or
/// `run --remote URL --remote-policy ...`). Never part of any cache key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSettings {
    /// `s3://`, `gs://`, `az://`, `http(s)://` or `file://` URL, or a directory.
    pub url: String,
    /// On a local miss, look the key up on the remote and download it.
    pub pull: bool,
    /// Upload each artifact the run computes.
    pub push: bool,
}

/// The `stream` parameter of ops with
/// [`streamable_inputs`](super::Op::streamable_inputs). Not part of the cache
/// key: a streamed store gives the same batches as its local copy.
pub fn stream_param() -> super::ParamSpec {
    super::ParamSpec::optional(
        "stream",
        super::ParamType::Bool,
        serde_json::json!(false),
        "read the input activation store in place from the run's remote, shard by shard, when it is not in the local cache (same results as a local copy)",
    )
    .not_in_key()
}
