#!/usr/bin/env bash
# bench/run.sh: what `make bench` runs. It measures p11escrow the way a user would choose between
# tools: on this machine, in this run, as ratios against age and openssl, with every figure's
# limit beside it. Machines here are shared and noisy, so every comparison runs its pair
# alternately (A B A B ...) for ROUNDS rounds and quotes the median of the per-round ratios;
# absolute times are printed only as context in the raw logs.
#
# Environment: ROUNDS (default 5), SMALL_FILES (default 10000), BENCH_DIR (default a fresh
# directory under /dev/shm, removed at the end), GO (default go), BENCH_ONLY (files: the file
# figures only; authority: intake and the service only; empty: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
GO=${GO:-go}
ROUNDS=${ROUNDS:-5}
SMALL_FILES=${SMALL_FILES:-10000}
W=$(nproc)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- tools ------------------------------------------------------------------------------------
./softhsm-test/deps.sh
need=()
command -v age >/dev/null || need+=(age)
command -v hyperfine >/dev/null || need+=(hyperfine)
[ -x /usr/bin/time ] || need+=(time)
command -v bc >/dev/null || need+=(bc)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing: ${need[*]}; install with: sudo apt-get install ${need[*]}" >&2
		exit 1
	fi
	echo "installing ${need[*]} with apt-get" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
$GO build -o bin/p11escrow ./cmd/p11escrow
P11E=$ROOT/bin/p11escrow

# --- throwaway tokens, keys and inputs on tmpfs ------------------------------------------------
B=${BENCH_DIR:-$(mktemp -d /dev/shm/p11escrow-bench.XXXXXX)}
trap 'rm -rf "$B"' EXIT
OUT=$ROOT/bench/out
mkdir -p "$OUT"
: >"$OUT/raw.log"
# want PART: whether BENCH_ONLY (files or authority; empty for everything) asks for PART.
want() { [ -z "${BENCH_ONLY:-}" ] || [ "$BENCH_ONLY" = "$1" ]; }
eval "$(./softhsm-test/mktoken.sh "$B/hsm" user 12345678 1234 2>/dev/null)"
softhsm2-util --init-token --free --label authority --so-pin 12345678 --pin 1234 >/dev/null
export SOFTHSM2_CONF P11ESCROW_MODULE=${P11ESCROW_MODULE:-$(ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so 2>/dev/null | head -1)}
export P11ESCROW_PIN=1234
cd "$B"
$P11E key generate --token user --label alice --out alice.pub 2>/dev/null
$P11E authority init --token authority --label escrow --out auth.pub 2>/dev/null
age-keygen -o age.key 2>/dev/null
AGE_R=$(age-keygen -y age.key)
KEY=$(openssl rand -hex 32) IV=$(openssl rand -hex 16)
ENC=(encrypt --token user --key alice --authority auth.pub)
if want files; then
	echo "making the 1 GiB input on tmpfs" >&2
	head -c 1073741824 /dev/urandom >big
	$P11E "${ENC[@]}" -o big.p11e big 2>/dev/null
	age -r "$AGE_R" -o big.age big
	openssl enc -aes-256-ctr -K "$KEY" -iv "$IV" -in big -out big.ctr
fi

# --- helpers ----------------------------------------------------------------------------------
# secs CMD...: wall seconds of one run, output discarded.
secs() {
	local t0=$EPOCHREALTIME
	"$@" >/dev/null 2>&1
	echo "$EPOCHREALTIME - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
fmt() { printf '%.2f' "$1"; }
# mbps and nsop BENCHMARK: a Go benchmark's MB/s and ns/op, from its output on stdin.
mbps() { awk -v n="$1" '$1 ~ "^"n"(-[0-9]+)?$" {for (i = 1; i <= NF; i++) if ($(i+1) == "MB/s") print $i}'; }
nsop() { awk -v n="$1" '$1 ~ "^"n"(-[0-9]+)?$" {for (i = 1; i <= NF; i++) if ($(i+1) == "ns/op") print $i}'; }
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }

