#!/usr/bin/env bash
# The checks that need a GPU, in one script for a session that is lent one (issue 22). Prints one
# block per check and a summary; run from the repository root with the venv active:
#     bash tests/benchmarks/gpu_checks.sh [OUT_DIR]     # about 10 minutes on one H100/H200
# 1. the unit suite on the GPU machine (not slow; CUDA-only tests such as the bf16 dtype check run)
# 2. a bf16 SmolLM2 run through lm-eval on cuda with identical controls (adaptation_semantic has them):
#    kl_noise_floor@N should be 0, and the results' config records the card
# 3. tests/benchmarks/gpu_7b_shape.py: the ratio table, peak memory and docs/hour at the 7B shape in bf16
# Record what it printed, and the card (nvidia-smi line), in README.md "Performance".
set -u
OUT="${1:-gpu_checks_out}"
mkdir -p "$OUT"
export KVINJECT_CACHE="${KVINJECT_CACHE:-$PWD/.cache/kvinject}"
status=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt" || status=1

echo "== 1. unit suite (not slow) on the GPU machine"
timeout 300 python -m pytest -q -m "not slow" -x tests/model_adapters/engine/test_engine_precision.py tests/model_adapters/test_loading.py \
    tests/model_adapters/test_distributed.py tests/model_adapters/engine/test_engine_exactness.py \
    tests/model_adapters/engine/test_engine_sliding_window.py tests/model_adapters/engine/test_engine_attention.py \
    > "$OUT/suite.log" 2>&1; rc=$?; tail -3 "$OUT/suite.log"; [ $rc -eq 0 ] || status=1

echo "== 2. bf16 SmolLM2 run on cuda (identical controls included)"
timeout 240 python -m lm_eval --model kvinject \
    --model_args pretrained=smollm2-135m,dtype=bfloat16,device=cuda,batch_size=8,injection_points=5:10,result_store=none \
    --tasks adaptation_semantic --limit 24 --gen_kwargs max_gen_toks=48 \
    --metadata '{"adaptation": {"report": "full"}}' --output_path "$OUT/smollm2_bf16" \
    > "$OUT/smollm2_bf16.log" 2>&1; rc=$?
grep -E "kl_noise_floor|adaptation_point_share|detection_rate |n_controls" "$OUT/smollm2_bf16.log" | head -20
[ $rc -eq 0 ] || { tail -20 "$OUT/smollm2_bf16.log"; status=1; }

echo "== 3. 7B-shape benchmark (bf16, random weights)"
timeout 420 python tests/benchmarks/gpu_7b_shape.py > "$OUT/gpu_7b_shape.log" 2>&1; rc=$?
cat "$OUT/gpu_7b_shape.log" | tail -30; [ $rc -eq 0 ] || status=1

echo "== gpu_checks: $([ $status -eq 0 ] && echo all passed || echo SOME FAILED) (logs in $OUT)"
exit $status
