package sni

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// ext is one extension for the hand-built ClientHellos.
type ext struct {
	typ  uint16
	data []byte
}

func u16(n int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(n)) }

func sniExt(names ...string) ext {
	var list []byte
	for _, n := range names {
		list = append(list, 0)
		list = append(list, u16(len(n))...)
		list = append(list, n...)
	}
	return ext{0, append(u16(len(list)), list...)}
}

// helloMsg builds a ClientHello handshake message (4-byte header + body).
func helloMsg(exts ...ext) []byte {
	body := []byte{3, 3}
	body = append(body, bytes.Repeat([]byte{7}, 32)...) // random
	body = append(body, 0)                              // session id
	body = append(body, 0, 4, 0x0a, 0x0a, 0x13, 0x01)   // GREASE suite + TLS_AES_128_GCM_SHA256
	body = append(body, 1, 0)                           // null compression
	var e []byte
	for _, x := range exts {
		e = append(e, u16(int(x.typ))...)
		e = append(e, u16(len(x.data))...)
		e = append(e, x.data...)
	}
	body = append(body, u16(len(e))...)
	body = append(body, e...)
	msg := []byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}
	return append(msg, body...)
}

// records frames msg into handshake records of at most size bytes.
func records(msg []byte, size int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, 22, 3, 1)
		out = append(out, u16(n)...)
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// unframe returns the handshake message carried by a capture's records.
func unframe(t testing.TB, raw []byte) []byte {
	t.Helper()
	var msg []byte
	for len(raw) >= 5 {
		n := int(binary.BigEndian.Uint16(raw[3:5]))
		msg = append(msg, raw[5:5+n]...)
		raw = raw[5+n:]
	}
	return msg
}

func capture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadCaptures(t *testing.T) {
	cases := []struct {
		file, sni string
		hasSNI    bool
		alpn      int
	}{
		{"hello-curl.bin", "api.example.com", true, 2},
		{"hello-curl-tls12.bin", "www.example.org", true, 2},
		{"hello-openssl.bin", "svc.example.net", true, 2},
		{"hello-openssl-nosni.bin", "", false, 0},
		{"hello-go.bin", "storage.googleapis.com", true, 2},
		{"hello-go-idn.bin", "xn--bcher-kva.example", true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			raw := capture(t, tc.file)
			// Followed by application data the client might pipeline:
			// Read must not consume it.
			tail := []byte("\x17\x03\x03\x00\x05hello")
			r := bytes.NewReader(append(append([]byte(nil), raw...), tail...))
			h, err := Read(r, 16384)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if h.ServerName != tc.sni || h.HasSNI != tc.hasSNI || h.ECH || len(h.ALPN) != tc.alpn {
				t.Fatalf("got sni=%q has=%v ech=%v alpn=%v", h.ServerName, h.HasSNI, h.ECH, h.ALPN)
			}
			if !bytes.Equal(h.Raw, raw) {
				t.Fatalf("Raw is %d bytes, want the %d captured", len(h.Raw), len(raw))
			}
			if r.Len() != len(tail) {
				t.Fatalf("read %d bytes past the ClientHello", len(tail)-r.Len())
			}
		})
	}
}

