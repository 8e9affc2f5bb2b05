package configs

// DNS configures dnsguard, the DNS proxy.
type DNS struct{}

func (d *DNS) setDefaults() {}

func (d *DNS) validate(v *validator, c *Config) {}
