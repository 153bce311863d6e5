#!/usr/bin/env bash
# Installs what the tests and the demo need and a fresh Debian machine lacks: SoftHSM2 (the
# PKCS#11 module the tests run against), OpenSC (pkcs11-tool, to make keys the way other tools
# do), openssl (to convert keys and make certificates), NSS's softoken with certutil (a module
# that needs C_Initialize arguments), and a software TPM 2.0 as a second PKCS#11 implementation:
# swtpm, tpm2-pkcs11 and tpm2-tools (tpm2_flushcontext), and PostgreSQL's server binaries, for
# the throwaway server of softhsm-test/with-postgres.sh. It installs only what is missing, and
# only as root; otherwise it says what to run.
set -euo pipefail

tpm2_module=
for d in /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib; do
  [ -e "$d/pkcs11/libtpm2_pkcs11.so" ] && tpm2_module=$d/pkcs11/libtpm2_pkcs11.so
done

need=()
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v pkcs11-tool >/dev/null || need+=(opensc)
# OpenSC's pkcs11-spy logs a module's calls; the TPM tests count private-key operations with it.
[ -e /usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so ] || [ "$(uname -m)" != x86_64 ] || need+=(opensc-pkcs11)
command -v swtpm >/dev/null || need+=(swtpm)
command -v tpm2_flushcontext >/dev/null || need+=(tpm2-tools)
[ -n "$tpm2_module" ] || need+=(libtpm2-pkcs11-1)
command -v openssl >/dev/null || need+=(openssl)
command -v certutil >/dev/null || need+=(libnss3-tools)
compgen -G '/usr/lib*/libsoftokn3.so' >/dev/null || compgen -G '/usr/lib/*/libsoftokn3.so' >/dev/null || need+=(libnss3)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${need[*]}; install with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} with apt-get" >&2
apt-get update -qq
if [[ " ${need[*]} " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  # The tests start their own server; Debian's package would otherwise create and start a
  # system-wide cluster.
  mkdir -p /etc/postgresql-common
  echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confold "${need[@]}" >/dev/null
