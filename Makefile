# p11escrow. `make test` is what CI runs; `make demo` tells the whole story on local SoftHSM2 tokens.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go

PREFIX ?= /usr/local

.PHONY: all build man install test test-with-postgres deps vet demo bench clean

all: build

build:
	$(GO) build -o bin/p11escrow ./cmd/p11escrow

# The man page is made from the command definitions, so it cannot drift from --help.
man: build
	./bin/p11escrow man > bin/p11escrow.1

# make install [PREFIX=/usr/local] [DESTDIR=staging dir]
install: build man
	install -D -m 0755 bin/p11escrow $(DESTDIR)$(PREFIX)/bin/p11escrow
	install -D -m 0644 bin/p11escrow.1 $(DESTDIR)$(PREFIX)/share/man/man1/p11escrow.1

deps:
	@./softhsm-test/deps.sh

vet:
	$(GO) vet ./...

# Every test runs against real SoftHSM2 tokens that the tests create in temporary directories,
# and the TPM tests against their own swtpm (a TPM 2.0 simulator) on a loopback port, which they
# stop themselves. The Go benchmarks run once each, so that they cannot rot. The store tests run
# on a throwaway PostgreSQL server (with-postgres.sh starts it on a Unix socket in a temporary
# directory and stops it when the tests end); the authority package and the crash and
# concurrency tests then run again with PostgreSQL stores. In CI, no swtpm and no postgres may
# outlive the tests.
test: deps vet
	./softhsm-test/with-postgres.sh $(MAKE) --no-print-directory test-with-postgres
	@if [ -n "$$CI" ] && pgrep -x swtpm >/dev/null; then echo "a swtpm outlived the tests:"; pgrep -a -x swtpm; exit 1; fi
	@if [ -n "$$CI" ] && pgrep -x postgres >/dev/null; then echo "a postgres outlived the tests:"; pgrep -a -x postgres; exit 1; fi

# test's body, run by with-postgres.sh with $$P11ESCROW_TEST_PG set.
test-with-postgres:
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./...
	$(GO) test -count=1 ./...
	P11ESCROW_TEST_STORE=postgres $(GO) test -count=1 ./authority/
	P11ESCROW_TEST_STORE=postgres $(GO) test -count=1 -run 'TestKilled(IntakeAndRotation|RecoverDecrypt)|TestConcurrentIntakeProcesses' ./cmd/p11escrow

demo: deps build
	./softhsm-test/demo.sh

# Benchmarks against age and openssl on throwaway SoftHSM2 tokens, ending with a markdown table
# (bench/out/table.md). Installs age, hyperfine and time if missing. See BENCHMARKS.md.
bench: deps
	./bench/run.sh

clean:
	rm -rf bin .demo bench/out