# pair NAME A... -- B...: ROUNDS alternating runs; prints the median of time(B)/time(A), which is
# A's throughput as a multiple of B's.
pair() {
	local name=$1
	shift
	local a=() b=()
	while [ "$1" != -- ]; do a+=("$1"); shift; done
	shift
	b=("$@")
	local ratios=() r ta tb
	for ((r = 0; r < ROUNDS; r++)); do
		ta=$(secs "${a[@]}")
		tb=$(secs "${b[@]}")
		echo "$name round $r: $ta s vs $tb s" >>"$OUT/raw.log"
		ratios+=("$(echo "$tb / $ta" | bc -l)")
	done
	printf '%s\n' "${ratios[@]}" | median
}

if want files; then
# --- Go benchmarks ----------------------------------------------------------------------------
echo "Go benchmarks (full set, once)" >&2
cd "$ROOT"
$GO test -run '^$' -bench . -benchtime 1s ./escrow/internal/stream ./escrow ./token | tee "$OUT/go-bench.txt" >&2

# The pipeline against W x single-core GCM, baseline and pipeline back to back in each round.
echo "large-file limit: $ROUNDS alternating rounds" >&2
seal_pct=() open_pct=()
for ((r = 0; r < ROUNDS; r++)); do
	o=$($GO test -run '^$' -bench '^Benchmark(GCMSealBaseline|SealStream|GCMOpenBaseline|OpenStream)$' -benchtime 1s ./escrow/internal/stream)
	echo "$o" >>"$OUT/raw.log"
	sb=$(echo "$o" | mbps BenchmarkGCMSealBaseline) ss=$(echo "$o" | mbps BenchmarkSealStream)
	ob=$(echo "$o" | mbps BenchmarkGCMOpenBaseline) os=$(echo "$o" | mbps BenchmarkOpenStream)
	seal_pct+=("$(echo "100 * $ss / ($W * $sb)" | bc -l)")
	open_pct+=("$(echo "100 * $os / ($W * $ob)" | bc -l)")
done
seal_med=$(printf '%s\n' "${seal_pct[@]}" | median)
open_med=$(printf '%s\n' "${open_pct[@]}" | median)
row "large-file limit: seal pipeline (Go, $W cores)" "$ss MB/s (last round)" "-" "-" "$W x $sb MB/s" "$(fmt "$seal_med") % (target ≥ 85 %)"
row "large-file limit: open pipeline (Go, $W cores)" "$os MB/s (last round)" "-" "-" "$W x $ob MB/s" "$(fmt "$open_med") % (target ≥ 85 %)"

# Unwrap on the token against a bare C_UnwrapKey loop, same number of sessions, back to back.
unwrap_pct=()
for ((r = 0; r < ROUNDS; r++)); do
	o=$($GO test -run '^$' -bench '^Benchmark(Raw)?Unwrap(Key)?Parallel$' -benchtime 2s ./token)
	echo "$o" >>"$OUT/raw.log"
	u=$(echo "$o" | nsop BenchmarkUnwrapParallel) ru=$(echo "$o" | nsop BenchmarkRawUnwrapKeyParallel)
	unwrap_pct+=("$(echo "100 * $ru / $u" | bc -l)")
done
RAW_UNWRAP_NS=$ru
row "token unwrap, $W sessions (Go: UnwrapOAEP vs C_UnwrapKey)" "$(fmt "$(echo "1000000000 / $u" | bc -l)")/s" "-" "-" "$(fmt "$(echo "1000000000 / $ru" | bc -l)")/s" "$(fmt "$(printf '%s\n' "${unwrap_pct[@]}" | median)") % (target ≥ 90 %)"

