//go:build cgo && linux

// Package openssl signs with OpenSSL 3's libcrypto, loaded at run time
// with dlopen so that the binary builds without OpenSSL headers and
// starts on a host without libcrypto (Open then returns an error and the
// caller falls back). It can load an OpenSSL provider by name, which is
// how QAT cards (qatprovider) are used.
//
// Memory rules: C never keeps a Go pointer (digests and output buffers
// are passed for the duration of one call); every EVP_PKEY is freed by
// a cleanup when its Key becomes unreachable, together with the signing
// contexts (EVP_PKEY_CTX) kept idle for it. The library itself is never dlclosed:
// OpenSSL's atexit handlers must find it.
package openssl

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

// Prototypes of the few libcrypto 3 functions used, declared here so the
// build needs no OpenSSL headers. Opaque types are void.
typedef void *(*fn_d2i_AutoPrivateKey_ex)(void **, const unsigned char **, long, void *, const char *);
typedef void (*fn_EVP_PKEY_free)(void *);
typedef int (*fn_EVP_PKEY_get_size)(const void *);
typedef void *(*fn_EVP_PKEY_CTX_new_from_pkey)(void *, void *, const char *);
typedef void (*fn_EVP_PKEY_CTX_free)(void *);
typedef int (*fn_EVP_PKEY_sign_init)(void *);
typedef int (*fn_EVP_PKEY_sign)(void *, unsigned char *, size_t *, const unsigned char *, size_t);
typedef int (*fn_set_int)(void *, int);
typedef int (*fn_set_md)(void *, const void *);
typedef const void *(*fn_EVP_get_digestbyname)(const char *);
typedef unsigned long (*fn_ERR_get_error)(void);
typedef void (*fn_ERR_error_string_n)(unsigned long, char *, size_t);
typedef void (*fn_ERR_clear_error)(void);
typedef void *(*fn_OSSL_PROVIDER_load)(void *, const char *);
typedef int (*fn_OSSL_LIB_CTX_load_config)(void *, const char *);
typedef const char *(*fn_OpenSSL_version)(int);
typedef unsigned long (*fn_OpenSSL_version_num)(void);

static void *zt_handle;
static fn_d2i_AutoPrivateKey_ex p_d2i;
static fn_EVP_PKEY_free p_pkey_free;
static fn_EVP_PKEY_get_size p_pkey_size;
static fn_EVP_PKEY_CTX_new_from_pkey p_ctx_new;
static fn_EVP_PKEY_CTX_free p_ctx_free;
static fn_EVP_PKEY_sign_init p_sign_init;
static fn_EVP_PKEY_sign p_sign;
static fn_set_int p_set_padding;
static fn_set_md p_set_md;
static fn_set_int p_set_saltlen;
static fn_set_md p_set_mgf1;
static fn_EVP_get_digestbyname p_md;
static fn_ERR_get_error p_err_get;
static fn_ERR_error_string_n p_err_str;
static fn_ERR_clear_error p_err_clear;
static fn_OSSL_PROVIDER_load p_prov_load;
static fn_OSSL_LIB_CTX_load_config p_load_config;
static fn_OpenSSL_version p_version;
static fn_OpenSSL_version_num p_version_num;

// zt_errors appends OpenSSL's error queue (of this thread) to buf.
static void zt_errors(char *buf, size_t len) {
	unsigned long e;
	size_t n = strlen(buf);
	while ((e = p_err_get()) != 0) {
		if (n + 3 >= len) continue;
		if (n > 0) { buf[n++] = ';'; buf[n++] = ' '; buf[n] = 0; }
		p_err_str(e, buf + n, len - n);
		n = strlen(buf);
	}
}

#define ZT_SYM(var, type, name) \
	var = (type)dlsym(h, name); \
	if (var == NULL) { snprintf(err, errlen, "%s has no symbol %s (is it OpenSSL 3?)", path, name); dlclose(h); return 0; }

