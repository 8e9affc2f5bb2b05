package configs

// Accel configures private-key offload.
type Accel struct{}

func (a *Accel) setDefaults() {}

func (a *Accel) validate(v *validator, c *Config) {}
