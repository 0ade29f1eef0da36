"""A minimal safetensors reader (numpy only): an 8-byte little-endian header
length, a JSON header naming each tensor's dtype, shape and byte range, then
the raw little-endian data."""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple, Union

import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def read_safetensors(
    path: Union[str, os.PathLike], names: Optional[list] = None
) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """(tensors, metadata) of a safetensors file. BF16 tensors become float32
    (numpy has no bfloat16); other dtypes keep theirs."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its header length)")
    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} runs past the end of the file")
    header = json.loads(data[8 : 8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    body = memoryview(data)[8 + n :]
    out = {}
    for name, t in header.items():
        if names is not None and name not in names:
            continue
        start, end = t["data_offsets"]
        shape = tuple(t["shape"])
        raw = body[start:end]
        if t["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        elif t["dtype"] in _DTYPES:
            arr = np.frombuffer(raw, dtype=_DTYPES[t["dtype"]]).copy()
        else:
            raise ValueError(f"{path}: tensor `{name}` has dtype {t['dtype']}, which this reader does not handle")
        count = int(np.prod(shape)) if shape else 1
        if arr.size != count:
            raise ValueError(f"{path}: tensor `{name}` holds {arr.size} values for shape {list(shape)}")
        out[name] = arr.reshape(shape)
    return out, meta