// zt_open loads libcrypto; returns 1 on success (or if the same library
// is already loaded), 0 with err set otherwise.
static int zt_open(const char *path, char *err, size_t errlen) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *d = dlerror();
		snprintf(err, errlen, "%s", d ? d : "dlopen failed");
		return 0;
	}
	if (zt_handle != NULL) {
		if (dlsym(h, "OpenSSL_version_num") == NULL) {
			snprintf(err, errlen, "%s has no symbol OpenSSL_version_num (is it OpenSSL 3?)", path);
			dlclose(h);
			return 0;
		}
		if (h != zt_handle) {
			snprintf(err, errlen, "another libcrypto is already loaded in this process");
			dlclose(h);
			return 0;
		}
		dlclose(h); // drop the extra reference
		return 1;
	}
	ZT_SYM(p_d2i, fn_d2i_AutoPrivateKey_ex, "d2i_AutoPrivateKey_ex")
	ZT_SYM(p_pkey_free, fn_EVP_PKEY_free, "EVP_PKEY_free")
	ZT_SYM(p_pkey_size, fn_EVP_PKEY_get_size, "EVP_PKEY_get_size")
	ZT_SYM(p_ctx_new, fn_EVP_PKEY_CTX_new_from_pkey, "EVP_PKEY_CTX_new_from_pkey")
	ZT_SYM(p_ctx_free, fn_EVP_PKEY_CTX_free, "EVP_PKEY_CTX_free")
	ZT_SYM(p_sign_init, fn_EVP_PKEY_sign_init, "EVP_PKEY_sign_init")
	ZT_SYM(p_sign, fn_EVP_PKEY_sign, "EVP_PKEY_sign")
	ZT_SYM(p_set_padding, fn_set_int, "EVP_PKEY_CTX_set_rsa_padding")
	ZT_SYM(p_set_md, fn_set_md, "EVP_PKEY_CTX_set_signature_md")
	ZT_SYM(p_set_saltlen, fn_set_int, "EVP_PKEY_CTX_set_rsa_pss_saltlen")
	ZT_SYM(p_set_mgf1, fn_set_md, "EVP_PKEY_CTX_set_rsa_mgf1_md")
	ZT_SYM(p_md, fn_EVP_get_digestbyname, "EVP_get_digestbyname")
	ZT_SYM(p_err_get, fn_ERR_get_error, "ERR_get_error")
	ZT_SYM(p_err_str, fn_ERR_error_string_n, "ERR_error_string_n")
	ZT_SYM(p_err_clear, fn_ERR_clear_error, "ERR_clear_error")
	ZT_SYM(p_prov_load, fn_OSSL_PROVIDER_load, "OSSL_PROVIDER_load")
	ZT_SYM(p_load_config, fn_OSSL_LIB_CTX_load_config, "OSSL_LIB_CTX_load_config")
	ZT_SYM(p_version, fn_OpenSSL_version, "OpenSSL_version")
	ZT_SYM(p_version_num, fn_OpenSSL_version_num, "OpenSSL_version_num")
	if ((p_version_num() >> 28) < 3) {
		snprintf(err, errlen, "%s is %s; OpenSSL 3 is needed", path, p_version(0));
		dlclose(h);
		return 0;
	}
	zt_handle = h;
	return 1;
}

static const char *zt_version(void) { return p_version(0); }

static int zt_load_config(const char *file, char *err, size_t errlen) {
	err[0] = 0;
	p_err_clear();
	if (p_load_config(NULL, file) != 1) {
		zt_errors(err, errlen);
		return 0;
	}
	return 1;
}

static int zt_load_provider(const char *name, char *err, size_t errlen) {
	err[0] = 0;
	p_err_clear();
	if (p_prov_load(NULL, name) == NULL) {
		zt_errors(err, errlen);
		return 0;
	}
	return 1;
}

// zt_import decodes a PKCS#8 DER private key into an EVP_PKEY.
static void *zt_import(const unsigned char *der, long len, const char *propq, int *size, char *err, size_t errlen) {
	const unsigned char *p = der;
	err[0] = 0;
	p_err_clear();
	void *k = p_d2i(NULL, &p, len, NULL, propq);
	if (k == NULL) {
		zt_errors(err, errlen);
		return NULL;
	}
	*size = p_pkey_size(k);
	return k;
}

