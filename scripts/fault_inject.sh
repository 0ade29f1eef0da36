#!/usr/bin/env bash
# Fault injection against the cache and the engine, for a bounded time:
# concurrent runs of one pipeline on one cache, random SIGKILL and SIGSTOP of
# drivers, flipped bytes in published artifacts. After every trial the pipeline
# is run to completion and its outputs must be byte-identical to an undisturbed
# reference run; no run may fail except the ones killed.
#
#   scripts/fault_inject.sh [SECONDS] [SAEPIPE_BINARY]
#
# Prints one line per trial and `N passed, M failed` at the end; exits non-zero
# on any failure. Uses the engine's test op (debug_shards) and a `command` stage,
# so it needs no model and runs in seconds per trial.
set -uo pipefail
seconds=${1:-60}
bin=${2:-target/debug/saepipe}
bin=$(realpath "$bin")
work=$(mktemp -d)
trap 'kill -CONT -- -$$ 2>/dev/null; rm -rf "$work"' EXIT
export SAEPIPE_LOCK_TIMEOUT=2 NO_COLOR=1
unset SAEPIPE_CACHE

cat >"$work/p.yaml" <<'EOF'
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
EOF

outputs() { # the published outputs of a cache, by stage, as blake3-free checksums
  local dir=$1
  (cd "$dir" && for s in a b c; do
    key=$("$bin" plan p.yaml --cache-dir cache 2>/dev/null | awk -v s="$s" '$1==s {print $3}')
    f=$(ls -d cache/artifacts/"$key"* 2>/dev/null | head -n 1)
    [ -n "$f" ] && cat "$f"/*.bin | sha256sum | cut -c1-16 || echo missing
  done)
}

mkdir -p "$work/ref"
cp "$work/p.yaml" "$work/ref/"
(cd "$work/ref" && "$bin" run p.yaml --cache-dir cache -q >/dev/null 2>&1) || { echo "reference run failed"; exit 1; }
ref=$(outputs "$work/ref")

trials=0 failed=0
deadline=$((SECONDS + seconds))
while [ $SECONDS -lt $deadline ]; do
  trials=$((trials + 1))
  t="$work/t$trials"
  mkdir -p "$t"
  cp "$work/p.yaml" "$t/"
  # Some trials start from a complete cache with one damaged byte.
  kind=$((RANDOM % 4))
  if [ $kind -eq 3 ]; then
    cp -a "$work/ref/cache" "$t/cache"
    victim=$(find "$t/cache/generations" -name '*.bin' | shuf -n 1)
    printf '\xff' | dd of="$victim" bs=1 seek=$((RANDOM % 1000)) conv=notrunc status=none
  fi
  pids=()
  for _ in 1 2 3; do
    (cd "$t" && exec "$bin" run p.yaml --cache-dir cache -q >/dev/null 2>>"$t/err.log") &
    pids+=($!)
  done
  sleep "0.$((RANDOM % 9 + 1))"
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
  [ "$got" = "$ref" ] || bad="$bad outputs differ ($(echo $got) vs $(echo $ref));"
  (cd "$t" && "$bin" cache verify --cache-dir cache >/dev/null 2>&1) || bad="$bad cache verify failed;"
  if [ -n "$bad" ]; then
    failed=$((failed + 1))
    echo "trial $trials ($what): FAILED:$bad"
    sed 's/^/    /' "$t/err.log" | tail -n 5
  else
    echo "trial $trials ($what): ok"
    rm -rf "$t"
  fi
done
echo "fault-injection: $((trials - failed)) passed, $failed failed"
[ $failed -eq 0 ]
