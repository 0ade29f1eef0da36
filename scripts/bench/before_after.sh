#!/usr/bin/env bash
# A CPU benchmark of the working tree against another revision, in one run on
# one machine: builds the example at BASE (in a temporary git worktree) and in
# the working tree, then runs them alternately ROUNDS times (order swapped every
# round, so a slow phase of the machine hits both) and prints every line the
# benchmark prints with `before`/`after` in front, then the best value of each
# tokens/s figure on both sides and their ratio.
#
#   scripts/bench/before_after.sh BASE forward [ROUNDS]   # bench_forward --no-tl (Pythia-70m and GPT-2 shapes)
#   scripts/bench/before_after.sh BASE train [ROUNDS]     # bench_train 3 1024 (TopK and ReLU+L1)
#
# Environment: BENCH_THREADS (default 1: a single thread is the steadiest
# figure on a shared machine), BENCH_ARGS (replaces the default arguments).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
base=${1:?usage: before_after.sh BASE forward|train [ROUNDS]}
which=${2:?usage: before_after.sh BASE forward|train [ROUNDS]}
rounds=${3:-4}
threads=${BENCH_THREADS:-1}
case "$which" in
  forward) pkg=saepipe-model; ex=bench_forward; args=${BENCH_ARGS:-"--no-tl --threads $threads"} ;;
  train) pkg=saepipe-sae; ex=bench_train; args=${BENCH_ARGS:-"3 1024"} ;;
  *) echo "unknown benchmark $which (forward or train)" >&2; exit 2 ;;
esac
work=$(mktemp -d)
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach -q "$work/base" "$base"
(cd "$work/base" && CARGO_TARGET_DIR="$work/target-base" cargo build --release --quiet -p "$pkg" --example "$ex")
cargo build --release --quiet -p "$pkg" --example "$ex"
before="$work/target-base/release/examples/$ex"
after="target/release/examples/$ex"
out="$work/lines"
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order="before after"; else order="after before"; fi
  for side in $order; do
    bin=$before; [ "$side" = after ] && bin=$after
    # shellcheck disable=SC2086
    RAYON_NUM_THREADS=$threads "$bin" $args 2>/dev/null | sed "s/^/$side /" | tee -a "$out"
  done
done
python3 - "$out" <<'SUMMARY'
import re, sys
best = {}
for line in open(sys.argv[1]):
    side, rest = line.rstrip("\n").split(" ", 1)
    # bench_forward's table rows: "<model> <workload> <saepipe tok/s> ..."
    m = re.match(r"(\S+)\s+(collect|logits|ce)\s+([0-9]+)", rest)
    # bench_train's lines: "<setup>: <n> tokens/s (...)" (not the GEMM-alone lines)
    t = re.match(r"(\S.*?): ([0-9]+) tokens/s \(", rest)
    if m:
        label, v = f"{m.group(1)} {m.group(2)}", float(m.group(3))
    elif t:
        label, v = t.group(1), float(t.group(2))
    else:
        continue
    best.setdefault(label, {}).setdefault(side, []).append(v)
print("\nbest of rounds (tokens/s):")
for label, sides in best.items():
    if "before" in sides and "after" in sides:
        b, a = max(sides["before"]), max(sides["after"])
        print(f"  {label:<50} before {b:>8.0f}  after {a:>8.0f}  after/before {a / b:.3f}")
SUMMARY
