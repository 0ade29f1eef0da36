#!/usr/bin/env bash
# Every check that needs an NVIDIA GPU, prepared on a build machine and run on
# a GPU machine that has a driver, CUDA's NVRTC and python3 with torch, but no
# Rust toolchain and no network.
#
#   scripts/gpu_check.sh pack            # build machine: release test binaries,
#                                        # benchmarks and wheels into .gpu-check/
#   scripts/gpu_check.sh run [tests|bench|all]   # GPU machine, repository root
#
# `pack` builds (cargo, release), strips and xz-compresses the test binaries
# that hold GPU tests (crates/cuda's kernel, LM-forward and NVRTC tests; the
# `device: cuda` stage tests of the main crate) plus the GPU benchmarks and the
# saepipe binary, and downloads TransformerLens 3.9 with the dependencies a
# stock PyTorch image lacks (for the LM-forward comparison). Everything lands
# in .gpu-check/ (git-ignored, about 30 MB), which travels with the tree.
#
# `run` restores the binaries at the paths they were built for (the tests find
# the saepipe binary and the repository through absolute build-time paths: if
# the checkout lives elsewhere here, that path is made a link to it), then:
#   tests: every GPU test with SAEPIPE_REQUIRE_GPU=1, so a missing GPU fails
#          instead of skipping;
#   bench: TopK encode+top-k+decode vs PyTorch (f32, then TF32 on both sides),
#          the TopK training step vs PyTorch, the LM forward vs TransformerLens.
# Logs go to $OUT (if set) or .gpu-check/out. Exits non-zero if a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
pack_dir=.gpu-check
PYTHON=${PYTHON:-python3}

die() {
    echo "gpu_check.sh: $*" >&2
    exit 1
}

# Test binaries (package, test target) and examples that hold the GPU checks.
cuda_tests=(gpu_kernels gpu_lm_kernels gpu_train lm_forward tl_golden_gpu compile_kernels)
main_tests=(evaluate_op checkpoint_matching)
examples=(bench_gpu_encode bench_gpu_train bench_gpu_forward)

# Wheels for TransformerLens 3.9 on an image with torch/transformers but not these.
tl_wheels=(transformer-lens==3.9.0 transformers==5.23.0 beartype==0.23.1 better-abc==0.0.3 datasets==5.2.0 dill==0.4.1
    multiprocess==0.70.19 fancy-einsum==0.0.3 typeguard==4.6.1)