fi
if want files; then
# --- whole-process comparisons ----------------------------------------------------------------
cd "$B"
echo "whole-process pairs: $ROUNDS rounds each" >&2
GIB=1073741824
e_age=$(pair enc-age $P11E "${ENC[@]}" -o - --escrow-record rec.json --force big -- age -r "$AGE_R" -o /dev/null big)
e_ssl=$(pair enc-openssl $P11E "${ENC[@]}" -o - --escrow-record rec.json --force big -- openssl enc -aes-256-ctr -K "$KEY" -iv "$IV" -in big -out /dev/null)
d_age=$(pair dec-age $P11E decrypt --token user -o - big.p11e -- age -d -i age.key -o /dev/null big.age)
d_ssl=$(pair dec-openssl $P11E decrypt --token user -o - big.p11e -- openssl enc -d -aes-256-ctr -K "$KEY" -iv "$IV" -in big.ctr -out /dev/null)
t_enc=$(for i in 1 2 3; do secs $P11E "${ENC[@]}" -o - --escrow-record rec.json --force big; done | median)
t_dec=$(for i in 1 2 3; do secs $P11E decrypt --token user -o - big.p11e; done | median)
enc_mbs=$(echo "$GIB / $t_enc / 1000000" | bc -l)
dec_mbs=$(echo "$GIB / $t_dec / 1000000" | bc -l)
row "encrypt 1 GiB → /dev/null vs age -r" "$(fmt "$enc_mbs") MB/s" "age" "$(fmt "$e_age")× (target ≥ 1.3×)" "$W x $sb MB/s" "$(fmt "$(echo "100 * $enc_mbs / ($W * $sb)" | bc -l)") %"
row "encrypt 1 GiB → /dev/null vs openssl aes-256-ctr" "$(fmt "$enc_mbs") MB/s" "openssl (no AEAD)" "$(fmt "$e_ssl")×" "-" "-"
row "decrypt 1 GiB → /dev/null vs age -d" "$(fmt "$dec_mbs") MB/s" "age" "$(fmt "$d_age")× (target ≥ 2×)" "$W x $ob MB/s" "$(fmt "$(echo "100 * $dec_mbs / ($W * $ob)" | bc -l)") %"
row "decrypt 1 GiB → /dev/null vs openssl aes-256-ctr -d" "$(fmt "$dec_mbs") MB/s" "openssl (no AEAD)" "$(fmt "$d_ssl")×" "-" "-"

# One small file, whole process. The limit is loading the module alone (token list: dlopen,
# C_Initialize, the slot list), which no p11escrow command can avoid.
head -c 1024 /dev/urandom >f1k
one=$(pair one-file $P11E "${ENC[@]}" -o f1k.p11e --escrow-record f1k.json --force f1k -- age -r "$AGE_R" -o f1k.age f1k)
floor=$(pair module-floor $P11E token list -- age -r "$AGE_R" -o f1k.age f1k)
row "one 1 KiB file, whole process vs age -r" "1/$(fmt "$one") of age's rate" "age" "$(fmt "$(echo "1 / $one" | bc -l)")× age's time (target ≤ 2×)" "module load alone: $(fmt "$(echo "1 / $floor" | bc -l)")× age's time" "-"

# Many small files in one call, on tmpfs and on the disk holding the repository (fsync real).
small() { # DIR: makes SMALL_FILES files of 1 KiB in DIR, prints files/s of one encrypt call
	rm -rf "$1" && mkdir -p "$1"
	(cd "$1" && for ((i = 0; i < SMALL_FILES; i++)); do head -c 1024 /dev/urandom >"f$i"; done)
	local t
	t=$(secs $P11E "${ENC[@]}" -- "$1"/f*)
	echo "$SMALL_FILES / $t" | bc -l
	rm -rf "$1"
}
age_files() { # files/s of age, one process per file, on 200 files
	local t0=$EPOCHREALTIME i
	for ((i = 0; i < 200; i++)); do age -r "$AGE_R" -o f1k.age f1k; done
	echo "200 / ($EPOCHREALTIME - $t0)" | bc -l
}
fs_tmp=$(small "$B/small") fs_age=$(age_files)
fs_disk=$(small "$ROOT/bench/out/small")
gen=$(nsop BenchmarkRawGenerateKey <"$OUT/go-bench.txt") wrap=$(nsop BenchmarkRawWrapKey <"$OUT/go-bench.txt")
limit=$(echo "1000000000 / ($gen + 2 * $wrap)" | bc -l)
row "$SMALL_FILES × 1 KiB, one call, tmpfs" "$(fmt "$fs_tmp") files/s (target ≥ 2000)" "age, a process per file: $(fmt "$fs_age")/s" "$(fmt "$(echo "$fs_tmp / $fs_age" | bc -l)")×" "$(fmt "$limit")/s (1 keygen + 2 wraps, serial on SoftHSM)" "$(fmt "$(echo "100 * $fs_tmp / $limit" | bc -l)") %"
row "$SMALL_FILES × 1 KiB, one call, ext4 (fsync)" "$(fmt "$fs_disk") files/s" "-" "-" "$(fmt "$limit")/s" "$(fmt "$(echo "100 * $fs_disk / $limit" | bc -l)") %"

