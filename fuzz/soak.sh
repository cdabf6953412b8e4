#!/usr/bin/env bash
# Runs every fuzz target for longer than CI does, one after another, and
# prints the executions per target.
#
#   bash fuzz/soak.sh 2        # two hours in all, split evenly over the targets
#   bash fuzz/soak.sh 0.5      # half an hour
#
# The optimised build and the corpora live under $FUZZ_CACHE (see ci.sh),
# so a soak continues from the coverage earlier runs reached. A crash stops
# the soak; its input is left in fuzz/artifacts/<target>/ (turn it into a
# regression test before fixing).
set -euo pipefail

HOURS="${1:?usage: fuzz/soak.sh HOURS}"
TARGETS=(compile differential sandbox hostcalls)
PER_TARGET=$(awk -v h="$HOURS" -v n="${#TARGETS[@]}" 'BEGIN { s = h * 3600 / n; if (s < 1) s = 1; printf "%d", s }')
echo "soak: ${HOURS} h, ${PER_TARGET} s per target (${TARGETS[*]})"
FUZZ_SECONDS="$PER_TARGET" FUZZ_TARGETS="${TARGETS[*]}" exec bash "$(dirname "$0")/ci.sh"
