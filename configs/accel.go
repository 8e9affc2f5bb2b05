package configs

import (
	"os"
	"strings"
	"time"
)

// Accel configures private-key offload: which provider signs TLS
// handshakes (Go, OpenSSL libcrypto loaded at run time, or a PKCS#11
// HSM), the bounded queue in front of it, batching, and session tickets.
// Changing accel needs a restart; a reload keeps the running engine.
type Accel struct {
	// Provider is go (default), openssl, pkcs11 or auto (the fastest
	// available, chosen by a short self-test at startup).
	Provider string `mapstructure:"provider" json:"provider"`
	// Required makes a provider that cannot be loaded a startup error.
	// When false (default) ztgate logs the problem and falls back to go.
	Required bool `mapstructure:"required" json:"required"`
	// Workers is the number of signing workers; 0 (default) means one
	// per CPU core.
	Workers int `mapstructure:"workers" json:"workers"`
	// QueueSize bounds the signatures waiting for a worker; when it is
	// full a handshake fails at once (counted as result="overload").
	// Default 256 per worker.
	QueueSize int `mapstructure:"queue_size" json:"queue_size"`
	// Timeout bounds how long one signature may wait in the queue and
	// run before the handshake fails. Default 2s.
	Timeout time.Duration `mapstructure:"timeout" json:"timeout"`

	Batch    AccelBatch    `mapstructure:"batch" json:"batch"`
	OpenSSL  AccelOpenSSL  `mapstructure:"openssl" json:"openssl"`
	PKCS11   AccelPKCS11   `mapstructure:"pkcs11" json:"pkcs11"`
	Sessions AccelSessions `mapstructure:"session_tickets" json:"session_tickets"`
}

// AccelBatch collects concurrent signatures into one provider call, the
// shape a multi-buffer provider (8 RSA operations per AVX-512 call)
// needs.
type AccelBatch struct {
	// Size is the most signatures in one batch (default 8, 1..64).
	Size int `mapstructure:"size" json:"size"`
	// Deadline is how long a worker waits for a batch to fill; 0
	// (default) turns batching off: each signature runs as it arrives.
	Deadline time.Duration `mapstructure:"deadline" json:"deadline"`
}

// AccelOpenSSL configures the openssl provider.
type AccelOpenSSL struct {
	// Library is the libcrypto shared object to dlopen (default
	// libcrypto.so.3, found by the system loader).
	Library string `mapstructure:"library" json:"library"`
	// Provider names an OpenSSL 3 provider to load, e.g. qatprovider
	// for Intel QAT cards. Empty (default) uses OpenSSL's default.
	Provider string `mapstructure:"provider" json:"provider"`
	// Config is an optional openssl.cnf loaded before the provider.
	Config string `mapstructure:"config" json:"config"`
	// Properties is an OpenSSL property query for fetching algorithms,
	// e.g. "provider=qatprovider". Empty by default.
	Properties string `mapstructure:"properties" json:"properties"`
}

// AccelPKCS11 configures the pkcs11 provider.
type AccelPKCS11 struct {
	// Module is the PKCS#11 library (e.g. /usr/lib/softhsm/libsofthsm2.so).
	// A pkcs11: URI's module-path attribute overrides it.
	Module string `mapstructure:"module" json:"module"`
	// TokenLabel selects the token when a URI does not name one.
	TokenLabel string `mapstructure:"token_label" json:"token_label"`
	// PinFile holds the user PIN (first line). A URI's pin-value or
	// pin-source attribute overrides it.
	PinFile string `mapstructure:"pin_file" json:"pin_file"`
}

