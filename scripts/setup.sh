#!/usr/bin/env bash
# Installs what larder's build, run and tests need on a Debian machine, and
# nothing when it is already there. Run as root (or with sudo available).
set -euo pipefail

packages=(nix-bin curl zstd sqlite3 ca-certificates)
# Tests that are about them start real servers: sshd (sync), nginx (bench and
# the proxy recipes), Caddy and Varnish (their recipes),
# Prometheus (the dashboard); systemd-analyze checks the unit files.
if [ "${1:-}" = "--test" ]; then
  packages+=(openssh-server nginx caddy varnish bzip2 prometheus systemd)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is missing; install a Rust toolchain of 1.85 or newer (rustup; Debian 12's cargo package is 1.63, too old)" >&2
  exit 1
fi
# The workspace is edition 2024: older toolchains fail with a parse error.
rust_version=$(cargo --version | awk '{print $2}')
if [ "$(printf '%s\n' 1.85.0 "$rust_version" | sort -V | head -n 1)" != 1.85.0 ]; then
  echo "setup: cargo $rust_version is too old; larder needs Rust 1.85 or newer (edition 2024): install it with rustup" >&2
  exit 1
fi

# The s3:// tests start a real Garage (an S3-compatible object store). Its
# pinned release builds from crates.io with cargo; see README, "Export to
# S3-compatible storage", for how long that takes.
GARAGE_VERSION=2.5.0
if [ "${1:-}" = "--test" ]; then
  # A cargo-built garage says `garage cargo:2.5.0 [features: …]`, a release
  # binary `garage v2.5.0 …`.
  if ! garage --version 2>/dev/null | grep -qE "(v|:)${GARAGE_VERSION//./\\.}( |$)"; then
    echo "setup: installing garage ${GARAGE_VERSION} for the tests (cargo install --locked; a long build)" >&2
    # Only what the tests use (sqlite metadata, bundled C libraries; no
    # LMDB, K2V or metrics exporter), at opt-level 1: 26 min (20 CPU-min)
    # on a shared 2-core machine, where the default build took 102 min. Its
    # CPU per GiB stored equals the default build's (bench/results/export.md).
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=0 \
      cargo install --locked garage --version "$GARAGE_VERSION" \
      --no-default-features --features bundled-libs,sqlite
  fi
  command -v garage >/dev/null 2>&1 || {
    echo "setup: garage was installed into ~/.cargo/bin, which is not on PATH; add it" >&2
    exit 1
  }
fi
