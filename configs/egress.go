package configs

// Egress configures the outbound proxy.
type Egress struct{}

func (e *Egress) setDefaults() {}

func (e *Egress) validate(v *validator, c *Config) {}
