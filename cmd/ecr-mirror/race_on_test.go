//go:build race

package main

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// allocation counts measured under it grow with the work done.
const raceEnabled = true
