#!/usr/bin/env bash
# Time memlora's ExecuTorch programs on an Android phone over adb.
#
# CANNOT RUN HERE: it needs a phone on adb and an executor_runner built for Android arm64 with
# XNNPACK and ExecuTorch's LLM custom ops. Nothing in this script has been run on a device yet.
#
#   benchmarks/device/android_adb.sh BUNDLE [RUNNER] [RUNS]
#
# BUNDLE  a folder written by `memlora export --backend executorch` (external and/or fused).
# RUNNER  executor_runner for android-arm64 (default: $EXECUTOR_RUNNER). Build it from an
#         ExecuTorch checkout (1.4.x) with the Android NDK, e.g.
#           cmake -DCMAKE_TOOLCHAIN_FILE=$ANDROID_NDK/build/cmake/android.toolchain.cmake \
#                 -DANDROID_ABI=arm64-v8a -DEXECUTORCH_BUILD_XNNPACK=ON \
#                 -DEXECUTORCH_BUILD_KERNELS_LLM=ON -DEXECUTORCH_BUILD_EXTENSION_FLAT_TENSOR=ON \
#                 -DEXECUTORCH_BUILD_EXTENSION_DATA_LOADER=ON -Bcmake-android-out .
#           cmake --build cmake-android-out -j --target executor_runner
#         (the program's llama::custom_sdpa / update_cache ops must be linked in).
# RUNS    executions per measurement (default 20).
#
# For each program (.pte; external ones with the shared foundation.ptd via --data_path) it runs
# a decode step (input shapes 1x1 tokens) and a 64-token prefill (1x64), reads the runner's
# "executed ... in X ms" line, and samples the process's VmHWM for peak RSS. Inputs are the
# runner's default (all ones): latency does not depend on token values. Prints one TSV line per
# measurement: program, shape, runs, load ms, total ms, ms per run, peak RSS kB.
# --input_shapes is a recent executor_runner flag (ExecuTorch main); an older runner ignores
# nothing and fails on it: drop the flag there, and every run uses the exported upper bound.
# For whole-generation numbers with a tokenizer (TTFT, tok/s), use ExecuTorch's llama_main or
# the Android LlmModule demo app with dataFiles=[foundation.ptd].
set -euo pipefail

BUNDLE=${1:?usage: android_adb.sh BUNDLE [RUNNER] [RUNS]}
RUNNER=${2:-${EXECUTOR_RUNNER:?pass RUNNER or set EXECUTOR_RUNNER to an android-arm64 executor_runner}}
RUNS=${3:-20}
DEV=/data/local/tmp/memlora
command -v adb >/dev/null || { echo "adb not found: install Android platform-tools" >&2; exit 2; }
[ "$(adb get-state 2>/dev/null)" = device ] || { echo "no device on adb" >&2; exit 2; }
ls "$BUNDLE"/executorch/*/*.pte >/dev/null 2>&1 || { echo "$BUNDLE has no executorch/*/*.pte" >&2; exit 2; }

adb shell mkdir -p "$DEV"
adb push "$RUNNER" "$DEV/executor_runner" >/dev/null
adb shell chmod +x "$DEV/executor_runner"
echo "# device: $(adb shell getprop ro.product.model | tr -d '\r'), $(adb shell getprop ro.soc.model | tr -d '\r'), Android $(adb shell getprop ro.build.version.release | tr -d '\r')"
printf 'program\tshape\truns\tload_ms\ttotal_ms\tms_per_run\tpeak_rss_kb\n'

for dir in "$BUNDLE"/executorch/*/; do
  name=$(basename "$dir")                       # e.g. external-none, fused-int4
  adb shell mkdir -p "$DEV/$name"
  adb push "$dir". "$DEV/$name/" >/dev/null
  data=""
  [ -f "$dir/foundation.ptd" ] && data="--data_path=$DEV/$name/foundation.ptd"
  for pte in "$dir"*.pte; do
    prog=$(basename "$pte")
    for shape in "1x1,1" "1x64,1"; do          # tokens [1, T], start position [1]
      out=$(adb shell "cd $DEV && ./executor_runner --model_path=$DEV/$name/$prog $data \
        --input_shapes=$shape --num_executions=$RUNS --print_output=none 2>&1 & pid=\$!; hwm=0; \
        while kill -0 \$pid 2>/dev/null; do h=\$(grep VmHWM /proc/\$pid/status 2>/dev/null | tr -s ' ' | cut -d' ' -f2); \
        [ -n \"\$h\" ] && hwm=\$h; sleep 0.1; done; wait \$pid; echo HWM \$hwm")
      ms=$(echo "$out" | sed -n 's/.*executed successfully.* in \([0-9.]*\) *ms.*/\1/p' | tail -1)
      load=$(echo "$out" | sed -n 's/.*Model loaded in \([0-9.]*\) *ms.*/\1/p' | tail -1)
      hwm=$(echo "$out" | sed -n 's/^HWM \([0-9]*\).*/\1/p' | tail -1)
      if [ -z "$ms" ]; then
        echo "$name/$prog $shape: failed:" >&2; echo "$out" | tail -5 >&2; continue
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name/$prog" "${shape%%,*}" "$RUNS" "${load:-?}" "$ms" \
        "$(awk -v t="$ms" -v n="$RUNS" 'BEGIN{printf "%.3f", t/n}')" "${hwm:-?}"
    done
  done
done
