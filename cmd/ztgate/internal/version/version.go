// Package version holds the build version, set by the Makefile with
// -ldflags "-X .../version.Version=...".
package version

import "runtime/debug"

// Version is the release or git describe output; "dev" when unset.
var Version = "dev"

// String returns the version with the Go toolchain and module info.
func String() string {
	v := Version
	if bi, ok := debug.ReadBuildInfo(); ok {
		return v + " (" + bi.GoVersion + ")"
	}
	return v
}
