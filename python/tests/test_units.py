"""Tests of the parts that need no saepipe cache: BLAKE3 file names, the
safetensors reader, the numpy coder against a plain per-row reference, target
parsing, pipeline headers and the build backend's metadata."""

import json
import os
import struct
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

import saepipe
from saepipe._blake3 import blake3_hex
from saepipe.cache import read_pipeline_header, safe_name, split_target
from saepipe.coder import Coder

HERE = Path(__file__).resolve().parent


def write_safetensors(path, tensors, dtypes=None):
    """A safetensors file written by hand (the format's spec), for the reader to read back."""
    dtypes = dtypes or {}
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        dt = dtypes.get(name, "F32")
        if dt == "F32":
            raw = np.asarray(arr, "<f4").tobytes()
        elif dt == "F16":
            raw = np.asarray(arr, "<f2").tobytes()
        elif dt == "BF16":
            raw = (np.asarray(arr, "<f4").view("<u4") >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": dt, "shape": list(np.shape(arr)), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class Blake3(unittest.TestCase):
    def test_official_vectors(self):
        # From BLAKE3's test_vectors.json (input byte i is i % 251), first 32 bytes.
        vectors = {
            0: "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            1: "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213",
            63: "e9bc37a594daad83be9470df7f7b3798297c3d834ce80ba85d6e207627b7db7b",
            64: "4eed7141ea4a5cd4b788606bd23f46e212af9cacebacdc7d1f4c6dc7f2511b98",
            65: "de1e5fa0be70df6d2be8fffd0e99ceaa8eb6e8c93a63f2d8d1c30ecb6b263dee",
            1023: "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11",
            1024: "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7",
        }
        for n, want in vectors.items():
            self.assertEqual(blake3_hex(bytes(i % 251 for i in range(n))), want, n)
        with self.assertRaises(ValueError):
            blake3_hex(bytes(1025))

    def test_index_names(self):
        self.assertEqual(safe_name("sae[step1000]"), "sae_step1000_")
        self.assertEqual(safe_name("t[a=1,b=0.5]"), "t_a=1,b=0.5_")
        self.assertEqual(safe_name("x/ü"), "x__")


class Targets(unittest.TestCase):
    def test_split(self):
        self.assertEqual(split_target("sae"), ("sae", None))
        self.assertEqual(split_target("sae.losses.parquet"), ("sae", "losses.parquet"))
        self.assertEqual(split_target("train[0.1]"), ("train[0.1]", None))
        self.assertEqual(split_target("train[a=1,b=2].sae/cfg.json"), ("train[a=1,b=2]", "sae/cfg.json"))
        with self.assertRaises(ValueError):
            split_target("no spaces")

    def test_pipeline_header(self):
        with tempfile.TemporaryDirectory() as t:
            p = Path(t) / "sub" / "my_pipe.yaml"
            p.parent.mkdir()
            p.write_text("version: 1\nstages:\n  a:\n    name: inner\n")
            self.assertEqual(read_pipeline_header(p), {"name": "my_pipe", "cache_dir": None})
            p.write_text("# c\nname: 'sweep'  \ncache_dir: ../c  # shared\nstages: {}\n")
            self.assertEqual(read_pipeline_header(p), {"name": "sweep", "cache_dir": str(Path(t) / "sub" / "../c")})
            env = os.environ.pop("SAEPIPE_CACHE", None)
            try:
                self.assertEqual(saepipe.default_cache_dir(p), Path(t) / "sub" / "../c")
                self.assertEqual(saepipe.default_cache_dir(), Path("cache"))
                os.environ["SAEPIPE_CACHE"] = "/elsewhere"
                self.assertEqual(saepipe.default_cache_dir(p), Path("/elsewhere"))
            finally:
                os.environ.pop("SAEPIPE_CACHE", None)
                if env is not None:
                    os.environ["SAEPIPE_CACHE"] = env


class Safetensors(unittest.TestCase):
    def test_dtypes_and_metadata(self):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((3, 5)).astype(np.float32)
        b = rng.standard_normal(7).astype(np.float32)
        with tempfile.TemporaryDirectory() as t:
            f = Path(t) / "w.safetensors"
            write_safetensors(f, {"a": a, "h": b, "bf": b, "s": np.float32(2.5)}, {"h": "F16", "bf": "BF16"})
            got, meta = saepipe.read_safetensors(f)
        self.assertEqual(meta, {"format": "pt"})
        np.testing.assert_array_equal(got["a"], a)
        self.assertEqual(got["h"].dtype, np.float16)
        np.testing.assert_array_equal(got["h"], b.astype(np.float16))
        self.assertEqual(got["bf"].dtype, np.float32)
        np.testing.assert_array_equal(got["bf"], (b.view(np.uint32) & 0xFFFF0000).view(np.float32))
        self.assertEqual(got["s"].shape, ())


def reference_forward(c, t, x):
    """One row at a time, written from the SAELens definitions (docs/formats.md)."""
    fs, outs = [], []
    for row in x.astype(np.float64):
        xin = row.copy()
        if c["normalize"] == "constant_norm_rescale":
            a = np.sqrt(len(row)) / np.linalg.norm(row)
            xin = row * a
        elif c["normalize"] == "layer_norm":
            mu, sd = row.mean(), row.std(ddof=1)
            xin = (row - mu) / (sd + 1e-5)
        if c["b_dec_in"]:
            xin = xin - t["b_dec"]
        if c["arch"] == "gated":
            xw = xin @ t["W_enc"]
            f = np.where(xw + t["b_gate"] > 0, np.maximum(xw * np.exp(t["r_mag"]) + t["b_mag"], 0), 0)
        else:
            pre = xin @ t["W_enc"] + t["b_enc"]
            if c["arch"] in ("standard", "transcoder", "skip_transcoder"):
                f = np.maximum(pre, 0)
            elif c["arch"] == "jumprelu":
                f = np.where(pre > t["threshold"], np.maximum(pre, 0), 0)
            elif c["arch"] in ("topk", "topk_transcoder"):
                keep = np.argsort(-pre, kind="stable")[: c["k"]]
                f = np.zeros_like(pre)
                f[keep] = np.maximum(pre[keep], 0)
        out = f @ t["W_dec"] + t["b_dec"]
        if c["normalize"] == "constant_norm_rescale" and "transcoder" not in c["arch"]:
            out = out / a
        elif c["normalize"] == "layer_norm" and "transcoder" not in c["arch"]:
            out = out * sd + mu
        if "W_skip" in t:
            out = out + t["W_skip"] @ row
        fs.append(f)
        outs.append(out)
    return np.array(fs), np.array(outs)


class NumpyCoder(unittest.TestCase):
    def make(self, arch, normalize="none", d_in=6, d_sae=10, d_out=None, k=3, seed=1):
        rng = np.random.default_rng(seed)
        transcoder = "transcoder" in arch
        d_out = d_out or (5 if transcoder else d_in)
        t = {
            "W_enc": rng.standard_normal((d_in, d_sae)).astype(np.float32),
            "W_dec": rng.standard_normal((d_sae, d_out)).astype(np.float32),
            "b_dec": rng.standard_normal(d_out).astype(np.float32),
        }
        if arch == "gated":
            for n in ("b_gate", "b_mag", "r_mag"):
                t[n] = (0.3 * rng.standard_normal(d_sae)).astype(np.float32)
        else:
            t["b_enc"] = (0.3 * rng.standard_normal(d_sae)).astype(np.float32)
        if arch == "jumprelu":
            t["threshold"] = np.abs(rng.standard_normal(d_sae)).astype(np.float32)
        if arch == "skip_transcoder":
            t["W_skip"] = rng.standard_normal((d_out, d_in)).astype(np.float32)
        cfg = {"architecture": arch, "d_in": d_in, "d_sae": d_sae, "dtype": "float32",
               "apply_b_dec_to_input": not transcoder, "normalize_activations": normalize,
               "metadata": {"sae_lens_version": "6.0.0", "hook_name": "blocks.0.hook_resid_pre"}}  # fmt: skip
        if transcoder:
            cfg["d_out"] = d_out
        if "topk" in arch:
            cfg["k"] = k
        x = (rng.standard_normal((17, d_in)) * 2 + 0.5).astype(np.float32)
        c = {"arch": arch, "normalize": normalize, "b_dec_in": not transcoder, "k": k}
        return Coder(cfg, t), t, x, c

    def check(self, *args, **kw):
        coder, t, x, c = self.make(*args, **kw)
        f, out = coder.forward(x)
        rf, rout = reference_forward(c, {k: v.astype(np.float64) for k, v in t.items()}, x)
        np.testing.assert_allclose(f, rf, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(out, rout, rtol=1e-4, atol=1e-4)
        self.assertEqual(f.dtype, np.float32)
        # Leading dimensions are kept; decode of encode is the forward output.
        f3 = coder.encode(x[:16].reshape(2, 8, -1))
        self.assertEqual(f3.shape, (2, 8, coder.d_sae))
        np.testing.assert_allclose(f3.reshape(16, -1), f[:16], rtol=1e-6, atol=1e-6)
        return coder, f

    def test_architectures(self):
        for arch in ("standard", "topk", "jumprelu", "gated", "transcoder", "skip_transcoder", "topk_transcoder"):
            with self.subTest(arch=arch):
                coder, f = self.check(arch)
                if "topk" in arch:
                    self.assertTrue(((f > 0).sum(axis=1) <= 3).all())
                self.assertEqual(coder.is_transcoder, "transcoder" in arch)

    def test_normalizations(self):
        for norm in ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm"):
            for arch in ("standard", "transcoder"):
                with self.subTest(norm=norm, arch=arch):
                    self.check(arch, normalize=norm)

    def test_decode_needs_x_where_saelens_does(self):
        coder, t, x, _ = self.make("standard", normalize="constant_norm_rescale")
        with self.assertRaises(ValueError):
            coder.decode(coder.encode(x))
        coder, t, x, _ = self.make("skip_transcoder")
        with self.assertRaises(ValueError):
            coder.decode(coder.encode(x))
        coder, t, x, _ = self.make("topk")
        np.testing.assert_allclose(coder.decode(coder.encode(x)), coder(x), rtol=1e-6)

    def test_rejects_what_it_cannot_run(self):
        coder, t, x, _ = self.make("topk")
        cfg = dict(coder.cfg, architecture="mystery")
        with self.assertRaisesRegex(ValueError, "mystery"):
            Coder(cfg, t)
        bad = dict(t, W_enc=t["W_enc"][:, :5])
        with self.assertRaisesRegex(ValueError, "W_enc"):
            Coder(coder.cfg, bad)
        with self.assertRaisesRegex(ValueError, "last dimension"):
            coder.encode(np.zeros((2, 7)))

    def test_pre6_flat_config(self):
        coder, t, x, _ = self.make("topk")
        flat = {"d_in": 6, "d_sae": 10, "hook_point": "blocks.2.hook_resid_pre", "activation_fn_str": "topk",
                "activation_fn_kwargs": {"k": 3}, "apply_b_dec_to_input": True}  # fmt: skip
        old = Coder(flat, t)
        self.assertEqual((old.architecture, old.k, old.hook_name), ("topk", 3, "blocks.2.hook_resid_pre"))
        np.testing.assert_allclose(old(x), coder(x), rtol=1e-6)

    def test_load_from_a_directory(self):
        coder, t, x, _ = self.make("jumprelu")
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "sae").mkdir()
            (Path(d) / "sae" / "cfg.json").write_text(json.dumps(coder.cfg))
            write_safetensors(Path(d) / "sae" / "sae_weights.safetensors", t)
            write_safetensors(Path(d) / "sae" / "sparsity.safetensors", {"sparsity": np.full(10, -2.0)})
            loaded = saepipe.load_sae(d, backend="numpy")
            self.assertIsInstance(loaded, Coder)
            np.testing.assert_array_equal(loaded(x), coder(x))
            np.testing.assert_array_equal(loaded.log_sparsity, np.full(10, -2.0, np.float32))
            with self.assertRaises(FileNotFoundError):
                saepipe.load_sae(Path(d) / "sae" / "nothing")


class Backend(unittest.TestCase):
    def test_wheel_metadata_matches_pyproject(self):
        sys.path.insert(0, str(HERE.parent / "_backend"))
        try:
            import saepipe_build
        finally:
            sys.path.pop(0)
        p = saepipe_build._project()
        self.assertEqual((p["name"], p["version"]), ("saepipe", saepipe.__version__))
        self.assertEqual(p["dependencies"], ["numpy", "pyarrow"])
        with tempfile.TemporaryDirectory() as d:
            import zipfile

            name = saepipe_build.build_wheel(d)
            names = zipfile.ZipFile(Path(d) / name).namelist()
        self.assertIn("saepipe/coder.py", names)
        self.assertIn("saepipe-0.1.0.dist-info/RECORD", names)


if __name__ == "__main__":
    unittest.main()
