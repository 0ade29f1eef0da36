#!/usr/bin/env bash
# Pull throughput from a local S3 server (moto), side by side in one run:
# saepipe's pull (crates/remote/examples/bench_pull.rs: parallel ranged GETs,
# blake3 check, publish into a cache) against boto3's managed download of the
# same objects (scripts/bench/remote_pull_boto3.py). Prints both and the ratio.
#
#   scripts/bench/remote_pull.sh [MB] [SHARDS]      (default 1024 MB in 8 shards)
#
# Needs python3 (moto[server] and boto3 are installed into target/moto-venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
mb=${1:-1024}
shards=${2:-8}
venv=target/moto-venv
if [ ! -x "$venv/bin/moto_server" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.2.5"
fi
cargo build --release --quiet -p saepipe-remote --example bench_pull
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$port" && break
  sleep 0.1
done
curl -s -X PUT "http://127.0.0.1:$port/bench" -o /dev/null
keys=$(mktemp)
target/release/examples/bench_pull --url s3://bench/p --endpoint "http://127.0.0.1:$port" \
  --mb "$mb" --shards "$shards" --keys-out "$keys" | tee /tmp/bench_pull.$$.out
"$venv/bin/python" scripts/bench/remote_pull_boto3.py --endpoint "http://127.0.0.1:$port" --bucket bench \
  --prefix p --keys "$keys" | tee -a /tmp/bench_pull.$$.out
python3 - /tmp/bench_pull.$$.out <<'PY'
import re, statistics, sys
rows = [dict(kv.split("=") for kv in line.split()[1:]) for line in open(sys.argv[1]) if line.startswith("RESULT")]
best = lambda op: max(float(r["mb_per_s"]) for r in rows if r["op"] == op)
s, b = best("pull"), best("boto3")
print(f"best of repeats: saepipe pull {s:.1f} MB/s, boto3 download {b:.1f} MB/s, ratio saepipe/boto3 {s / b:.2f}")
PY
rm -f "$keys" /tmp/bench_pull.$$.out