func TestRead(t *testing.T) {
	goMsg := unframe(t, capture(t, "hello-go.bin"))
	plain := helloMsg(sniExt("example.com"))
	grease := helloMsg(ext{0x1a1a, nil}, sniExt("grease.example"), ext{0xfafa, []byte{0}})
	big := helloMsg(sniExt("big.example"), ext{0x0015, make([]byte, 20000)}) // padding ext
	cases := []struct {
		name    string
		in      []byte
		reader  func(io.Reader) io.Reader
		max     int
		sni     string
		ech     bool
		wantErr error
	}{
		{name: "one record", in: records(plain, 16384), sni: "example.com"},
		{name: "go hello split into 100-byte records", in: records(goMsg, 100), sni: "storage.googleapis.com"},
		{name: "hello header split across records", in: records(plain, 2), sni: "example.com"},
		{name: "one byte per TCP read", in: records(plain, 16384), reader: iotest.OneByteReader, sni: "example.com"},
		{name: "split records, half reads", in: records(goMsg, 700), reader: iotest.HalfReader, sni: "storage.googleapis.com"},
		{name: "GREASE extensions and suites", in: records(grease, 16384), sni: "grease.example"},
		{name: "no SNI", in: records(helloMsg(ext{0x000a, []byte{0, 2, 0, 0x1d}}), 16384)},
		{name: "no extensions at all (old client)", in: records(noExtensions(), 16384)},
		{name: "ECH with outer SNI", in: records(helloMsg(sniExt("public.example"), ext{0xfe0d, []byte{0, 1, 2, 3}}), 16384), sni: "public.example", ech: true},
		{name: "two host_names", in: records(helloMsg(sniExt("a.example", "b.example")), 16384), wantErr: ErrMalformed},
		{name: "server_name twice", in: records(helloMsg(sniExt("a.example"), sniExt("b.example")), 16384), wantErr: ErrMalformed},
		{name: "NUL in name", in: records(helloMsg(sniExt("a.example\x00.evil")), 16384), wantErr: ErrMalformed},
		{name: "oversized announced", in: records(big, 16384), wantErr: ErrTooLarge},
		{name: "oversized for small limit", in: records(plain, 16384), max: 40, wantErr: ErrTooLarge},
		{name: "too many records", in: records(plain, 1), wantErr: ErrTooLarge},
		{name: "truncated in record", in: records(plain, 16384)[:30], wantErr: ErrTruncated},
		{name: "truncated between records", in: records(goMsg, 700)[:705], wantErr: ErrTruncated},
		{name: "truncated header", in: []byte{22, 3}, wantErr: ErrTruncated},
		{name: "empty", in: nil, wantErr: ErrTruncated},
		{name: "plain HTTP", in: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), wantErr: ErrNotTLS},
		{name: "SSLv2-style", in: []byte{0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0}, wantErr: ErrNotTLS},
		{name: "server hello", in: records(append([]byte{2}, plain[1:]...), 16384), wantErr: ErrNotClientHello},
		{name: "empty record", in: []byte{22, 3, 1, 0, 0}, wantErr: ErrMalformed},
		{name: "alert between records", in: append(records(plain[:10], 16384), 21, 3, 3, 0, 2, 2, 40), wantErr: ErrMalformed},
		{name: "record over 16 KiB", in: append([]byte{22, 3, 1, 0x48, 0}, make([]byte, 0x4800)...), wantErr: ErrMalformed},
		{name: "extensions overrun", in: records(corrupt(plain, extLenAt, 0x7f), 16384), wantErr: ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(tc.in)
			if tc.reader != nil {
				r = tc.reader(r)
			}
			max := tc.max
			if max == 0 {
				max = 16384
			}
			h, err := Read(r, max)
			if h == nil {
				t.Fatal("nil Hello")
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if !bytes.HasPrefix(tc.in, h.Raw) {
					t.Fatal("Raw is not a prefix of the input")
				}
				return
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if h.ServerName != tc.sni || h.HasSNI != (tc.sni != "") || h.ECH != tc.ech {
				t.Fatalf("got sni=%q has=%v ech=%v", h.ServerName, h.HasSNI, h.ECH)
			}
			if !bytes.Equal(h.Raw, tc.in) {
				t.Fatalf("Raw %d bytes, input %d", len(h.Raw), len(tc.in))
			}
		})
	}
}

// extLenAt is the offset of the extensions length in helloMsg's output.
const extLenAt = 4 + 2 + 32 + 1 + 6 + 2

// noExtensions is a ClientHello that ends after compression methods.
func noExtensions() []byte {
	m := helloMsg()[:extLenAt]
	n := len(m) - 4
	m[1], m[2], m[3] = byte(n>>16), byte(n>>8), byte(n)
	return m
}

// corrupt returns a copy of b with b[i] = v.
func corrupt(b []byte, i int, v byte) []byte {
	c := append([]byte(nil), b...)
	c[i] = v
	return c
}

func TestParse(t *testing.T) {
	h, err := Parse(helloMsg(sniExt("Example.COM")))
	if err != nil || h.ServerName != "Example.COM" {
		t.Fatalf("Parse = %+v, %v (the name is returned as sent)", h, err)
	}
	if _, err := Parse(helloMsg(sniExt("x"))[:20]); !errors.Is(err, ErrTruncated) {
		t.Fatalf("truncated: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "hello-*.bin"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(records(unframe(f, b), 300))
	}
	f.Add(records(helloMsg(sniExt("public.example"), ext{0xfe0d, []byte{1}}), 16384))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := Read(bytes.NewReader(in), 4096)
		if h == nil {
			t.Fatal("nil Hello")
		}
		if !bytes.HasPrefix(in, h.Raw) {
			t.Fatal("Raw is not a prefix of the input")
		}
		if len(h.Raw) > 4096+4+maxRecords*recordHeaderLen+maxRecordPayload {
			t.Fatalf("read %d bytes, past the bound", len(h.Raw))
		}
		if err == nil && h.HasSNI != (h.ServerName != "") {
			t.Fatalf("HasSNI=%v with name %q", h.HasSNI, h.ServerName)
		}
	})
}

func BenchmarkReadGoHello(b *testing.B) {
	raw, err := os.ReadFile(filepath.Join("testdata", "hello-go.bin"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	r := bytes.NewReader(raw)
	for b.Loop() {
		r.Reset(raw)
		if _, err := Read(r, 16384); err != nil {
			b.Fatal(err)
		}
	}
}
