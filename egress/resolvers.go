package egress

// publicResolvers are well-known public DNS-over-HTTPS and DNS-over-TLS
// endpoints. Connections to them are denied even when a wildcard rule
// would allow them, because a DoH/DoT resolver lets a workload (or a
// tunnel such as dnstt) resolve names past dnsguard. Operators re-allow
// one with egress.public_resolvers.except or with an ALLOW rule that
// names it exactly (not by wildcard).
var publicResolvers = []string{
	// Google
	"dns.google", "dns.google.com", "8888.google", "dns64.dns.google",
	// Cloudflare
	"cloudflare-dns.com", "one.one.one.one", "1dot1dot1dot1.cloudflare-dns.com",
	"security.cloudflare-dns.com", "family.cloudflare-dns.com", "mozilla.cloudflare-dns.com",
	"chrome.cloudflare-dns.com",
	// Quad9
	"dns.quad9.net", "dns9.quad9.net", "dns10.quad9.net", "dns11.quad9.net", "dns12.quad9.net",
	// OpenDNS / Cisco
	"doh.opendns.com", "doh.familyshield.opendns.com", "dns.opendns.com", "dns.umbrella.com",
	// AdGuard
	"dns.adguard.com", "dns-family.adguard.com", "dns-unfiltered.adguard.com", "dns.adguard-dns.com",
	"unfiltered.adguard-dns.com", "family.adguard-dns.com",
	// CleanBrowsing
	"doh.cleanbrowsing.org", "security-filter-dns.cleanbrowsing.org",
	"family-filter-dns.cleanbrowsing.org", "adult-filter-dns.cleanbrowsing.org",
	// NextDNS, Control D, Mullvad, DNS.SB, others
	"dns.nextdns.io", "firefox.dns.nextdns.io", "freedns.controld.com", "dns.controld.com",
	"dns.mullvad.net", "adblock.dns.mullvad.net", "doh.mullvad.net",
	"doh.dns.sb", "dot.sb", "doh.sb",
	"doh.libredns.gr", "dot.libredns.gr", "dns.digitale-gesellschaft.ch",
	"dns.switch.ch", "dns0.eu", "open.dns0.eu", "kids.dns0.eu",
	"doh.xfinity.com", "doh.centurylink.com", "dns.alidns.com", "doh.pub", "dot.pub",
	"dns.twnic.tw", "doh.360.cn", "dns.comss.one", "dns.njal.la",
	"ordns.he.net", "dns.he.net", "doh.ffmuc.net", "dot.ffmuc.net",
	"resolver1.dns.watch", "resolver2.dns.watch", "dns.brahma.world", "odvr.nic.cz",
	"dns.aa.net.uk", "doh.applied-privacy.net", "dot1.applied-privacy.net",
	"dnsforge.de", "kaitain.restena.lu", "dns.rubyfish.cn", "doh.tiar.app", "dot.tiar.app",
}

// PublicResolvers returns the built-in DoH/DoT deny list (a copy).
func PublicResolvers() []string { return append([]string(nil), publicResolvers...) }
