"""TopK SAE inference ("encode + top-k + decode") in plain PyTorch, the
baseline for crates/cuda/examples/bench_gpu_encode.rs (run both with
scripts/bench/gpu_encode.sh). The forward is what EleutherAI sparsify does at
inference: encoder in nn.Linear layout W_enc^T [d_sae, d_in], so
pre = (x - b_dec) @ W_enc + b_enc is one F.linear (addmm); torch.topk
(sorted=False); ReLU of the kept values; decode with F.embedding_bag
(mode="sum", per_sample_weights) + b_dec. f32 with TF32 off unless --tf32.

python3 scripts/bench/gpu_encode_torch.py [--shapes 768,32768,32 2048,131072,64]
    [--batch 4096] [--warmup 5] [--iters 20] [--tf32] [--device cuda|cpu]

CPU smoke test: --device cpu --shapes 64,512,8 --batch 128

Synthetic data follows the Rust example's distribution (a few shared
directions plus noise and a 0.1 offset; unit-norm uniform decoder rows,
W_enc = W_dec^T, b_enc ~ 0.01*U(-1,1), b_dec ~ 0.1 + 0.01*U(-1,1)) but from
torch's generator, so it is not bit-identical to the Rust data.

Peaks for the roofline figures: BENCH_PEAK_TFLOPS (67, H100 SXM f32
non-tensor), BENCH_PEAK_TF32_TFLOPS (494, TF32 tensor dense), BENCH_PEAK_TBPS
(3.35, HBM3). Prints one `RESULT impl=torch ...` line per shape.
"""

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F


def env_float(name, default):
    v = os.environ.get(name, "").strip()
    try:
        return float(v) if v else default
    except ValueError:
        sys.exit(f"gpu_encode_torch.py: error: {name}={v!r} is not a number")