pack() {
    command -v cargo >/dev/null || die "pack needs cargo"
    rm -rf "$pack_dir" && mkdir -p "$pack_dir/bin" "$pack_dir/whl"
    local json
    json=$(mktemp)
    trap 'rm -f "$json"' RETURN
    cargo build --release --locked -q --bin saepipe
    cargo build --release --locked -q -p saepipe-cuda $(printf -- '--example %s ' "${examples[@]}")
    {
        cargo test --release --locked --no-run -q -p saepipe-cuda $(printf -- '--test %s ' "${cuda_tests[@]}") --message-format=json
        cargo test --release --locked --no-run -q $(printf -- '--test %s ' "${main_tests[@]}") --message-format=json
    } >"$json"
    # manifest: one line per binary, "<name> <path relative to the root>"
    "$PYTHON" - "$json" "${cuda_tests[@]}" "${main_tests[@]}" >"$pack_dir/manifest" <<'PY'
import json, os, sys
wanted = set(sys.argv[2:])
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in wanted and "test" in m["target"]["kind"]:
        print(m["target"]["name"], os.path.relpath(m["executable"]))
PY
    echo "saepipe target/release/saepipe" >>"$pack_dir/manifest"
    for e in "${examples[@]}"; do echo "$e target/release/examples/$e" >>"$pack_dir/manifest"; done
    [ "$(wc -l <"$pack_dir/manifest")" -eq $((${#cuda_tests[@]} + ${#main_tests[@]} + 1 + ${#examples[@]})) ] || die "missing binaries: $(cat "$pack_dir/manifest")"
    while read -r name path; do
        strip -o "$pack_dir/bin/$name" "$path"
        xz -T0 -6 "$pack_dir/bin/$name"
    done <"$pack_dir/manifest"
    echo "$root" >"$pack_dir/build_root"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$pack_dir/whl" "${tl_wheels[@]}"
    du -sh "$pack_dir"
    [ "$(du -sm "$pack_dir" | cut -f1)" -lt 60 ] || die "$pack_dir is over 60 MB"
}

unpack() {
    [ -f "$pack_dir/manifest" ] || die "no $pack_dir/manifest: run \`scripts/gpu_check.sh pack\` on a build machine first"
    while read -r name path; do
        mkdir -p "$(dirname "$path")"
        xz -dc "$pack_dir/bin/$name.xz" >"$path"
        chmod +x "$path"
    done <"$pack_dir/manifest"
    local built
    built=$(cat "$pack_dir/build_root")
    if [ "$built" != "$root" ]; then
        if [ -e "$built" ] && [ ! -L "$built" ]; then
            die "the binaries expect the repository at $built, which exists here and is not this checkout"
        fi
        mkdir -p "$(dirname "$built")"
        ln -sfn "$root" "$built"
    fi
    if ls "$pack_dir"/whl/*.whl >/dev/null 2>&1; then
        # Built for the GPU image's Python (3.12); without them only the TransformerLens comparison fails.
        if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu-check-site "$pack_dir"/whl/*.whl; then
            export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
        else
            echo "gpu_check.sh: the TransformerLens wheels did not install; the LM-forward comparison will fail" >&2
        fi
    fi
}

binary() {
    awk -v n="$1" '$1 == n { print $2 }' "$pack_dir/manifest"
}

run_tests() {
    export SAEPIPE_REQUIRE_GPU=1
    local failed=0
    for t in "${cuda_tests[@]}"; do
        echo "== $t"
        "$(binary "$t")" --test-threads=1 --nocapture || failed=1
    done
    echo "== evaluate_op: collection and evaluation on CUDA"
    "$(binary evaluate_op)" collection_and_evaluation_on_cuda --nocapture || failed=1
    echo "== checkpoint_matching: training on CUDA"
    "$(binary checkpoint_matching)" training_on_cuda --nocapture || failed=1
    return $failed
}

run_bench() {
    echo "== TopK SAE encode + top-k + decode vs PyTorch, f32"
    BENCH_ENCODE_BIN=$(binary bench_gpu_encode) scripts/bench/gpu_encode.sh || echo "encode benchmark FAILED"
    echo "== same, TF32 tensor cores on both sides"
    BENCH_TF32=1 BENCH_ENCODE_BIN=$(binary bench_gpu_encode) scripts/bench/gpu_encode.sh || echo "encode benchmark (TF32) FAILED"
    echo "== TopK training step: saepipe GPU trainer vs PyTorch (f32, then PyTorch TF32)"
    BENCH_CPU_STEPS=0 "$(binary bench_gpu_train)" 16384 32768 || echo "training benchmark FAILED"
    "$PYTHON" scripts/bench/gpu_train_torch.py || echo "torch training benchmark FAILED"
    "$PYTHON" scripts/bench/gpu_train_torch.py --tf32 || echo "torch training benchmark FAILED"
    echo "== LM forward (collection, loss) vs TransformerLens on the GPU"
    PYTHON=$PYTHON "$(binary bench_gpu_forward)" || echo "forward benchmark FAILED"
}

case "${1:-}" in
pack) pack ;;
run)
    out=${OUT:-$pack_dir/out}
    mkdir -p "$out"
    unpack
    nvidia-smi -L || true
    status=0
    case "${2:-all}" in
    tests) run_tests 2>&1 | tee "$out/tests.log" || status=1 ;;
    bench) run_bench 2>&1 | tee "$out/bench.log" ;;
    all)
        run_tests 2>&1 | tee "$out/tests.log" || status=1
        run_bench 2>&1 | tee "$out/bench.log"
        ;;
    *) die "run what? tests, bench or all" ;;
    esac
    exit $status
    ;;
*) die "usage: scripts/gpu_check.sh pack | run [tests|bench|all]" ;;
esac
