#!/bin/sh
# mktoken.sh DIR LABEL SOPIN PIN
# Makes a throwaway SoftHSM2 token directory in DIR, initialises one token,
# and prints the export line to use it, e.g.:
#   eval "$(softhsm-test/mktoken.sh /tmp/demo alice 12345678 1234)"
set -eu
if [ $# -ne 4 ]; then
	echo "usage: $0 DIR LABEL SOPIN PIN" >&2
	exit 2
fi
dir=$1 label=$2 sopin=$3 pin=$4
command -v softhsm2-util >/dev/null 2>&1 || {
	echo "softhsm2-util not found; install SoftHSM2 (apt-get install softhsm2 opensc)" >&2
	exit 1
}
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
cat >"$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
SOFTHSM2_CONF=$dir/softhsm2.conf softhsm2-util --init-token --free \
	--label "$label" --so-pin "$sopin" --pin "$pin" >&2
echo "export SOFTHSM2_CONF=$dir/softhsm2.conf"
