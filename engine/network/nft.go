package network

import (
	"encoding/binary"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The engine keeps all its packet rules in one table of its own, so it can
// rebuild them atomically (delete + create in one netlink batch) and never
// touches rules that belong to anyone else (a firewall set up by the
// supervisor, for instance).
const tableName = "bulkhead"

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func cmpIfname(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifname(name)},
	}
}

func saddrIn(n *net.IPNet) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: n.Mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.IP.To4()},
	}
}

func daddrLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}
}

func ctBits(key expr.CtKey, mask uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// ipsDstNAT is IPS_DST_NAT of linux/netfilter/nf_conntrack_common.h.
const ipsDstNAT = 1 << 5

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var (
	accept = []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}
	drop   = []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}
	masq   = []expr.Any{&expr.Masq{}}
)

type nftRules struct {
	bridge string
	subnet *net.IPNet
}

func (r nftRules) table() *nftables.Table {
	return &nftables.Table{Name: tableName, Family: nftables.TableFamilyIPv4}
}

// install replaces the engine's table with the base rules and the given
// port mappings in one batch.
func (r nftRules) install(ports []PortMapping) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := r.table()
	if old, _ := c.ListTableOfFamily(tableName, nftables.TableFamilyIPv4); old != nil {
		c.DelTable(t)
	}
	c.AddTable(t)
	accept4 := nftables.ChainPolicyAccept
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept4})
	pc := c.AddChain(&nftables.Chain{Name: "ports", Table: t})

	jump := []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "ports"}}
	// Published ports answer on every local address, from outside
	// (prerouting) and from the device itself, loopback included (output).
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: join(daddrLocal(), jump)})
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: join(daddrLocal(), jump)})
	// Outbound traffic of containers leaves with the device's address.
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: join(saddrIn(r.subnet), cmpIfname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, r.bridge), masq)})
	// Connections to a published port from the device's loopback or from a
	// container (hairpin) need a source the container can answer.
	loop := &net.IPNet{IP: net.IPv4(127, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: join(cmpIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, r.bridge), ctBits(expr.CtKeySTATUS, ipsDstNAT), saddrIn(loop), masq)})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: join(cmpIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, r.bridge), ctBits(expr.CtKeySTATUS, ipsDstNAT), saddrIn(r.subnet), masq)})
	// Containers reach out; the outside reaches in only through published
	// ports or on connections a container opened.
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: join(cmpIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, r.bridge), accept)})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: join(cmpIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, r.bridge), ctBits(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept)})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: join(cmpIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, r.bridge), ctBits(expr.CtKeySTATUS, ipsDstNAT), accept)})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: join(cmpIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, r.bridge), drop)})

	for _, p := range ports {
		c.AddRule(&nftables.Rule{Table: t, Chain: pc, Exprs: dnatRule(p)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: install table %s: %w", tableName, err)
	}
	return nil
}

func dnatRule(p PortMapping) []expr.Any {
	proto := byte(unix.IPPROTO_TCP)
	if p.Proto == "udp" {
		proto = unix.IPPROTO_UDP
	}
	var e []expr.Any
	if ip := p.HostIP.To4(); ip != nil && !ip.IsUnspecified() {
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip})
	}
	port := func(n uint16) []byte { b := make([]byte, 2); binary.BigEndian.PutUint16(b, n); return b }
	return append(e,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port(p.HostPort)},
		&expr.Immediate{Register: 1, Data: p.ContainerIP.To4()},
		&expr.Immediate{Register: 2, Data: port(p.ContainerPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	)
}

// remove deletes the engine's table (on shutdown of networking, tests).
func (r nftRules) remove() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	if old, _ := c.ListTableOfFamily(tableName, nftables.TableFamilyIPv4); old == nil {
		return nil
	}
	c.DelTable(r.table())
	return c.Flush()
}
