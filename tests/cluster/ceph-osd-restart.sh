#!/usr/bin/env bash
# ceph-osd-restart.sh DIR N -- starts osd.N of the cluster ceph-up.sh DIR
# started again, after a test killed it, and waits until the monitor lists it
# up (at most about a minute).  An osd.N that still runs (the PID recorded in
# DIR/run, with DIR's configuration on its command line) is left alone.
# Its memstore comes back with the contents it had when it was made; the
# other replicas recover it.  ceph-down.sh DIR stops it like the others.
#
# A killed OSD may take a while to exit (its memory is torn down before its
# files are closed), and until it has, a new one finds the PID file locked
# and exits at once ("failed to lock pidfile").  So: wait for the killed
# process to be gone, and start again should the new one still meet the lock.
set -euo pipefail
dir=${1:?usage: ceph-osd-restart.sh DIR N}
n=${2:?usage: ceph-osd-restart.sh DIR N}
dir=$(cd "$dir" && pwd)
conf="$dir/daemon.conf"
[ -f "$conf" ] || { echo "ceph-osd-restart: no cluster in $dir" >&2; exit 1; }
if [ "$n" -eq 0 ]; then pidfile="$dir/run/osd.pid.up"; else pidfile="$dir/run/osd.$n.pid.up"; fi

# PID is alive: it exists and is not a zombie
alive() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
# PID is an OSD of this cluster (a zombie's command line is empty)
ours() {
  alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- "-c $dir/"
}
# the monitor lists osd.N up at PID's addresses (an OSD's address nonce is
# its PID): not the killed one, which the monitor may not have marked down
is_up() {
  timeout 10 ceph -c "$conf" --connect-timeout 5 osd dump 2>/dev/null |
    grep "^osd\.$n up " | grep -q -- "/$1[] ,]"
}

old=$(cat "$pidfile" 2>/dev/null || true)
if [ -n "$old" ] && ours "$old"; then
  pid=$old # still runs: only wait for it to be up
else
  # the killed one, until it is gone (about a minute at most)
  if [ -n "$old" ]; then
    for _ in $(seq 1 600); do alive "$old" || break; sleep 0.1; done
    if alive "$old"; then
      echo "ceph-osd-restart: the killed osd.$n (PID $old) has not exited after a minute" >&2
      exit 1
    fi
  fi
  pid=
fi

start() {
  setsid ceph-osd -c "$conf" -f -i "$n" </dev/null >>"$dir/log/osd.$n.out" 2>&1 &
  pid=$!
  echo "$pid" >"$pidfile"
}
[ -n "$pid" ] || start
starts=1
for _ in $(seq 1 240); do
  if ! alive "$pid"; then
    # another process still held the PID file's lock (an OSD we did not
    # know of, or one whose exit is not done): up to 5 starts in all
    if [ $starts -lt 5 ] && tail -n 20 "$dir/log/osd.$n.out" 2>/dev/null | grep -q "failed to lock pidfile"; then
      sleep 1
      start
      starts=$((starts + 1))
      continue
    fi
    echo "ceph-osd-restart: osd.$n exited (see $dir/log/osd.$n.log and osd.$n.out):" >&2
    tail -n 5 "$dir/log/osd.$n.out" >&2 || true
    exit 1
  fi
  if is_up "$pid"; then
    exit 0
  fi
  sleep 0.25
done
echo "ceph-osd-restart: osd.$n is not up after a minute" >&2
exit 1
