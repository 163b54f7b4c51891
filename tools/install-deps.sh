#!/usr/bin/env bash
# Installs the Debian packages libfbk needs to build and test, when missing.
# Usage: tools/install-deps.sh [extra-package ...]
set -euo pipefail
# librados-dev: the rados: backend; ceph-mon ceph-osd ceph-common: the throw-away
# cluster its tests start (tests/cluster/ceph-up.sh); python3-*: the Python
# package, its pytest suite and install-check's pip build (pip, venv)
pkgs=(gcc make cmake pkg-config liblmdb-dev lmdb-utils libxxhash-dev uuid-dev libcriterion-dev libfiu-dev fiu-utils
  librados-dev ceph-mon ceph-osd ceph-common python3-dev python3-pytest python3-setuptools python3-pip python3-venv "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
