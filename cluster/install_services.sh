#!/usr/bin/env bash
# Install the system services the project's tests need: Slurm (slurm-wlm) and munge for the
# batch tests, and Chromium for the web page's browser tests.
#
# Idempotent and quick when already installed (one `command -v` check). Needs root and
# apt (Debian/Ubuntu). Exits non-zero with a clear message when it cannot install.
#
# Usage: cluster/install_services.sh
set -euo pipefail

log() { echo "install_services: $*"; }
die() { echo "install_services: error: $*" >&2; exit 1; }

# slurmctld/slurmd/munged live in sbin, which a non-login root shell may not have on PATH.
export PATH="${PATH}:/usr/sbin:/sbin"

if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
   && command -v munged >/dev/null && command -v sbatch >/dev/null \
   && command -v chromium >/dev/null; then
    log "slurm-wlm, munge and chromium already installed ($(slurmctld -V 2>/dev/null || echo '?'))"
    exit 0
fi

[[ "$(id -u)" -eq 0 ]] || die "slurm-wlm/munge/chromium are missing and installing them needs root" \
    "(run: sudo $0, or install them by hand: apt-get install slurm-wlm munge chromium)"
command -v apt-get >/dev/null || die "slurm-wlm/munge/chromium are missing and apt-get is not available;" \
    "install Slurm and munge with this system's package manager"

export DEBIAN_FRONTEND=noninteractive
pkgs=(slurm-wlm munge chromium fonts-dejavu-core)

# Refresh the package lists only when they do not know the packages yet (fresh image with
# empty lists); a plain `apt-get update` costs several seconds on every run otherwise.
need_update=0
for p in "${pkgs[@]}"; do
    cand="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -z "$cand" || "$cand" == "(none)" ]]; then need_update=1; fi
done
if [[ "$need_update" -eq 1 ]]; then
    log "apt-get update (package lists do not know ${pkgs[*]})"
    apt-get update -q || die "apt-get update failed"
fi

log "apt-get install -y ${pkgs[*]}"
if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
    # Stale lists give 404s on package files: refresh once and retry.
    log "install failed; refreshing package lists and retrying once"
    apt-get update -q || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" \
        || die "apt-get install ${pkgs[*]} failed"
fi

for b in slurmctld slurmd munged sbatch chromium; do
    command -v "$b" >/dev/null || die "'$b' still missing after installing ${pkgs[*]}"
done
log "installed: $(slurmctld -V)"
