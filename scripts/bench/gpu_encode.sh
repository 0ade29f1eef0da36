#!/usr/bin/env bash
# TopK SAE inference ("encode + top-k + decode") on the GPU: saepipe
# (crates/cuda/examples/bench_gpu_encode.rs) against plain PyTorch
# (scripts/bench/gpu_encode_torch.py), same shapes and batch, then a table of
# throughputs and the saepipe/torch ratio per shape.
#
#   scripts/bench/gpu_encode.sh [d_in,d_sae,k ...]
#
# Shapes default to 768,32768,32 and 2048,131072,64.
# Environment: PYTHON (python3; needs torch with CUDA), BENCH_ENCODE_BIN (a
# prebuilt bench_gpu_encode instead of cargo), BENCH_BATCH (4096),
# BENCH_WARMUP (5), BENCH_ITERS (20), BENCH_TF32=1 (both sides run the encoder
# GEMM on TF32 tensor cores; default f32), BENCH_CHECK_ROWS / BENCH_CHECK_TOL (saepipe's
# check against the CPU coder), BENCH_PEAK_TFLOPS (67), BENCH_PEAK_TF32_TFLOPS
# (494), BENCH_PEAK_TBPS (3.35). Logs go to $BENCH_OUT (default: a temporary
# directory, printed at the end).
#
# Exits non-zero with a message when there is no NVIDIA GPU or driver, when
# either benchmark fails (including saepipe's correctness check), or when a
# RESULT line is missing.

set -euo pipefail

die() {
    echo "gpu_encode.sh: error: $*" >&2
    exit 1
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-python3}"
if [ "$#" -gt 0 ]; then
    shapes=("$@")
else
    shapes=(768,32768,32 2048,131072,64)
fi
for s in "${shapes[@]}"; do
    [[ "$s" =~ ^[0-9]+,[0-9]+,[0-9]+$ ]] || die "shape '$s': expected d_in,d_sae,k"
done
export BENCH_BATCH="${BENCH_BATCH:-4096}"
export BENCH_WARMUP="${BENCH_WARMUP:-5}"
export BENCH_ITERS="${BENCH_ITERS:-20}"

# No GPU, no benchmark: say so rather than print numbers from nowhere.
if command -v nvidia-smi >/dev/null 2>&1; then
    gpus="$(nvidia-smi -L 2>&1)" || die "nvidia-smi failed, no usable NVIDIA GPU/driver: $gpus"
    [ -n "$gpus" ] || die "nvidia-smi lists no GPU"
    echo "$gpus"
elif ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so' && [ ! -e /proc/driver/nvidia/version ]; then
    die "no NVIDIA driver found (no nvidia-smi, no libcuda.so in the loader cache, no /proc/driver/nvidia)"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "python '$PYTHON' not found (set PYTHON)"
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || die "$PYTHON cannot use CUDA through torch (is torch installed with CUDA support?)"

out="${BENCH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_encode.XXXXXX")}"
mkdir -p "$out"

# BENCH_ENCODE_BIN: a prebuilt bench_gpu_encode (machines without cargo, see scripts/gpu_check.sh).
if [ -n "${BENCH_ENCODE_BIN:-}" ]; then
    bench=("$BENCH_ENCODE_BIN")
else
    cargo build --release -q -p saepipe-cuda --example bench_gpu_encode || die "cargo build failed"
    bench=(target/release/examples/bench_gpu_encode)
fi
echo "== saepipe (${bench[*]} ${shapes[*]})"
"${bench[@]}" "${shapes[@]}" 2>&1 | tee "$out/saepipe.log" \
    || die "the saepipe benchmark failed (see above; log $out/saepipe.log)"

tf32=()
if [ "${BENCH_TF32:-0}" = 1 ]; then
    tf32=(--tf32)
fi
torch_cmd=("$PYTHON" scripts/bench/gpu_encode_torch.py --device cuda --shapes "${shapes[@]}" --batch "$BENCH_BATCH"
    --warmup "$BENCH_WARMUP" --iters "$BENCH_ITERS" ${tf32[@]+"${tf32[@]}"})
echo "== torch (${torch_cmd[*]})"
"${torch_cmd[@]}" 2>&1 | tee "$out/torch.log" \
    || die "the torch benchmark failed (see above; log $out/torch.log)"

echo
echo "== batch $BENCH_BATCH tokens; ratio = saepipe tokens/s / torch tokens/s (> 1: saepipe faster); torch TF32 ${BENCH_TF32:-0}"
# Join the RESULT lines of both logs by shape; every shape must have both.
awk -v nshapes="${#shapes[@]}" '
    /^RESULT / {
        delete f
        for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        key = f["d_in"] "," f["d_sae"] "," f["k"]
        if (!(key in seen)) { seen[key] = 1; order[++n] = key }
        ms[f["impl"], key] = f["ms"]; tok[f["impl"], key] = f["tok_s"]
        f32[f["impl"], key] = f["pct_f32"]; tf[f["impl"], key] = f["pct_tf32"]; hbm[f["impl"], key] = f["pct_hbm"]
    }
    END {
        fmt = "%-18s %11s %13s %11s %13s %8s %17s %17s\n"
        printf fmt, "d_in,d_sae,k", "saepipe ms", "saepipe tok/s", "torch ms", "torch tok/s", "ratio", "%f32/%tf32/%hbm S", "%f32/%tf32/%hbm T"
        bad = 0
        for (i = 1; i <= n; i++) {
            key = order[i]
            if (!(("saepipe", key) in tok) || !(("torch", key) in tok) || tok["torch", key] + 0 <= 0) {
                printf "%-18s missing a RESULT line (saepipe: %s, torch: %s)\n", key, (("saepipe", key) in tok) ? "yes" : "no", (("torch", key) in tok) ? "yes" : "no"
                bad = 1
                continue
            }
            printf fmt, key, ms["saepipe", key], tok["saepipe", key], ms["torch", key], tok["torch", key],
                sprintf("%.2fx", tok["saepipe", key] / tok["torch", key]),
                f32["saepipe", key] "/" tf["saepipe", key] "/" hbm["saepipe", key],
                f32["torch", key] "/" tf["torch", key] "/" hbm["torch", key]
        }
        if (n < nshapes) { printf "expected %d shapes, found %d\n", nshapes, n; bad = 1 }
        exit bad
    }
' "$out/saepipe.log" "$out/torch.log" || die "incomplete results (logs in $out)"
echo "(S = saepipe, T = torch: encoder GEMM as % of the f32 and TF32 peaks, modelled traffic as % of HBM bandwidth)"
echo "logs: $out"
