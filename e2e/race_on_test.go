//go:build race

package e2e

// raceEnabled: the e2e binary is built with -race when the tests are, so
// reloads under load and the mesh tests check the real gateway for races.
const raceEnabled = true
