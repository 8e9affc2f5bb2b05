package main

import (
	"fmt"
	"io"
)

// INTEGRATION PENDING: replaced when authz and accel are wired.
func cmdPolicy(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "ztgate policy: not available in this build")
	return 2
}

func cmdAccel(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "ztgate accel: not available in this build")
	return 2
}
