package configs

// Authz configures authorization policies.
type Authz struct {
	Policies []Policy `mapstructure:"policies" json:"policies,omitempty"`
}

// Policy is one authorization policy.
type Policy struct {
	Name string `mapstructure:"name" json:"name"`
}

func (a *Authz) setDefaults() {}

func (a *Authz) validate(v *validator, c *Config) {
	names := make([]string, len(a.Policies))
	for i, p := range a.Policies {
		names[i] = p.Name
		if p.Name == "" {
			v.index("policies", i).addf("name", "is required")
		}
	}
	v.unique("policies", "policy", names)
}

// checkPolicyRef records a reference to a policy that does not exist.
func (a *Authz) checkPolicyRef(v *validator, name string) {
	names := make([]string, len(a.Policies))
	for i, p := range a.Policies {
		names[i] = p.Name
	}
	v.reference("", "policy", name, names)
}