static void zt_free(void *k) { p_pkey_free(k); }

// zt_sctx is a signing context: an EVP_PKEY_CTX with its padding,
// digest and salt length set once, reused for every signature with the
// same parameters (OpenSSL 3 fetches the algorithm, the digest and the
// key's provider data when a context is made; a signature on a ready
// context does none of that). A context is used by one thread at a time.
typedef struct {
	void *ctx;
	char err[256];
} zt_sctx;

// zt_sctx_new makes a signing context for k. pad: 0 none (ECDSA), 1
// PKCS#1 v1.5, 6 PSS. md may be NULL for ECDSA. NULL with err set on
// failure.
static zt_sctx *zt_sctx_new(void *k, const char *propq, int pad, const char *md, int saltlen,
                            char *err, size_t errlen) {
	err[0] = 0;
	p_err_clear();
	zt_sctx *s = calloc(1, sizeof(zt_sctx));
	if (s == NULL) { snprintf(err, errlen, "out of memory"); return NULL; }
	void *ctx = p_ctx_new(NULL, k, propq);
	if (ctx == NULL) { zt_errors(err, errlen); free(s); return NULL; }
	int ok = p_sign_init(ctx) == 1;
	const void *m = NULL;
	if (ok && md != NULL) {
		m = p_md(md);
		if (m == NULL) { snprintf(err, errlen, "digest %s unknown to OpenSSL", md); ok = 0; }
	}
	if (ok && pad != 0) ok = p_set_padding(ctx, pad) > 0;
	if (ok && m != NULL) ok = p_set_md(ctx, m) > 0;
	if (ok && pad == 6) ok = p_set_saltlen(ctx, saltlen) > 0 && p_set_mgf1(ctx, m) > 0;
	if (!ok) {
		zt_errors(err, errlen);
		p_ctx_free(ctx);
		free(s);
		return NULL;
	}
	s->ctx = ctx;
	return s;
}

static void zt_sctx_free(zt_sctx *s) {
	p_ctx_free(s->ctx);
	free(s);
}

// zt_sctx_sign signs tbs (a digest). On failure s->err says why.
static int zt_sctx_sign(zt_sctx *s, const unsigned char *tbs, size_t tbslen,
                        unsigned char *sig, size_t *siglen) {
	if (p_sign(s->ctx, sig, siglen, tbs, tbslen) == 1) return 1;
	s->err[0] = 0;
	zt_errors(s->err, sizeof(s->err));
	return 0;
}
*/
import "C"

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"unsafe"
)

// Options say which libcrypto and which OpenSSL provider to use.
type Options struct {
	Library    string // default libcrypto.so.3
	Provider   string // an OpenSSL provider to load, e.g. qatprovider
	Config     string // an openssl.cnf to load first
	Properties string // property query for fetches, e.g. provider=qatprovider
}

// ErrUnsupportedKey is returned by Import for key types OpenSSL is not
// asked to hold here (anything but RSA and ECDSA).
var ErrUnsupportedKey = errors.New("openssl: only RSA and ECDSA keys are supported")

// Provider is libcrypto, loaded, with its provider.
type Provider struct {
	lib     string
	version string
	propq   *C.char // nil for no query; lives as long as the process
}

var loadMu sync.Mutex

const errLen = 1024

