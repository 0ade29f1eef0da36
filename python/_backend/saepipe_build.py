"""A PEP 517 build backend for this pure-Python package, kept in the tree so
that `pip install ./python` needs no build tools from a package index (it
works offline once numpy and pyarrow are installed). It writes a plain
`py3-none-any` wheel of `src/saepipe`, and editable wheels (`pip install -e`)
as a `.pth` file pointing at `src/`. Project metadata is read from
pyproject.toml's `[project]` table."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def _project() -> dict:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib

        return tomllib.loads(text)["project"]
    except ImportError:  # Python < 3.11: the few fields used here, written simply in pyproject.toml
        section = text.split("[project]", 1)[1].split("\n[", 1)[0]
        out = {}
        for key in ("name", "version", "description", "requires-python"):
            m = re.search(rf'^{key}\s*=\s*"([^"]*)"', section, re.M)
            if m:
                out[key] = m.group(1)
        m = re.search(r"^dependencies\s*=\s*\[(.*?)\]", section, re.M | re.S)
        out["dependencies"] = re.findall(r'"([^"]+)"', m.group(1)) if m else []
        extras = text.split("[project.optional-dependencies]", 1)
        out["optional-dependencies"] = {}
        if len(extras) > 1:
            for name, body in re.findall(r"^(\w+)\s*=\s*\[(.*?)\]", extras[1].split("\n[", 1)[0], re.M | re.S):
                out["optional-dependencies"][name] = re.findall(r'"([^"]+)"', body)
        return out


def _metadata(p: dict) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {p['name']}",
        f"Version: {p['version']}",
        f"Summary: {p.get('description', '')}",
    ]
    if p.get("requires-python"):
        lines.append(f"Requires-Python: {p['requires-python']}")
    lines += [f"Requires-Dist: {d}" for d in p.get("dependencies", [])]
    for extra, deps in p.get("optional-dependencies", {}).items():
        lines.append(f"Provides-Extra: {extra}")
        lines += [f'Requires-Dist: {d}; extra == "{extra}"' for d in deps]
    return "\n".join(lines) + "\n"


def _dist_info(p: dict) -> str:
    return f"{p['name'].replace('-', '_')}-{p['version']}.dist-info"


def _wheel(wheel_directory: str, files: dict) -> str:
    p = _project()
    name = f"{p['name'].replace('-', '_')}-{p['version']}-py3-none-any.whl"
    info = _dist_info(p)
    files = dict(files)
    files[f"{info}/METADATA"] = _metadata(p).encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: saepipe_build\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in files.items():
            z.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return name


def _sources() -> dict:
    out = {}
    for f in sorted((SRC / "saepipe").rglob("*")):
        if f.is_file() and f.suffix in (".py", ".typed") and "__pycache__" not in f.parts:
            out[f.relative_to(SRC).as_posix()] = f.read_bytes()
    return out


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    p = _project()
    d = Path(metadata_directory) / _dist_info(p)
    d.mkdir(parents=True, exist_ok=True)
    (d / "METADATA").write_text(_metadata(p), encoding="utf-8")
    return d.name


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, _sources())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, {"saepipe_editable.pth": (str(SRC) + "\n").encode()})


def build_sdist(sdist_directory, config_settings=None):
    p = _project()
    base = f"{p['name'].replace('-', '_')}-{p['version']}"
    name = f"{base}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for f in sorted(ROOT.rglob("*")):
            rel = f.relative_to(ROOT)
            if f.is_file() and "__pycache__" not in rel.parts and not rel.parts[0].startswith((".", "build")):
                tar.add(f, arcname=f"{base}/{rel.as_posix()}")
        meta = ("\n".join(_metadata(p).splitlines()) + "\n").encode()
        ti = tarfile.TarInfo(f"{base}/PKG-INFO")
        ti.size = len(meta)
        tar.addfile(ti, io.BytesIO(meta))
    return name
