#!/usr/bin/env bash
# bench_map.sh [BUILD] [DIR] [N]: fbk maps (bench_map) next to python
# diskcache (bench_diskcache.py) in one run, 16 KiB and 1 MiB values.
# Needs python3-diskcache (Debian) for the interpreter /usr/bin/python3.
set -euo pipefail
build=${1:-build}
dir=${2:-/tmp/fbk-bench-map}
n=${3:-2000}
mkdir -p "$dir"
here=$(dirname "$0")
for size in 16384 1048576; do
  m=$n
  [ "$size" -ge 1048576 ] && m=$((n / 10 > 16 ? n / 10 : 16))
  "$build/bench/bench_map" "$dir" "$m" "$size"
  /usr/bin/python3 "$here/bench_diskcache.py" "$dir" "$m" "$size"
done
