"""Feature-matching benchmark: the scipy route vs saepipe-matching on the same data.

The scipy route is what researchers run today: column-normalize the sparse activations,
A^T B with scipy.sparse, densify to float64, scipy.optimize.linear_sum_assignment
(maximize=True). Dead features (never firing) are dropped on both sides.

Usage, from the repository root (N = number of features):
  cargo build --release -p saepipe-matching --example bench_match
  target/release/examples/bench_match gen target/match_N N
  .venv/bin/python scripts/bench/matching_scipy.py target/match_N [--rust target/release/examples/bench_match]

With --rust, the Rust matcher runs first in its own process on the same files and the
script prints both timings, peak RSS values and the speed ratio.
"""

import argparse
import json
import os
import resource
import subprocess
import time

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment


def read_csr(path):
    with open(path, "rb") as f:
        head = f.read(36)
        if head[:8] != b"SAEPCSR\0":
            raise ValueError(f"{path}: not a saepipe CSR activation file")
        version = int(np.frombuffer(head[8:12], "<u4")[0])
        if version != 1:
            raise ValueError(f"{path}: unsupported version {version}")
        n_tokens, n_features, nnz = (int(x) for x in np.frombuffer(head[12:36], "<u8"))
        row_ptr = np.fromfile(f, "<u8", n_tokens + 1).astype(np.int64)
        indices = np.fromfile(f, "<u4", nnz).astype(np.int32)
        values = np.fromfile(f, "<f4", nnz)
    return sp.csr_matrix((values, indices, row_ptr), shape=(n_tokens, n_features))


def normalized_live(m):
    m = m.tocsc().astype(np.float64)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=0)).ravel())
    live = np.flatnonzero(norms > 0)
    m = m[:, live] @ sp.diags(1.0 / norms[live])
    return m, live


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--rust", help="path of the bench_match example binary to compare against")
    ap.add_argument("--skip-scipy", action="store_true")
    args = ap.parse_args()

    rust = None
    if args.rust:
        out = subprocess.run([args.rust, "match", args.dir], check=True, capture_output=True, text=True).stdout
        print(out.rstrip())
        rust = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
    if args.skip_scipy:
        return

    a = read_csr(os.path.join(args.dir, "a.bin"))
    b = read_csr(os.path.join(args.dir, "b.bin"))
    rss_loaded = peak_rss_mb()
    t0 = time.perf_counter()
    an, _ = normalized_live(a)
    bn, _ = normalized_live(b)
    s = (an.T @ bn).toarray()  # float64, n_live_a x n_live_b
    t_sim = time.perf_counter() - t0
    t1 = time.perf_counter()
    rows, cols = linear_sum_assignment(s, maximize=True)
    t_lsa = time.perf_counter() - t1
    total_time = time.perf_counter() - t0
    total = float(s[rows, cols].sum())
    print(
        f"scipy: {s.shape[0]} x {s.shape[1]} live features: similarity+densify {t_sim:.2f} s, "
        f"linear_sum_assignment {t_lsa:.2f} s, total {total_time:.2f} s, peak RSS {peak_rss_mb():.0f} MB "
        f"(after loading inputs {rss_loaded:.0f} MB), total similarity {total:.6f}"
    )
    if rust is not None:
        rel = abs(rust["total"] - total) / max(1.0, abs(total))
        print(
            f"ratio: scipy/ours = {total_time / rust['seconds']:.1f}x time, "
            f"{peak_rss_mb() / rust['peak_rss_mb']:.1f}x peak RSS; totals agree to {rel:.1e} relative"
        )


if __name__ == "__main__":
    main()
