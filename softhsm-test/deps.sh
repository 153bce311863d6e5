#!/usr/bin/env bash
# Installs what the tests and the demo need and a fresh Debian machine lacks: SoftHSM2 (the
# PKCS#11 module the tests run against), OpenSC (pkcs11-tool, to make keys the way other tools
# do), openssl (to convert keys and make certificates) and NSS's softoken with certutil (a module
# that needs C_Initialize arguments). It installs only what is missing, and only as root;
# otherwise it says what to run.
set -euo pipefail

need=()
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v openssl >/dev/null || need+=(openssl)
command -v certutil >/dev/null || need+=(libnss3-tools)
compgen -G '/usr/lib*/libsoftokn3.so' >/dev/null || compgen -G '/usr/lib/*/libsoftokn3.so' >/dev/null || need+=(libnss3)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${need[*]}; install with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} with apt-get" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
