#!/usr/bin/env bash
# Builds the libFuzzer targets of ssm-proto on stable Rust and runs each one for a fixed number
# of executions over its committed corpus (fuzz/corpus/<target>). Exits non-zero on a finding;
# the input that found it is written to fuzz/artifacts/<target>/.
#
# Usage: fuzz/run.sh [RUNS] [TARGET...]
#   RUNS     executions per target (default 2000)
#   TARGET   frame, smux, handshake, channel (default: all)
# Environment:
#   FUZZ_ARGS         extra libFuzzer flags for every target (e.g. -max_total_time=600)
#   CARGO_TARGET_DIR  build output goes to $CARGO_TARGET_DIR/fuzz (default fuzz/target)
#   CI                when "true", each target starts from the committed corpus alone
#
# New inputs found during a run go to a scratch corpus next to the build, never into the
# committed one, and later runs start from both; README.md says how to merge them in.
set -euo pipefail
# A relative CARGO_TARGET_DIR means the caller's directory, not this one.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  mkdir -p "$CARGO_TARGET_DIR"
  CARGO_TARGET_DIR="$(cd "$CARGO_TARGET_DIR" && pwd)/fuzz"
else
  CARGO_TARGET_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/target"
fi
export CARGO_TARGET_DIR
cd "$(dirname "${BASH_SOURCE[0]}")"

runs="${1:-2000}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frame smux handshake channel)

# Longest input libFuzzer makes, per target: a frame is 120 bytes plus payload; the channel
# target needs room for a few dozen operations.
max_len() {
  case "$1" in
    frame) echo 4096 ;;
    smux) echo 4096 ;;
    handshake) echo 4096 ;;
    channel) echo 4096 ;;
    *)
      echo "unknown target: $1 (expected frame, smux, handshake or channel)" >&2
      exit 2
      ;;
  esac
}
for t in "${targets[@]}"; do max_len "$t" >/dev/null; done

# What cargo-fuzz passes, minus the sanitizer (-Zsanitizer is nightly-only): SanitizerCoverage
# with inline 8-bit counters, the PC table and comparison tracing, and cfg(fuzzing). An explicit
# --target keeps these flags off build scripts and proc macros, which must not be instrumented.
host="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing"

echo "building fuzz targets (${targets[*]}) into $CARGO_TARGET_DIR"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
cargo build --release --locked --target "$host" "${bins[@]}"

fail=0
for t in "${targets[@]}"; do
  corpus="corpus/$t"
  scratch="$CARGO_TARGET_DIR/corpus/$t"
  artifacts="artifacts/$t"
  # CI keeps its build directory between runs: a fixed starting point keeps its time fixed.
  [ "${CI:-}" != "true" ] || rm -rf "$scratch"
  mkdir -p "$corpus" "$scratch" "$artifacts"
  echo
  echo "==> fuzz $t: $runs runs"
  start=$SECONDS
  # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
  if "$CARGO_TARGET_DIR/$host/release/$t" "$scratch" "$corpus" \
    -runs="$runs" -max_len="$(max_len "$t")" -print_final_stats=1 \
    -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} 2>"$scratch.log"; then
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE)' "$scratch.log" || true
    echo "<== fuzz $t: ok in $((SECONDS - start))s"
  else
    tail -n 60 "$scratch.log"
    echo "<== fuzz $t: FAILED after $((SECONDS - start))s (input saved under fuzz/$artifacts/)" >&2
    fail=1
  fi
done
exit "$fail"
