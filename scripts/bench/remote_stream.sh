#!/usr/bin/env bash
# train_sae reading its activation store in place from a local S3 server
# (moto) with `stream: true`, against reading the local copy of the same
# store, side by side in one run: tokens/s of each and the ratio. The
# streamed run is measured cold (empty chunk cache: every shard fetched) and
# warm (shards from the chunk cache). All runs train the same SAE (the
# trained weights are byte-identical; tests/streaming.rs checks that).
#
#   scripts/bench/remote_stream.sh [MAX_TOKENS] [D_SAE]   (default 400000 tokens, 4096 features)
#
# Needs python3 (moto[server] is installed into target/moto-venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
tokens=${1:-400000}
d_sae=${2:-4096}
venv=target/moto-venv
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.2.5"
fi
cargo build --release --quiet --bin saepipe
sp="$root/target/release/saepipe"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
work=$(mktemp -d)
trap 'kill $moto 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$port" && break
  sleep 0.1
done
curl -s -X PUT "http://127.0.0.1:$port/bench" -o /dev/null
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" SAEPIPE_MODELS="$root/models" SAEPIPE_QUIET=1
cat > "$work/p.yaml" <<YAML
version: 1
name: stream-bench
vars:
  stream: false
stages:
  tokens:
    op: tokenize
    corpus: $root/models/toy-grammar/corpus-train.jsonl
    tokenizer: toy/toy-grammar@step2000
    context_size: 128
    max_tokens: $tokens
  acts:
    op: collect_activations
    model: toy/toy-grammar@step2000
    tokens: tokens
    hooks: [blocks.1.hook_resid_pre]
    shard_tokens: 32768
  sae:
    op: train_sae
    activations: acts
    hook: blocks.1.hook_resid_pre
    d_sae: $d_sae
    k: 32
    batch_size: 4096
    device: cpu
    stream: \${stream}
YAML
cd "$work"
remote=(--remote s3://bench/p)
"$sp" run p.yaml acts --cache-dir local "${remote[@]}" >/dev/null
"$sp" run p.yaml --cache-dir local >/dev/null
stream=(--cache-dir streamed "${remote[@]}" --remote-policy pull --set stream=true)
"$sp" run p.yaml "${stream[@]}" >/dev/null
"$sp" run p.yaml "${stream[@]}" --force sae >/dev/null
"$sp" run p.yaml --cache-dir local --force sae >/dev/null
python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
def runs(cache):
    d = os.path.join(work, cache, "runs")
    out = []
    for r in sorted(os.listdir(d)):
        rec = json.load(open(os.path.join(d, r, "run.json")))
        st = {s["instance"]: s for s in rec["stages"]}
        if st.get("sae", {}).get("status") in ("ran", "resumed"):
            out.append(st)
    return out
local, streamed = runs("local"), runs("streamed")
store = next(s for s in local[0].values() if s["instance"] == "acts")
rows = json.load(open(os.path.join(work, "local", "artifacts", store["key"], "_store.json")))["total_tokens"]
mb = store["bytes"] / 1e6
rate = lambda s: rows / s["sae"]["seconds"]
best_local = max(rate(s) for s in local)
cold, warm = rate(streamed[0]), rate(streamed[1])
assert streamed[0]["acts"]["status"] == "on remote", streamed[0]["acts"]
print(f"store: {rows} tokens, {mb:.0f} MB in S3 (moto on 127.0.0.1)")
print(f"train_sae local store:           {best_local:10.0f} tokens/s (best of {len(local)})")
print(f"train_sae streamed, cold chunks: {cold:10.0f} tokens/s  ratio streamed/local {cold / best_local:.2f}")
print(f"train_sae streamed, warm chunks: {warm:10.0f} tokens/s  ratio streamed/local {warm / best_local:.2f}")
PY
