// Package stats summarises the rounds of a benchmark: the median and the
// range, as docs/benchmarks.md reports every figure.
package stats

import (
	"fmt"
	"slices"
)

// Median of xs (the mean of the middle two for an even count; 0 for none).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Spread formats the median of xs and, for more than one value, their
// range, each with format: "2020 [1880–2110]".
func Spread(xs []float64, format string) string {
	m := fmt.Sprintf(format, Median(xs))
	if len(xs) < 2 {
		return m
	}
	return fmt.Sprintf("%s ["+format+"–"+format+"]", m, slices.Min(xs), slices.Max(xs))
}
