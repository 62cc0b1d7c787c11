#!/usr/bin/env bash
# Regenerates requirements/lock.txt: the exact versions `make` installs (runtime + [lab] + [dev] extras), so a
# run today and a run next year resolve the same packages. `pip install -e .` stays unpinned.
#
#   bash scripts/lock_requirements.sh        # resolves in a throw-away venv, writes requirements/lock.txt
#
# pip resolves for this machine (Linux x86_64, CPython 3.11). PyPI's Linux torch wheels depend on CUDA
# libraries (nvidia-*, triton, cuda-*) that exist only for Linux, so those lines get a `sys_platform ==
# "linux"` marker: on macOS/Windows pip skips them and takes that platform's torch wheel of the same version.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --upgrade pip
"$tmp/venv/bin/python" -m pip install --quiet -e "$repo[lab,dev]"  # editable: leaves no build/ in the tree
py_version="$("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version())')"

out="$repo/requirements/lock.txt"
mkdir -p "$repo/requirements"
{
  echo "# Exact versions for dsn-lab's runtime + [lab] + [dev] extras; made by scripts/lock_requirements.sh"
  echo "# on $(uname -s) $(uname -m), CPython $py_version, $(date -u +%Y-%m-%d). Installed by \`make install\`:"
  echo "#   pip install -r requirements/lock.txt && pip install --no-deps -e ."
  echo "# Linux-only CUDA runtime wheels carry a sys_platform marker (see the script)."
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable --all \
    | grep -v -E '^(dsn-lab|dsn_lab)( @|==)' \
    | grep -v -E '^(pip|setuptools|wheel)==' \
    | sed -E 's/^((nvidia-[^=]+|triton|cuda-[^=]+)==[^ ]+)$/\1 ; sys_platform == "linux"/' \
    | LC_ALL=C sort -f
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -c '==' "$out") pinned packages)"
