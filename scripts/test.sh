#!/usr/bin/env bash
# Runs the whole test suite. Needs the Rust toolchain and python3 with pip: the
# script installs the NVRTC library from PyPI (no GPU or CUDA toolkit needed) so
# every CUDA kernel is compiled for sm_80 and sm_90, moto's S3 server (into a
# virtualenv under target/) for the remote-cache tests and the Python dataset
# readers (another virtualenv) for the plain-dataset tests, and starts a local
# Slurm (scripts/slurm_local.sh; needs root). Tests build their own tiny models
# and data and never touch the network otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

nvrtc_dir=target/nvrtc
if [ -z "${SAEPIPE_NVRTC_LIB:-}" ]; then
  lib=$(ls "$nvrtc_dir"/nvidia/cuda_nvrtc/lib/libnvrtc.so.* 2>/dev/null | grep -v builtins | grep -v alt | head -n 1 || true)
  if [ -z "$lib" ]; then
    echo "installing the NVRTC library from PyPI into $nvrtc_dir (for kernel compile tests)" >&2
    python3 -m pip install --quiet --disable-pip-version-check --target "$nvrtc_dir" "nvidia-cuda-nvrtc-cu12>=12.4,<13" >&2
    lib=$(ls "$nvrtc_dir"/nvidia/cuda_nvrtc/lib/libnvrtc.so.* | grep -v builtins | grep -v alt | head -n 1)
  fi
  export SAEPIPE_NVRTC_LIB="$PWD/$lib"
fi

# moto's standalone S3 server (from PyPI) backs the remote-cache tests.
moto_dir=target/moto-venv
if [ -z "${SAEPIPE_MOTO_SERVER:-}" ]; then
  if [ ! -x "$moto_dir/bin/moto_server" ]; then
    echo "installing moto[server] from PyPI into $moto_dir (a local S3 server for the remote tests)" >&2
    python3 -m venv "$moto_dir"
    "$moto_dir/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.2.5" >&2
  fi
  export SAEPIPE_MOTO_SERVER="$PWD/$moto_dir/bin/moto_server"
fi

# pandas, pyarrow, polars and DuckDB (from PyPI, pinned) open activation stores
# as plain datasets in tests/plain_datasets.rs.
if [ -z "${SAEPIPE_READERS_PYTHON:-}" ]; then
  SAEPIPE_READERS_PYTHON=$(scripts/py_readers_venv.sh target/readers-venv)
  export SAEPIPE_READERS_PYTHON
fi

# Debian's Chromium for the report browser test (tests/report_browser.rs).
[ -n "${SAEPIPE_CHROMIUM:-}" ] || { SAEPIPE_CHROMIUM=$(scripts/chromium.sh); export SAEPIPE_CHROMIUM; }

# A one-node Slurm (slurm-wlm and munge from Debian, started as root) for the
# cluster tests; stopped when the suite ends.
if [ -z "${SLURM_CONF:-}" ]; then
  SLURM_CONF=$(scripts/slurm_local.sh start target/slurm)
  export SLURM_CONF
  trap 'scripts/slurm_local.sh stop target/slurm' EXIT
fi

# Code habits first (cheap, and a failure here says what to fix): formatting,
# lints with warnings denied, and the API docs (broken intra-doc links, missing
# docs on the library crates) with warnings denied.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet

cargo test --workspace --locked "$@"
# GPU kernel tests skip without a GPU; show that they did.
cargo test --locked -p saepipe-cuda --test gpu_kernels -- --nocapture 2>&1 | grep -E "SKIPPED|test result" || true
# Bounded fault injection (concurrent runs, SIGKILL/SIGSTOP, flipped bytes) on
# the engine's test pipeline; prints trials and failures, fails the suite on any.
./scripts/fault_inject.sh "${SAEPIPE_FAULT_SECONDS:-60}" target/debug/saepipe 2>&1 | tail -n 3
