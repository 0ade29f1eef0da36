#!/usr/bin/env bash
# Driver overhead of the Slurm executor, side by side with Snakemake's Slurm
# executor plugin on the same local Slurm and an equivalent workflow: N
# trivial, independent stage instances (each writes one small file), every
# one a Slurm job. Prints each tool's wall time, the time per instance, and
# the ratio. Both poll Slurm every 2 s and keep up to 100 jobs in flight.
#
#   scripts/bench/slurm_overhead.sh [N]        # default 200
#
# Uses $SLURM_CONF when set, else starts the local test cluster
# (scripts/slurm_local.sh; needs root). Installs Snakemake and its Slurm
# plugin (pinned, from PyPI) into target/snakemake-venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
n=${1:-200}

work=$(mktemp -d)
started=""
linked=""
cleanup() {
  rm -rf "$work"
  if [ -n "$linked" ]; then rm -f /etc/slurm/slurm.conf; fi
  if [ -n "$started" ]; then scripts/slurm_local.sh stop target/slurm; fi
}
trap cleanup EXIT
if [ -z "${SLURM_CONF:-}" ]; then
  SLURM_CONF=$(scripts/slurm_local.sh start target/slurm)
  export SLURM_CONF
  started=yes
fi
# Snakemake's jobs run their rule through `srun`, which inside a job looks for
# the configuration at its default path; point it at this cluster's for the run.
if [ ! -e /etc/slurm/slurm.conf ]; then
  mkdir -p /etc/slurm && ln -s "$SLURM_CONF" /etc/slurm/slurm.conf && linked=yes
fi
venv=target/snakemake-venv
if [ ! -x "$venv/bin/snakemake" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet snakemake==9.27.1 snakemake-executor-plugin-slurm==2.8.0 >&2
fi
cargo build --release --quiet --bin saepipe
saepipe="$root/target/release/saepipe"

items=$(seq -s, 1 "$n")

mkdir -p "$work/saepipe" "$work/snakemake"
cat >"$work/saepipe/p.yaml" <<YAML
version: 1
name: overhead
stages:
  s:
    op: command
    foreach: [$items]
    run: 'echo \${item} > "\$SAEPIPE_OUT/x.txt"'
YAML
cat >"$work/snakemake/Snakefile" <<SMK
rule all:
    input: expand("out/{i}.txt", i=range(1, $n + 1))

rule make:
    output: "out/{i}.txt"
    resources: mem_mb=1000
    shell: "echo {wildcards.i} > {output}"
SMK

now() { date +%s.%N; }

t0=$(now)
(cd "$work/saepipe" && SAEPIPE_SLURM_POLL_MS=2000 "$saepipe" run p.yaml --executor slurm -q)
t1=$(now)
(cd "$work/snakemake" && "$root/$venv/bin/snakemake" --executor slurm --jobs 100 --quiet all \
  --slurm-status-command squeue --slurm-init-seconds-before-status-checks 1 \
  --seconds-between-status-checks 2 --latency-wait 5 --default-resources slurm_partition=debug \
  >"$work/snakemake.log" 2>&1) || { tail -20 "$work/snakemake.log"; exit 1; }
t2=$(now)

python3 - "$n" "$t0" "$t1" "$t2" <<'PY'
import sys
n, t0, t1, t2 = int(sys.argv[1]), *map(float, sys.argv[2:])
s, k = t1 - t0, t2 - t1
print(f"{n} trivial stage instances as Slurm jobs on one local Slurm")
print(f"  saepipe   {s:7.1f} s  ({s / n * 1000:6.0f} ms per instance)")
print(f"  snakemake {k:7.1f} s  ({k / n * 1000:6.0f} ms per instance)")
print(f"  snakemake / saepipe: {k / s:.2f}x")
PY
