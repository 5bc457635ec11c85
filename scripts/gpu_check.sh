#!/usr/bin/env bash
# GPU check of the transformers engine on a borrowed machine: one GPU with torch,
# transformers and nvidia-ml-py, no vLLM, no network. From the repository root:
#
#     scripts/gpu_check.sh            # probe, then bf16 and fp8 runs of a catalog 8B model
#     scripts/gpu_check.sh --dry-run  # print the commands only (works on a CPU box)
#
# Wheels that the machine lacks (torchao for fp8) may be brought along as files in .whl/:
# they are installed from there with --no-index --no-deps. Results go to
# results/<hardware-id>/; a short summary (tok/s, J/token, NVML counter vs sampled power,
# bf16 vs fp8) ends the output. Sized to finish within 10 minutes on an H100.
# Settings (environment): MODEL, BATCHES (comma-separated static batch sizes), INPUT_LEN,
# OUTPUT_LEN, REQUESTS (measured per batch size), RUN_TIMEOUT_S (per bench run).
set -euo pipefail

DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  *) echo "usage: scripts/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

MODEL="${MODEL:-llama-3.1-8b}"
BATCHES="${BATCHES:-1,8}"
INPUT_LEN="${INPUT_LEN:-128}"
OUTPUT_LEN="${OUTPUT_LEN:-64}"
REQUESTS="${REQUESTS:-16}"
RUN_TIMEOUT_S="${RUN_TIMEOUT_S:-240}"
PYTHON="${PYTHON:-python3}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # dummy weights: nothing is downloaded

run() {
  printf '+ %s\n' "$*"
  if [[ $DRY_RUN == 0 ]]; then
    "$@"
  fi
}

shopt -s nullglob
wheels=(.whl/*.whl)
shopt -u nullglob
if ((${#wheels[@]})); then
  run "$PYTHON" -m pip install --quiet --no-index --no-deps "${wheels[@]}"
fi

# bench must import without vLLM on this path.
"$PYTHON" - <<'EOF'
import sys
import bench.cli.run_cmd, bench.cli.probe_cmd, bench.run.runner, bench.engines.hf_engine, bench.load.static  # noqa: F401
assert "vllm" not in sys.modules, "bench imported vllm on the transformers path"
EOF

HW="$("$PYTHON" -c 'from bench.catalog.device import detect_device; print(detect_device().hardware_id or "unknown-gpu")')"
OUT="results/$HW"
echo "hardware: $HW -> $OUT"
if [[ $DRY_RUN == 0 ]]; then
  mkdir -p "$OUT"
  "$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device visible to torch"'
fi

run timeout 120 "$PYTHON" -m bench probe --out "$OUT/probe.json" --min-time-s 0.2 --max-n 4096 --bandwidth-mb 1024

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
for precision in bf16 fp8; do
  args=(--engine hf --model "$MODEL" --concurrency "$BATCHES" --input-len "$INPUT_LEN" --output-len "$OUTPUT_LEN"
        --requests "$REQUESTS" --warmup 1 --dtype bfloat16 --telemetry nvml --out "$OUT")
  if [[ $precision == fp8 ]]; then
    args+=(--quantization fp8)
  fi
  if [[ -f $OUT/probe.json || $DRY_RUN == 1 ]]; then
    args+=(--probe "$OUT/probe.json")
  fi
  # A failed run (fp8 without torchao, say) is reported in the summary, not fatal.
  run timeout "$RUN_TIMEOUT_S" "$PYTHON" -m bench run "${args[@]}" 2>&1 | tee -a "$LOG" || true
done

if [[ $DRY_RUN == 1 ]]; then
  exit 0
fi

echo
echo "== summary ($MODEL on $HW, transformers engine) =="
mapfile -t RUN_DIRS < <(sed -n 's/^result: //p' "$LOG")
"$PYTHON" - "${RUN_DIRS[@]}" <<'EOF'
import sys
from pathlib import Path

from bench.results import read_summary


def plain(group):
    if group is None:
        return {}
    return group if isinstance(group, dict) else group.model_dump()


rows, by_precision = [], {}
if len(sys.argv) < 2:
    print("no run finished (see the output above)")
for run_dir in sys.argv[1:]:
    run = read_summary(Path(run_dir))
    for p in run.points:
        cfg = (run.config.get("engine_configs") or {}).get(p.engine_config_id, run.config)
        m, e = plain(p.metrics), plain(p.energy)
        sampled = sum(x for x in (e.get("sampled_energy_j") or []) if x is not None)
        gap = (e["energy_j"] - sampled) / sampled if e.get("energy_j") and sampled else None
        load = plain(p.load)
        batch = load.get("concurrency") or load.get("batch")
        key = (cfg.get("precision"), batch)
        by_precision[key] = m.get("output_tok_s")
        rows.append((cfg.get("precision"), batch, p.status, m.get("output_tok_s"), e.get("j_per_output_token"),
                     e.get("energy_method"), gap, cfg.get("engine_version")))
    if not run.points:
        print(f"{run_dir}: no points ({run.status}: {run.error})")


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


print(f"{'precision':<10}{'batch':>6}  {'status':<8}{'tok/s':>10}{'J/out-tok':>10}  {'method':<14}{'ctr-vs-smp':>11}  engine")
for prec, batch, status, tok_s, j_tok, method, gap, version in rows:
    print(f"{prec or '-':<10}{batch:>6}  {status:<8}{fmt(tok_s, '.1f'):>10}{fmt(j_tok, '.4f'):>10}  "
          f"{method or '-':<14}{fmt(gap, '+.2%'):>11}  {version}")
for (prec, batch), tok_s in sorted(by_precision.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
    base = by_precision.get(("bf16", batch))
    if prec != "bf16" and tok_s and base:
        print(f"batch {batch}: {prec} / bf16 throughput = {tok_s / base:.2f}x")
EOF
