#!/usr/bin/env bash
# decrypt-by-hand.sh FILE ROLE OUT: FORMAT.md section 7, with nothing but the spec, pkcs11-tool,
# openssl and coreutils. It unwraps the key from the stanza with ROLE (owner, authority or
# recipient), rsa-oaep or ecdh, using the private key labelled $KEY_LABEL on token $TOKEN_LABEL
# of module $MODULE, with the PIN in $PIN. It checks the key commitment and the header MAC, then decrypts every
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

# 2. The stanza with ROLE: its type and arguments, and its body lines up to the next "->" or "---".
line=$(grep -m1 -E "^-> (rsa-oaep|ecdh) .* $role\$" "$w/header")
read -r _ type arg1 arg2 _ <<< "$line"
awk -v l="$line" '$0 == l {f=1; next} /^(->|---)/ {f=0} f' "$w/header" | tr -d '\n' | b64d > "$w/wrapped"

# pkcs11-tool's --decrypt and --derive may take another key than --label names when the token
# holds several, so look the label's CKA_ID up and select the key by it.
keyid=$(pkcs11-tool --module "$MODULE" --token-label "$TOKEN_LABEL" --login --pin env:PIN \
  --list-objects --type privkey 2>/dev/null \
  | awk -v l="$KEY_LABEL" '$1 == "label:" {f = (substr($0, index($0, ":") + 1) ~ "^ *" l "$")} f && $1 == "ID:" {print $2; exit}')
[ -n "$keyid" ] || { echo "no private key labelled $KEY_LABEL" >&2; exit 1; }

if [ "$type" = rsa-oaep ]; then
  # 3. Unwrap K on the token: RSA-OAEP, MGF1 with the same hash, empty label.
  H=$(echo "$arg1" | tr a-z A-Z)           # SHA1 or SHA256
  pkcs11-tool --module "$MODULE" --token-label "$TOKEN_LABEL" --login --pin env:PIN \
    --decrypt -m RSA-PKCS-OAEP --hash-algorithm "${H/SHA1/SHA-1}" --mgf "MGF1-$H" --id "$keyid" \
    -i "$w/wrapped" -o "$w/K" >/dev/null 2>"$w/log" || { cat "$w/log" >&2; exit 1; }
else
  # 3. ecdh: Z = ECDH(our key, the ephemeral point), the KEK its last 32 bytes, and K the
  #    RFC 5649 unwrap of the body. pkcs11-tool takes the peer as a DER public key: the curve's
  #    SubjectPublicKeyInfo prefix, then the point.
  case $arg1 in
    p256) spki=3059301306072a8648ce3d020106082a8648ce3d030107034200 ;;
    p384) spki=3076301006072a8648ce3d020106052b81040022036200 ;;
  esac
  { echo "$spki" | unhex; printf '%s' "$arg2" | b64d; } > "$w/ephemeral.der"
  pkcs11-tool --module "$MODULE" --token-label "$TOKEN_LABEL" --login --pin env:PIN \
    --derive -m ECDH1-DERIVE --id "$keyid" -i "$w/ephemeral.der" -o "$w/Z" >/dev/null 2>"$w/log" \
    || { cat "$w/log" >&2; exit 1; }
  kek=$(tail -c 32 "$w/Z" | hex)
  openssl enc -d -id-aes256-wrap-pad -K "$kek" -iv A65959A6 -in "$w/wrapped" -out "$w/K" 2>"$w/log" \
    || { echo "the ecdh stanza does not unwrap" >&2; exit 1; }
fi
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
