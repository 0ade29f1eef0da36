"""Tables (Parquet) and JSON files of artifacts: losses, metrics, summaries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from .cache import Artifact, PathLike, as_artifact_dir


def _find(x: Union[Artifact, PathLike], name: str, suffix: str) -> Path:
    d = as_artifact_dir(x)
    for cand in (name, name + suffix):
        if (d / cand).is_file():
            return d / cand
    have = sorted(str(p.relative_to(d)) for p in d.rglob(f"*{suffix}") if not p.name.startswith("_"))
    raise FileNotFoundError(f"{d} has no `{name}` (its {suffix} files: {', '.join(have) or 'none'})")


def read_table(x: Union[Artifact, PathLike], name: str, pandas: Union[bool, None] = None):
    """The Parquet table `name` of an artifact (`losses`, `metrics`,
    `features.parquet`, `data/…`): a pandas DataFrame when pandas is installed
    (or `pandas=True`), else (or with `pandas=False`) a `pyarrow.Table`."""
    import pyarrow.parquet as pq

    t = pq.read_table(_find(x, name, ".parquet"))
    if pandas is False:
        return t
    if pandas is None:
        try:
            import pandas  # noqa: F401
        except ImportError:
            return t
    return t.to_pandas()


def table_metadata(x: Union[Artifact, PathLike], name: str) -> dict:
    """The key-value metadata of Parquet file `name` (e.g. `saepipe.*` keys),
    as strings: the file footer's, which holds keys that the Arrow schema
    (`pyarrow.parquet.read_schema(...).metadata`) may lack; `ARROW:schema` left out."""
    import pyarrow.parquet as pq

    md = pq.ParquetFile(_find(x, name, ".parquet")).metadata.metadata or {}
    return {k.decode(): v.decode() for k, v in md.items() if k != b"ARROW:schema"}


def read_json(x: Union[Artifact, PathLike], name: str = "summary.json"):
    """A JSON file of an artifact (`summary.json` by default; `.json` may be left out)."""
    return json.loads(_find(x, name, ".json").read_text(encoding="utf-8"))


def read_summary(x: Union[Artifact, PathLike]) -> dict:
    """An artifact's `summary.json` (train_sae, evaluate, ...)."""
    return read_json(x, "summary.json")


def read_metrics(x: Union[Artifact, PathLike]):
    """An `evaluate` artifact's `metrics.parquet` (one row per coder) as a DataFrame (or pyarrow Table)."""
    return read_table(x, "metrics.parquet")
