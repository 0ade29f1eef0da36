#!/usr/bin/env bash
# Fault injection against the cache and the engine, for a bounded time:
# concurrent runs of one pipeline on one cache, random SIGKILL and SIGSTOP of
# drivers, flipped bytes in published artifacts. After every trial the pipeline
# is run to completion and its outputs must be byte-identical to an undisturbed
# reference run, `cache verify` must pass, and no run may fail except the ones
# killed.
#
#   scripts/fault_inject.sh [SECONDS] [SAEPIPE_BINARY] [engine|toy|both]
#
# Prints one line per trial and `N passed, M failed` at the end; exits non-zero
# on any failure. `engine` uses the engine's test op (debug_shards) and a
# `command` stage (no model, about a second per trial); `toy` runs every stage
# kind on the embedded toy LM (tokenize, collect_activations, two train_sae,
# evaluate, match_features, inspect_features, plot); `both` alternates.
set -uo pipefail
seconds=${1:-60}
bin=${2:-target/debug/saepipe}
mode=${3:-both}
bin=$(realpath "$bin")
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
[ -n "$work" ] && [ -d "$work" ] || { echo "no temporary directory"; exit 1; }
trap 'kill -CONT -- -$$ 2>/dev/null; rm -rf "$work"' EXIT
export SAEPIPE_LOCK_TIMEOUT=2 NO_COLOR=1 SAEPIPE_MODELS="$repo/models"
unset SAEPIPE_CACHE RUST_BACKTRACE

mkdir -p "$work/engine" "$work/toy"
cat >"$work/engine/p.yaml" <<'PIPELINE'
version: 1
name: faults
vars:
  delay: 40
stages:
  a:
    op: debug_shards
    shards: 12
    shard_bytes: 65536
    delay_ms: ${delay}
  b:
    op: debug_shards
    inputs: [a]
    shards: 6
    delay_ms: ${delay}
  c:
    op: command
    inputs: {a: a, b: b}
    run: 'sleep 0.3; cat "$SAEPIPE_INPUT_A/data.bin" "$SAEPIPE_INPUT_B/data.bin" > "$SAEPIPE_OUT/both.bin"'
PIPELINE

sed "s|CORPUS|$repo/models/toy-grammar/corpus-train.jsonl|" >"$work/toy/p.yaml" <<'PIPELINE'
version: 1
name: faults_toy
vars:
  model: toy/toy-grammar@step2000
  hook: blocks.1.hook_resid_pre
  seeds: [1, 2]
stages:
  tokens:
    op: tokenize
    corpus: CORPUS
    tokenizer: ${model}
    context_size: 64
    max_tokens: 16384
  acts:
    op: collect_activations
    model: ${model}
    tokens: tokens
    hooks:
      - ${hook}
    shard_tokens: 2048
    batch_size: 4
  sae:
    op: train_sae
    foreach: ${seeds}
    activations: acts
    hook: ${hook}
    architecture: topk
    d_sae: 128
    k: 8
    batch_size: 512
    total_tokens: 32768
    checkpoint_every: 4
    seed: ${item}
    device: cpu
  evaluate:
    op: evaluate
    model: ${model}
    tokens: tokens
    saes: ["sae[1]"]
    device: cpu
  match:
    op: match_features
    saes: ["sae[1]"]
    reference: "sae[2]"
    reference_activations: acts
    activations: [acts]
    n_tokens: 8192
    device: cpu
  features:
    op: inspect_features
    sae: "sae[2]"
    activations: acts
    tokenizer: ${model}
    n_tokens: 8192
  report:
    op: plot
    evaluations: [evaluate]
    training: ["sae[*]"]
    matches: [match]
PIPELINE

outputs() { # every published artifact of a cache: its stage, then each file's path and blake3
  python3 - "$1/cache/artifacts" <<'PY'
import json, os, sys
rows = []
for name in os.listdir(sys.argv[1]):
    try:
        m = json.load(open(os.path.join(sys.argv[1], name, "_manifest.json")))
    except Exception as e:
        rows.append(f"{name}: unreadable manifest ({e})")
        continue
    rows.append(m["stage"] + " " + " ".join(f["path"] + ":" + f["blake3"][:16] for f in m["files"]))
print("\n".join(sorted(rows)))
PY
}

