#!/usr/bin/env bash
# Build MemLoRAKit and run its XCTest tests with `swift test` (a Mac with Xcode 16+, or Linux with a
# Swift 6 toolchain and libsqlite3-dev): a freshly exported bundle (conformance through
# python -m memlora.serve), the shared app fixture, and a LoCoMo slice through the exported model
# compared with the Python loop's store. The same inputs as android_demo/core/host_test.sh.
#   ios_demo/MemLoRAKit/host_test.sh [LOCOMO_ZIP]
# Env: PYTHON (a python that imports memlora; default python3), MEMLORA_BUNDLE (reuse a bundle),
#      BUILD (default: a temp dir), LOCOMO (default: /work/shared/data/locomo10.zip).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
LOCOMO="${1:-${LOCOMO:-/work/shared/data/locomo10.zip}}"
BUILD="${BUILD:-$(mktemp -d -t memlora-ios-XXXXXX)}"
source "$repo/android_demo/tools/host_inputs.sh"
command -v swift >/dev/null || { echo "error: no swift toolchain (install Xcode 16+ or swift.org's Swift 6)" >&2; exit 2; }
host_inputs
echo "== the LoCoMo conversation as .json"
# Foundation has no zip reader: write the conversation the Python loader puts first as one .json.
"$PYTHON" - "$LOCOMO" "$BUILD/locomo-first.json" <<'PY'
import json, sys, zipfile
from pathlib import Path
src, out = sys.argv[1], Path(sys.argv[2])
if src.endswith(".json"):
    out.write_text(Path(src).read_text("utf-8"), "utf-8")
else:
    with zipfile.ZipFile(src) as zf:
        names = sorted((n for n in zf.namelist() if n.endswith(".json")), key=lambda n: (len(n), n))
        out.write_text(zf.read(names[0]).decode("utf-8"), "utf-8")
PY
cd "$here"
MEMLORA_BUNDLE="$bundle" MEMLORA_PYTHON="$(command -v "$PYTHON")" MEMLORA_FIXTURE="$BUILD/fixture" \
MEMLORA_TEMPLATES="$repo/export/memlora/memory/templates" MEMLORA_LOCOMO="$BUILD/locomo-first.json" \
MEMLORA_PYSTORE="$BUILD/pystore.json" MEMLORA_REPORT="$BUILD/conformance-report.json" \
MEMLORA_TURNS="$TURNS" MEMLORA_SESSIONS="$SESSIONS" MEMLORA_QUESTIONS="$QUESTIONS" \
  swift test 2>&1 | tee "$BUILD/swift-test.log" | grep -E "error:|failed|passed|Executed" || true
grep -qE "Executed [0-9]+ tests?, with 0 failures" "$BUILD/swift-test.log" || { echo "swift test failed; full log: $BUILD/swift-test.log" >&2; exit 1; }
echo "== the core's conformance report, checked by python -m memlora.device_report (as for a phone's)"
"$PYTHON" -m memlora.device_report "$BUILD/conformance-report.json" --bundle "$bundle" | tail -1
