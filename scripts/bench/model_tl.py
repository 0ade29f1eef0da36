"""TransformerLens reference throughput for the model runtime benchmark.

Times, on random-weight Pythia-70m- and GPT-2-small-shaped HookedTransformers
(batch 32 x ctx 128 by default, CPU, f32):
  collect: run_with_cache(names_filter="blocks.3.hook_resid_pre", stop_at_layer=4)
  ce:      a full forward returning the per-token loss
and prints one JSON object {model: {collect_tok_s, ce_tok_s}, threads, versions}.
Compare with `cargo run --release -p saepipe-model --example bench_forward -- --tl <that json>`.

    python scripts/bench/model_tl.py [--threads N] [--batch 32] [--ctx 128] [--reps 3] > tl.json
"""

import argparse
import importlib.metadata
import json
import time

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

SHAPES = {
    "pythia-70m": dict(d_model=512, n_layers=6, n_heads=8, d_head=64, d_mlp=2048, d_vocab=50304, n_ctx=2048, act_fn="gelu",
                       normalization_type="LN", positional_embedding_type="rotary", rotary_dim=16, parallel_attn_mlp=True,
                       original_architecture="GPTNeoXForCausalLM"),
    "gpt2-small": dict(d_model=768, n_layers=12, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024, act_fn="gelu_new",
                       normalization_type="LN", positional_embedding_type="standard", original_architecture="GPT2LMHeadModel"),
}


def best_of(reps, f):
    f()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--models", default="pythia-70m,gpt2-small")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = {"threads": args.threads, "batch": args.batch, "ctx": args.ctx,
           "transformer_lens": importlib.metadata.version("transformer_lens"), "torch": torch.__version__}
    for name in args.models.split(","):
        cfg = HookedTransformerConfig(**SHAPES[name], device="cpu", seed=0)
        model = HookedTransformer(cfg)
        model.eval()
        tokens = torch.randint(0, cfg.d_vocab, (args.batch, args.ctx))
        n = args.batch * args.ctx
        with torch.no_grad():
            collect = best_of(args.reps, lambda: model.run_with_cache(tokens, names_filter="blocks.3.hook_resid_pre", stop_at_layer=4))
            ce = best_of(args.reps, lambda: model(tokens, return_type="loss", loss_per_token=True))
        out[name] = {"collect_tok_s": n / collect, "ce_tok_s": n / ce}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
