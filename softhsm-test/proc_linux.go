package softhsmtest

import "syscall"

// procAttr makes a child die with the test process, so that no swtpm outlives
// a test binary that crashed or was killed.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