// AccelSessions configures TLS session tickets.
type AccelSessions struct {
	// Disabled turns session tickets off (every handshake is full).
	Disabled bool `mapstructure:"disabled" json:"disabled"`
	// Rotation is how often a new ticket key is made; tickets stay
	// valid for two more rotations. Default 1h.
	Rotation time.Duration `mapstructure:"rotation" json:"rotation"`
	// KeyFile is a file shared by several gateways: one base64 key of
	// 32 bytes (or more, first 32 used) per line, the first line encrypts
	// new tickets, all decrypt. It is re-read every rotation. Empty
	// (default): keys are random and local.
	KeyFile string `mapstructure:"key_file" json:"key_file"`
}

func (a *Accel) setDefaults() {
	if a.Provider == "" {
		a.Provider = "go"
	}
	if a.Timeout == 0 {
		a.Timeout = 2 * time.Second
	}
	if a.Batch.Size == 0 {
		a.Batch.Size = 8
	}
	if a.OpenSSL.Library == "" {
		a.OpenSSL.Library = "libcrypto.so.3"
	}
	if a.Sessions.Rotation == 0 {
		a.Sessions.Rotation = time.Hour
	}
}

func (a *Accel) validate(v *validator, c *Config) {
	v.oneOf("provider", a.Provider, "go", "openssl", "pkcs11", "auto")
	if a.Workers < 0 || a.Workers > 1024 {
		v.addf("workers", "%d is out of range (use 0 for one per core, or 1-1024)", a.Workers)
	}
	if a.QueueSize < 0 || a.QueueSize > 1<<20 {
		v.addf("queue_size", "%d is out of range (use 0 for the default, or 1-1048576)", a.QueueSize)
	}
	if a.Timeout < time.Millisecond {
		v.addf("timeout", "%s is too short (at least 1ms, e.g. 2s)", a.Timeout)
	}
	if a.Batch.Size < 1 || a.Batch.Size > 64 {
		v.addf("batch.size", "%d is out of range (use 1-64)", a.Batch.Size)
	}
	if a.Batch.Deadline < 0 || a.Batch.Deadline > 10*time.Millisecond {
		v.addf("batch.deadline", "%s is out of range (use 0 to turn batching off, or up to 10ms, e.g. 50us)", a.Batch.Deadline)
	}
	if a.OpenSSL.Config != "" {
		v.file("openssl.config", a.OpenSSL.Config)
	}
	if strings.ContainsAny(a.OpenSSL.Provider, "/ ") {
		v.addf("openssl.provider", "%q is not a provider name (use the name OpenSSL knows, e.g. qatprovider; put module paths in openssl.config)", a.OpenSSL.Provider)
	}
	if a.Provider == "pkcs11" && a.PKCS11.Module == "" && !usesPKCS11URIWithModule(c) {
		v.addf("pkcs11.module", "must name the PKCS#11 library when provider is pkcs11 (e.g. /usr/lib/softhsm/libsofthsm2.so)")
	}
	if a.PKCS11.Module != "" {
		if _, err := os.Stat(a.PKCS11.Module); err != nil && a.Required {
			v.addf("pkcs11.module", "%q cannot be read: %v (install the HSM's PKCS#11 library or set required: false)", a.PKCS11.Module, unwrapPathError(err))
		}
	}
	if a.PKCS11.PinFile != "" {
		v.file("pkcs11.pin_file", a.PKCS11.PinFile)
	}
	if a.Sessions.Rotation < time.Minute || a.Sessions.Rotation > 7*24*time.Hour {
		v.addf("session_tickets.rotation", "%s is out of range (use 1m-168h, e.g. 1h)", a.Sessions.Rotation)
	}
	if a.Sessions.KeyFile != "" {
		v.file("session_tickets.key_file", a.Sessions.KeyFile)
	}
}

// usesPKCS11URIWithModule reports whether some listener key is a pkcs11:
// URI that names its own module-path.
func usesPKCS11URIWithModule(c *Config) bool {
	for _, l := range c.Listeners {
		if l.TLS == nil {
			continue
		}
		for _, f := range l.TLS.Files {
			if strings.HasPrefix(f.Key, "pkcs11:") && strings.Contains(f.Key, "module-path=") {
				return true
			}
		}
	}
	return false
}
