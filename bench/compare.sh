#!/bin/sh
# ssmconnect against the official session-manager-plugin, both against the emulator (issue 13).
#
#   bench/compare.sh                                  ssmconnect alone
#   SSMCONNECT_BENCH_PLUGIN=/path/to/session-manager-plugin bench/compare.sh
#   bench/compare.sh --plugin /path/to/session-manager-plugin --runs 5
#   nice -n 19 bench/compare.sh ... &                 on a shared machine
#
# Builds the release helper, emulator and bench program, then runs the bench program
# (rust/ssm-cli/benches/compare.rs; options: bench/compare.sh --help). The table goes to stderr;
# the table, the JSON of every run and the chart go to bench/results/compare-<date>.{md,json,svg}
# and compare-latest.{md,json,svg}. The plugin is driven by the AWS CLI (`aws` on PATH).
set -eu
cd "$(dirname "$0")/.."
mkdir -p bench/results
# One cargo invocation builds the helper, the emulator and the bench program, so that their
# dependencies are built once with one feature set.
exe=$(cargo build --release --locked -p ssm-cli -p ssm-emulator --bins --benches \
        --message-format json-render-diagnostics |
      sed -n 's/.*"name":"compare".*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -n "$exe" ] || { echo "compare.sh: cargo built no compare bench program" >&2; exit 1; }
exec "$exe" --bench "$@"