// Open loads libcrypto (and the named OpenSSL provider). Errors say what
// is missing: the library, a symbol, the config or the provider.
func Open(o Options) (*Provider, error) {
	if o.Library == "" {
		o.Library = "libcrypto.so.3"
	}
	loadMu.Lock()
	defer loadMu.Unlock()
	errb := make([]byte, errLen)
	cpath := C.CString(o.Library)
	defer C.free(unsafe.Pointer(cpath))
	if C.zt_open(cpath, (*C.char)(unsafe.Pointer(&errb[0])), errLen) != 1 {
		return nil, fmt.Errorf("openssl: load %s: %s", o.Library, cstr(errb))
	}
	if o.Config != "" {
		cf := C.CString(o.Config)
		defer C.free(unsafe.Pointer(cf))
		if C.zt_load_config(cf, (*C.char)(unsafe.Pointer(&errb[0])), errLen) != 1 {
			return nil, fmt.Errorf("openssl: load config %s: %s", o.Config, orUnknown(cstr(errb)))
		}
	}
	if o.Provider != "" {
		// Loading a provider by name stops OpenSSL from loading the
		// default one implicitly; keep it for what the named provider
		// does not implement (decoders, digests).
		// Load default first: a failed load of the named one must not
		// leave the process with no provider at all.
		for _, name := range []string{"default", o.Provider} {
			cn := C.CString(name)
			ok := C.zt_load_provider(cn, (*C.char)(unsafe.Pointer(&errb[0])), errLen) == 1
			C.free(unsafe.Pointer(cn))
			if !ok {
				return nil, fmt.Errorf("openssl: OpenSSL provider %q cannot be loaded: %s (is the module installed in OpenSSL's MODULESDIR, or named in openssl.config?)", name, orUnknown(cstr(errb)))
			}
		}
	}
	p := &Provider{lib: o.Library, version: C.GoString(C.zt_version())}
	if o.Properties != "" {
		p.propq = C.CString(o.Properties) // never freed: keys may use it until exit
	}
	return p, nil
}

// cstr returns the NUL-terminated error text in b, each distinct
// OpenSSL error once.
func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	var out []string
	for _, part := range strings.Split(string(b), "; ") {
		if !slices.Contains(out, part) {
			out = append(out, part)
		}
	}
	return strings.Join(out, "; ")
}

func orUnknown(s string) string {
	if s == "" {
		return "no detail from OpenSSL"
	}
	return s
}

// Version is OpenSSL's version string, e.g. "OpenSSL 3.0.22 25 Aug 2026".
func (p *Provider) Version() string { return p.version }

// Library is the path given to dlopen.
func (p *Provider) Library() string { return p.lib }

// Key is an EVP_PKEY held by libcrypto.
type Key struct {
	st   *keyState
	size int
	pub  crypto.PublicKey
	rsa  bool
	p    *Provider
}

// keyState is the C side of a Key: the EVP_PKEY and the idle signing
// contexts made for it, freed together by a cleanup when the Key becomes
// unreachable (so it must not point back to the Key).
type keyState struct {
	pkey unsafe.Pointer
	mu   sync.Mutex
	idle []idleCtx
	max  int // idle contexts kept per parameter set
}

// ctxParams are the parameters a signing context is made with.
type ctxParams struct {
	pad, salt int
	md        *C.char
}

type idleCtx struct {
	p ctxParams
	s *C.zt_sctx
}

// get returns an idle context made with p, or nil.
func (st *keyState) get(p ctxParams) *C.zt_sctx {
	st.mu.Lock()
	defer st.mu.Unlock()
	for i := len(st.idle) - 1; i >= 0; i-- {
		if st.idle[i].p == p {
			s := st.idle[i].s
			st.idle = slices.Delete(st.idle, i, i+1)
			return s
		}
	}
	return nil
}

// put keeps s for the next signature with p, or frees it when max
// contexts with p are already idle (more signed at once than usual).
func (st *keyState) put(p ctxParams, s *C.zt_sctx) {
	st.mu.Lock()
	n := 0
	for _, c := range st.idle {
		if c.p == p {
			n++
		}
	}
	if n < st.max {
		st.idle = append(st.idle, idleCtx{p, s})
		s = nil
	}
	st.mu.Unlock()
	if s != nil {
		C.zt_sctx_free(s)
	}
}

func (st *keyState) free() {
	for _, c := range st.idle {
		C.zt_sctx_free(c.s)
	}
	st.idle = nil
	C.zt_free(st.pkey)
}

