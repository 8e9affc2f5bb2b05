package ztgate.test.loop

# 10^12 iterations over a small array: never finishes before the deadline,
# without using much memory.
allow if {
	r := numbers.range(1, 10000)
	some a in r
	some b in r
	some c in r
	a + b + c < 0
}