fi
if want authority; then
# Authority intake of 200 records against the bare unwrap loop with as many sessions (intake's
# default, twice the cores), back to back in each round, each round on a fresh copy of the store.
mkdir -p recs && (cd recs && for i in $(seq 200); do head -c 100 /dev/urandom >"r$i"; done)
$P11E "${ENC[@]}" -- recs/r* 2>/dev/null
S2=$((2 * W))
[ $S2 -ge 4 ] || S2=4
raw2() { (cd "$ROOT" && $GO test -run '^$' -bench '^BenchmarkRawUnwrapKeyParallel$' -benchtime 2s -cpu "$S2" ./token); }
intake_pct=()
for ((r = 0; r < ROUNDS; r++)); do
	# authority init registered the key in the default store, authority.db, in this directory.
	rm -f intake.db && $P11E authority backup --db authority.db --out intake.db >/dev/null
	t0=$EPOCHREALTIME
	held=$($P11E authority intake --db intake.db --token authority --sessions "$S2" -- recs/*.escrow.json 2>&1 | tail -1)
	t=$(echo "$EPOCHREALTIME - $t0" | bc -l)
	echo "intake: $held in $t s" >>"$OUT/raw.log"
	case $held in *"200 held"*) ;; *) echo "authority intake did not hold all 200 records: $held" >&2; exit 1 ;; esac
	u=$(raw2)
	echo "$u" >>"$OUT/raw.log"
	ru2=$(echo "$u" | nsop BenchmarkRawUnwrapKeyParallel)
	rate=$(echo "200 / $t" | bc -l)
	intake_pct+=("$(echo "100 * $rate * $ru2 / 1000000000" | bc -l)")
done
row "authority intake, 200 records, whole process (CLI)" "$(fmt "$rate")/s (last round)" "-" "-" "$(fmt "$(echo "1000000000 / $ru2" | bc -l)")/s (C_UnwrapKey, $S2 sessions, last round)" "$(fmt "$(printf '%s\n' "${intake_pct[@]}" | median)") % (target ≥ 80 %)"

# The authority's service: records per second through one `authority serve` (BenchmarkServe in
# cmd/p11escrow: 8 clients over loopback TLS), on SQLite and on PostgreSQL (a throwaway server,
# as `make test` starts, but durable: fsync and synchronous commit on), against the bare
# C_UnwrapKey loop on as many HSM sessions (BenchmarkRawUnwrapKeyParallel), the two back to back
# in each round. Twice: with serve's default of twice as many sessions as cores, where SoftHSM2's
# RSA competes with the host's work for every core; and with one session, where the RSA has one
# core and the host the others, as with an HSM of its own.
cd "$ROOT"
SERVE_RECORDS=${SERVE_RECORDS:-2000}
metric() { awk -v n="$1" -v u="$2" '$1 ~ "^"n"(-[0-9]+)?$" {for (i = 1; i <= NF; i++) if ($(i+1) == u) print $i}'; }
echo "the authority's service: $ROUNDS rounds of $SERVE_RECORDS records per store, on $S2 sessions and on 1" >&2
serve_rounds() { # SESSIONS: ROUNDS rounds; adds a row per backend
	local sessions=$1 o u ru r pct_sqlite=() pct_postgres=()
	for ((r = 0; r < ROUNDS; r++)); do
		o=$(P11ESCROW_BENCH_SESSIONS=$sessions PG_DURABLE=1 ./softhsm-test/with-postgres.sh $GO test -run '^$' -bench '^BenchmarkServe$' -benchtime "${SERVE_RECORDS}x" ./cmd/p11escrow)
		u=$($GO test -run '^$' -bench '^BenchmarkRawUnwrapKeyParallel$' -benchtime 2s -cpu "$sessions" ./token)
		printf '%s\n%s\n' "$o" "$u" >>"$OUT/raw.log"
		ru=$(echo "$u" | nsop BenchmarkRawUnwrapKeyParallel)
		pct_sqlite+=("$(echo "100 * $(echo "$o" | metric BenchmarkServe/sqlite records/s) * $ru / 1000000000" | bc -l)")
		pct_postgres+=("$(echo "100 * $(echo "$o" | metric BenchmarkServe/postgres records/s) * $ru / 1000000000" | bc -l)")
	done
	local be pcts n
	for be in sqlite postgres; do
		n="BenchmarkServe/$be"
		if [ $be = sqlite ]; then pcts=("${pct_sqlite[@]}"); else pcts=("${pct_postgres[@]}"); fi
		row "authority serve, $SERVE_RECORDS records, 8 clients, $sessions session(s), $be: p50 / p99 $(echo "$o" | metric "$n" p50-ms) / $(echo "$o" | metric "$n" p99-ms) ms" \
			"$(fmt "$(echo "$o" | metric "$n" records/s)")/s (last round)" "-" "-" \
			"$(fmt "$(echo "1000000000 / $ru" | bc -l)")/s (C_UnwrapKey, $sessions session(s), last round)" \
			"$(fmt "$(printf '%s\n' "${pcts[@]}" | median)") % (target ≥ 80 %)"
	done
}
serve_rounds "$S2"
serve_rounds 1
cd "$B"

fi
if want files; then
# Memory: peak RSS of 1 GiB each way, to a file and to a pipe.
rss() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1; }
m1=$(rss $P11E "${ENC[@]}" -o m.p11e --escrow-record m.json --force big)
m2=$(rss $P11E "${ENC[@]}" -o - --escrow-record m.json --force big)
m3=$(rss $P11E decrypt --token user -o m.out --force big.p11e)
m4=$(rss $P11E decrypt --token user -o - big.p11e)
rm -f m.p11e m.out
row "peak RSS, 1 GiB: encrypt to file / to pipe" "$((m1 / 1024)) / $((m2 / 1024)) MiB" "-" "-" "64 MiB" "$((100 * m1 / 65536)) / $((100 * m2 / 65536)) %"
row "peak RSS, 1 GiB: decrypt to file / to pipe" "$((m3 / 1024)) / $((m4 / 1024)) MiB" "-" "-" "64 MiB" "$((100 * m3 / 65536)) / $((100 * m4 / 65536)) %"

fi
# --- the table --------------------------------------------------------------------------------
{
	echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), Linux $(uname -r), SoftHSM2 $(softhsm2-util --version), $(age --version | head -1 | sed 's/^/age /'), $(openssl version | cut -d' ' -f1-2)"
	echo "Load average (1/5/15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg). Per-round times: bench/out/raw.log"
	echo "Command: make bench (ROUNDS=$ROUNDS, SMALL_FILES=$SMALL_FILES${BENCH_ONLY:+, BENCH_ONLY=$BENCH_ONLY}); ratios are medians of alternating pairs"
	echo
	echo "| figure | p11escrow | peer | ratio | limit | % of limit |"
	echo "|---|---|---|---|---|---|"
	printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/table.md"
