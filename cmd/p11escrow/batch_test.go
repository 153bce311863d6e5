package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
)

// TestKilledBatchRunsAgain kills `encrypt f*` with SIGKILL midway, then runs the same command
// again, with the glob now matching the outputs too: it completes without --force, skips the
// outputs named as inputs, and leaves every file with its record, and nothing else.
func TestKilledBatchRunsAgain(t *testing.T) {
	softhsmtest.Require(t)
	env := softhsmtest.New(t)
	env.InitToken(t, "user", "12345678", "1234")
	environ := append(os.Environ(), env.Environ()...)
	environ = append(environ, "P11ESCROW_MODULE="+env.ModulePath, "P11ESCROW_PIN=1234")
	keys := t.TempDir()
	command := func(dir string, args ...string) *exec.Cmd {
		cmd := exec.Command("p11escrow", args...)
		cmd.Dir, cmd.Env = dir, environ
		return cmd
	}
	if out, err := command(keys, "key", "generate", "--token", "user", "--label", "alice", "--type", "rsa-2048").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := command(keys, "key", "generate", "--token", "user", "--label", "auth", "--type", "rsa-2048").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	const files = 300
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for trial := range 4 {
		dir := t.TempDir()
		for i := range files {
			name := filepath.Join(dir, fmt.Sprintf("f%03d", i))
			if err := os.WriteFile(name, []byte(name), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// The shell's expansion of f*, sorted.
		glob := func() []string {
			m, _ := filepath.Glob(filepath.Join(dir, "f*"))
			for i := range m {
				m[i] = filepath.Base(m[i])
			}
			slices.Sort(m)
			return append([]string{"encrypt", "--token", "user", "--key", "alice", "--authority", filepath.Join(keys, "auth.pub"), "--"}, m...)
		}
		cmd := command(dir, glob()...)
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		n, done := 1+r.IntN(files*3/4), 0
		sc := bufio.NewScanner(stderr)
		for done < n && sc.Scan() {
			if strings.Contains(sc.Text(), ": encrypted to ") {
				done++
			}
		}
		cmd.Process.Kill()
		err = cmd.Wait()
		t.Logf("trial %d: killed after %d files: %v", trial, done, err)

		args := glob()
		// The killed run finished at least one file, though not always f000: sessions work on
		// several at once. The rerun's glob names its .p11e, which must be skipped.
		var output string
		for _, a := range args {
			if strings.HasSuffix(a, ".p11e") {
				output = a
				break
			}
		}
		if output == "" {
			t.Fatalf("trial %d: no .p11e after %d files were reported encrypted", trial, done)
		}
		out, err := command(dir, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("trial %d: the rerun failed: %v\n%s", trial, err, out)
		}
		if !bytes.Contains(out, []byte(output+": skipped")) {
			t.Errorf("trial %d: the rerun did not skip %s, named as an input", trial, output)
		}
		checkBatch(t, dir, files)
	}
}

// checkBatch checks that dir holds fNNN, fNNN.p11e and fNNN.p11e.escrow.json for every file,
// each record for its file, and nothing else.
func checkBatch(t *testing.T, dir string, files int) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 3*files {
		var names []string
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), "f") || strings.Count(e.Name(), ".") > 2 {
				names = append(names, e.Name())
			}
		}
		t.Errorf("%d files in the directory, want %d; odd ones: %q", len(ents), 3*files, names)
	}
	for i := range files {
		name := filepath.Join(dir, fmt.Sprintf("f%03d.p11e", i))
		f, err := os.Open(name)
		if err != nil {
			t.Error(err)
			continue
		}
		h, _, err := escrow.ParseHeader(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		data, err := os.ReadFile(name + ".escrow.json")
		if err != nil {
			t.Error(err)
			continue
		}
		rec, err := escrow.ParseRecord(data)
		if err != nil || rec.FileID != h.ID.String() {
			t.Errorf("%s: its record is for file %v (%v), not %s", name, rec, err, h.ID)
		}
	}
}
