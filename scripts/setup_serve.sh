#!/usr/bin/env bash
# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

# Create the venv the Triton server of `robovision_serve` runs in: nvidia-pytriton and the model stack of
# requirements-serve.txt, on the system Python.
#
# Why a venv of its own: pytriton's bundled Triton server starts a Python-backend stub that links the system
# libpython; it must be the interpreter the venv was made from (here /usr/bin/python3, 3.11.2). From another
# build of 3.11 (e.g. pyenv's, which the project venv may use) the stub fails at start. pytriton also needs
# numpy < 2, which the project venv does not have.
#
# Idempotent: a second run installs nothing unless requirements-serve.txt, constraints.txt or this script
# changed. Override the location with ROBOVISION_SERVE_VENV and the interpreter with ROBOVISION_SERVE_PYTHON.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${ROBOVISION_SERVE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/robovision_ros/serve-venv}
python=${ROBOVISION_SERVE_PYTHON:-/usr/bin/python3}
cd "$root"

log() { printf '[setup_serve] %s\n' "$*" >&2; }

if [ ! -x "$python" ]; then
  log "no $python: the Triton server needs the system Python 3 (set ROBOVISION_SERVE_PYTHON)"
  exit 3
fi
if [ ! -x "$venv/bin/python" ]; then
  log "creating venv $venv with $python"
  "$python" -m venv "$venv"
fi

stamp="$venv/.robovision-serve-stamp"
want=$(cat requirements-serve.txt constraints.txt scripts/setup_serve.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing nvidia-pytriton and the model stack (first run: a few minutes)"
  pip_install() {
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt "$@" \
      2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  }
  # torch first and alone, so that pip takes the CPU build before anything else can ask for torch.
  pip_install 'torch==2.13.0'
  pip_install -r requirements-serve.txt
  "$venv/bin/python" -c 'import pytriton.triton, onnxruntime, torch, transformers' >/dev/null
  echo "$want" > "$stamp"
else
  log "up to date ($venv)"
fi
echo "$venv"
