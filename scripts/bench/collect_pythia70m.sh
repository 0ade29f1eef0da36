#!/usr/bin/env bash
# End-to-end collection speed on a Pythia-70m-shaped model (random weights, so
# no download): tokenize the toy corpus into 128-token contexts, then
# collect_activations of blocks.3.hook_resid_pre (stop_at_layer 4) into the
# Parquet store, f32 and f16. Prints the stage times and tokens/s.
#
#   scripts/bench/collect_pythia70m.sh [tokens (default 262144)] [device]   (threads: all cores, or RAYON_NUM_THREADS)
#
# device (or the environment variable DEVICE; the argument wins): cpu, cuda,
# cuda:N or auto, written as the collect_activations stage's `device`. Without
# it the stage's own default applies (auto: the GPU when there is one).
set -euo pipefail
cd "$(dirname "$0")/../.."
tokens=${1:-262144}
device=${2:-${DEVICE:-}}
if [[ -n $device && ! $device =~ ^(cpu|cuda|cuda:[0-9]+|auto)$ ]]; then
  echo "$0: device must be cpu, cuda, cuda:N or auto (got \`$device')" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release -q --bin saepipe && cargo build --release -q -p saepipe-model --example bench_forward
mkdir -p "$work/pythia-70m-shape"
target/release/examples/bench_forward --models pythia-70m --save-model "$work/pythia-70m-shape" >/dev/null
cat > "$work/collect.yaml" <<YAML
version: 1
name: bench_collect
stages:
  tokens:
    op: tokenize
    corpus: $PWD/models/toy-grammar/corpus-train.jsonl
    tokenizer: toy/toy-grammar@step2000
    context_size: 128
    max_tokens: $tokens
  acts:
    op: collect_activations
    foreach: [f32, f16]
    model: $work/pythia-70m-shape
    tokens: tokens
    dtype: \${item}
    hooks: [blocks.3.hook_resid_pre]
${device:+    device: $device}
YAML
SAEPIPE_MODELS=$PWD/models target/release/saepipe run "$work/collect.yaml" --cache-dir "$work/cache" -j 1 -q
for inst in f32 f16; do
  secs=$(python3 -c "import json,glob;r=json.load(open(glob.glob('$work/cache/runs/*/run.json')[0]));print([s['seconds'] for s in r['stages'] if s['instance']=='acts[$inst]'][0])")
  python3 -c "print(f'collect_activations $inst${device:+ on $device}: $tokens tokens in {$secs:.1f} s = {$tokens/$secs:,.0f} tokens/s')"
done