def parse_shape(s):
    try:
        d_in, d_sae, k = (int(p) for p in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {s!r}: expected d_in,d_sae,k")
    if min(d_in, d_sae, k) <= 0 or k > d_sae:
        raise argparse.ArgumentTypeError(f"shape {s!r}: expected 0 < k <= d_sae")
    return d_in, d_sae, k


def cost(n, d_in, d_sae, k):
    """Same model as the Rust example: encoder GEMM FLOPs, and bytes for read
    x, read W_enc, write + read pre-activations, gather k W_dec rows per token,
    write the output."""
    flops = 2.0 * n * d_in * d_sae
    bytes_ = 4.0 * (n * d_in + d_in * d_sae + 2.0 * n * d_sae + n * k * d_in + n * d_in)
    return flops, bytes_


def uniform(shape, gen, dev):
    return torch.rand(shape, generator=gen, device=dev) * 2 - 1


def batches(count, n, d, gen, dev):
    """A few shared directions plus noise and a mean offset."""
    dirs = uniform((16, d), gen, dev)
    out = []
    for _ in range(count):
        a = torch.randint(0, 16, (n,), generator=gen, device=dev)
        b = uniform((n, 1), gen, dev)
        out.append(0.5 * uniform((n, d), gen, dev) + 2.0 * b * dirs[a] + 0.1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", type=parse_shape, nargs="+", default=[(768, 32768, 32), (2048, 131072, 64)], metavar="D_IN,D_SAE,K")
    ap.add_argument("--batch", type=int, default=int(os.environ.get("BENCH_BATCH", 4096)))
    ap.add_argument("--warmup", type=int, default=int(os.environ.get("BENCH_WARMUP", 5)))
    ap.add_argument("--iters", type=int, default=int(os.environ.get("BENCH_ITERS", 20)))
    ap.add_argument("--tf32", action="store_true", help="allow TF32 tensor-core matmuls (off: full f32)")
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: smoke test only)")
    a = ap.parse_args()
    if a.batch <= 0 or a.iters <= 0 or a.warmup < 0:
        ap.error("--batch and --iters must be > 0, --warmup >= 0")
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit(f"gpu_encode_torch.py: error: --device {a.device} but torch sees no CUDA GPU (torch {torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu for a smoke test")
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    peak_f32 = env_float("BENCH_PEAK_TFLOPS", 67.0)
    peak_tf32 = env_float("BENCH_PEAK_TF32_TFLOPS", 494.0)
    peak_tbps = env_float("BENCH_PEAK_TBPS", 3.35)
    print(f"peaks: f32 non-tensor {peak_f32:g} TFLOP/s (BENCH_PEAK_TFLOPS), TF32 tensor dense {peak_tf32:g} TFLOP/s (BENCH_PEAK_TF32_TFLOPS), HBM {peak_tbps:g} TB/s (BENCH_PEAK_TBPS); defaults are H100 SXM")
    print("cost model: FLOPs = encoder GEMM 2·n·d_in·d_sae; bytes = 4·(x + W_enc + 2·pre + n·k W_dec rows + out)")
    name = torch.cuda.get_device_name(dev) if cuda else "CPU (smoke test: the peaks do not apply)"
    print(f"device: {name}; torch {torch.__version__}; matmul {'TF32 (tensor cores) ON' if a.tf32 else 'f32, TF32 off'}; batch {a.batch} tokens, {a.warmup} warm-up + {a.iters} timed iterations")

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    n = a.batch
    for d_in, d_sae, k in a.shapes:
        t0 = time.perf_counter()
        gen = torch.Generator(device=dev).manual_seed(42)
        data = batches(4, n, d_in, gen, dev)
        w_dec = uniform((d_sae, d_in), gen, dev)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        w_enc_t = w_dec.clone()  # nn.Linear layout [d_sae, d_in]: W_enc = W_dec^T
        b_enc = 0.01 * uniform((d_sae,), gen, dev)
        b_dec = 0.1 + 0.01 * uniform((d_in,), gen, dev)
        sync()
        setup_s = time.perf_counter() - t0

        @torch.no_grad()
        def forward(x):
            pre = F.linear(x - b_dec, w_enc_t, b_enc)
            top = pre.topk(k, dim=-1, sorted=False)
            acts = F.relu(top.values)
            return F.embedding_bag(top.indices, w_dec, per_sample_weights=acts, mode="sum") + b_dec

        # Sanity: the output is finite and reconstructs the input about as well
        # as a random-weights SAE can (reported, not judged).
        out = forward(data[0])
        if not torch.isfinite(out).all():
            sys.exit(f"gpu_encode_torch.py: error: non-finite output for shape {d_in},{d_sae},{k}")
        fvu = ((out - data[0]).pow(2).sum() / (data[0] - data[0].mean(0)).pow(2).sum()).item()

        for i in range(a.warmup):
            forward(data[i % len(data)])
        sync()
        t = time.perf_counter()
        for i in range(a.iters):
            forward(data[i % len(data)])
        sync()
        s = (time.perf_counter() - t) / a.iters

        flops, bytes_ = cost(n, d_in, d_sae, k)
        tflops, tbps = flops / s / 1e12, bytes_ / s / 1e12
        bound_s = max(flops / (peak_f32 * 1e12), bytes_ / (peak_tbps * 1e12))
        print(
            f"d_in {d_in} d_sae {d_sae} k {k} batch {n}: torch {s * 1e3:.3f} ms/batch = {n / s:.0f} tokens/s; "
            f"encoder GEMM {tflops:.2f} TFLOP/s = {100 * tflops / peak_f32:.1f}% of f32 peak, {100 * tflops / peak_tf32:.1f}% of TF32 peak; "
            f"traffic {bytes_ / 1e9:.2f} GB/batch at {tbps:.3f} TB/s = {100 * tbps / peak_tbps:.1f}% of HBM; "
            f"f32 roofline bound {bound_s * 1e3:.3f} ms = {100 * bound_s / s:.1f}% of roofline (setup {setup_s:.1f} s; FVU of first batch {fvu:.3f})"
        )
        print(
            f"RESULT impl=torch d_in={d_in} d_sae={d_sae} k={k} batch={n} ms={s * 1e3:.4f} tok_s={n / s:.0f} "
            f"tflops={tflops:.3f} pct_f32={100 * tflops / peak_f32:.2f} pct_tf32={100 * tflops / peak_tf32:.2f} "
            f"tbps={tbps:.4f} pct_hbm={100 * tbps / peak_tbps:.2f} pct_roofline={100 * bound_s / s:.2f} tf32={int(a.tf32)}",
            flush=True,
        )
        del data, w_dec, w_enc_t, b_enc, b_dec, out
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
