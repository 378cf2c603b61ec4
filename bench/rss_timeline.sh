#!/bin/bash
# bench/rss_timeline.sh OUT CMD...: runs CMD and samples its resident memory (VmRSS) every 0.5 s
# into OUT as "seconds GB" lines, then prints the peak and when it happened. For finding which
# stage of a run (load, pre-packing, forward, lens) sets the peak RSS.
set -u
out=$1
shift
"$@" &
pid=$!
start=$(date +%s.%N)
: >"$out"
while kill -0 "$pid" 2>/dev/null; do
  kb=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  [ -n "$kb" ] && awk -v t="$(date +%s.%N)" -v s="$start" -v k="$kb" 'BEGIN{printf "%.1f %.2f\n", t-s, k/1048576}' >>"$out"
  sleep 0.5
done
wait "$pid"
rc=$?
sort -k2 -g "$out" | tail -1 | awk '{printf "peak %.2f GB at %.1f s\n", $2, $1}'
exit $rc