declare -A ref
for m in engine toy; do
  [ "$mode" = both ] || [ "$mode" = "$m" ] || continue
  mkdir -p "$work/$m/ref"
  cp "$work/$m/p.yaml" "$work/$m/ref/"
  if ! (cd "$work/$m/ref" && "$bin" run p.yaml --cache-dir cache -q >/dev/null 2>"$work/$m/ref/err.log"); then
    echo "reference run ($m) failed:"
    cat "$work/$m/ref/err.log"
    exit 1
  fi
  ref[$m]=$(outputs "$work/$m/ref")
done

trials=0 failed=0
deadline=$((SECONDS + seconds))
while [ $SECONDS -lt $deadline ]; do
  trials=$((trials + 1))
  case $mode in
    both) if [ $((trials % 2)) -eq 0 ]; then m=toy; else m=engine; fi ;;
    *) m=$mode ;;
  esac
  t="$work/t$trials"
  mkdir -p "$t"
  cp "$work/$m/p.yaml" "$t/"
  # Some trials start from a complete cache with one damaged byte in a random published file.
  kind=$((RANDOM % 4))
  if [ $kind -eq 3 ]; then
    cp -a "$work/$m/ref/cache" "$t/cache"
    victim=$(find "$t/cache/generations" -type f ! -name _manifest.json -size +0 | shuf -n 1)
    size=$(stat -c %s "$victim")
    printf '\xff' | dd of="$victim" bs=1 seek=$((RANDOM % size)) conv=notrunc status=none
  fi
  pids=()
  for _ in 1 2 3; do
    (cd "$t" && exec "$bin" run p.yaml --cache-dir cache -q >/dev/null 2>>"$t/err.log") &
    pids+=($!)
  done
  # The toy pipeline runs longer: interrupt it anywhere in its first ~2 s.
  if [ "$m" = toy ]; then sleep "$((RANDOM % 2)).$((RANDOM % 9 + 1))"; else sleep "0.$((RANDOM % 9 + 1))"; fi
  what="concurrent"
  case $kind in
    0) kill -KILL "${pids[0]}" 2>/dev/null; what="SIGKILL one of three" ;;
    1) kill -STOP "${pids[1]}" 2>/dev/null; sleep 3; kill -CONT "${pids[1]}" 2>/dev/null; what="SIGSTOP 3s one of three" ;;
    2) kill -KILL "${pids[0]}" "${pids[1]}" 2>/dev/null; what="SIGKILL two of three" ;;
    3) what="three runs on a damaged byte" ;;
  esac
  bad=""
  for i in 0 1 2; do
    wait "${pids[$i]}" 2>/dev/null; rc=$?
    # Killed drivers exit 137; every other run must succeed.
    if [ $rc -ne 0 ] && [ $rc -ne 137 ]; then bad="$bad run$i exited $rc;"; fi
  done
  (cd "$t" && "$bin" run p.yaml --cache-dir cache -q >/dev/null 2>>"$t/err.log") || bad="$bad final run failed;"
  got=$(outputs "$t")
  [ "$got" = "${ref[$m]}" ] || bad="$bad outputs differ: $(diff <(echo "${ref[$m]}") <(echo "$got") | head -n 4 | tr '\n' ' ');"
  (cd "$t" && "$bin" cache verify --cache-dir cache >/dev/null 2>&1) || bad="$bad cache verify failed;"
  if [ -n "$bad" ]; then
    failed=$((failed + 1))
    echo "trial $trials ($m, $what): FAILED:$bad"
    sed 's/^/    /' "$t/err.log" | tail -n 5
  else
    echo "trial $trials ($m, $what): ok"
    rm -rf "$t"
  fi
done
echo "fault-injection: $((trials - failed)) passed, $failed failed"
[ $failed -eq 0 ]
