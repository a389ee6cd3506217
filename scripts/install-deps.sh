#!/usr/bin/env bash
# Installs what building and testing AgentOS needs on a fresh Debian/Ubuntu machine:
# a C toolchain, CMake, pkg-config, libcurl's headers, valgrind and Python's venv module.
# The Rust toolchain (cargo, rustfmt, clippy) must already be on PATH (rustup).
# Skips apt entirely when everything is present.
set -euo pipefail
packages=(build-essential cmake pkg-config libcurl4-openssl-dev valgrind python3-venv binutils)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || { echo "install-deps: cargo not found; install Rust with rustup" >&2; exit 1; }
fi
for c in rustfmt clippy; do
  command -v rustup >/dev/null 2>&1 && rustup component list --installed 2>/dev/null | grep -q "^$c" \
    || { command -v rustup >/dev/null 2>&1 && rustup component add "$c" >/dev/null 2>&1 || true; }
done
echo "install-deps: ok"
