#!/usr/bin/env bash
# CI for android_demo/: what can be proven without an Android SDK or a phone.
#   1. Debian's kotlin 1.3.31, junit4, sqlite-jdbc and AOSP org.json (apt-get, only if missing)
#   2. tree-sitter-kotlin (pip, only if missing) and a syntax check of every .kt in app/ and core/
#   3. a fresh bundle (memlora export), the shared app fixture, the Python loop on a LoCoMo slice
#   4. core/ + its JUnit tests compiled with kotlinc 1.3 and run (prints JUnit's summary line)
# Run from anywhere, with memlora importable (e.g. after .ci/run's venv):  android_demo/ci.sh [LOCOMO_ZIP]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
start=$(date +%s)
source "$repo/android_demo/tools/host_inputs.sh"
PY="$(pick_python)"
export PYTHON="$PY"

pkgs="kotlin junit4 libxerial-sqlite-jdbc-java libandroid-json-java"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "== apt-get install$missing"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

"$PY" -c "import tree_sitter, tree_sitter_kotlin" 2>/dev/null || "$PY" -m pip install -q tree-sitter tree-sitter-kotlin
echo "== Kotlin syntax (tree-sitter-kotlin): app/ cannot be compiled here"
"$PY" -m memlora.syntax_check kotlin "$here/app" "$here/core"

work="$(mktemp -d -t memlora-android-ci-XXXXXX)"
trap 'rm -rf "$work"' EXIT
BUILD="$work" "$here/core/host_test.sh" "$@"
echo "== android_demo/ci.sh: passed in $(( $(date +%s) - start )) s"
