#!/usr/bin/env bash
# The front door, walked as a newcomer walks it: a fresh clone of the commit under test, an empty HOME and
# empty dataset caches, every Debian-installed data file the package could find hidden, then the README's
# own `make demo` (with DEMO_ARGS=--quick unless DEMO_ARGS is set), which builds EmojiSketch v1 and v2 there.
# Prints the demo's tables and the wall time; fails when the demo fails or prints no multi-style table.
#
#   bash scripts/front_door_check.sh            # what CI runs (make front-door)
#   DEMO_ARGS= bash scripts/front_door_check.sh # the full demo instead of --quick
#
# Hiding system files: as root, the demo runs in a private mount namespace (`unshare -m`) with an empty tmpfs
# over /usr/share/wordnet (Debian's WordNet 3.0), so a package path that still reads it fails here. Without
# root, `unshare -rm` (a user namespace) does the same where the kernel allows it; otherwise the check says
# that it could not hide them and runs anyway. Only pip's download cache is reused (it holds wheels, not
# results), so the install is a real install.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
commit="$(git -C "$repo" rev-parse HEAD)"
work="$(mktemp -d "${TMPDIR:-/tmp}/dsn-front-door.XXXXXX")"
keep="${KEEP_FRONT_DOOR:-0}"
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT

pip_cache="${PIP_CACHE_DIR:-$HOME/.cache/pip}"
hidden=(/usr/share/wordnet)
demo_args="${DEMO_ARGS---quick}"

echo "[front-door] commit ${commit:0:12}$(git -C "$repo" diff --quiet HEAD || echo ' (the clone takes the commit, not the uncommitted changes)')"
echo "[front-door] fresh clone, HOME=$work/home (empty), hidden: ${hidden[*]}"
git clone --quiet --no-local "$repo" "$work/dsn-lab"
git -C "$work/dsn-lab" checkout --quiet "$commit"
mkdir -p "$work/home"

# The newcomer's shell: this machine's environment (its pip settings included), but an empty HOME, no
# dataset/model caches or WordNet paths of ours, no active virtualenv, and the real interpreter first on PATH
# (pyenv's shims look for their data under HOME).
python_bin="$(dirname "$(python3 -c 'import sys; print(sys.executable)')")"
run_env=(env -u DSN_LAB_CACHE -u NLTK_DATA -u WNSEARCHDIR -u VIRTUAL_ENV -u PYTHONPATH -u TORCH_HOME
         -u HF_HOME -u XDG_CACHE_HOME -u OMP_NUM_THREADS -u MKL_NUM_THREADS
         "HOME=$work/home" "PIP_CACHE_DIR=$pip_cache" "PATH=$python_bin:$PATH" "PYTHONUNBUFFERED=1")
inner="cd '$work/dsn-lab' && make demo DEMO_ARGS='$demo_args'"

hide_script=""
for path in "${hidden[@]}"; do
  [ -e "$path" ] && hide_script+="mount -t tmpfs -o size=1m,mode=0755 none '$path' && "
done

walk() {
  if [ -z "$hide_script" ]; then
    echo "[front-door] none of ${hidden[*]} exists here: nothing to hide"
    "${run_env[@]}" bash -c "$inner"
  elif [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
    unshare -m --propagation private "${run_env[@]}" bash -c "${hide_script}$inner"
  elif unshare -rm true 2>/dev/null; then
    unshare -rm --propagation private "${run_env[@]}" bash -c "${hide_script}$inner"
  else
    echo "[front-door] WARNING: cannot make a private mount namespace here (not root, no user namespaces):"
    echo "[front-door]          ${hidden[*]} stay visible; the check runs, but proves less."
    "${run_env[@]}" bash -c "$inner"
  fi
}

start=$(date +%s)
walk 2>&1 | tee "$work/demo.log"
# the demo prints its rows twice: v1's protocol, then EmojiSketch v2's multi-style queries (issue 18)
if [[ "$demo_args" != *--no-multi-style* && "$demo_args" != *--data-root* ]] && ! grep -q "queried in every line-art style" "$work/demo.log"; then
  echo "[front-door] FAILED: make demo printed no multi-style rows (its 'no multi-style rows:' line says why)"
  exit 1
fi
elapsed=$(( $(date +%s) - start ))
printf '[front-door] PASSED: fresh clone -> make demo DEMO_ARGS=%s in %d min %02d s (install included)\n' \
  "'$demo_args'" $((elapsed / 60)) $((elapsed % 60))
