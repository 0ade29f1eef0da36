"""Finding artifacts in a saepipe cache.

A cache (docs/cache.md) holds one directory per artifact, `artifacts/<key>`
(a link to the artifact's current generation), each with a `_manifest.json`
(`manifest.json` in artifacts of older saepipe versions). The run index,
`index/<pipeline>/<instance>-<tag>.json`, records the key each stage instance
of each pipeline (by its `name:`) last built or reused on this cache.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, Optional, Union

from ._blake3 import CHUNK_LEN, blake3_hex

PathLike = Union[str, os.PathLike]

MANIFEST_FILES = ("_manifest.json", "manifest.json")
MANIFEST_FORMAT_VERSION = 1
KEY_HEX_LEN = 64


class SaepipeError(Exception):
    """Something asked of the cache is not there or not readable."""


class NotCachedError(SaepipeError, LookupError):
    """The artifact, stage instance or pipeline is not in the cache."""


def default_cache_dir(pipeline: Optional[PathLike] = None) -> Path:
    """The cache directory the `saepipe` command would use (without `--cache-dir`):
    `$SAEPIPE_CACHE`, else the pipeline's `cache_dir:` (resolved against the
    pipeline file's folder) when a pipeline is given, else `./cache`."""
    env = os.environ.get("SAEPIPE_CACHE")
    if env:
        return Path(env)
    if pipeline is not None:
        info = read_pipeline_header(pipeline)
        if info.get("cache_dir"):
            return Path(info["cache_dir"])
    return Path("cache")


_TOP_LEVEL = re.compile(r"^(name|cache_dir)\s*:\s*(.*?)\s*$")


def _scalar(text: str) -> str:
    if text[:1] in "'\"":
        q = text[0]
        end = text.find(q, 1)
        return text[1:end] if end > 0 else text[1:]
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()


def read_pipeline_header(pipeline: PathLike) -> dict:
    """The top-level `name:` (default: the file's stem, as saepipe does) and
    `cache_dir:` (absolute, resolved against the file's folder; None when
    absent) of a pipeline file. Reads only those two keys, so no YAML library
    is needed."""
    path = Path(pipeline)
    text = path.read_text(encoding="utf-8")
    found = {}
    for line in text.splitlines():
        m = _TOP_LEVEL.match(line)
        if m and m.group(1) not in found:
            found[m.group(1)] = _scalar(m.group(2))
    base = Path(os.path.abspath(path)).parent
    cache_dir = found.get("cache_dir")
    return {
        "name": found.get("name") or path.stem,
        "cache_dir": str(base / os.path.expanduser(cache_dir)) if cache_dir else None,
    }


