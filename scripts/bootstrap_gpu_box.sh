#!/usr/bin/env bash
# One command for a freshly rented Linux GPU box: install bench, check the device, run a
# sweep, and (with BENCH_STORE set) upload the results to the shared store.
#
#   scripts/bootstrap_gpu_box.sh [SWEEP_FILE]            # from a checkout
#   BENCH_REPO=https://github.com/ORG/bench.git bash bootstrap_gpu_box.sh sweeps/gpu-llama-8b.yaml
#
# SWEEP_FILE (default sweeps/gpu-llama-8b.yaml) is relative to the checkout.
# Environment (all optional):
#   BENCH_REPO    git URL to clone when not run from a checkout
#   BENCH_REF     branch, tag or commit of BENCH_REPO to use (default: the default branch)
#   BENCH_DIR     where to clone BENCH_REPO (default: ~/bench)
#   BENCH_VENV    virtual environment folder (default: CHECKOUT/.venv)
#   BENCH_OUT     results folder (default: CHECKOUT/results/<host>-<UTC date>)
#   BENCH_STORE   store URL (s3://..., gs://..., hf://..., a folder): upload results there
#   BENCH_EXTRAS  pip extras (default: gpu,dev)
#   BENCH_ALLOW_NO_GPU=1   go on without nvidia-smi (CPU hosts, AMD boxes)
#   BENCH_PLAN_ONLY=1      stop after `bench plan` (check the sweep, run nothing)
# Safe to run again: an existing clone, venv and install are reused; each run writes a new
# run folder under BENCH_OUT.
set -euo pipefail

say() { printf '\n==> %s\n' "$*"; }
# a bench subcommand of this version (grep without -q: an early exit would SIGPIPE bench under pipefail)
has_cmd() { bench --help 2>/dev/null | grep -E "^\s+$1\b" >/dev/null; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

SWEEP_FILE="${1:-sweeps/gpu-llama-8b.yaml}"
EXTRAS="${BENCH_EXTRAS:-gpu,dev}"

# 1. the checkout: this script's own, or a clone of BENCH_REPO
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -f "$script_dir/../pyproject.toml" ]] && grep -q '^name = "bench"' "$script_dir/../pyproject.toml"; then
  CHECKOUT="$(cd "$script_dir/.." && pwd)"
elif [[ -n "${BENCH_REPO:-}" ]]; then
  command -v git >/dev/null || die "git not found; install it (apt-get install -y git)"
  CHECKOUT="${BENCH_DIR:-$HOME/bench}"
  if [[ -d "$CHECKOUT/.git" ]]; then
    say "updating $CHECKOUT from $BENCH_REPO"
    git -C "$CHECKOUT" fetch --quiet origin
  else
    say "cloning $BENCH_REPO into $CHECKOUT"
    git clone --quiet "$BENCH_REPO" "$CHECKOUT"
  fi
  if [[ -n "${BENCH_REF:-}" ]]; then
    git -C "$CHECKOUT" checkout --quiet "$BENCH_REF"
  fi
else
  die "not inside a bench checkout; set BENCH_REPO to a git URL to clone"
fi
cd "$CHECKOUT"
[[ -f "$SWEEP_FILE" ]] || die "sweep file '$SWEEP_FILE' not found in $CHECKOUT (see sweeps/)"

# 2. the device
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  say "GPUs"
  nvidia-smi --query-gpu=index,name,memory.total,driver_version,power.limit --format=csv
elif [[ "${BENCH_ALLOW_NO_GPU:-0}" == "1" ]]; then
  say "no working nvidia-smi; going on (BENCH_ALLOW_NO_GPU=1)"
else
  die "nvidia-smi missing or failing: no NVIDIA driver on this box (BENCH_ALLOW_NO_GPU=1 to go on anyway)"
fi

# 3. Python and the virtual environment
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.11 or newer"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$("$PYTHON" -V 2>&1) is too old; bench needs Python 3.11 or newer (set PYTHON=python3.11)"
VENV="${BENCH_VENV:-$CHECKOUT/.venv}"
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV" || die "python venv failed (apt-get install -y python3-venv?)"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
say "installing bench[$EXTRAS] (editable) into $VENV"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[$EXTRAS]"
command -v bench >/dev/null || die "the bench command is missing after install"

# 4. what is here, and what it can do
OUT="${BENCH_OUT:-$CHECKOUT/results/$(hostname -s)-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
say "hardware"
if has_cmd hardware; then bench hardware | tee "$OUT/hardware.txt"; else say "bench hardware: not in this version"; fi
if has_cmd probe; then
  say "probe (measured bandwidth and FLOPS)"
  if bench probe --help 2>/dev/null | grep -- '--out' >/dev/null; then
    bench probe --out "$OUT/probe.json"
    export BENCH_PROBE_FILE="$OUT/probe.json"
  else
    bench probe | tee "$OUT/probe.txt"
  fi
else
  say "bench probe: not in this version; skipped"
fi

# 5. the sweep: its plan first (what runs, what is skipped, how long), then the run
say "plan for $SWEEP_FILE"
bench plan "$SWEEP_FILE" | tee "$OUT/plan.txt"
if [[ "${BENCH_PLAN_ONLY:-0}" == "1" ]]; then
  say "BENCH_PLAN_ONLY=1: stopping before the sweep; plan in $OUT/plan.txt"
  exit 0
fi
say "sweep $SWEEP_FILE -> $OUT"
sweep_rc=0
bench sweep "$SWEEP_FILE" --out "$OUT" || sweep_rc=$?
(( sweep_rc == 0 )) || printf 'bootstrap: sweep exited %s; uploading what was written\n' "$sweep_rc" >&2

# 6. upload every run folder written here
if [[ -n "${BENCH_STORE:-}" ]]; then
  mapfile -t runs < <(find "$OUT" -mindepth 1 -maxdepth 1 -type d -exec test -f '{}/run.json' ';' -print | sort)
  if (( ${#runs[@]} )); then
    say "uploading ${#runs[@]} run(s) to $BENCH_STORE"
    bench upload "${runs[@]}" --to "$BENCH_STORE"
  else
    say "no run folders under $OUT; nothing to upload"
  fi
else
  say "BENCH_STORE not set; results stay in $OUT"
fi
say "done: results in $OUT"
exit "$sweep_rc"
