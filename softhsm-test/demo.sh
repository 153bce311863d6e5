#!/usr/bin/env bash
# The whole p11escrow story on throwaway SoftHSM2 tokens under ./.demo: a user's token, the
# backup authority's HSM, two recovery officers' tokens, and the user's replacement card after she
# loses the first. Run it with `make demo`; it prints each command before it runs it.
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
run "$bin" key generate --token user --key alice
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

step "The authority takes the record in: verified on its HSM, then stored in authority.db"
run "$bin" authority intake --token authority report.pdf.p11e.escrow.json
run "$bin" authority list

step "Two recovery officers, each with a signing key on their own token; two approvals are the rule"
run softhsm2-util --init-token --free --label officer-olivia --so-pin 12345678 --pin 1234 >/dev/null
run softhsm2-util --init-token --free --label officer-oscar --so-pin 12345678 --pin 1234 >/dev/null
run "$bin" key generate --usage sign --token officer-olivia --key olivia
run "$bin" key generate --usage sign --token officer-oscar --key oscar
run "$bin" authority officer add --name olivia --pub olivia.pub
run "$bin" authority officer add --name oscar --pub oscar.pub
run "$bin" authority policy --approvals 2

step "Alice loses her card: her token is gone, and with it her key"
run softhsm2-util --delete-token --token user
run "$bin" token list

step "Alice gets a new card and a new key, and tells the authority which file she needs"
run softhsm2-util --init-token --free --label alice-new --so-pin 12345678 --pin 1234 >/dev/null
run "$bin" key generate --token alice-new --key alice-2
id=$("$bin" inspect --json report.pdf.p11e | sed -n 's/.*"file_id": "\([0-9a-f]*\)".*/\1/p')
echo "file ID: $id"

step "Once her identity is established, a recovery request; one approval is not enough"
run "$bin" authority request --id "$id" --to alice-2.pub --reason "lost card; identity checked in person (ticket 42)" -o request.json
run "$bin" authority approve --yes --token officer-olivia --key olivia request.json
run "$bin" authority recover --token authority -o report.header request.json || echo "(refused, as it should be)"

step "The second officer approves on her own token; the HSM re-issues the header"
run "$bin" authority approve --yes --token officer-oscar --key oscar request.json
run "$bin" authority recover --token authority -o report.header request.json

step "Alice swaps the header (the payload is untouched) and decrypts with her new card"
run "$bin" reheader --header report.header -o report-new.pdf.p11e report.pdf.p11e
run "$bin" decrypt --token alice-new -o report-recovered.pdf report-new.pdf.p11e
run cmp report.pdf report-recovered.pdf && echo "identical"

step "Every step is in the authority's hash-chained audit log"
run "$bin" authority audit
run "$bin" authority audit --verify

step "Done. Everything is under $demo; 'make clean' removes it."
