#!/usr/bin/env bash
# decrypt-by-hand.sh FILE ROLE OUT: FORMAT.md section 7, with nothing but the spec, pkcs11-tool,
# openssl and coreutils. It unwraps the key from the stanza with ROLE (owner, authority or
# recipient) using the private key labelled $KEY_LABEL on token $TOKEN_LABEL of module $MODULE,
# with the PIN in $PIN. It checks the key commitment and the header MAC, then decrypts every
# chunk. openssl's command line has no AES-GCM, so it decrypts chunks with AES-CTR (GCM's own
# keystream) and does NOT check their tags: use it to understand the format or to recover data,
# and use p11escrow, or any AES-GCM API, to authenticate the payload.
set -euo pipefail
file=$1 role=$2 out=$3
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT

hex() { od -An -v -tx1 | tr -d ' \n'; }                 # stdin bytes -> lower-case hex
unhex() { printf '%b' "$(sed 's/../\\x&/g')"; }          # stdin hex -> bytes
b64d() { local s; s=$(cat); while [ $(( ${#s} % 4 )) -ne 0 ]; do s="$s="; done; printf '%s' "$s" | base64 -d; }

# 1. The header ends with the line that starts with "---"; the payload follows it.
n=$(grep -a -n -m1 '^--- ' "$file" | cut -d: -f1)
head -n "$n" "$file" > "$w/header"
hlen=$(wc -c < "$w/header")
tail -c +"$((hlen + 1))" "$file" > "$w/payload"
head -n 2 "$w/header" > "$w/core"
read -r _ id _ commitment < <(sed -n 2p "$w/header")
read -r _ nonce mac < <(tail -n 1 "$w/header")

# 2. The stanza with ROLE: its OAEP hash, and its body lines up to the next "->" or "---".
hash=$(grep -m1 "^-> rsa-oaep [a-z0-9]* [0-9a-f]* $role\$" "$w/header" | cut -d' ' -f3)
awk -v r="$role" '$0 ~ "^-> rsa-oaep .* " r "$" {f=1; next} /^(->|---)/ {f=0} f' "$w/header" \
  | tr -d '\n' | b64d > "$w/wrapped"

# 3. Unwrap K on the token: RSA-OAEP, MGF1 with the same hash, empty label.
H=$(echo "$hash" | tr a-z A-Z)           # SHA1 or SHA256
pkcs11-tool --module "$MODULE" --token-label "$TOKEN_LABEL" --login --pin env:PIN \
  --decrypt -m RSA-PKCS-OAEP --hash-algorithm "${H/SHA1/SHA-1}" --mgf "MGF1-$H" --label "$KEY_LABEL" \
  -i "$w/wrapped" -o "$w/K" >/dev/null 2>"$w/log" || { cat "$w/log" >&2; exit 1; }
[ "$(wc -c < "$w/K")" -eq 32 ] || { echo "the stanza does not hold a 32-byte key" >&2; exit 1; }
K=$(hex < "$w/K")

# 4. Key commitment: SHA-256("p11escrow/v1 commit " || file-id bytes || K), base64.
got=$({ printf 'p11escrow/v1 commit '; echo "$id" | unhex; cat "$w/K"; } | sha256sum | cut -d' ' -f1)
want=$(printf '%s' "$commitment" | b64d | hex)
[ "$got" = "$want" ] || { echo "key commitment mismatch" >&2; exit 1; }

# 5. Header MAC: GMAC (GCM over an empty plaintext) of the header through "---",
#    nonce = header-nonce || 02.
head -c "$((hlen - ${#nonce} - ${#mac} - 3))" "$w/header" > "$w/macinput"
iv=$(printf '%s' "$nonce" | b64d | hex)02
got=$(openssl mac -cipher AES-256-GCM -macopt hexkey:"$K" -macopt hexiv:"$iv" -in "$w/macinput" GMAC \
  | tr A-F a-f)
want=$(printf '%s' "$mac" | b64d | hex)
[ "$got" = "$want" ] || { echo "header MAC mismatch" >&2; exit 1; }

# 6. Chunks of 65552 bytes: ciphertext || 16-byte tag. GCM encrypts with AES-CTR from the
#    counter block nonce || 00000002, where nonce = uint88(i) || flag (01 on the last chunk).
size=$(wc -c < "$w/payload")
chunks=$(( (size + 65551) / 65552 ))
: > "$out"
for ((i = 0; i < chunks; i++)); do
  dd if="$w/payload" of="$w/chunk" bs=65552 skip="$i" count=1 status=none
  len=$(( $(wc -c < "$w/chunk") - 16 ))
  flag=00; [ "$i" -eq $((chunks - 1)) ] && flag=01
  iv=$(printf '%022x%s00000002' "$i" "$flag")
  head -c "$len" "$w/chunk" | openssl enc -d -aes-256-ctr -K "$K" -iv "$iv" -nopad >> "$out"
done
echo "decrypted $chunks chunk(s): commitment and header MAC verified, chunk tags not checked" >&2
