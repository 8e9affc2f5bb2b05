package configs

// Identity configures the gateway's own SPIFFE identity.
type Identity struct {
	// WorkloadAPI is the SPIFFE Workload API socket, e.g.
	// unix:///run/spire/agent.sock.
	WorkloadAPI string `mapstructure:"workload_api" json:"workload_api,omitempty"`
}

// Enabled reports whether any identity source is configured.
func (i *Identity) Enabled() bool { return i.WorkloadAPI != "" }

func (i *Identity) setDefaults() {}

func (i *Identity) validate(v *validator, c *Config) {}
