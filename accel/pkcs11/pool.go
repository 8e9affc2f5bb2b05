//go:build cgo

package pkcs11

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
)

// Defaults fill what a URI leaves out (from accel.pkcs11 in the config).
type Defaults struct {
	Module     string
	TokenLabel string
	PinFile    string
}

// Pool keeps one crypto11 context per module and token, for the process.
type Pool struct {
	mu   sync.Mutex
	ctxs map[string]*crypto11.Context
}

// Open returns the context for a module and token, logging in with pin.
// Errors name what is missing: the module file, the token, the PIN.
func (p *Pool) Open(module, token, serial string, slot *int, pin string) (*crypto11.Context, error) {
	if module == "" {
		return nil, errors.New("pkcs11: no module (set accel.pkcs11.module or module-path= in the URI)")
	}
	if _, err := os.Stat(module); err != nil {
		return nil, fmt.Errorf("pkcs11: module %s: %w (install the HSM's PKCS#11 library, e.g. softhsm2)", module, unwrap(err))
	}
	if token == "" && serial == "" && slot == nil {
		return nil, errors.New("pkcs11: no token selected (set accel.pkcs11.token_label or token= in the URI)")
	}
	// The PIN is part of the key (hashed) so that a URI with another PIN
	// logs in on its own instead of borrowing an open session. (PKCS#11
	// login state is per token and process, so while one context is
	// logged in, a token may still accept a second context's wrong PIN.)
	ph := sha256.Sum256([]byte(pin))
	key := module + "\x00" + token + "\x00" + serial + "\x00" + slotString(slot) + "\x00" + string(ph[:])
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.ctxs[key]; ok {
		return c, nil
	}
	cfg := &crypto11.Config{Path: module, TokenLabel: token, TokenSerial: serial, SlotNumber: slot, Pin: pin}
	if pin == "" {
		cfg.LoginNotSupported = true
	}
	if token != "" && (serial != "" || slot != nil) {
		cfg.TokenSerial, cfg.SlotNumber = "", nil // the label is enough
	} else if serial != "" && slot != nil {
		cfg.SlotNumber = nil
	}
	c, err := crypto11.Configure(cfg)
	if err != nil {
		return nil, fmt.Errorf("pkcs11: module %s, token %s: %w", module, describe(token, serial, slot), explain(err))
	}
	if p.ctxs == nil {
		p.ctxs = map[string]*crypto11.Context{}
	}
	p.ctxs[key] = c
	return c, nil
}

// Signer finds the private key a URI names. The key stays in the token.
func (p *Pool) Signer(u *URI, d Defaults) (crypto.Signer, error) {
	module := u.Module
	if module == "" {
		module = d.Module
	}
	token := u.Token
	if token == "" && u.Serial == "" && u.SlotID == nil {
		token = d.TokenLabel
	}
	pin, err := readPIN(u, d)
	if err != nil {
		return nil, err
	}
	c, err := p.Open(module, token, u.Serial, u.SlotID, pin)
	if err != nil {
		return nil, err
	}
	var id, label []byte
	if len(u.ID) > 0 {
		id = u.ID
	}
	if u.Object != "" {
		label = []byte(u.Object)
	}
	s, err := c.FindKeyPair(id, label)
	if err != nil || s == nil {
		return nil, fmt.Errorf("pkcs11: no key pair matches %s (check object=/id=; the public key object must be in the token too): %v", u, err)
	}
	return s, nil
}

// Close logs out of every token and unloads the modules.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for k, c := range p.ctxs {
		errs = append(errs, c.Close())
		delete(p.ctxs, k)
	}
	return errors.Join(errs...)
}

func readPIN(u *URI, d Defaults) (string, error) {
	if u.PinValue != "" {
		return u.PinValue, nil
	}
	file := u.PinSource
	if file == "" {
		file = d.PinFile
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("pkcs11: PIN file %s: %w", file, unwrap(err))
	}
	pin, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimRight(pin, "\r"), nil
}

func describe(token, serial string, slot *int) string {
	switch {
	case token != "":
		return fmt.Sprintf("%q", token)
	case serial != "":
		return "serial " + serial
	default:
		return "slot " + slotString(slot)
	}
}

func slotString(s *int) string {
	if s == nil {
		return ""
	}
	return strconv.Itoa(*s)
}

func explain(err error) error {
	switch {
	case strings.Contains(err.Error(), "could not find PKCS#11 token"):
		return fmt.Errorf("token not found (list tokens with softhsm2-util --show-slots or pkcs11-tool -L): %w", err)
	case strings.Contains(err.Error(), "CKR_PIN_INCORRECT"):
		return fmt.Errorf("wrong PIN: %w", err)
	}
	return err
}

func unwrap(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
