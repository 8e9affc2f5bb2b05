// Package configs holds ztgate's configuration as plain data: the types,
// loading (viper, environment overrides), defaults and validation with
// precise, fixable errors. It opens no sockets and starts no goroutines.
//
// Every section of the file has its own type in its own file
// (listener.go, route.go, upstream.go, authn.go, ...), each with
// setDefaults and validate methods that Load calls in a fixed order.
package configs

import (
	"time"
)

// Config is the whole ztgate configuration file.
type Config struct {
	// File is the path the config was loaded from ("<embedded>" for the
	// built-in default). It is not a key of the file.
	File string `mapstructure:"-" json:"-"`

	// Storage is the directory for state: certificates, the local CA,
	// ACME accounts. Default /var/lib/ztgate.
	Storage string `mapstructure:"storage" json:"storage"`

	// ShutdownTimeout bounds how long SIGTERM waits for in-flight requests.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout" json:"shutdown_timeout"`

	Log       Log        `mapstructure:"log" json:"log"`
	Admin     Admin      `mapstructure:"admin" json:"admin"`
	TLS       TLS        `mapstructure:"tls" json:"tls"`
	Listeners []Listener `mapstructure:"listeners" json:"listeners"`
	Routes    []Route    `mapstructure:"routes" json:"routes"`
	Upstreams []Upstream `mapstructure:"upstreams" json:"upstreams"`

	Identity Identity `mapstructure:"identity" json:"identity"`
	Authn    Authn    `mapstructure:"authn" json:"authn"`
	Authz    Authz    `mapstructure:"authz" json:"authz"`
	Egress   Egress   `mapstructure:"egress" json:"egress"`
	DNS      DNS      `mapstructure:"dns" json:"dns"`
	Accel    Accel    `mapstructure:"accel" json:"accel"`
}

// Log configures the structured logs.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level" json:"level"`
	// Format is json (default) or text.
	Format string `mapstructure:"format" json:"format"`
	// Output is stdout (default), stderr or a file path.
	Output string `mapstructure:"output" json:"output"`
	// AccessLog enables one line per request (default true).
	AccessLog *bool `mapstructure:"access_log" json:"access_log"`
}

// Admin is the separate admin listener: health, readiness, metrics, config.
type Admin struct {
	// Address defaults to 127.0.0.1:9901; "off" disables the admin server.
	Address string `mapstructure:"address" json:"address"`
	// Pprof serves Go's profiler under /debug/pprof/ (default false).
	Pprof bool `mapstructure:"pprof" json:"pprof"`
}

// AccessLogEnabled reports whether access logging is on.
func (l Log) AccessLogEnabled() bool { return l.AccessLog == nil || *l.AccessLog }

func (c *Config) setDefaults() {
	if c.Storage == "" {
		c.Storage = "/var/lib/ztgate"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
	if c.Log.Output == "" {
		c.Log.Output = "stdout"
	}
	if c.Admin.Address == "" {
		c.Admin.Address = "127.0.0.1:9901"
	}
	c.TLS.setDefaults()
	for i := range c.Listeners {
		c.Listeners[i].setDefaults()
	}
	for i := range c.Routes {
		c.Routes[i].setDefaults(i)
	}
	for i := range c.Upstreams {
		c.Upstreams[i].setDefaults()
	}
	c.Identity.setDefaults()
	c.Authn.setDefaults()
	c.Authz.setDefaults()
	c.Egress.setDefaults()
	c.DNS.setDefaults()
	c.Accel.setDefaults()
}

// Validate checks the whole config and returns every problem found, joined,
// each naming the file, the key path, the bad value and what is accepted.
func (c *Config) Validate() error {
	v := newValidator(c.File)
	c.validate(v)
	return v.err()
}

func (c *Config) validate(v *validator) {
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "text")
	if c.Admin.Address != "off" {
		v.hostPort("admin.address", c.Admin.Address)
	}
	if c.ShutdownTimeout < 0 {
		v.addf("shutdown_timeout", "%s must not be negative", c.ShutdownTimeout)
	}
	if c.Storage == "" {
		v.addf("storage", "must name a directory for certificates and state")
	}
	c.TLS.validate(v.at("tls"))
	c.validateListeners(v)
	c.validateUpstreams(v)
	c.validateRoutes(v)
	c.Identity.validate(v.at("identity"), c)
	c.Authn.validate(v.at("authn"), c)
	c.Authz.validate(v.at("authz"), c)
	c.Egress.validate(v.at("egress"), c)
	c.DNS.validate(v.at("dns"), c)
	c.Accel.validate(v.at("accel"), c)
}

// Listener returns the listener with the given name.
func (c *Config) Listener(name string) (*Listener, bool) {
	for i := range c.Listeners {
		if c.Listeners[i].Name == name {
			return &c.Listeners[i], true
		}
	}
	return nil, false
}

// Upstream returns the upstream with the given name.
func (c *Config) Upstream(name string) (*Upstream, bool) {
	for i := range c.Upstreams {
		if c.Upstreams[i].Name == name {
			return &c.Upstreams[i], true
		}
	}
	return nil, false
}
