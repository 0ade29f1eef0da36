"""Open saepipe's artifacts from Python: find them in a cache (by key, or by
pipeline and stage instance through the run index) and load coders, activation
stores and tables.

    import saepipe
    cache = saepipe.Cache("cache")
    coder = saepipe.load_sae(cache.find("pipelines/toy_sae.yaml", "sae"), backend="numpy")
    store = saepipe.ActivationStore(cache.find("pipelines/toy_sae.yaml", "acts"))
    for x in store.iter_numpy(coder.hook_name, batch_size=4096):
        f = coder.encode(x)
"""

from .cache import (
    Artifact,
    Cache,
    NotCachedError,
    SaepipeError,
    default_cache_dir,
    find,
    read_pipeline_header,
)
from .coder import Coder, load_coder, load_sae
from .safetensors import read_safetensors
from .store import ActivationStore
from .tables import read_json, read_metrics, read_summary, read_table, table_metadata

__version__ = "0.1.0"

__all__ = [
    "ActivationStore",
    "Artifact",
    "Cache",
    "Coder",
    "NotCachedError",
    "SaepipeError",
    "default_cache_dir",
    "find",
    "load_coder",
    "load_sae",
    "read_json",
    "read_metrics",
    "read_pipeline_header",
    "read_safetensors",
    "read_summary",
    "read_table",
    "table_metadata",
]
