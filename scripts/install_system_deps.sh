#!/usr/bin/env bash
# Installs the Debian packages some tests use, when this machine allows it (root + apt-get).
#   wordnet-base, wordnet-sense-index: WordNet 3.0 for dsn_lab.semantics (SAKE's cid_mask), offline
#   chromium: the headless browser of the retrieval-explorer end-to-end test
# Anything missing afterwards makes only the tests that need it skip, with the reason.
set -u
want=()
[ -d /usr/share/wordnet ] || want+=(wordnet-base wordnet-sense-index)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
[ ${#want[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_deps: no apt-get here; tests needing ${want[*]} will skip." >&2; exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install_system_deps: not root and no passwordless sudo; tests needing ${want[*]} will skip." >&2; exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1 || true
$SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1 \
  || echo "install_system_deps: apt-get install ${want[*]} failed; the tests that need them will skip." >&2
exit 0
