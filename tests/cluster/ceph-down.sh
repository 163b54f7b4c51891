#!/usr/bin/env bash
# ceph-down.sh DIR -- stops the daemons ceph-up.sh DIR started (by the PIDs it
# recorded, nothing else) and removes DIR.
set -uo pipefail
dir=${1:?usage: ceph-down.sh DIR}
[ -d "$dir" ] || exit 0
pids=()
# every OSD ceph-up.sh or ceph-osd-restart.sh started (run/osd.pid.up is
# osd.0, run/osd.N.pid.up the others), then the monitor
for f in "$dir"/run/osd*.pid.up "$dir"/run/mon.pid.up; do
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  # only if that PID is still the daemon started here (not a reused PID)
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "-c $dir/"; then
    kill -CONT "$pid" 2>/dev/null   # a test may have stopped it
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  fi
  rm -f "$f"
done
# one second for all of them together to exit, then SIGKILL (memstore: there
# is nothing to keep)
for _ in $(seq 1 20); do
  left=0
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && left=1
  done
  [ $left -eq 0 ] && break
  sleep 0.05
done
for pid in "${pids[@]}"; do
  kill -KILL "$pid" 2>/dev/null
done
rm -rf "$dir"
exit 0
