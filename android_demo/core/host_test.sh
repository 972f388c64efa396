#!/usr/bin/env bash
# Compile android_demo/core and its JUnit tests with Debian's kotlinc and run them on this machine:
# a freshly exported bundle (conformance), the shared app fixture, and a LoCoMo slice through the
# exported model (python -m memlora.serve) compared with the Python loop's store.
#   android_demo/core/host_test.sh [LOCOMO_ZIP]
# Env: PYTHON (default: python3 that imports memlora), MEMLORA_BUNDLE (reuse a bundle; default: export one),
#      BUILD (default: a temp dir), LOCOMO (default: /work/shared/data/locomo10.zip).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
LOCOMO="${1:-${LOCOMO:-/work/shared/data/locomo10.zip}}"
BUILD="${BUILD:-$(mktemp -d -t memlora-android-XXXXXX)}"
source "$repo/android_demo/tools/host_inputs.sh"
J=/usr/share/java
CP="$J/junit4.jar:$J/hamcrest-core.jar:$J/xerial-sqlite-jdbc.jar:$J/com.android.json.jar"
for jar in junit4 hamcrest-core xerial-sqlite-jdbc com.android.json; do
  [ -f "$J/$jar.jar" ] || { echo "error: $J/$jar.jar missing: apt-get install junit4 libxerial-sqlite-jdbc-java libandroid-json-java" >&2; exit 2; }
done
command -v kotlinc >/dev/null || { echo "error: kotlinc missing: apt-get install kotlin" >&2; exit 2; }

t0=$(date +%s)
host_inputs
t1=$(date +%s)

echo "== kotlinc $(kotlinc -version 2>&1 | grep -o 'kotlinc-jvm [0-9.]*' || true): core + tests"
kotlinc -nowarn "$here/src/main/kotlin" "$here/src/test/kotlin" -cp "$CP" -d "$BUILD/classes" 2>&1 | grep -v '^OpenJDK' || true
[ -d "$BUILD/classes/memlora" ] || { echo "error: compilation failed" >&2; exit 1; }
t2=$(date +%s)
echo "   compiled in $((t2 - t1)) s"

KSTD=$J/kotlin-stdlib.jar
java -cp "$BUILD/classes:$CP:$KSTD" \
  -Dmemlora.bundle="$bundle" -Dmemlora.python="$PYTHON" -Dmemlora.fixture="$BUILD/fixture" \
  -Dmemlora.templates="$repo/export/memlora/memory/templates" -Dmemlora.locomo="$LOCOMO" \
  -Dmemlora.pystore="$BUILD/pystore.json" -Dmemlora.report="$BUILD/conformance-report.json" \
  -Dmemlora.turns="$TURNS" -Dmemlora.sessions="$SESSIONS" -Dmemlora.questions="$QUESTIONS" \
  org.junit.runner.JUnitCore memlora.core.JsonTest memlora.core.ConformanceTest memlora.core.FixtureTest memlora.core.ChatRenderFixtureTest \
  memlora.core.BadInputTest memlora.core.LocomoTest 2>&1 | grep -v '^OpenJDK' | tee "$BUILD/junit.log" | grep -v '^\s*at ' || true
grep -q '^OK (' "$BUILD/junit.log" || { echo "JUnit failed; full log: $BUILD/junit.log" >&2; exit 1; }
echo "== the core's conformance report, checked by python -m memlora.device_report (as for a phone's)"
"$PYTHON" -m memlora.device_report "$BUILD/conformance-report.json" --bundle "$bundle" | tail -1
t3=$(date +%s)
echo "== times: python side $((t1 - t0)) s, kotlinc $((t2 - t1)) s, tests $((t3 - t2)) s; report: $BUILD/conformance-report.json"
