"""TopK SAE training step in plain PyTorch, the baseline for
crates/cuda/examples/bench_gpu_train.rs: same shapes and the same step
(encoder matmul, torch.topk, embedding_bag decode as sparsify does, MSE,
decoder-gradient tangent projection, grad-norm clipping, Adam, unit-norm
decoder rows). f32 matmuls (TF32 off) unless --tf32.

python3 scripts/bench/gpu_train_torch.py [--d-in 512] [--d-sae 16384 32768] [--k 32] [--batch 4096]
"""

import argparse
import time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-sae", type=int, nargs="+", default=[16384, 32768])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--tf32", action="store_true")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; tf32 {a.tf32}")
    d, k, n = a.d_in, a.k, a.batch
    g = torch.Generator(device=dev).manual_seed(0)
    data = [torch.randn(n, d, device=dev, generator=g) for _ in range(8)]
    for d_sae in a.d_sae:
        w_dec = torch.randn(d_sae, d, device=dev, generator=g)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        w_dec = w_dec.requires_grad_()
        w_enc = w_dec.detach().clone().requires_grad_()
        b_enc = torch.zeros(d_sae, device=dev, requires_grad=True)
        b_dec = data[0].mean(0).clone().requires_grad_()
        params = [w_enc, b_enc, w_dec, b_dec]
        opt = torch.optim.Adam(params, lr=2e-4, eps=1e-8, fused=True)

        def step(x):
            pre = (x - b_dec) @ w_enc.T + b_enc
            top = pre.topk(k, dim=-1, sorted=False)
            acts = F.relu(top.values)
            recon = F.embedding_bag(top.indices, w_dec, per_sample_weights=acts, mode="sum") + b_dec
            loss = (recon - x).pow(2).sum(-1).mean()
            loss.backward()
            with torch.no_grad():
                w_dec.grad -= (w_dec.grad * w_dec).sum(-1, keepdim=True) * w_dec
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                opt.zero_grad(set_to_none=False)
                w_dec.div_(w_dec.norm(dim=-1, keepdim=True))
            return loss

        for i in range(3):
            step(data[i])
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(a.steps):
            loss = step(data[i % len(data)])
        torch.cuda.synchronize()
        s = (time.perf_counter() - t) / a.steps
        print(f"d_in {d} d_sae {d_sae} k {k} batch {n}: torch {s * 1e3:.2f} ms/step = {1 / s:.1f} steps/s = {n / s:.0f} tokens/s; loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
