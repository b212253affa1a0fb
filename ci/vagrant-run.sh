#!/usr/bin/env bash
# Runs the suite inside the Vagrant VM (Vagrantfile at the repository root): a distribution
# kernel other than the host's, for kernel regression hunts. Usage: ci/vagrant-run.sh [BOX]
set -euo pipefail
cd "$(dirname "$0")/.."
export CRUST_BOX="${1:-${CRUST_BOX:-debian/testing64}}"
vagrant up --provider="${VAGRANT_PROVIDER:-libvirt}"
trap 'vagrant destroy -f' EXIT
vagrant ssh -c 'cd /crust && sudo bash .ci/run'
