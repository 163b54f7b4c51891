#!/usr/bin/env bash
# ceph-osd-restart.sh DIR N -- starts osd.N of the cluster ceph-up.sh DIR
# started again, after a test killed it, and waits until the monitor lists it
# up (at most about a minute).  An osd.N that still runs (the PID recorded in
# DIR/run, with DIR's configuration on its command line) is left alone.
# Its memstore comes back with the contents it had when it was made; the
# other replicas recover it.  ceph-down.sh DIR stops it like the others.
set -euo pipefail
dir=${1:?usage: ceph-osd-restart.sh DIR N}
n=${2:?usage: ceph-osd-restart.sh DIR N}
dir=$(cd "$dir" && pwd)
conf="$dir/daemon.conf"
[ -f "$conf" ] || { echo "ceph-osd-restart: no cluster in $dir" >&2; exit 1; }
if [ "$n" -eq 0 ]; then pidfile="$dir/run/osd.pid.up"; else pidfile="$dir/run/osd.$n.pid.up"; fi
running() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid=$(cat "$pidfile")
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "-c $dir/"
}
if ! running; then
  setsid ceph-osd -c "$conf" -f -i "$n" </dev/null >>"$dir/log/osd.$n.out" 2>&1 &
  echo $! >"$pidfile"
fi
for _ in $(seq 1 120); do
  running || { echo "ceph-osd-restart: osd.$n exited (see $dir/log/osd.$n.log)" >&2; exit 1; }
  if timeout 10 ceph -c "$conf" --connect-timeout 5 osd dump 2>/dev/null | grep -q "^osd\.$n up "; then
    exit 0
  fi
  sleep 0.25
done
echo "ceph-osd-restart: osd.$n is not up after a minute" >&2
exit 1
