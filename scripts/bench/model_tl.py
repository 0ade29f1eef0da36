"""TransformerLens side of the model runtime benchmark.

Normally started by the Rust example, which writes the random-weight model and
the tokens and runs both sides with the same thread count:

    cargo run --release -p saepipe-model --example bench_forward       (CPU)
    cargo run --release -p saepipe-cuda --example bench_gpu_forward    (--device cuda)

Standalone, on any HF-format GPT-2 / GPT-NeoX / Llama / Gemma 2 directory
(config.json + model.safetensors) and a file of little-endian u32 token ids
(batch x ctx):

    .venv/bin/python scripts/bench/model_tl.py --model-dir DIR --tokens FILE --batch 8 --ctx 128 --threads 2
    .venv/bin/python scripts/bench/model_tl.py --model-dir DIR --tokens FILE --batch 32 --ctx 128 --device cuda

Loads the weights into a HookedTransformer with TransformerLens's own converters
and no weight processing (saepipe's default; `from_pretrained_no_processing`),
the config as TransformerLens maps it (Llama: `convert_hf_model_config`;
Gemma 2: its `google/gemma-2-*` entry with these sizes, as
scripts/fixtures/model_tl_gemma.py builds it), then times, best of --reps after
one warm-up, in f32 on --device (cpu, the default, or cuda / cuda:N), the
--workloads (default all):
  collect: run_with_cache(names_filter=--hook, stop_at_layer=its block + 1)
           (--hook: default blocks.3.hook_resid_pre)
  logits:  a full forward returning logits [batch, ctx, vocab]
  ce:      a full forward returning the per-token loss
Prints one JSON object (tokens/s per workload, mean CE, the mean |x| of the
collected hook, peak RSS, versions).

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
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
from transformer_lens.pretrained.weight_conversions.neox import convert_neox_weights
from transformer_lens.loading_from_pretrained import convert_hf_model_config, get_pretrained_state_dict
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from model_tl_gemma import gemma_tl_dict  # noqa: E402


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


def tl_config_by_mapping(model_dir, hf, ctx, device):
    """HookedTransformerConfig of a Llama or Gemma 2 directory, as TransformerLens
    maps it (see the module docstring); n_ctx is the benchmark's context (the
    causal masks TransformerLens allocates are n_ctx x n_ctx)."""
    if hf["model_type"] == "gemma2":
        cfg = gemma_tl_dict(AutoConfig.from_pretrained(model_dir), gemma3=False)
    elif hf["model_type"] == "llama":
        # TransformerLens decides the family by name for paths containing "llama".
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(os.path.join(model_dir, "config.json"), os.path.join(tmp, "config.json"))
            cfg = convert_hf_model_config(tmp)
        cfg["original_architecture"] = cfg.get("original_architecture") or hf["architectures"][0]
    else:
        return None
    cfg.update({"n_ctx": ctx, "tokenizer_name": None, "model_name": os.path.basename(model_dir),
                "dtype": torch.float32, "device": device})
    keep = HookedTransformerConfig.__dataclass_fields__.keys()
    return HookedTransformerConfig(**{k: v for k, v in cfg.items() if k in keep})


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
    ap.add_argument("--hook", default="blocks.3.hook_resid_pre", help="the hook the collect workload captures")
    ap.add_argument("--workloads", default="collect,logits,ce")
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
        hf = json.load(f)
    hf_model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    cfg = tl_config_by_mapping(args.model_dir, hf, args.ctx, str(device))
    if cfg is not None:
        state = get_pretrained_state_dict(args.model_dir, cfg, hf_model=hf_model)
    else:
        cfg, convert = tl_config(hf, str(device))
        state = convert(hf_model, cfg)
    del hf_model
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False)
    del state
    if cuda:
        model.to(device, print_details=False)  # (HookedTransformer placed it per cfg.device already)
    model.eval()
    ids = np.fromfile(args.tokens, dtype="<u4").astype(np.int64)
    tokens = torch.from_numpy(ids).reshape(args.batch, args.ctx).to(device)
    n = args.batch * args.ctx
    hook = args.hook
    stop = int(hook.split(".")[1]) + 1 if hook.startswith("blocks.") else None
    workloads = args.workloads.split(",")
    out = {}

    with torch.no_grad():
        if "collect" in workloads:
            run = lambda: model.run_with_cache(tokens, names_filter=hook, stop_at_layer=stop)  # noqa: E731
            out["collect_tok_s"] = n / best_of(args.reps, run, sync)
            out["collect_mean_abs"] = run()[1][hook].abs().double().mean().item()
            if cuda:
                out["collect_host_tok_s"] = n / best_of(args.reps, lambda: run()[1][hook].cpu(), sync)
        if "logits" in workloads:
            out["logits_tok_s"] = n / best_of(args.reps, lambda: model(tokens, return_type="logits"), sync)
        if "ce" in workloads:
            out["ce_tok_s"] = n / best_of(args.reps, lambda: model(tokens, return_type="loss", loss_per_token=True), sync)
            out["mean_ce"] = model(tokens, return_type="loss", loss_per_token=True).mean().item()
    out.update({
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(), "transformer_lens": importlib.metadata.version("transformer_lens"),
        "torch": torch.__version__,
    })
    if cuda:
        out.update({
            "device": str(device), "gpu": torch.cuda.get_device_name(device), "tf32": torch.backends.cuda.matmul.allow_tf32,
            "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20,
        })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
