package configs

import "time"

// TLS holds gateway-wide certificate settings.
type TLS struct {
	// LocalCA is the CA the gateway creates under storage and uses for
	// listeners whose tls has no other source.
	LocalCA LocalCA `mapstructure:"local_ca" json:"local_ca"`
}

// LocalCA configures the built-in CA.
type LocalCA struct {
	// Name is the CA certificate's common name.
	Name string `mapstructure:"name" json:"name"`
	// LeafLifetime is the validity of issued certificates (default 7 days;
	// certmagic renews them when a third of that is left).
	LeafLifetime time.Duration `mapstructure:"leaf_lifetime" json:"leaf_lifetime"`
}

func (t *TLS) setDefaults() {
	if t.LocalCA.Name == "" {
		t.LocalCA.Name = "ztgate local CA"
	}
	if t.LocalCA.LeafLifetime == 0 {
		t.LocalCA.LeafLifetime = 7 * 24 * time.Hour
	}
}

func (t *TLS) validate(v *validator) {
	if t.LocalCA.LeafLifetime < time.Hour {
		v.addf("local_ca.leaf_lifetime", "%s is too short (at least 1h)", t.LocalCA.LeafLifetime)
	}
}
