package ipam

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/weftnet/weft/api"
	"github.com/weftnet/weft/store"
)

// EmptyBlockMinReclaimAge is how long after a claim another node may take
// over an empty block (Calico's constant of the same name).
const EmptyBlockMinReclaimAge = time.Minute

// config is the effective IPAM configuration.
type config struct {
	strictAffinity     bool
	autoAllocateBlocks bool
	maxBlocksPerHost   int
	cooldown           time.Duration
}

func effectiveConfig(s api.IPAMConfigurationSpec) config {
	c := config{
		strictAffinity:     s.StrictAffinity,
		autoAllocateBlocks: s.AutoAllocateBlocks == nil || *s.AutoAllocateBlocks,
		maxBlocksPerHost:   int(s.MaxBlocksPerHost),
		cooldown:           time.Duration(s.IPCooldownSeconds) * time.Second,
	}
	if c.maxBlocksPerHost <= 0 {
		c.maxBlocksPerHost = api.DefaultMaxBlocksPerHost
	}
	return c
}

// ValidateConfig applies Calico's rules to an IPAMConfiguration spec,
// including the cross-field ones its library enforces.
func ValidateConfig(s api.IPAMConfigurationSpec) error {
	auto := s.AutoAllocateBlocks == nil || *s.AutoAllocateBlocks
	switch {
	case !s.StrictAffinity && !auto:
		return fmt.Errorf("autoAllocateBlocks=false requires strictAffinity=true")
	case s.MaxBlocksPerHost < 0:
		return fmt.Errorf("maxBlocksPerHost must be 0 (default %d) or positive, got %d", api.DefaultMaxBlocksPerHost, s.MaxBlocksPerHost)
	case s.MaxBlocksPerHost > 0 && !s.StrictAffinity:
		return fmt.Errorf("maxBlocksPerHost=%d requires strictAffinity=true", s.MaxBlocksPerHost)
	case s.IPCooldownSeconds < 0 || s.IPCooldownSeconds > api.MaxIPCooldownSeconds:
		return fmt.Errorf("ipCooldownSeconds must be between 0 and %d, got %d", api.MaxIPCooldownSeconds, s.IPCooldownSeconds)
	}
	return nil
}

// decodeConfig parses a stored IPAMConfiguration.
func decodeConfig(value []byte) (api.IPAMConfiguration, error) {
	var c api.IPAMConfiguration
	if err := json.Unmarshal(value, &c); err != nil {
		return c, fmt.Errorf("decode IPAMConfiguration: %w", err)
	}
	return c, nil
}

// getter is the read half of store.Tx that config loading needs.
type getter interface {
	Get(k store.Key) (store.Object, bool)
}

// loadConfigSpec returns the stored configuration spec, or the defaults
// when there is none (Calico applies defaults on read).
func loadConfigSpec(g getter) (api.IPAMConfigurationSpec, error) {
	o, ok := g.Get(ConfigKey())
	if !ok {
		return api.IPAMConfigurationSpec{}, nil
	}
	c, err := decodeConfig(o.Value)
	if err != nil {
		return api.IPAMConfigurationSpec{}, err
	}
	return c.Spec, nil
}

// ConfigureRequest is the payload of ipam.configure: the fields to change
// (nil = keep).
type ConfigureRequest struct {
	StrictAffinity     *bool  `json:"strictAffinity,omitempty"`
	AutoAllocateBlocks *bool  `json:"autoAllocateBlocks,omitempty"`
	MaxBlocksPerHost   *int32 `json:"maxBlocksPerHost,omitempty"`
	IPCooldownSeconds  *int32 `json:"ipCooldownSeconds,omitempty"`
}

// ConfigureResponse is the configuration as stored.
type ConfigureResponse struct {
	Spec api.IPAMConfigurationSpec `json:"spec"`
}

// configure is the ipam.configure command: it merges the request into the
// stored IPAMConfiguration (or the defaults) and applies Calico's rules.
func (s *session) configure(r ConfigureRequest) (ConfigureResponse, error) {
	c := api.IPAMConfiguration{
		TypeMeta: api.TypeMeta{Kind: KindIPAMConfiguration, APIVersion: api.Group},
		Metadata: api.ObjectMeta{Name: ConfigName},
	}
	if o, ok := s.tx.Get(ConfigKey()); ok {
		var err error
		if c, err = decodeConfig(o.Value); err != nil {
			return ConfigureResponse{}, err
		}
	}
	if r.StrictAffinity != nil {
		c.Spec.StrictAffinity = *r.StrictAffinity
	}
	if r.AutoAllocateBlocks != nil {
		v := *r.AutoAllocateBlocks
		c.Spec.AutoAllocateBlocks = &v
	}
	if r.MaxBlocksPerHost != nil {
		c.Spec.MaxBlocksPerHost = *r.MaxBlocksPerHost
	}
	if r.IPCooldownSeconds != nil {
		c.Spec.IPCooldownSeconds = *r.IPCooldownSeconds
	}
	if err := ValidateConfig(c.Spec); err != nil {
		return ConfigureResponse{}, newError(ErrBadRequest, store.ErrInvalid, "IPAM configuration: %v", err)
	}
	v, err := json.Marshal(c)
	if err != nil {
		return ConfigureResponse{}, err
	}
	if _, err := s.tx.Put(ConfigKey(), v); err != nil {
		return ConfigureResponse{}, fmt.Errorf("write IPAM configuration: %w", err)
	}
	return ConfigureResponse{Spec: c.Spec}, nil
}
