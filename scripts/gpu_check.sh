#!/usr/bin/env bash
# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

# The GPU path in one go (DEVELOPERS.md, "GPU check"): install, build, run the nodes end to end through ROS, write a
# results file. On a CUDA machine with this repository and its wheelhouse (scripts/build_wheelhouse.sh):
#   scripts/gpu_check.sh --wheels DIR [--out gpu_check_results.md]
# On any machine, CPU mode (what CI runs, so that the script cannot rot; embedded models, torch fp32):
#   scripts/gpu_check.sh --device cpu
# Options: --device cuda|cpu (default cuda), --wheels DIR (offline install from a wheelhouse), --out FILE,
#          --seconds N (stream of each run, default 8), --budget-s N (stop starting runs after N s, default 420).
# On cuda the machine's own CUDA torch is used (ROBOVISION_TORCH=system): the venv sees the site-packages of the
# python3 that imports it, and nothing installs another torch. Exit status: 0 when every run produced results.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
device=cuda
wheels=
out=$root/gpu_check_results.md
seconds=8
budget=420
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --wheels) wheels=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --budget-s) budget=$2; shift 2 ;;
    *) echo "gpu_check: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
case "$device" in cuda|cpu) ;; *) echo "gpu_check: --device must be cuda or cpu, not '$device'" >&2; exit 2 ;; esac
log() { printf '[gpu_check %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
started=$(date +%s)

if [ -n "$wheels" ]; then
  export ROBOVISION_WHEELS=$wheels
fi
if [ "$device" = cuda ]; then
  python=${PYTHON:-python3}
  "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null || {
    echo "gpu_check: $python has no torch that sees a CUDA GPU; install one (DEVELOPERS.md) or use --device cpu" >&2
    exit 2
  }
  export ROBOVISION_TORCH=system
  export ROBOVISION_VENV=${ROBOVISION_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/robovision_ros/venv-gpu}
  if [ ! -x "$ROBOVISION_VENV/bin/python" ]; then
    # The CUDA torch may itself live in a venv (whose packages --system-site-packages would not show): point the
    # new venv at that interpreter's site-packages with a .pth file, after its own (so pinned packages win).
    log "creating $ROBOVISION_VENV on top of $python's packages (torch $("$python" -c 'import torch; print(torch.__version__)'))"
    "$python" -m venv "$ROBOVISION_VENV"
    site=$("$ROBOVISION_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$python" -c 'import site, sys; print("\n".join(p for p in site.getsitepackages() + [site.getusersitepackages()]))' \
      > "$site/zz_system_torch.pth"
  fi
  export PYTHON=$python
fi

log "setup ($device)"
"$root/scripts/setup.sh"
# shellcheck source=env.sh
source "$root/scripts/env.sh"
log "setup done in $(( $(date +%s) - started )) s"
cd /  # not the source tree: the colcon install is the one to run
status=0
"$root/install/robovision_ros/lib/robovision_ros/robovision_gpu_check" --device "$device" --out "$out" --seconds "$seconds" --budget-s "$budget" || status=$?
log "finished in $(( $(date +%s) - started )) s with status $status: $out"
exit $status
