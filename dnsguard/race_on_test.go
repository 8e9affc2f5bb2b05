//go:build race

package dnsguard

// raceEnabled shortens the flood test under the race detector, which
// makes every query ~10x slower; the caps are still exceeded many times.
const raceEnabled = true