// Import copies key into libcrypto once. The DER copy in Go memory is
// zeroed before Import returns.
func (p *Provider) Import(key crypto.Signer) (*Key, error) {
	var isRSA bool
	switch key.(type) {
	case *rsa.PrivateKey:
		isRSA = true
	case *ecdsa.PrivateKey:
	default:
		return nil, ErrUnsupportedKey
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("openssl: encode key: %w", err)
	}
	defer clear(der)
	errb := make([]byte, errLen)
	var size C.int
	k := C.zt_import((*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)), p.propq, &size,
		(*C.char)(unsafe.Pointer(&errb[0])), errLen)
	if k == nil {
		return nil, fmt.Errorf("openssl: import key: %s", orUnknown(cstr(errb)))
	}
	st := &keyState{pkey: k, max: min(max(2*runtime.GOMAXPROCS(0), 4), maxIdlePerParams)}
	out := &Key{st: st, size: int(size), pub: key.Public(), rsa: isRSA, p: p}
	runtime.AddCleanup(out, (*keyState).free, st)
	return out, nil
}

// maxIdlePerParams bounds the signing contexts a key keeps per parameter
// set (each holds a few hundred bytes of OpenSSL state).
const maxIdlePerParams = 64

// Public returns the key's public half.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// RSA padding modes and PSS salt lengths as OpenSSL numbers them.
const (
	padPKCS1       = 1
	padPSS         = 6
	saltLenDigest  = -1
	saltLenMax     = -3
	errSignUnknown = "no detail from OpenSSL"
)

// Sign signs digest as crypto/tls asks: PKCS#1 v1.5 or PSS for RSA
// (rsa.PSSOptions), ASN.1 DER for ECDSA.
func (k *Key) Sign(digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if len(digest) == 0 {
		return nil, errors.New("openssl: empty digest")
	}
	h := opts.HashFunc()
	if h != 0 && len(digest) != h.Size() {
		return nil, fmt.Errorf("openssl: digest is %d bytes, %s needs %d", len(digest), h, h.Size())
	}
	pad, salt := 0, 0
	var md *C.char
	if k.rsa {
		name, ok := mdNames[h]
		if !ok {
			return nil, fmt.Errorf("openssl: RSA with hash %v is not supported", h)
		}
		md = name
		pad = padPKCS1
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			pad = padPSS
			switch pss.SaltLength {
			case rsa.PSSSaltLengthEqualsHash:
				salt = saltLenDigest
			case rsa.PSSSaltLengthAuto:
				salt = saltLenMax
			default:
				if pss.SaltLength < 0 {
					return nil, fmt.Errorf("openssl: PSS salt length %d is not valid", pss.SaltLength)
				}
				salt = pss.SaltLength
			}
		}
	}
	cp := ctxParams{pad: pad, salt: salt, md: md}
	st := k.st
	sc := st.get(cp)
	if sc == nil {
		errb := make([]byte, 256)
		sc = C.zt_sctx_new(st.pkey, k.p.propq, C.int(pad), md, C.int(salt),
			(*C.char)(unsafe.Pointer(&errb[0])), C.size_t(len(errb)))
		if sc == nil {
			runtime.KeepAlive(k)
			return nil, fmt.Errorf("openssl: sign: %s", orUnknown(cstr(errb)))
		}
	}
	sig := make([]byte, k.size)
	siglen := C.size_t(len(sig))
	ok := C.zt_sctx_sign(sc, (*C.uchar)(unsafe.Pointer(&digest[0])), C.size_t(len(digest)),
		(*C.uchar)(unsafe.Pointer(&sig[0])), &siglen)
	if ok != 1 {
		// A context whose signature failed is not reused: its state
		// after an error is OpenSSL's business.
		err := fmt.Errorf("openssl: sign: %s", orUnknown(C.GoString(&sc.err[0])))
		C.zt_sctx_free(sc)
		runtime.KeepAlive(k)
		return nil, err
	}
	st.put(cp, sc)
	runtime.KeepAlive(k) // the cleanup must not free pkey mid-call
	return sig[:siglen], nil
}

// mdNames are OpenSSL's digest names, as C strings made once.
var mdNames = map[crypto.Hash]*C.char{
	crypto.SHA1:   C.CString("SHA1"),
	crypto.SHA224: C.CString("SHA224"),
	crypto.SHA256: C.CString("SHA256"),
	crypto.SHA384: C.CString("SHA384"),
	crypto.SHA512: C.CString("SHA512"),
}
