//go:build !linux

package softhsmtest

import "syscall"

// procAttr: outside Linux there is no Pdeathsig; Stop and t.Cleanup still end the child.
func procAttr() *syscall.SysProcAttr { return nil }
