// Package sysctl reads and writes /proc/sys. Network sysctls belong to the
// network namespace of the calling thread: call these inside netns.Target.Do
// to reach another namespace.
package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const root = "/proc/sys"

// Get returns the value of key ("net/ipv4/conf/eth0/proxy_arp"), trimmed.
func Get(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, key))
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Ensure writes value to key unless it already holds it, and reports
// whether it wrote.
func Ensure(key, value string) (bool, error) {
	cur, err := Get(key)
	if err != nil {
		return false, err
	}
	if cur == value {
		return false, nil
	}
	if err := os.WriteFile(filepath.Join(root, key), []byte(value), 0o644); err != nil {
		return false, fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return true, nil
}

// IfaceKey builds the key of a per-interface setting, e.g.
// IfaceKey("ipv4", "weft1234", "proxy_arp"). Interface names may contain
// dots; in /proc/sys they stay dots.
func IfaceKey(family, iface, setting string) string {
	return "net/" + family + "/conf/" + iface + "/" + setting
}
