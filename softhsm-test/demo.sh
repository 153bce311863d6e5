#!/usr/bin/env bash
# The whole p11escrow story on two throwaway SoftHSM2 tokens under ./.demo: a user's token and
# the backup authority's HSM. Run it with `make demo`; it prints each command before it runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin/p11escrow
demo=$PWD/.demo
rm -rf "$demo"
mkdir -p "$demo/tokens"
cat > "$demo/softhsm2.conf" <<CONF
directories.tokendir = $demo/tokens
objectstore.backend = file
log.level = ERROR
CONF
export SOFTHSM2_CONF=$demo/softhsm2.conf
# The demo's PIN. Real use: a --pin-file or the no-echo prompt.
export P11ESCROW_PIN=1234

step() { printf '\n\033[1m== %s\033[0m\n' "$1"; }
run() { printf '$'; printf ' %q' "$@"; printf '\n'; "$@"; }

step "Two tokens: the user's smart card and the authority's HSM (SoftHSM2 stands in for both)"
run softhsm2-util --init-token --free --label user --so-pin 12345678 --pin 1234 >/dev/null
run softhsm2-util --init-token --free --label authority --so-pin 87654321 --pin 1234 >/dev/null
cd "$demo"
run "$bin" token list

step "The authority creates its key pair on its HSM and publishes the public key"
run "$bin" authority init --token authority --label escrow-2026 --out authority.pub
run cat authority.pub

step "Alice creates her exchange key pair on her token"
run "$bin" key generate --token user --label alice
run "$bin" key list --token user
run "$bin" token info --token user

step "Alice encrypts a file; its key is escrowed with the authority"
head -c 200000 /dev/urandom > report.pdf
run "$bin" encrypt --token user --key alice --authority authority.pub --description "Annual report draft" report.pdf
run ls -l report.pdf report.pdf.p11e report.pdf.p11e.escrow.json

step "Anyone can inspect the file and the record without a key"
run "$bin" inspect report.pdf.p11e
run "$bin" inspect report.pdf.p11e.escrow.json

step "The authority checks the record it received: it opens the file's header and is intact"
run "$bin" authority verify --token authority --file report.pdf.p11e report.pdf.p11e.escrow.json

step "Alice decrypts with her token"
run "$bin" decrypt --token user -o report-alice.pdf report.pdf.p11e
run cmp report.pdf report-alice.pdf && echo "identical"

step "Alice loses her card. The authority, once her identity is established, decrypts with its HSM"
run "$bin" authority decrypt --token authority -o report-recovered.pdf report.pdf.p11e
run cmp report.pdf report-recovered.pdf && echo "identical"

step "Done. Everything is under $demo; 'make clean' removes it."
