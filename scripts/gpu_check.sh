#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one run on a CUDA machine, from the repository root
# (about 10-12 minutes on one H200 for all four stages, most of it torch.compile and the
# precision sweep):
#   bench      cmfnet bench: full CMF-Net x4 batch 8, each speed option and the combinations
#              against fp32 eager, % of the bf16 peak, the data path, launch to first step;
#   overhead   is the step launch-bound? bf16 eager at batch 32, and compile with CUDA graphs
#              (performance.compile_mode=reduce-overhead) at batch 8;
#   grid       the GPU paths: a 2x2 smoke grid through launcher=gpus with trainer=gpu, one
#              trainer=ddp run, one run with the GPU defaults (no trainer override);
#   precision  bf16 against fp32 on the GPU: sweeps=precision for the full CMF-Net, three jobs
#              at a time on GPU 0, then cmfnet report;
#   validation the validation metrics: the earlier path (host copies, scikit-image) against the
#              streaming one on the GPU, 45 volumes x 35 slices at x4 (cmfnet bench validation=true;
#              not in the default list: about a minute, run it with either half);
#   methods    the paper's seven methods at its size (x4, LR 80, batch 8, fp32 eager) beside
#              CMF-Net: parameters, MACs, training-memory floor, samples/s and peak GPU memory
#              (cmfnet bench methods=[...]; not in the default list: a few minutes).
# Usage: scripts/gpu_check.sh OUT_DIR [STAGE ...]      (default: bench overhead grid precision;
# on a 10-minute command limit run "bench overhead" and "grid precision" as two commands, each under
# `timeout 540`; what finished is in OUT_DIR, and bench.json keeps the options measured so far)
# GPU_CHECK_OVERRIDES="k=v ..." is appended to every command (a dry run on a CPU machine:
# GPU_CHECK_OVERRIDES="experiment=smoke trainer=cpu").
# OUT_DIR/summary.txt says what passed; each step's log, bench.json and the reports lie beside it.
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [bench] [overhead] [grid] [precision] [validation] [methods]}
shift
stages=${*:-bench overhead grid precision}
read -r -a extra <<< "${GPU_CHECK_OVERRIDES:-}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
export CMFNET_CACHE_DIR=${CMFNET_CACHE_DIR:-$PWD/.cache/cmfnet}
failures=0

step() {  # step NAME COMMAND...: run it, log to OUT_DIR/NAME.log, note the outcome in summary.txt
  local name=$1 start code
  shift
  start=$(date +%s)
  echo "== $name: $*" | tee -a "$out/summary.txt"
  "$@" > "$out/$name.log" 2>&1
  code=$?
  if [ "$code" -eq 0 ]; then
    echo "   ok, $(( $(date +%s) - start )) s" | tee -a "$out/summary.txt"
  else
    echo "   FAILED with exit code $code after $(( $(date +%s) - start )) s; last lines:" | tee -a "$out/summary.txt"
    tail -n 5 "$out/$name.log" | sed 's/^/   | /' | tee -a "$out/summary.txt"
    failures=$((failures + 1))
  fi
}

{
  date -u
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])"
  nproc
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
} > "$out/environment.txt" 2>&1

for stage in $stages; do
  case $stage in
    bench)
      step bench python3 -m cmfnet.cli bench model=cmfnet scale=4 batch=8 warmup_steps=3 timed_steps=10 \
        "options=[bf16,channels_last,cudnn_benchmark,activation_checkpointing,compile,bf16+channels_last+cudnn_benchmark,bf16+channels_last+cudnn_benchmark+compile,bf16+activation_checkpointing,fit_loop,fit_loop_data]" \
        "data_workers=[0,2,4]" "json=$out/bench.json" "${extra[@]}"
      ;;
    overhead)
      step batch32 python3 -m cmfnet.cli bench model=cmfnet scale=4 batch=32 warmup_steps=3 timed_steps=10 \
        "options=[bf16+channels_last+cudnn_benchmark]" "data_workers=[]" launch=false "json=$out/bench_batch32.json" \
        "${extra[@]}"
      step cudagraphs python3 -m cmfnet.cli bench model=cmfnet scale=4 batch=8 warmup_steps=5 timed_steps=10 \
        "options=[bf16+channels_last+cudnn_benchmark+compile]" performance.compile_mode=reduce-overhead \
        "data_workers=[]" launch=false "json=$out/bench_cudagraphs.json" "${extra[@]}"
      ;;
    grid)
      step grid python3 run.py -m experiment=smoke launcher=gpus trainer=gpu scale=2,4 accel=4,8 logger=none \
        "hydra.sweep.dir=$out/grid" "${extra[@]}"
      [ -f "$out/grid/results.md" ] && cp "$out/grid/results.md" "$out/grid_results.md"
      step ddp python3 run.py experiment=smoke trainer=ddp logger=none "hydra.run.dir=$out/ddp" "${extra[@]}"
      step defaults python3 run.py experiment=smoke trainer=default logger=none "hydra.run.dir=$out/defaults" \
        "${extra[@]}"
      grep -E "^  (accelerator|precision|benchmark):|^  pin_memory:" "$out/defaults/config.yaml" | tee -a "$out/summary.txt"
      ;;
    precision)
      step precision python3 run.py sweeps=precision trainer=gpu launcher=gpus logger=none hydra.sweeper.params.model=cmfnet \
        "hydra.launcher.devices=[0,0,0]" "hydra.sweep.dir=$out/precision" "${extra[@]}"
      step precision_report python3 -m cmfnet.cli report "$out/precision" --out "$out" --name precision --no-wandb
      ;;
    validation)
      step validation python3 -m cmfnet.cli bench validation=true "json=$out/bench_validation.json" \
        "${extra[@]}"
      ;;
    methods)
      step methods python3 -m cmfnet.cli bench model=cmfnet scale=4 batch=8 warmup_steps=2 timed_steps=5 \
        "methods=[cmfnet,t2net,unet_edsr_mc,unet_swinir,mtrans_edsr,mtrans_edsr_mc,mtrans_swinir_mc]" \
        "json=$out/bench_methods.json" "${extra[@]}"
      ;;
    *)
      echo "unknown stage '$stage' (bench, overhead, grid, precision, validation, methods)" >&2
      exit 2
      ;;
  esac
done
echo "$failures step(s) failed" | tee -a "$out/summary.txt"
[ "$failures" -eq 0 ]
