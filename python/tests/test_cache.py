"""Tests against a cache made by saepipe itself: tests/python_package.rs runs
a small pipeline (token table, an f32 and an f16 activation store, SAEs of
several architectures, a transcoder, an evaluation), records what saepipe's
own code says about each artifact in a JSON file, and runs these tests with
`SAEPIPE_TEST_EXPECT` naming it. Without it they skip."""

import json
import os
import unittest
from pathlib import Path

import numpy as np

import saepipe

EXPECT = os.environ.get("SAEPIPE_TEST_EXPECT")


@unittest.skipUnless(EXPECT, "needs a saepipe-made cache (tests/python_package.rs sets SAEPIPE_TEST_EXPECT)")
class WithCache(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.e = json.loads(Path(EXPECT).read_text())
        cls.cache = saepipe.Cache(cls.e["cache"])
        cls.pipeline = cls.e["pipeline"]
        cls.hook = cls.e["hook"]

    def art(self, instance):
        return self.cache.find(self.pipeline, instance)

    def test_runs_the_installed_copy(self):
        site = os.environ.get("SAEPIPE_TEST_SITE")
        if not site:
            self.skipTest("SAEPIPE_TEST_SITE not set")
        self.assertTrue(Path(saepipe.__file__).resolve().is_relative_to(Path(site).resolve()), saepipe.__file__)

    # -- finding artifacts ----------------------------------------------------------

    def test_default_cache_is_the_clis(self):
        # The test runs in the pipeline's folder with no $SAEPIPE_CACHE: ./cache, as `saepipe run` uses.
        self.assertNotIn("SAEPIPE_CACHE", os.environ)
        self.assertEqual(saepipe.Cache().root.resolve(), Path(self.e["cache"]).resolve())
        self.assertEqual(saepipe.find(self.pipeline, "acts").key, self.e["keys"]["acts"])

    def test_run_index_gives_the_keys_saepipe_path_gives(self):
        name = self.e["pipeline_name"]
        self.assertEqual(saepipe.read_pipeline_header(self.pipeline)["name"], name)
        for instance, key in self.e["keys"].items():
            with self.subTest(instance=instance):
                self.assertEqual(self.cache.find(self.pipeline, instance).key, key)
                a = self.cache.stage(name, instance)
                self.assertEqual(a.key, key)
                self.assertEqual(a.manifest["key"], key)
                self.assertEqual(a.stage, instance)
                self.assertEqual(self.cache.artifact(key[:10]).key, key)
                self.assertTrue((a.dir / "_manifest.json").is_file())
        self.assertEqual(sorted(self.cache.keys()), sorted(set(self.e["keys"].values())))

    def test_saepipe_path_through_the_cli(self):
        exe = os.environ.get("SAEPIPE_BIN")
        if not exe:
            self.skipTest("SAEPIPE_BIN not set")
        for instance in ("acts", "sae[topk]"):
            self.assertEqual(self.cache.find(self.pipeline, instance, saepipe=exe).key, self.e["keys"][instance])
        p = self.cache.path(self.pipeline, "sae[topk].losses.parquet", saepipe=exe)
        self.assertEqual(p, self.art("sae[topk]").dir / "losses.parquet")
        # Other --set values: a key this cache does not hold (exit 3 from `saepipe path`).
        with self.assertRaises(saepipe.NotCachedError):
            self.cache.find(self.pipeline, "tokens", saepipe=exe, set={"max_tokens": 1024})

    def test_artifact_fields_and_errors(self):
        a = self.art("sae[topk]")
        self.assertEqual(a.op, "train_sae")
        self.assertEqual(a.params["architecture"], "topk")
        self.assertEqual(a.input("activations").key, self.e["keys"]["acts"])
        self.assertEqual(sorted(a.files), sorted(self.e["files"]["sae[topk]"]))
        self.assertEqual(self.cache.path(self.pipeline, "sae[topk].sae/cfg.json"), a.dir / "sae" / "cfg.json")
        with self.assertRaisesRegex(FileNotFoundError, "did you mean `losses.parquet`"):
            a.path("loses.parquet")
        with self.assertRaisesRegex(saepipe.NotCachedError, "did you mean `sae_topk_`"):
            self.cache.find(self.pipeline, "sae[topkk]")
        with self.assertRaisesRegex(saepipe.NotCachedError, "no pipeline named `other`"):
            self.cache.stage("other", "acts")
        with self.assertRaisesRegex(saepipe.NotCachedError, "no artifact key starts with"):
            self.cache.artifact("0" * 20)
        with self.assertRaises(ValueError):
            self.cache.artifact("xyz")
        ambiguous = os.path.commonprefix([k for k in self.cache.keys()])
        if not ambiguous:  # the keys differ in their first digit: some digit starts two of them
            firsts = [k[0] for k in self.cache.keys()]
            ambiguous = next((c for c in firsts if firsts.count(c) > 1), None)
        if ambiguous:
            with self.assertRaisesRegex(saepipe.NotCachedError, "ambiguous"):
                self.cache.artifact(ambiguous)

    # -- activation stores ----------------------------------------------------------

    def check_store(self, instance, want):
        s = saepipe.ActivationStore(self.art(instance))
        self.assertEqual(s.num_rows, want["rows"])
        self.assertEqual(s.hooks, want["hooks"])
        self.assertEqual(s.dtype, want["dtype"])
        d = s.hook_dims[self.hook]
        self.assertEqual(s.dataset().count_rows(), want["rows"])
        batches = list(s.iter_numpy(self.hook, batch_size=300))
        self.assertEqual([len(b) for b in batches], [300] * (want["rows"] // 300) + [want["rows"] % 300])
        acts = np.concatenate(batches)
        self.assertEqual(acts.dtype, np.float32)
        self.assertEqual(acts.shape, (want["rows"], d))
        for r, row in want["rows_at"].items():
            np.testing.assert_array_equal(acts[int(r)], np.array(row, np.float32), err_msg=f"row {r}")
        self.assertAlmostEqual(float(acts.astype(np.float64).sum()), want["sum"], delta=1e-6 * abs(want["sum"]) + 1e-3)
        np.testing.assert_array_equal(s.read_numpy(self.hook, 1000, 1100), acts[1000:1100])
        # Tokens and their places, in store order.
        acts2, seq, pos, token = next(s.iter_numpy(self.hook, batch_size=want["rows"], with_tokens=True))
        np.testing.assert_array_equal(acts2, acts)
        np.testing.assert_array_equal(token[: len(want["tokens"])], want["tokens"])
        np.testing.assert_array_equal(seq, np.arange(want["rows"]) // s.context_size)
        np.testing.assert_array_equal(pos, np.arange(want["rows"]) % s.context_size)
        np.testing.assert_array_equal(s.tokens()["token"], token)
        return acts

    def test_stores_read_as_saepipe_reads_them(self):
        a32 = self.check_store("acts", self.e["stores"]["acts"])
        a16 = self.check_store("acts16", self.e["stores"]["acts16"])
        # The f16 store holds the same activations, rounded.
        np.testing.assert_allclose(a16, a32, rtol=2e-3, atol=2e-3)
        self.assertFalse(np.array_equal(a16, a32))

    def test_store_is_a_pyarrow_dataset(self):
        s = saepipe.ActivationStore(self.art("acts"))
        t = s.dataset().to_table(columns=["seq", "pos", "token", self.hook])
        self.assertEqual(t.num_rows, s.num_rows)
        self.assertEqual(t.column(self.hook).type.list_size, s.hook_dims[self.hook])
        with self.assertRaisesRegex(KeyError, "no hook"):
            next(s.iter_numpy("blocks.9.hook_resid_pre"))
        with self.assertRaisesRegex(FileNotFoundError, "not an activation store"):
            saepipe.ActivationStore(self.art("tokens"))

    def test_iter_torch_needs_torch(self):
        s = saepipe.ActivationStore(self.art("acts"))
        try:
            import torch  # noqa: F401
        except ImportError:
            with self.assertRaisesRegex(ImportError, "needs torch"):
                next(s.iter_torch(self.hook))
        else:
            t = next(s.iter_torch(self.hook, batch_size=8))
            self.assertEqual(tuple(t.shape), (8, s.hook_dims[self.hook]))

    # -- coders ---------------------------------------------------------------------

    def test_coders_agree_with_saepipes(self):
        for instance, want in self.e["coders"].items():
            with self.subTest(instance=instance):
                c = saepipe.load_coder(self.art(instance))
                self.assertEqual(c.architecture, want["architecture"])
                self.assertEqual((c.d_in, c.d_sae, c.d_out), (want["d_in"], want["d_sae"], want["d_out"]))
                self.assertEqual(c.hook_name, want["hook_name"])
                x = np.array(want["x"], np.float32)
                f, out = c.forward(x)
                np.testing.assert_allclose(f, np.array(want["latents"]), rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(out, np.array(want["out"]), rtol=1e-4, atol=1e-5)
                self.assertEqual(int((f > 0).sum()), want["nnz"])

    def test_load_sae_without_saelens_is_the_numpy_coder(self):
        a = self.art("sae[topk]")
        sae = saepipe.load_sae(a, backend="numpy")
        self.assertIsInstance(sae, saepipe.Coder)
        self.assertEqual(sae.k, 4)
        if not saepipe.coder.saelens_available():
            self.assertIsInstance(saepipe.load_sae(a), saepipe.Coder)

    def test_coders_reproduce_evaluate_metrics(self):
        """Encoding the whole f32 store gives the evaluate stage's L0, MSE,
        explained variance and feature densities (it ran the same tokens,
        all counted)."""
        metrics = saepipe.read_metrics(self.art("evaluate"))
        features = saepipe.read_table(self.art("evaluate"), "features")
        x = np.concatenate(list(saepipe.ActivationStore(self.art("acts")).iter_numpy(self.hook)))
        x64 = x.astype(np.float64)
        self.assertEqual(list(metrics["coder"]), self.e["evaluated"])
        for _, row in metrics.iterrows():
            with self.subTest(coder=row["coder"]):
                self.assertEqual(row["n_tokens"], len(x))
                self.assertEqual(row["excluded_tokens"], "")
                c = saepipe.load_sae(self.art(row["coder"]), backend="numpy")
                f, out = c.forward(x)
                err = ((x64 - out) ** 2).sum(axis=1)
                l0 = (f > 0).sum(axis=1).mean()
                ev = 1 - err.mean() / ((x64**2).sum(axis=1).mean() - (x64.mean(axis=0) ** 2).sum())
                self.assertAlmostEqual(l0, row["l0"], delta=1e-3 * row["l0"])
                self.assertAlmostEqual(err.mean(), row["mse"], delta=1e-3 * row["mse"])
                self.assertAlmostEqual(ev, row["explained_variance"], delta=1e-3)
                density = features[features["coder"] == row["coder"]].sort_values("feature")["density"].to_numpy()
                np.testing.assert_allclose((f > 0).mean(axis=0), density, atol=2 / len(x))

    # -- tables and JSON ------------------------------------------------------------

    def test_tables_and_summaries(self):
        a = self.art("sae[topk]")
        losses = saepipe.read_table(a, "losses")
        self.assertEqual(len(losses), self.e["losses_rows"])
        self.assertIn("step", losses.columns)
        t = saepipe.read_table(a, "losses.parquet", pandas=False)
        self.assertEqual(t.num_rows, len(losses))
        summary = saepipe.read_summary(a)
        self.assertEqual(summary["architecture"], "topk")
        self.assertEqual(summary["d_sae"], 64)
        self.assertEqual(saepipe.read_json(a, "summary"), summary)
        tokens = saepipe.read_table(self.art("tokens"), "tokens")
        self.assertEqual(len(tokens), self.e["stores"]["acts"]["rows"] // 32)
        self.assertEqual(saepipe.table_metadata(self.art("tokens"), "tokens")["saepipe.format"], "tokens")
        with self.assertRaisesRegex(FileNotFoundError, "losses.parquet"):
            saepipe.read_table(a, "lossez")


if __name__ == "__main__":
    unittest.main()
