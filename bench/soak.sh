#!/bin/sh
# Wall-time soak of a multiplexed `ssmconnect forward` against the emulator (issue 12).
#
#   bench/soak.sh                          30 minutes, smux keepalive off (a current agent)
#   bench/soak.sh --keepalive              the same with keepalive on (agent 3.1.1511.0)
#   bench/soak.sh --duration 240           a short run
#   nice -n 19 bench/soak.sh ... &         in the background on a shared machine
#
# Further options: cargo bench -p ssm-cli --bench soak -- --help. The figures go to stderr and,
# as JSON, to bench/results/soak-<date>-keepalive-<on|off>.json.
set -eu
cd "$(dirname "$0")/.."
mode=off
for a in "$@"; do [ "$a" = --keepalive ] && mode=on; done
mkdir -p bench/results
out="$PWD/bench/results/soak-$(date -u +%Y%m%dT%H%M%SZ)-keepalive-$mode.json"
cargo build --release -p ssm-emulator
cargo bench -p ssm-cli --bench soak -- --out "$out" "$@"
echo "figures: $out"
