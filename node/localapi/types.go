package localapi

import "time"

// Subsystem states reported in NodeStatus.
const (
	StateRunning  = "running"
	StateStarting = "starting"
	StateDisabled = "disabled"
	StateNotBuilt = "not built"
	StateFailed   = "failed"
)

// NodeStatus is the answer of GET /v1/status (`weft node status`).
type NodeStatus struct {
	Name       string            `json:"name"`
	Version    string            `json:"version"`
	Commit     string            `json:"commit"`
	Address    string            `json:"address"`
	AddressV6  string            `json:"addressV6,omitempty"`
	DataDir    string            `json:"dataDir"`
	PID        int               `json:"pid"`
	Started    time.Time         `json:"started"`
	Ready      bool              `json:"ready"`
	Live       bool              `json:"live"`
	Components []ComponentStatus `json:"components"`
}

// ComponentStatus is one subsystem's health.
type ComponentStatus struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	Live   bool   `json:"live"`
	Ready  bool   `json:"ready"`
	Detail string `json:"detail,omitempty"`
}
