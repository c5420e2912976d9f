package config

import (
	"fmt"
	"strconv"
	"time"
)

// Duration is a time.Duration written in TOML as a Go duration string ("90s").
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler for the TOML decoder.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("must be a duration such as \"90s\" or \"1m30s\", got %q", string(b))
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler. Whole seconds are written
// as seconds ("90s", as the documentation writes them) rather than
// time.Duration's "1m30s".
func (d Duration) MarshalText() ([]byte, error) {
	if d.Duration != 0 && d.Duration%time.Second == 0 {
		return []byte(strconv.FormatInt(int64(d.Duration/time.Second), 10) + "s"), nil
	}
	return []byte(d.Duration.String()), nil
}
