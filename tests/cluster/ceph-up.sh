#!/usr/bin/env bash
# ceph-up.sh DIR [OSDS] -- starts a throw-away Ceph cluster for the rados: tests.
#
# One monitor and OSDS OSDs (default 1) on memstore (RAM), listening on
# 127.0.0.1 with the v2 protocol only, no manager, no authentication.  Pool
# "fbk": size 1, on osd.0 alone.  With OSDS >= 3 also pool "fbk3": size 3,
# min_size 2, one replica on each of three OSDs (any of them), so that one
# OSD may die without losing or blocking a write.  Everything (ceph.conf,
# data, logs, sockets, PID files run/osd.N.pid.up, run/mon.pid.up) lives in
# DIR; /etc/ceph is never read.  On success DIR/ceph.conf exists and every
# pool answers a put/get round trip; the tests skip themselves when
# DIR/ceph.conf is missing.  ceph-down.sh DIR stops the daemons started
# here, by PID; ceph-osd-restart.sh DIR N restarts osd.N after a test
# killed it.
#
# Needs ceph-mon, ceph-osd, ceph-common (tools/install-deps.sh).  Without
# them it prints why and exits 0, leaving no ceph.conf (the tests skip).
set -euo pipefail
dir=${1:?usage: ceph-up.sh DIR [OSDS]}
nosd=${2:-1}
case $nosd in
  [1-9]) ;;
  *) echo "ceph-up: OSDS must be 1..9, not '$nosd'" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
for b in ceph-mon ceph-osd ceph monmaptool rados; do
  if ! command -v "$b" >/dev/null; then
    echo "ceph-up: $b not found (install ceph-mon ceph-osd ceph-common): rados tests will skip"
    exit 0
  fi
done
# a previous run's daemons (a crashed ctest) first
"$here/ceph-down.sh" "$dir" >/dev/null 2>&1 || true
rm -rf "$dir"
mkdir -p "$dir/mon" "$dir/osd" "$dir/run" "$dir/log"
dir=$(cd "$dir" && pwd)

# on failure: why, with the ends of the daemons' logs, then stop them
give_up() {
  echo "ceph-up: $1 (logs in $dir/log)" >&2
  for f in "$dir"/log/mkfs-mon.out "$dir"/log/mon.out "$dir"/log/mon.a.log \
           "$dir"/log/mkfs-osd.*.out "$dir"/log/osd.*.out "$dir"/log/osd.*.log; do
    [ -s "$f" ] || continue
    echo "--- last lines of $f" >&2
    tail -n 15 "$f" >&2
  done
  "$here/ceph-down.sh" "$dir" || true
  exit 1
}
alive() { kill -0 "$(cat "$dir/run/$1.pid.up")" 2>/dev/null; }
# osd.0 (the OSD of pool fbk) keeps the name the tests knew: run/osd.pid.up
osd_pidfile() { if [ "$1" -eq 0 ]; then echo osd.pid.up; else echo "osd.$1.pid.up"; fi; }

# a free TCP port for the monitor, chosen by the kernel
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fsid=$(cat /proc/sys/kernel/random/uuid)
conf="$dir/daemon.conf"
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$port]
mon initial members = a
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
# (not lowered: osd pool default read lease ratio, 0.8, i.e. 16 s of lease.
# With 0.05 a placement group of pool fbk stayed "waiting for readable" for
# good after the SIGSTOP/SIGCONT of osd.0 and the monitor in test_rados)
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# a CI disk that is 95% full must not stop the monitor (it shuts itself down
# below mon_data_avail_crit, 5% free by default): its data is a few MiB
mon data avail crit = 0
mon data avail warn = 0
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
keyring = $dir/keyring
[mon]
mon data = $dir/mon
# a map change (osd new, pool create/set ...) is proposed after 0.05 s, not
# 1 s: the set-up issues about ten of them one after the other
paxos propose interval = 0.05
# a dead OSD (SIGKILL: its peers' connections are refused) is marked down
# at once; one reporter is enough (all OSDs sit on one host)
mon osd min down reporters = 1
[osd]
osd data = $dir/osd/\$id
osd objectstore = memstore
# (an upper bound of RAM, used as written; osd.0 holds pool fbk's 200 MiB
# objects, the others only pool fbk3's small ones)
memstore device bytes = 3221225472
osd class update on start = false
osd max object size = 268435456
CONF
: >"$dir/keyring"

monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" >"$dir/log/mkfs-mon.out" 2>&1 ||
  give_up "ceph-mon --mkfs failed"
# foreground daemons in their own session, detached from ctest's pipes
setsid ceph-mon -c "$conf" -f -i a </dev/null >"$dir/log/mon.out" 2>&1 &
echo $! >"$dir/run/mon.pid.up"


# the monitor answers (on a loaded machine -- the sanitizer suites run beside
# this -- its first start can take longer than one connect timeout)
c() { timeout 30 ceph -c "$conf" --connect-timeout 10 "$@"; }
up=0
for _ in $(seq 1 12); do
  alive mon || give_up "the monitor exited"
  if c mon stat >/dev/null 2>&1; then
    up=1
    break
  fi
done
[ $up -eq 1 ] || give_up "the monitor did not answer within 2 minutes"
# the OSDs: ids 0..nosd-1, made one after the other (ceph osd new), their
# stores made and the daemons started in parallel
for i in $(seq 0 $((nosd - 1))); do
  uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$(c osd new "$uuid") || give_up "ceph osd new failed"
  [ "$id" = "$i" ] || give_up "ceph osd new gave id $id, not $i"
  echo "$uuid" >"$dir/osd.$i.uuid"
done
mkfs=()
for i in $(seq 0 $((nosd - 1))); do
  mkdir -p "$dir/osd/$i"
  ceph-osd -c "$conf" -i "$i" --mkfs --osd-uuid "$(cat "$dir/osd.$i.uuid")" \
    >"$dir/log/mkfs-osd.$i.out" 2>&1 &
  mkfs+=($!)
done
for pid in "${mkfs[@]}"; do
  wait "$pid" || give_up "ceph-osd --mkfs failed"
done
for i in $(seq 0 $((nosd - 1))); do
  setsid ceph-osd -c "$conf" -f -i "$i" </dev/null >"$dir/log/osd.$i.out" 2>&1 &
  echo $! >"$dir/run/$(osd_pidfile "$i")"
done

if [ "$nosd" -eq 1 ]; then
  c osd pool create fbk 8 8 >/dev/null 2>&1 || give_up "ceph osd pool create failed"
else
  # pool fbk on osd.0 alone (its own device class and rule), so that a test
  # killing another OSD leaves it alone, and stopping osd.0 (with the
  # monitor) still stops all of it; pool fbk3 on every OSD
  c osd crush set-device-class solo osd.0 >/dev/null 2>&1 || give_up "ceph osd crush set-device-class failed"
  c osd crush rule create-replicated solo default osd solo >/dev/null 2>&1 ||
    give_up "ceph osd crush rule create-replicated failed"
  c osd pool create fbk 8 8 replicated solo >/dev/null 2>&1 || give_up "ceph osd pool create fbk failed"
fi
c osd pool set fbk size 1 --yes-i-really-mean-it >/dev/null 2>&1 || true
pools=fbk
if [ "$nosd" -ge 3 ]; then
  c osd pool create fbk3 8 8 replicated replicated_rule >/dev/null 2>&1 ||
    give_up "ceph osd pool create fbk3 failed"
  c osd pool set fbk3 size 3 >/dev/null 2>&1 || give_up "ceph osd pool set fbk3 size failed"
  c osd pool set fbk3 min_size 2 >/dev/null 2>&1 || give_up "ceph osd pool set fbk3 min_size failed"
  pools="fbk fbk3"
fi

# readiness: a put/get round trip through every pool
echo "fbk-probe-$fsid" >"$dir/probe.in"
for pool in $pools; do
  ok=0
  for _ in $(seq 1 120); do
    if timeout 10 rados -c "$conf" -p "$pool" put __probe "$dir/probe.in" 2>/dev/null &&
       timeout 10 rados -c "$conf" -p "$pool" get __probe "$dir/probe.out" 2>/dev/null &&
       cmp -s "$dir/probe.in" "$dir/probe.out"; then
      ok=1
      break
    fi
    sleep 0.5
  done
  [ $ok -eq 1 ] || give_up "the cluster did not answer a put/get round trip on pool $pool"
  timeout 10 rados -c "$conf" -p "$pool" rm __probe
done
cp "$conf" "$dir/ceph.conf.tmp" && mv "$dir/ceph.conf.tmp" "$dir/ceph.conf"
echo "ceph-up: cluster up in $dir (mon 127.0.0.1:$port, $nosd OSD(s), pools: $pools)"
