# Sourced by android_demo/core/host_test.sh and ios_demo/MemLoRAKit/host_test.sh: the inputs both
# app cores' host tests run on, made the same way for both (so the two apps are checked against
# the same bundle, fixture and Python LoCoMo store).
# Needs: repo, PYTHON, LOCOMO, BUILD; TURNS/SESSIONS/QUESTIONS default to the slice below.
# Sets: bundle (MEMLORA_BUNDLE, or a fresh export under $BUILD), $BUILD/fixture, $BUILD/pystore.json.
# The LoCoMo slice: first conversation, SESSIONS sessions x TURNS turns, then QUESTIONS questions.
TURNS="${TURNS:-8}" SESSIONS="${SESSIONS:-2}" QUESTIONS="${QUESTIONS:-3}"
export PYTHONPATH="$repo/export${PYTHONPATH:+:$PYTHONPATH}"

host_inputs() {
  mkdir -p "$BUILD"
  bundle="${MEMLORA_BUNDLE:-}"
  if [ -z "$bundle" ]; then
    bundle="$BUILD/bundle"
    echo "== exporting a fresh bundle to $bundle"
    "$PYTHON" -m memlora.cli export --out "$bundle" --force >"$BUILD/export.log" 2>&1 || { cat "$BUILD/export.log"; return 1; }
  fi
  echo "== app fixture and the Python loop's LoCoMo store"
  "$PYTHON" -m memlora.app_fixture "$BUILD/fixture" --bundle "$bundle" >/dev/null 2>"$BUILD/fixture.log" \
    || { cat "$BUILD/fixture.log"; return 1; }
  [ -f "$LOCOMO" ] || { echo "error: LoCoMo data not found: $LOCOMO -- fix: pass the path of locomo10.zip" >&2; exit 2; }
  "$PYTHON" "$repo/android_demo/tools/python_locomo_store.py" "$bundle" "$LOCOMO" "$BUILD/pystore.json" \
    --turns "$TURNS" --sessions "$SESSIONS" --questions "$QUESTIONS" 2>"$BUILD/pystore.log" \
    || { cat "$BUILD/pystore.log"; return 1; }
  tail -1 "$BUILD/pystore.log"
}
