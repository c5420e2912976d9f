package api

// Default fills in what Calico's client fills in on write, so the stored
// object is complete (calico.md §1.8, §2.4): apiVersion and kind, the
// "default" namespace, IPPool blockSize (26/122), ipipMode/vxlanMode
// Never, nodeSelector all(), allowedUses [Workload, Tunnel],
// assignmentMode Automatic; IPAMConfiguration autoAllocateBlocks true;
// policy tier "default", types inferred from the rules and the
// projectcalico.org/tier label; Tier defaultAction (and the built-in
// tiers' order); a WorkloadEndpoint's name and its projectcalico.org
// labels; failsafe port protocol TCP. It never overwrites a value that is
// set (except the system labels projectcalico.org/tier on policies and
// projectcalico.org/namespace, orchestrator and serviceaccount on workload
// endpoints, which always state the truth), so it is idempotent. Call it
// before Validate on every write.
func Default(r Resource) {
	*r.GetTypeMeta() = TypeMeta{Kind: r.Kind(), APIVersion: Group}
	m := r.GetMeta()
	if IsNamespaced(r.Kind()) && m.Namespace == "" {
		m.Namespace = DefaultNamespace
	}
	switch r := r.(type) {
	case *IPPool:
		defaultIPPool(&r.Spec)
	case *IPAMConfiguration:
		if r.Spec.AutoAllocateBlocks == nil {
			t := true
			r.Spec.AutoAllocateBlocks = &t
		}
	case *NetworkPolicy:
		defaultPolicy(m, &r.Spec.Tier, &r.Spec.Types, len(r.Spec.Ingress), len(r.Spec.Egress))
	case *GlobalNetworkPolicy:
		defaultPolicy(m, &r.Spec.Tier, &r.Spec.Types, len(r.Spec.Ingress), len(r.Spec.Egress))
	case *Tier:
		defaultTier(r)
	case *WorkloadEndpoint:
		defaultWorkloadEndpoint(r)
	case *FelixConfiguration:
		for _, ports := range []*[]ProtoPort{r.Spec.FailsafeInboundHostPorts, r.Spec.FailsafeOutboundHostPorts} {
			if ports == nil {
				continue
			}
			for i := range *ports {
				if (*ports)[i].Protocol == "" {
					(*ports)[i].Protocol = ProtocolTCP
				}
			}
		}
	}
}

func defaultIPPool(s *IPPoolSpec) {
	if pfx, err := parsePrefixOrAddr(s.CIDR); err == nil {
		// Canonical spelling ("FD00:0::/48" -> "fd00::/48") so that
		// immutability compares like with like; unmasked CIDRs are left
		// for Validate to reject.
		if pfx.Masked() == pfx {
			s.CIDR = pfx.String()
		}
		if s.BlockSize == 0 {
			s.BlockSize = DefaultBlockSizeV4
			if pfx.Addr().Is6() {
				s.BlockSize = DefaultBlockSizeV6
			}
		}
	}
	if s.IPIPMode == "" {
		s.IPIPMode = EncapNever
	}
	if s.VXLANMode == "" {
		s.VXLANMode = EncapNever
	}
	if s.NodeSelector == "" {
		s.NodeSelector = "all()"
	}
	if len(s.AllowedUses) == 0 {
		s.AllowedUses = []string{UseWorkload, UseTunnel}
	}
	if s.AssignmentMode == "" {
		s.AssignmentMode = AssignmentAutomatic
	}
}

// defaultPolicy applies calico.md §2.4: types from the rules present when
// none are given; the default tier; the tier label.
func defaultPolicy(m *ObjectMeta, tier *string, types *[]string, ingress, egress int) {
	if *tier == "" {
		*tier = DefaultTierName
	}
	if len(*types) == 0 {
		switch {
		case egress == 0:
			*types = []string{PolicyTypeIngress}
		case ingress == 0:
			*types = []string{PolicyTypeEgress}
		default:
			*types = []string{PolicyTypeIngress, PolicyTypeEgress}
		}
	}
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	// A system label: it always states the policy's tier.
	m.Labels[LabelTier] = *tier
}

func defaultTier(t *Tier) {
	order := func(o float64) {
		if t.Spec.Order == nil {
			t.Spec.Order = &o
		}
	}
	action := ActionDeny
	switch t.Metadata.Name {
	case DefaultTierName:
		order(DefaultTierOrder)
	case KubeAdminTierName:
		order(KubeAdminTierOrder)
		action = ActionPass
	case KubeBaselineTierName:
		order(KubeBaselineTierOrder)
		action = ActionPass
	}
	if t.Spec.DefaultAction == "" {
		t.Spec.DefaultAction = action
	}
}

// DefaultTier is the built-in "default" tier every cluster has.
func DefaultTier() *Tier {
	t := &Tier{Metadata: ObjectMeta{Name: DefaultTierName}}
	Default(t)
	return t
}

func defaultWorkloadEndpoint(w *WorkloadEndpoint) {
	s := &w.Spec
	if w.Metadata.Name == "" {
		if wl := workloadEndpointWorkload(s); s.Node != "" && s.Orchestrator != "" && wl != "" && s.Endpoint != "" {
			w.Metadata.Name = WorkloadEndpointName(s.Node, s.Orchestrator, wl, s.Endpoint)
		}
	}
	if w.Metadata.Labels == nil {
		w.Metadata.Labels = map[string]string{}
	}
	w.Metadata.Labels[LabelNamespace] = w.Metadata.Namespace
	if s.Orchestrator != "" {
		w.Metadata.Labels[LabelOrchestrator] = s.Orchestrator
	}
	if s.ServiceAccountName != "" {
		w.Metadata.Labels[LabelServiceAccount] = s.ServiceAccountName
	}
}
