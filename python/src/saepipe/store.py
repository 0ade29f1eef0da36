"""Activation stores: a directory of Parquet shards (`seq`, `pos`, `token`, one
fixed-size-list column per hook) indexed by `_store.json` (docs/formats.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from .cache import Artifact, PathLike, as_artifact_dir

STORE_FILES = ("_store.json", "store.json")
STORE_FORMAT = "saepipe-activations"
STORE_FORMAT_VERSION = 1


class ActivationStore:
    """An activation store, from a `collect_activations` artifact or its directory.

    Shard sizes are checked against the index when the store is opened
    (`saepipe cache verify` checks their hashes)."""

    def __init__(self, x: Union[Artifact, PathLike]):
        self.dir = as_artifact_dir(x)
        for name in STORE_FILES:
            p = self.dir / name
            if p.is_file():
                self.index_file = p
                break
        else:
            raise FileNotFoundError(f"{self.dir} is not an activation store (no {' or '.join(STORE_FILES)})")
        #: The parsed store index.
        self.info = json.loads(self.index_file.read_text(encoding="utf-8"))
        fmt, v = self.info.get("format"), self.info.get("format_version")
        if fmt != STORE_FORMAT or v != STORE_FORMAT_VERSION:
            raise ValueError(f"{self.index_file}: format {fmt!r} version {v} is not supported "
                             f"(this package reads {STORE_FORMAT} version {STORE_FORMAT_VERSION})")  # fmt: skip
        for s in self.info["shards"]:
            p = self.dir / s["file"]
            size = p.stat().st_size if p.is_file() else None
            if size != s["bytes"]:
                have = "missing" if size is None else f"{size} bytes"
                raise ValueError(f"{p}: {have}, the store index says {s['bytes']}: the store is damaged")

    @property
    def meta(self) -> dict:
        """Model, revision, hooks, dtype, processing, token table key, context size."""
        return self.info["meta"]

    @property
    def hooks(self) -> list:
        """Hook names, in column order."""
        return [h["name"] for h in self.meta["hooks"]]

    @property
    def hook_dims(self) -> dict:
        """Hook name → width `d` of its rows."""
        return {h["name"]: int(h["d"]) for h in self.meta["hooks"]}

    @property
    def dtype(self) -> str:
        """Stored precision: `f32` or `f16` (read back as float32)."""
        return self.meta.get("dtype", "f32")

    @property
    def num_rows(self) -> int:
        """Rows (tokens) in the store."""
        return int(self.info["total_tokens"])

    def __len__(self) -> int:
        return self.num_rows

    @property
    def context_size(self) -> int:
        return int(self.meta["context_size"])

    @property
    def shard_files(self) -> list:
        """The shards' paths, in store order."""
        return [self.dir / s["file"] for s in self.info["shards"]]

    def __repr__(self) -> str:
        hooks = ", ".join(f"{n}[{d}]" for n, d in self.hook_dims.items())
        return f"ActivationStore({self.num_rows} rows, {self.dtype}, {hooks}, dir={str(self.dir)!r})"

    def _check_hook(self, hook: str) -> int:
        dims = self.hook_dims
        if hook not in dims:
            raise KeyError(f"the store has no hook `{hook}` (it has: {', '.join(dims)})")
        return dims[hook]

    def dataset(self):
        """A `pyarrow.dataset.Dataset` over the shards (in store order)."""
        import pyarrow.dataset as ds

        return ds.dataset([str(p) for p in self.shard_files], format="parquet")

    def iter_batches(self, columns: Optional[list] = None, batch_size: int = 4096) -> Iterator:
        """`pyarrow.RecordBatch`es of `columns` (default: all) in store order."""
        import pyarrow.parquet as pq

        for p in self.shard_files:
            yield from pq.ParquetFile(p).iter_batches(batch_size=batch_size, columns=columns)

    def iter_numpy(self, hook: str, batch_size: int = 4096, with_tokens: bool = False) -> Iterator:
        """Arrays `(n, d)` float32 of `hook` in store order, `n = batch_size`
        except for the last. With `with_tokens`, `(acts, seq, pos, token)`."""
        d = self._check_hook(hook)
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        cols = [hook] + (["seq", "pos", "token"] if with_tokens else [])
        pending, have = [], 0
        for rb in self.iter_batches(cols, batch_size):
            pending.append(_batch_numpy(rb, hook, d, with_tokens))
            have += rb.num_rows
            while have >= batch_size:
                out, pending, have = _take(pending, batch_size, with_tokens)
                yield out
        if have:
            yield _take(pending, have, with_tokens)[0]

    def read_numpy(self, hook: str, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
        """Rows `start:stop` of `hook` as one `(n, d)` float32 array."""
        import pyarrow.parquet as pq

        d = self._check_hook(hook)
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        parts = []
        for s in self.info["shards"]:
            a, b = max(start, s["first_row"]), min(stop, s["first_row"] + s["rows"])
            if a >= b:
                continue
            t = pq.read_table(self.dir / s["file"], columns=[hook]).slice(a - s["first_row"], b - a)
            parts.append(_column_numpy(t.column(hook), d))
        return np.concatenate(parts) if parts else np.zeros((0, d), np.float32)

    def tokens(self) -> dict:
        """`seq`, `pos` and `token` of every row, as numpy arrays."""
        t = self.dataset().to_table(columns=["seq", "pos", "token"])
        return {c: t.column(c).to_numpy() for c in ("seq", "pos", "token")}

    def iter_torch(self, hook: str, batch_size: int = 4096, device=None) -> Iterator:
        """`iter_numpy` as torch tensors (needs torch)."""
        try:
            import torch
        except ImportError as e:
            raise ImportError("ActivationStore.iter_torch needs torch; iter_numpy gives numpy arrays") from e
        for a in self.iter_numpy(hook, batch_size):
            t = torch.from_numpy(a)
            yield t.to(device) if device is not None else t


def _column_numpy(col, d: int) -> np.ndarray:
    """A fixed_size_list<float32|float16>[d] column (Array or ChunkedArray) as (n, d) float32."""
    import pyarrow as pa

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(-1, d)


def _batch_numpy(rb, hook: str, d: int, with_tokens: bool):
    acts = _column_numpy(rb.column(hook), d)
    if not with_tokens:
        return (acts,)
    return (acts,) + tuple(rb.column(c).to_numpy() for c in ("seq", "pos", "token"))


def _take(pending: list, n: int, with_tokens: bool):
    """The first n rows of the pending parts (tuples of arrays), and the rest."""
    width = len(pending[0])
    joined = [np.concatenate([p[i] for p in pending]) if len(pending) > 1 else pending[0][i] for i in range(width)]
    head = tuple(a[:n] for a in joined)
    tail = tuple(a[n:] for a in joined)
    rest = len(joined[0]) - n
    out = head if with_tokens else head[0]
    return out, ([tail] if rest else []), rest
