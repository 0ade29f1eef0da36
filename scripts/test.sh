#!/usr/bin/env bash
# Runs the whole test suite (all crates). Needs only the Rust toolchain; tests
# build their own tiny models and data and never touch the network.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
