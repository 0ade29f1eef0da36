"""Sparse coders (SAEs and transcoders) from SAELens directories: as a SAELens
`SAE` when sae_lens is installed, otherwise as a small numpy `Coder`."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from .cache import Artifact, PathLike, as_artifact_dir
from .safetensors import read_safetensors

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
LN_EPS = 1e-5

# SAELens architecture → (latent activation family, transcoder, skip connection).
_ARCHITECTURES = {
    "standard": ("relu", False, False),
    "relu": ("relu", False, False),
    "topk": ("topk", False, False),
    "jumprelu": ("jumprelu", False, False),
    "batchtopk": ("jumprelu", False, False),  # saved for inference as JumpReLU thresholds
    "gated": ("gated", False, False),
    "groupmax": ("groupmax", False, False),
    "transcoder": ("relu", True, False),
    "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False),
    "jumprelu_skip_transcoder": ("jumprelu", True, True),
    "topk_transcoder": ("topk", True, False),
    "topk_skip_transcoder": ("topk", True, True),
    "gated_transcoder": ("gated", True, False),
    "gated_skip_transcoder": ("gated", True, True),
}
_NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")


def coder_dir(x: Union[Artifact, PathLike]) -> Path:
    """The SAELens directory of a `train_sae` artifact (its `sae/`), or `x` itself when it holds `cfg.json`."""
    d = as_artifact_dir(x)
    if (d / "sae" / CFG_FILE).is_file():
        return d / "sae"
    if (d / CFG_FILE).is_file():
        return d
    raise FileNotFoundError(f"{d} holds no SAELens coder (no {CFG_FILE} in it or in its sae/ folder)")


def _major(version) -> Optional[int]:
    try:
        return int(str(version).lstrip("v").replace("-", ".").split(".")[0])
    except (ValueError, IndexError):
        return None


def _v6_config(raw: dict) -> Tuple[dict, dict]:
    """(coder fields, metadata) of a v6 config or of a pre-6.0 flat one."""
    version = raw.get("sae_lens_version") or (raw.get("metadata") or {}).get("sae_lens_version")
    major = _major(version) if version is not None else None
    if major is not None and major >= 6:
        cfg = {k: v for k, v in raw.items() if k != "metadata"}
        return cfg, dict(raw.get("metadata") or {})
    structural = {
        "architecture", "d_in", "d_sae", "d_out", "dtype", "device", "apply_b_dec_to_input",
        "normalize_activations", "activation_fn", "activation_fn_str", "activation_fn_kwargs", "k",
        "finetuning_scaling_factor", "rescale_acts_by_decoder_norm",
    }  # fmt: skip
    renames = {"hook_point": "hook_name", "hook_point_head_index": "hook_head_index", "hook_point_out": "hook_name_out"}
    cfg, meta = {}, {}
    for k, v in raw.items():
        if k in renames:
            meta[renames[k]] = v
        elif k in structural:
            cfg[k] = v
        else:
            meta[k] = v
    act = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
    cfg.setdefault("architecture", "standard")
    if act == "topk" and "k" in (cfg.get("activation_fn_kwargs") or {}):
        cfg["architecture"], cfg["k"] = "topk", cfg["activation_fn_kwargs"]["k"]
    elif act != "relu" and cfg["architecture"] == "standard":
        cfg["architecture"] = f"standard/{act}"
    return cfg, meta


class Coder:
    """A sparse coder in numpy, with SAELens v6 tensor names and semantics.

    `encode(x)` gives the latent activations, `decode(f, x)` the output
    (`x` is needed by skip transcoders and by SAEs that normalize their input at
    run time), `forward(x)` both. Arrays are float32; any leading shape works.
    """

    def __init__(self, cfg: dict, tensors: dict, path: Optional[Path] = None, log_sparsity=None):
        self.path = path
        #: The `cfg.json` as read.
        self.cfg = cfg
        fields, self.metadata = _v6_config(cfg)
        where = f"{path / CFG_FILE}" if path else "cfg"
        self.architecture = fields.get("architecture") or "standard"
        if self.architecture not in _ARCHITECTURES:
            raise ValueError(f"{where}: SAELens architecture `{self.architecture}` is not supported "
                             f"(supported: {', '.join(_ARCHITECTURES)})")  # fmt: skip
        self.family, self.transcoder, skip = _ARCHITECTURES[self.architecture]
        self.d_in, self.d_sae = int(fields["d_in"]), int(fields["d_sae"])
        self.d_out = int(fields["d_out"]) if self.transcoder else self.d_in
        norm = fields.get("normalize_activations")
        if norm is None or norm is False:
            norm = "none"
        elif norm is True:
            norm = "expected_average_only_in"
        if norm not in _NORMALIZATIONS:
            raise ValueError(f"{where}: normalize_activations `{norm}` is not supported ({', '.join(_NORMALIZATIONS)})")
        self.normalize_activations = norm
        self.apply_b_dec_to_input = False if self.transcoder else bool(fields.get("apply_b_dec_to_input", True))
        self.k = int(fields["k"]) if self.family in ("topk", "groupmax") else None
        if self.k is not None and not 1 <= self.k <= self.d_sae:
            raise ValueError(f"{where}: k = {self.k} is not in 1..{self.d_sae}")

        def get(name, shape):
            if name not in tensors:
                raise ValueError(f"{where}: the weights lack `{name}` (architecture {self.architecture})")
            t = np.asarray(tensors[name], dtype=np.float32)
            if t.shape != shape:
                raise ValueError(f"{where}: `{name}` has shape {list(t.shape)}, expected {list(shape)}")
            return t

        self.W_enc = get("W_enc", (self.d_in, self.d_sae))
        self.W_dec = get("W_dec", (self.d_sae, self.d_out)).copy()
        self.b_dec = get("b_dec", (self.d_out,))
        self.b_enc = self.threshold = self.b_gate = self.b_mag = self.r_mag = self.W_skip = None
        if self.family == "gated":
            self.b_gate, self.b_mag, self.r_mag = (get(n, (self.d_sae,)) for n in ("b_gate", "b_mag", "r_mag"))
        else:
            self.b_enc = get("b_enc", (self.d_sae,)).copy()
        if self.family == "jumprelu":
            self.threshold = get("threshold", (self.d_sae,)).copy()
        if skip:
            self.W_skip = get("W_skip", (self.d_out, self.d_in))
        if "scaling_factor" in tensors:  # old SAELens fine-tuning scale, folded into the decoder
            self.W_dec *= get("scaling_factor", (self.d_sae,))[:, None]
        if self.family == "topk" and fields.get("rescale_acts_by_decoder_norm"):
            self._fold_decoder_norms()
        if self.apply_b_dec_to_input and self.d_in != self.d_out:
            raise ValueError(f"{where}: apply_b_dec_to_input needs d_in == d_out")
        #: log10(firing frequency + 1e-10) per latent (`sparsity.safetensors`), or None.
        self.log_sparsity = log_sparsity

    @property
    def hook_name(self) -> Optional[str]:
        return self.metadata.get("hook_name")

    @property
    def hook_name_out(self) -> Optional[str]:
        return self.metadata.get("hook_name_out") or self.hook_name

    @property
    def is_transcoder(self) -> bool:
        return self.transcoder

    def _fold_decoder_norms(self) -> None:
        n = np.maximum(np.linalg.norm(self.W_dec, axis=1), 1e-8).astype(np.float32)
        self.W_dec /= n[:, None]
        self.b_enc *= n
        self.W_enc = self.W_enc * n[None, :]

    def __repr__(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (f"Coder({self.architecture}, d_in={self.d_in}, d_sae={self.d_sae}, d_out={self.d_out}{k}, "
                f"hook={self.hook_name!r})")  # fmt: skip

    # -- inference -------------------------------------------------------------------

    def _rows(self, x, width: int, what: str) -> Tuple[np.ndarray, tuple]:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1:] != (width,):
            raise ValueError(f"{what} has shape {list(x.shape)}; its last dimension must be {width}")
        return x.reshape(-1, width), x.shape[:-1]

    def _norm(self, x: np.ndarray):
        if self.normalize_activations == "constant_norm_rescale":
            a = np.float32(np.sqrt(self.d_in)) / np.linalg.norm(x, axis=1, keepdims=True)
            return x * a, (a, None)
        if self.normalize_activations == "layer_norm":
            mu = x.mean(axis=1, keepdims=True)
            std = x.std(axis=1, ddof=1 if x.shape[1] > 1 else 0, keepdims=True)
            return (x - mu) / (std + np.float32(LN_EPS)), (mu, std)
        return x, None

    def encode(self, x) -> np.ndarray:
        """Latent activations `[..., d_sae]` of inputs `[..., d_in]`."""
        x, lead = self._rows(x, self.d_in, "x")
        xin, _ = self._norm(x)
        if self.apply_b_dec_to_input:
            xin = xin - self.b_dec
        if self.family == "gated":
            xw = xin @ self.W_enc
            gate = (xw + self.b_gate) > 0
            f = np.where(gate, np.maximum(xw * np.exp(self.r_mag) + self.b_mag, 0), 0).astype(np.float32)
            return f.reshape(*lead, self.d_sae)
        pre = xin @ self.W_enc + self.b_enc
        if self.family == "relu":
            f = np.maximum(pre, 0)
        elif self.family == "jumprelu":
            f = np.where((pre > self.threshold) & (pre > 0), pre, 0)
        elif self.family == "topk":
            f = np.zeros_like(pre)
            if pre.shape[0]:
                idx = np.argpartition(-pre, self.k - 1, axis=1)[:, : self.k]
                vals = np.take_along_axis(pre, idx, axis=1)
                np.put_along_axis(f, idx, np.maximum(vals, 0), axis=1)
        elif self.family == "groupmax":
            g = pre.reshape(pre.shape[0], self.k, -1)
            arg = g.argmax(axis=2)
            f = np.zeros_like(g)
            np.put_along_axis(f, arg[..., None], np.maximum(np.take_along_axis(g, arg[..., None], axis=2), 0), axis=2)
            f = f.reshape(pre.shape)
        else:  # pragma: no cover
            raise AssertionError(self.family)
        return f.astype(np.float32, copy=False).reshape(*lead, self.d_sae)

    def decode(self, f, x=None) -> np.ndarray:
        """Output `[..., d_out]` of latents `[..., d_sae]`. `x`, the raw input, is
        required by skip transcoders and by SAEs whose run-time input
        normalization is undone on the output (transcoders never undo it)."""
        f, lead = self._rows(f, self.d_sae, "f")
        out = f @ self.W_dec + self.b_dec
        needs_x = self.W_skip is not None or (
            not self.transcoder and self.normalize_activations in ("constant_norm_rescale", "layer_norm")
        )
        if x is None:
            if needs_x:
                raise ValueError(f"decoding this {self.architecture} coder (normalize_activations "
                                 f"{self.normalize_activations}) needs the raw input x")  # fmt: skip
            return out.reshape(*lead, self.d_out)
        x, _ = self._rows(x, self.d_in, "x")
        if x.shape[0] != f.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows, f has {f.shape[0]}")
        if not self.transcoder:
            _, st = self._norm(x)
            if self.normalize_activations == "constant_norm_rescale":
                out = out / st[0]
            elif self.normalize_activations == "layer_norm":
                out = out * st[1] + st[0]
        if self.W_skip is not None:
            out = out + x @ self.W_skip.T
        return out.astype(np.float32, copy=False).reshape(*lead, self.d_out)

    def forward(self, x) -> Tuple[np.ndarray, np.ndarray]:
        """`(encode(x), decode(encode(x), x))`."""
        f = self.encode(x)
        return f, self.decode(f, x)

    def __call__(self, x) -> np.ndarray:
        return self.forward(x)[1]


def load_coder(x: Union[Artifact, PathLike]) -> Coder:
    """The numpy `Coder` of a `train_sae` artifact or a SAELens directory."""
    d = coder_dir(x)
    cfg = json.loads((d / CFG_FILE).read_text(encoding="utf-8"))
    tensors, _ = read_safetensors(d / WEIGHTS_FILE)
    sparsity = None
    if (d / SPARSITY_FILE).is_file():
        s, _ = read_safetensors(d / SPARSITY_FILE)
        sparsity = s.get("sparsity", s.get("log_feature_sparsity"))
    return Coder(cfg, tensors, path=d, log_sparsity=sparsity)


def saelens_available() -> bool:
    return importlib.util.find_spec("sae_lens") is not None


def load_sae(x: Union[Artifact, PathLike], backend: str = "auto", device: str = "cpu"):
    """A coder of a `train_sae` artifact (its `sae/` folder) or of a SAELens directory.

    `backend="auto"`: a SAELens `SAE` (`SAE.load_from_disk`) when sae_lens is
    installed, else a numpy `Coder`; an architecture SAELens does not know
    (saepipe's `topk_transcoder`) falls back to the `Coder` with a warning.
    `"saelens"` and `"numpy"` choose one."""
    if backend not in ("auto", "saelens", "numpy"):
        raise ValueError(f"backend must be auto, saelens or numpy, not {backend!r}")
    d = coder_dir(x)
    if backend == "numpy" or (backend == "auto" and not saelens_available()):
        return load_coder(d)
    from sae_lens import SAE

    try:
        return SAE.load_from_disk(str(d), device=device)
    except (KeyError, ValueError, NotImplementedError) as e:
        if backend == "saelens":
            raise
        arch = json.loads((d / CFG_FILE).read_text(encoding="utf-8")).get("architecture")
        warnings.warn(f"SAELens cannot load {d} (architecture {arch}: {e!r}); using saepipe's numpy Coder", stacklevel=2)
        return load_coder(d)
