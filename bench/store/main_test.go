package main

import (
	"testing"

	"github.com/weftnet/weft/internal/testbed"
)

func TestMain(m *testing.M) { testbed.Main(m) }
