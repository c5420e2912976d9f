package stats

import "testing"

func TestMedianAndSpread(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		med  float64
		text string
	}{
		{nil, 0, "0.0"},
		{[]float64{3}, 3, "3.0"},
		{[]float64{5, 1, 3}, 3, "3.0 [1.0–5.0]"},
		{[]float64{4, 1, 2, 3}, 2.5, "2.5 [1.0–4.0]"},
	} {
		if got := Median(c.xs); got != c.med {
			t.Errorf("Median(%v) = %v, want %v", c.xs, got, c.med)
		}
		if got := Spread(c.xs, "%.1f"); got != c.text {
			t.Errorf("Spread(%v) = %q, want %q", c.xs, got, c.text)
		}
	}
}
