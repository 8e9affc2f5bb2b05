// Command dnsstub is the small authoritative DNS server zbench forwards
// to (unbound is not installed here). It answers over UDP and TCP:
//
//   - A queries for the names in -names (one per line; "name ip") with
//     that address and TTL -ttl;
//   - A queries for any name under -wildcard (e.g. "miss.test") with
//     192.0.2.1, so that a query file of fresh names measures cache
//     misses;
//   - NXDOMAIN for every other name, NODATA for other types of a known
//     name.
//
// It is single-goroutine-cheap and pinned to CPU 0 by zbench, so the
// servers under test (on CPU 1) only see it while their caches fill.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/miekg/dns"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:27310", "UDP and TCP address to serve")
	names := flag.String("names", "", `file of "name ip" lines`)
	ttl := flag.Uint("ttl", 3600, "TTL of every answer")
	wildcard := flag.String("wildcard", "", "answer A queries for every name under this zone")
	flag.Parse()
	table, err := load(*names)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dnsstub:", err)
		os.Exit(2)
	}
	suffix := ""
	if *wildcard != "" {
		suffix = "." + dns.Fqdn(strings.ToLower(*wildcard))
	}
	wildIP := net.IPv4(192, 0, 2, 1).To4()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		if len(q.Question) != 1 {
			m.Rcode = dns.RcodeFormatError
			w.WriteMsg(m)
			return
		}
		qq := q.Question[0]
		name := strings.ToLower(qq.Name)
		ip, ok := table[name]
		if !ok && suffix != "" && strings.HasSuffix(name, suffix) {
			ip, ok = wildIP, true
		}
		switch {
		case !ok:
			m.Rcode = dns.RcodeNameError
		case qq.Qtype == dns.TypeA && qq.Qclass == dns.ClassINET:
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA,
				Class: dns.ClassINET, Ttl: uint32(*ttl)}, A: ip})
		}
		w.WriteMsg(m)
	})
	errs := make(chan error, 2)
	for _, network := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: *addr, Net: network, Handler: h}
		go func() { errs <- srv.ListenAndServe() }()
	}
	fmt.Fprintln(os.Stderr, "dnsstub: fatal:", <-errs)
	os.Exit(1)
}

func load(path string) (map[string]net.IP, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-names: %w", err)
	}
	defer f.Close()
	t := map[string]net.IP{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		ip := net.ParseIP(fs[len(fs)-1]).To4()
		if len(fs) != 2 || ip == nil {
			return nil, fmt.Errorf("%s:%d: want \"name ipv4\", got %q", path, line, sc.Text())
		}
		t[dns.Fqdn(strings.ToLower(fs[0]))] = ip
	}
	return t, sc.Err()
}
