#!/usr/bin/env bash
# Build a folder of wheels for an offline install on a machine of another Python version (or this one):
#   scripts/build_wheelhouse.sh DIR [PYTHON_VERSION]        e.g. scripts/build_wheelhouse.sh /media/usb/wheels 3.12
# Then, on the offline machine (Linux x86_64, glibc >= 2.28):
#   ROBOVISION_WHEELS=DIR scripts/setup.sh                  (add ROBOVISION_TORCH=system to keep a CUDA torch there)
# Downloads binary wheels only (for the target version and manylinux x86_64), from the same requirements and
# constraints as scripts/setup.sh, plus the build tools pip needs inside the venv.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: scripts/build_wheelhouse.sh DIR [PYTHON_VERSION]}
version=${2:-$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
mkdir -p "$out"
cd "$root"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 linux_x86_64; do
  platforms+=(--platform "$p")
done
echo "[wheelhouse] Python $version wheels into $out" >&2
python3 -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version "$version" \
  "${platforms[@]}" -d "$out" -c constraints.txt -r requirements-ros.txt -r requirements.txt pip wheel
echo "[wheelhouse] $(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1)" >&2
