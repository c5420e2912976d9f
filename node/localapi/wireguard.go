package localapi

import (
	"context"
	"time"
)

// WireGuardStatus is this node's WireGuard device in `weft node status`.
type WireGuardStatus struct {
	Interface string `json:"interface"`
	// Kind is "kernel" or "userspace" ("" while there is no device).
	Kind string `json:"kind"`
	// DevicePID is the userspace device process; DeviceBinary what it
	// runs, DeviceBinaryReplaced whether that binary was upgraded since.
	DevicePID            int                   `json:"devicePID,omitempty"`
	DeviceBinary         string                `json:"deviceBinary,omitempty"`
	DeviceBinaryReplaced bool                  `json:"deviceBinaryReplaced,omitempty"`
	PublicKey            string                `json:"publicKey,omitempty"`
	ListenPort           int                   `json:"listenPort,omitempty"`
	FirewallMark         int                   `json:"firewallMark,omitempty"`
	MTU                  int                   `json:"mtu,omitempty"`
	Addresses            []string              `json:"addresses,omitempty"`
	Peers                []WireGuardPeerStatus `json:"peers"`
	// Blocked are the nodes not reached at all (wireguard.require and no
	// usable key).
	Blocked []string `json:"blocked,omitempty"`
	// Problem is what keeps the device from its desired state.
	Problem string `json:"problem,omitempty"`
}

// WireGuardPeerStatus is one peer of the device.
type WireGuardPeerStatus struct {
	Node                string    `json:"node"`
	PublicKey           string    `json:"publicKey"`
	Endpoint            string    `json:"endpoint,omitempty"`
	AllowedIPs          []string  `json:"allowedIPs"`
	LatestHandshake     time.Time `json:"latestHandshake,omitzero"`
	ReceiveBytes        int64     `json:"receiveBytes"`
	TransmitBytes       int64     `json:"transmitBytes"`
	PersistentKeepalive string    `json:"persistentKeepalive,omitempty"`
}

// RotateKeyResponse is the answer of POST /v1/wireguard/rotate-key.
type RotateKeyResponse struct {
	PreviousPublicKey string `json:"previousPublicKey"`
	PublicKey         string `json:"publicKey"`
}

// RotateWireGuardKey is POST /v1/wireguard/rotate-key: a new key for this
// node, switched to without losing traffic; it answers once every node
// was told (or with an error saying how far it got).
func (c *Client) RotateWireGuardKey(ctx context.Context) (RotateKeyResponse, error) {
	var resp RotateKeyResponse
	return resp, c.do(ctx, "POST", "/v1/wireguard/rotate-key", struct{}{}, &resp)
}
