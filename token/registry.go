package token

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ModuleRegistryDirs are the directories of p11-kit module files (NAME.module) that
// ResolveModuleName reads, in p11-kit's order: the system administrator's, then the packages'.
var ModuleRegistryDirs = []string{"/etc/pkcs11/modules", "/usr/share/p11-kit/modules"}

// moduleLibDirs are where p11-kit looks for a module file's relative "module:" path.
var moduleLibDirs = []string{
	"/usr/lib/x86_64-linux-gnu/pkcs11",
	"/usr/lib/aarch64-linux-gnu/pkcs11",
	"/usr/lib64/pkcs11",
	"/usr/lib/pkcs11",
}

// RegisteredModule is one p11-kit module file.
type RegisteredModule struct {
	Name     string // the file's name without ".module"
	Path     string // the "module:" key, made absolute
	InitArgs string // the "x-init-reserved:" key, for C_Initialize's pReserved
}

// maxModuleFile bounds what is read of a module file; real ones are a few lines.
const maxModuleFile = 64 << 10

// ResolveModuleName finds the module that an RFC 7512 module-name names in dirs (nil means
// ModuleRegistryDirs). A name matches a module file's name ("softhsm2" for softhsm2.module) or
// its library's file name without "lib" and ".so" ("softhsm2" for libsofthsm2.so). The first
// directory that has a match wins, as in p11-kit, where /etc overrides /usr/share.
func ResolveModuleName(name string, dirs []string) (RegisteredModule, error) {
	const op = "resolve module-name"
	if dirs == nil {
		dirs = ModuleRegistryDirs
	}
	var known []string
	for _, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.module"))
		sort.Strings(files)
		for _, f := range files {
			rm, ok := readModuleFile(f)
			if !ok {
				continue
			}
			known = append(known, rm.Name)
			lib := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(rm.Path), "lib"), ".so")
			if rm.Name == name || lib == name {
				return rm, nil
			}
		}
	}
	if len(known) == 0 {
		known = []string{"none"}
	}
	return RegisteredModule{}, newErr(op, nil, "no p11-kit module named %q in %s (registered: %s); use module-path or --module instead",
		name, strings.Join(dirs, ", "), strings.Join(known, ", "))
}

// readModuleFile parses a p11-kit module file's "key: value" lines.
func readModuleFile(name string) (RegisteredModule, bool) {
	f, err := os.Open(name)
	if err != nil {
		return RegisteredModule{}, false
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxModuleFile))
	if err != nil {
		return RegisteredModule{}, false
	}
	rm := RegisteredModule{Name: strings.TrimSuffix(filepath.Base(name), ".module")}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "module":
			rm.Path = strings.TrimSpace(v)
		case "x-init-reserved":
			rm.InitArgs = strings.TrimSpace(v)
		}
	}
	if rm.Path == "" {
		return RegisteredModule{}, false // a module file may only change settings of another
	}
	if !filepath.IsAbs(rm.Path) {
		rel := rm.Path
		rm.Path = filepath.Join(moduleLibDirs[0], rel)
		for _, d := range moduleLibDirs {
			if _, err := os.Stat(filepath.Join(d, rel)); err == nil {
				rm.Path = filepath.Join(d, rel)
				break
			}
		}
	}
	return rm, true
}
