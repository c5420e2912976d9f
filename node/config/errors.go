package config

import (
	"fmt"
	"strconv"
	"strings"
)

// FieldError is one problem in a configuration file.
type FieldError struct {
	File string // file name as given to Parse/Load; "" for a Config built in code
	Line int    // 1-based; 0 when the key is not written in the file (a default)
	Key  string // full dotted key such as "network.pool[1].cidr"; "" for TOML syntax errors
	Msg  string
}

// Error renders the problem as one line: "file:line: key: message".
func (e FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		b.WriteString(e.File + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Error is returned by Parse, Load and Validate when the configuration is
// bad. Errors holds every problem found, in file order; Error() is one line
// naming the first (and how many more there are), which is what a command
// prints before it exits.
type Error struct {
	Errors []FieldError
}

func (e *Error) Error() string {
	if len(e.Errors) == 0 {
		return "invalid configuration"
	}
	msg := e.Errors[0].Error()
	if n := len(e.Errors) - 1; n == 1 {
		msg += " (and 1 more problem)"
	} else if n > 1 {
		msg += fmt.Sprintf(" (and %d more problems)", n)
	}
	return msg
}