def safe_name(s: str) -> str:
    """A pipeline or instance name as the run index spells it in file names."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-_=.," else "_" for c in s)


def split_target(target: str) -> tuple:
    """`STAGE[KEY].OUTPUT` → (`STAGE[KEY]`, `OUTPUT` or None), as `saepipe path`
    reads it: stage names hold only letters, digits, `_` and `-`, so the
    instance ends at its `]` or at the first `.`."""
    m = re.match(r"^([A-Za-z0-9_-]+(?:\[[^\]]*\])?)(?:\.(.+))?$", target)
    if not m:
        raise ValueError(f"`{target}` is not STAGE, STAGE[KEY] or either followed by .OUTPUT")
    return m.group(1), m.group(2)


class Artifact:
    """One published artifact: its key, directory and manifest."""

    def __init__(self, cache: Optional["Cache"], key: str, dir: Path, manifest: dict):
        self.cache = cache
        self.key = key
        #: The artifact's directory (its current generation, resolved from `artifacts/<key>`).
        self.dir = dir
        #: The parsed `_manifest.json`.
        self.manifest = manifest

    @classmethod
    def open(cls, dir: PathLike, cache: Optional["Cache"] = None) -> "Artifact":
        """The artifact in directory `dir` (an `artifacts/<key>` entry, a
        generation, or an exported artifact's directory holding `_saepipe.json`)."""
        link = Path(dir)
        real = Path(os.path.realpath(link))
        for name in MANIFEST_FILES:
            p = real / name
            if p.is_file():
                manifest = json.loads(p.read_text(encoding="utf-8"))
                v = manifest.get("format_version")
                if v != MANIFEST_FORMAT_VERSION:
                    raise SaepipeError(
                        f"{p}: manifest format version {v} is not supported "
                        f"(this package reads version {MANIFEST_FORMAT_VERSION})"
                    )
                return cls(cache, manifest["key"], real, manifest)
        export = real / "_saepipe.json"
        if export.is_file():
            d = json.loads(export.read_text(encoding="utf-8"))
            m = dict(d.get("artifact", {}))
            m.setdefault("files", d.get("files", []))
            return cls(cache, m.get("key", ""), real, m)
        raise NotCachedError(f"{link} holds no saepipe manifest ({' or '.join(MANIFEST_FILES)}) or _saepipe.json")

    @property
    def op(self) -> str:
        """The op (stage kind) that produced it: `train_sae`, `collect_activations`, ..."""
        return self.manifest.get("op", "")

    @property
    def stage(self) -> str:
        """The stage instance that first produced it (an identical stage of
        another pipeline reuses the artifact under its own name)."""
        return self.manifest.get("stage", "")

    @property
    def params(self) -> dict:
        return self.manifest.get("params") or {}

    @property
    def metrics(self) -> dict:
        """The summary numbers the op reported (the manifest's `metrics`)."""
        return self.manifest.get("metrics") or {}

    @property
    def inputs(self) -> dict:
        """Input label → key of the artifact it read."""
        return self.manifest.get("inputs") or {}

    @property
    def files(self) -> list:
        """Every payload file, relative to `dir` (`/`-separated), sorted."""
        return [f["path"] for f in self.manifest.get("files", [])]

    def path(self, output: str) -> Path:
        """A file or folder inside the artifact (`losses.parquet`, `sae`)."""
        p = self.dir / output
        if not p.exists():
            names = sorted({f.split("/")[0] for f in self.files})
            close = difflib.get_close_matches(output, names, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else f" (it has: {', '.join(names)})"
            raise FileNotFoundError(f"artifact {self.key[:12]} ({self.op}) has no `{output}`{hint}")
        return p

    def input(self, label: str) -> "Artifact":
        """The artifact this one read as input `label` (e.g. `activations`)."""
        if self.cache is None:
            raise SaepipeError("this artifact was opened without its cache")
        try:
            key = self.inputs[label]
        except KeyError:
            raise KeyError(f"artifact {self.key[:12]} has no input `{label}` (inputs: {', '.join(self.inputs)})") from None
        return self.cache.artifact(key)

    def __fspath__(self) -> str:
        return str(self.dir)

    def __repr__(self) -> str:
        return f"Artifact(key={self.key[:16]}…, op={self.op!r}, stage={self.stage!r}, dir={str(self.dir)!r})"


class Cache:
    """A saepipe cache directory.

    `path` defaults to what the `saepipe` command uses without `--cache-dir`:
    `$SAEPIPE_CACHE`, else `./cache` (the pipeline's own `cache_dir:` counts in
    `Cache.for_pipeline`)."""

    def __init__(self, path: Optional[PathLike] = None):
        self.root = Path(path) if path is not None else default_cache_dir()
        if not (self.root / "artifacts").is_dir():
            hint = "" if (self.root / "saepipe-cache.json").exists() else " (not a saepipe cache: no saepipe-cache.json)"
            raise NotCachedError(f"{self.root} has no artifacts/ directory{hint}")

    @classmethod
    def for_pipeline(cls, pipeline: PathLike, path: Optional[PathLike] = None) -> "Cache":
        """The cache `saepipe run PIPELINE` uses: `path` if given, else
        `$SAEPIPE_CACHE`, else the pipeline's `cache_dir:`, else `./cache`."""
        return cls(path if path is not None else default_cache_dir(pipeline))

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    # -- by key ---------------------------------------------------------------------

    def keys(self) -> list:
        """Keys of every entry of `artifacts/`, sorted."""
        out = []
        for e in os.scandir(self.root / "artifacts"):
            if len(e.name) == KEY_HEX_LEN and all(c in "0123456789abcdef" for c in e.name):
                out.append(e.name)
        return sorted(out)

    def artifacts(self) -> Iterator[Artifact]:
        """Every published artifact (entries without a readable manifest are skipped, as saepipe does)."""
        for key in self.keys():
            try:
                yield self.artifact(key)
            except (SaepipeError, OSError, ValueError):
                continue

    def artifact(self, key: str) -> Artifact:
        """The artifact with key `key` or the one key starting with `key` (at least 4 hex digits)."""
        k = key.strip().lower()
        if not k or any(c not in "0123456789abcdef" for c in k) or len(k) > KEY_HEX_LEN:
            raise ValueError(f"`{key}` is not a key prefix (hex digits)")
        if len(k) < KEY_HEX_LEN:
            matches = [x for x in self.keys() if x.startswith(k)]
            if not matches:
                raise NotCachedError(f"no artifact key starts with `{k}` in {self.root}")
            if len(matches) > 1:
                shown = ", ".join(m[:12] for m in matches[:5])
                raise NotCachedError(f"`{k}` is ambiguous: {len(matches)} keys start with it ({shown}…)")
            k = matches[0]
        entry = self.root / "artifacts" / k
        if not entry.exists():
            raise NotCachedError(f"artifact {k} is not in {self.root}")
        a = Artifact.open(entry, cache=self)
        if a.key != k:
            raise SaepipeError(f"{entry}: its manifest names key {a.key}, not {k}")
        return a

    # -- by pipeline and stage instance --------------------------------------------

    def pipelines(self) -> list:
        """Pipeline names (as spelled in file names) the run index knows."""
        d = self.root / "index"
        return sorted(e.name for e in os.scandir(d) if e.is_dir()) if d.is_dir() else []

    def instances(self, pipeline: str) -> list:
        """Stage instance names (as spelled in file names) the run index has for `pipeline`."""
        d = self.root / "index" / safe_name(pipeline)
        if not d.is_dir():
            return []
        return sorted(re.sub(r"-[0-9a-f]{8}\.json$", "", e.name) for e in os.scandir(d) if e.name.endswith(".json"))

    def _index_file(self, pipeline: str, instance: str) -> Path:
        d = self.root / "index" / safe_name(pipeline)
        data = instance.encode()
        if len(data) <= CHUNK_LEN:
            return d / f"{safe_name(instance)}-{blake3_hex(data)[:8]}.json"
        found = sorted(d.glob(f"{glob_escape(safe_name(instance))}-????????.json"))
        if len(found) == 1:
            return found[0]
        return d / f"{safe_name(instance)}-unknown.json"

    def stage(self, pipeline: str, instance: str) -> Artifact:
        """The artifact stage instance `instance` (`sae`, `train[step1000]`) of
        the pipeline named `pipeline` (its `name:`) last built or reused on
        this cache, from the run index. That is the artifact of the last run
        of that instance, which need not be what the pipeline would build now
        (after an edit or other `--set` values); `find(..., saepipe=...)` asks
        the `saepipe` command for the exact answer."""
        p = self._index_file(pipeline, instance)
        if not p.is_file():
            known = self.pipelines()
            if safe_name(pipeline) not in known:
                close = difflib.get_close_matches(safe_name(pipeline), known, n=1)
                hint = f"; did you mean `{close[0]}`?" if close else f"; it knows: {', '.join(known) or 'none'}"
                raise NotCachedError(f"the run index of {self.root} has no pipeline named `{pipeline}`{hint}")
            names = self.instances(pipeline)
            close = difflib.get_close_matches(safe_name(instance), names, n=1)
            hint = f"; did you mean `{close[0]}`?" if close else f"; it has: {', '.join(names)}"
            raise NotCachedError(f"no run of `{instance}` in pipeline `{pipeline}` is recorded in {self.root}{hint}")
        key = json.loads(p.read_text(encoding="utf-8"))["key"]
        try:
            return self.artifact(key)
        except NotCachedError:
            raise NotCachedError(
                f"`{instance}` of pipeline `{pipeline}` last built {key[:12]}, which is no longer in {self.root}"
            ) from None

    def find(
        self,
        pipeline: PathLike,
        instance: str,
        saepipe: Union[None, bool, PathLike] = None,
        set: Optional[dict] = None,
    ) -> Artifact:
        """The artifact of stage instance `instance` of the pipeline file `pipeline`.

        By default from the run index, under the file's `name:` (see `stage`).
        With `saepipe=True` (the `saepipe` on PATH) or the path of a `saepipe`
        binary, it runs `saepipe path PIPELINE INSTANCE --cache-dir CACHE`
        instead, which computes the instance's key for the pipeline as it is now
        (with `set` as `--set NAME=VALUE` overrides) and never computes anything."""
        inst, output = split_target(instance)
        if output is not None:
            raise ValueError(f"`{instance}` names an output; use Cache.path for files inside an artifact")
        if saepipe:
            return Artifact.open(self._cli_path(pipeline, inst, saepipe, set), cache=self)
        if set:
            raise ValueError("`set` needs `saepipe=`: the run index does not know what other values would build")
        return self.stage(read_pipeline_header(pipeline)["name"], inst)

    def path(
        self,
        pipeline: PathLike,
        target: str,
        saepipe: Union[None, bool, PathLike] = None,
        set: Optional[dict] = None,
    ) -> Path:
        """`saepipe path PIPELINE STAGE[.OUTPUT]`: the artifact's directory, or a
        file or folder in it (`sae.losses.parquet`)."""
        inst, output = split_target(target)
        art = self.find(pipeline, inst, saepipe=saepipe, set=set)
        return art.path(output) if output else art.dir

    def _cli_path(self, pipeline: PathLike, instance: str, saepipe, set: Optional[dict]) -> Path:
        exe = shutil.which("saepipe") if saepipe is True else str(saepipe)
        if not exe:
            raise SaepipeError("no `saepipe` command on PATH; pass saepipe='/path/to/saepipe'")
        cmd = [exe, "path", str(pipeline), instance, "--cache-dir", str(self.root)]
        for name, value in (set or {}).items():
            cmd += ["--set", f"{name}={json.dumps(value) if not isinstance(value, str) else value}"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 3:
            raise NotCachedError(r.stderr.strip() or r.stdout.strip())
        if r.returncode != 0:
            raise SaepipeError(f"`{' '.join(cmd)}` failed (exit {r.returncode}): {r.stderr.strip()}")
        return Path(r.stdout.strip())


def glob_escape(s: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", s)


def find(pipeline: PathLike, instance: str, cache: Optional[PathLike] = None, **kw) -> Artifact:
    """`Cache.for_pipeline(pipeline, cache).find(pipeline, instance, **kw)`."""
    return Cache.for_pipeline(pipeline, cache).find(pipeline, instance, **kw)


def as_artifact_dir(x: Union[Artifact, PathLike]) -> Path:
    """The directory of an `Artifact` or a path."""
    return Path(x.dir) if isinstance(x, Artifact) else Path(x)
