package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
	"github.com/urfave/cli/v2"
)

// TestQuickstart runs the README's quickstart block as written, with bash, in a fresh $HOME.
// Only apt-get is replaced, by a no-op: the tests already need SoftHSM2.
func TestQuickstart(t *testing.T) {
	softhsmtest.Require(t)
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- quickstart -->\n```sh\n")
	if !ok {
		t.Fatal("README.md has no quickstart block")
	}
	block, _, _ := strings.Cut(rest, "```")
	home, stubs := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(stubs, "apt-get"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The new $HOME must not cost a cold Go build cache: keep the caches where they are.
	goEnv, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output()
	if err != nil {
		t.Fatal(err)
	}
	dirs := strings.Fields(string(goEnv))
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", block)
	cmd.Dir = "../.."
	cmd.Env = append(cleanEnv(), "HOME="+home, "PATH="+stubs+":/usr/local/go/bin:"+os.Getenv("PATH"),
		"GOCACHE="+dirs[0], "GOMODCACHE="+dirs[1], "GOPATH="+dirs[2])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the quickstart failed: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "round trip OK") {
		t.Errorf("the quickstart did not end in a round trip:\n%s", out)
	}
}

// cleanEnv is the environment without the variables a newcomer would not have set.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "P11ESCROW_") && !strings.HasPrefix(kv, "SOFTHSM2_CONF=") {
			env = append(env, kv)
		}
	}
	return env
}

// TestReadmeCommandTable checks that the README's command table names every command that
// --help shows, so that the two cannot drift apart.
func TestReadmeCommandTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "| command | what it does |")
	if !ok {
		t.Fatal("README.md has no command table")
	}
	table, _, _ := strings.Cut(rest, "\n\n")
	var cells []string
	for _, m := range regexp.MustCompile("`([^`]*)`").FindAllStringSubmatch(table, -1) {
		cells = append(cells, m[1])
	}
	// Each command must start a cell, with its parent's name in the same or an earlier cell of
	// the same row; "authority officer add/list" and "`authority intake`, `list`" both count.
	words := map[string]bool{}
	for _, c := range cells {
		for _, w := range regexp.MustCompile(`[a-z][a-z-]*`).FindAllString(c, -1) {
			words[w] = true
		}
	}
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" {
				continue
			}
			if !words[c.Name] {
				t.Errorf("README's command table does not mention %q", strings.TrimSpace(prefix+" "+c.Name))
			}
			walk(prefix+" "+c.Name, c.Subcommands)
		}
	}
	walk("", newApp().Commands)
}
