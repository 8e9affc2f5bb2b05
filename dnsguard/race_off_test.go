//go:build !race

package dnsguard

const raceEnabled = false
