"""TransformerLens side of the model runtime benchmark.

Normally started by the Rust example, which writes the random-weight model and
the tokens and runs both sides with the same thread count:

    cargo run --release -p saepipe-model --example bench_forward       (CPU)
    cargo run --release -p saepipe-cuda --example bench_gpu_forward    (--device cuda)

Standalone, on any HF-format GPT-2 / GPT-NeoX directory (config.json +
model.safetensors) and a file of little-endian u32 token ids (batch x ctx):

    .venv/bin/python scripts/bench/model_tl.py --model-dir DIR --tokens FILE --batch 8 --ctx 128 --threads 2
    .venv/bin/python scripts/bench/model_tl.py --model-dir DIR --tokens FILE --batch 32 --ctx 128 --device cuda

Loads the weights into a HookedTransformer with TransformerLens's own converters
and no weight processing (saepipe's default), then times, best of --reps after
one warm-up, in f32 on --device (cpu, the default, or cuda / cuda:N):
  collect: run_with_cache(names_filter="blocks.3.hook_resid_pre", stop_at_layer=4)
  logits:  a full forward returning logits [batch, ctx, vocab]
  ce:      a full forward returning the per-token loss
Prints one JSON object (tokens/s per workload, mean CE, peak RSS, versions).

On CUDA the model and tokens live on the GPU, each timing is bracketed by
torch.cuda.synchronize(), TF32 is off (matmuls in full f32, as saepipe's default
GEMM precision), and the JSON also has: device, gpu, tf32 (false),
peak_gpu_mb (torch.cuda.max_memory_allocated: weights + activations) and
collect_host_tok_s (collect plus copying the captured activations to host
memory, which is what saepipe's collection returns).
"""

import argparse
import importlib.metadata
import json
import os
import resource
import time

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
from transformer_lens.pretrained.weight_conversions.neox import convert_neox_weights
from transformers import AutoModelForCausalLM


def tl_config(hf, device="cpu"):
    """HookedTransformerConfig for an HF config.json, as the fixture script builds it."""
    if hf["model_type"] == "gpt2":
        d, heads = hf["n_embd"], hf["n_head"]
        return HookedTransformerConfig(d_model=d, d_head=d // heads, n_heads=heads, d_mlp=hf.get("n_inner") or 4 * d,
                                       n_layers=hf["n_layer"], n_ctx=hf["n_positions"], d_vocab=hf["vocab_size"],
                                       act_fn=hf["activation_function"], normalization_type="LN",
                                       eps=hf.get("layer_norm_epsilon", 1e-5), original_architecture="GPT2LMHeadModel",
                                       positional_embedding_type="standard", device=device), convert_gpt2_weights
    if hf["model_type"] == "gpt_neox":
        d, heads = hf["hidden_size"], hf["num_attention_heads"]
        rotary_pct = hf.get("rotary_pct", hf.get("rope_parameters", {}).get("partial_rotary_factor", 1.0))
        return HookedTransformerConfig(d_model=d, d_head=d // heads, n_heads=heads, d_mlp=hf["intermediate_size"],
                                       n_layers=hf["num_hidden_layers"], n_ctx=hf["max_position_embeddings"],
                                       d_vocab=hf["vocab_size"], act_fn=hf["hidden_act"], normalization_type="LN",
                                       eps=hf.get("layer_norm_eps", 1e-5), original_architecture="GPTNeoXForCausalLM",
                                       positional_embedding_type="rotary", rotary_dim=int(rotary_pct * (d // heads)),
                                       rotary_base=hf.get("rotary_emb_base", hf.get("rope_parameters", {}).get("rope_theta", 10000)),
                                       parallel_attn_mlp=hf.get("use_parallel_residual", True), device=device), convert_neox_weights
    raise SystemExit(f"unsupported model_type {hf['model_type']}")


def best_of(reps, f, sync=lambda: None):
    """Best time of `reps` calls after one warm-up; `sync` waits for queued device work."""
    f()  # warm-up
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        f()
        sync()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--tokens", required=True, help="little-endian u32 token ids, batch x ctx")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        # Full f32 matmuls on both sides (saepipe's GEMMs default to f32, not TF32).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.cuda.set_device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)

    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg, convert = tl_config(json.load(f), str(device))
    hf_model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(convert(hf_model, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    if cuda:
        model.to(device, print_details=False)  # (HookedTransformer placed it per cfg.device already)
    model.eval()
    del hf_model
    ids = np.fromfile(args.tokens, dtype="<u4").astype(np.int64)
    tokens = torch.from_numpy(ids).reshape(args.batch, args.ctx).to(device)
    n = args.batch * args.ctx
    hook = "blocks.3.hook_resid_pre"

    with torch.no_grad():
        collect = best_of(args.reps, lambda: model.run_with_cache(tokens, names_filter=hook, stop_at_layer=4), sync)
        if cuda:
            collect_host = best_of(args.reps, lambda: model.run_with_cache(tokens, names_filter=hook, stop_at_layer=4)[1][hook].cpu(), sync)
        logits = best_of(args.reps, lambda: model(tokens, return_type="logits"), sync)
        ce = best_of(args.reps, lambda: model(tokens, return_type="loss", loss_per_token=True), sync)
        mean_ce = model(tokens, return_type="loss", loss_per_token=True).mean().item()
    out = {
        "collect_tok_s": n / collect, "logits_tok_s": n / logits, "ce_tok_s": n / ce, "mean_ce": mean_ce,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(), "transformer_lens": importlib.metadata.version("transformer_lens"),
        "torch": torch.__version__,
    }
    if cuda:
        out.update({
            "device": str(device), "gpu": torch.cuda.get_device_name(device), "tf32": torch.backends.cuda.matmul.allow_tf32,
            "collect_host_tok_s": n / collect_host,
            "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20,
        })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
