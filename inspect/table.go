package inspect

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/ironlb/ironlb/config/v1beta1"
)

func tab(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// announcers is one protocol's column: the nodes, or why none.
func announcers(p *ProtocolStatus) string {
	switch {
	case p == nil:
		return "-"
	case len(p.Announcing) > 0:
		return strings.Join(p.Announcing, ",")
	}
	return "none (" + p.NotAnnounced + ")"
}

// cell is a condition in a table: "True (Reason)", or "-" without one.
func (c *Condition) cell() string {
	if c == nil {
		return "-"
	}
	return c.Status + " (" + c.Reason + ")"
}

func writeStatusTable(w io.Writer, l []ServiceStatus) {
	t := tab(w)
	fmt.Fprintln(t, "NAMESPACE\tNAME\tADDRESS\tPOOL\tLAYER2\tBGP\tANNOUNCED")
	for _, s := range l {
		announced := s.Announced.cell()
		if len(s.Addresses) == 0 {
			reason := "pending"
			if s.Allocated != nil {
				reason = "pending (" + s.Allocated.Reason + ")"
			}
			fmt.Fprintf(t, "%s\t%s\t%s\t-\t-\t-\t%s\n", s.Namespace, s.Name, reason, announced)
			continue
		}
		for i, a := range s.Addresses {
			ns, name := s.Namespace, s.Name
			if i > 0 {
				ns, name, announced = "", "", ""
			}
			fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ns, name, a.IP, orDash(a.Pool), announcers(a.Layer2), announcers(a.BGP), announced)
		}
	}
	t.Flush()
}

func writeServiceStatus(w io.Writer, s ServiceStatus) {
	fmt.Fprintf(w, "Service %s/%s\n", s.Namespace, s.Name)
	for _, c := range []struct {
		name string
		c    *Condition
	}{{"allocated", s.Allocated}, {"announced", s.Announced}} {
		if c.c == nil {
			fmt.Fprintf(w, "  %s: not reported yet\n", c.name)
			continue
		}
		fmt.Fprintf(w, "  %s: %s, %s: %s\n", c.name, c.c.Status, c.c.Reason, c.c.Message)
	}
	if len(s.Addresses) == 0 {
		fmt.Fprintln(w, "  no address: see `kubectl ironlb why`")
	}
	for _, a := range s.Addresses {
		fmt.Fprintf(w, "  %s (pool %s)\n", a.IP, orDash(a.Pool))
		if a.Layer2 == nil && a.BGP == nil {
			fmt.Fprintln(w, "    no L2Advertisement or BGPAdvertisement covers it")
		}
		for _, p := range []struct {
			name string
			ps   *ProtocolStatus
		}{{"layer2", a.Layer2}, {"bgp", a.BGP}} {
			if p.ps == nil {
				continue
			}
			where := ""
			if p.name == "layer2" && len(p.ps.Announcing) > 0 {
				where = " on every suitable interface"
				if len(p.ps.Interfaces) > 0 {
					where = " on " + strings.Join(p.ps.Interfaces, ", ")
				}
			}
			fmt.Fprintf(w, "    %s: %s%s\n", p.name, announcers(p.ps), where)
			for _, o := range p.ps.Others {
				fmt.Fprintf(w, "      %s: %s\n", o.Node, o.Reason)
			}
			for _, n := range p.ps.Sessions {
				if n.Peers == nil {
					fmt.Fprintf(w, "      %s sessions: no BGPNodeStatus\n", n.Node)
					continue
				}
				fmt.Fprintf(w, "      %s sessions: %d of %d established\n", n.Node, n.Established, n.PeerCount)
				for _, pr := range n.Peers {
					line := fmt.Sprintf("        %s %s %s, %d prefixes sent", pr.Name, pr.Address, pr.State, pr.PrefixesSent)
					if pr.BFD != "" {
						line += ", BFD " + pr.BFD
					}
					if pr.Error != "" {
						line += ": " + pr.Error
					}
					fmt.Fprintln(w, line)
				}
			}
		}
	}
}

func writeWhy(w io.Writer, e Explanation) {
	fmt.Fprintf(w, "%s/%s: %s\n", e.Namespace, e.Name, e.Verdict)
	for _, f := range e.Findings {
		if strings.HasPrefix(f, "  ") {
			fmt.Fprintf(w, "    %s\n", strings.TrimSpace(f))
			continue
		}
		fmt.Fprintf(w, "  - %s\n", f)
	}
}

func writePools(w io.Writer, l []PoolStatus) {
	t := tab(w)
	fmt.Fprintln(t, "NAME\tFAMILY\tTOTAL\tASSIGNED\tAVAILABLE\tREADY")
	for _, p := range l {
		ready := p.Ready.cell()
		rows := 0
		for _, f := range families(p) {
			u := f.u
			fmt.Fprintf(t, "%s\t%s\t%d\t%d\t%d\t%s\n", p.Name, f.name, u.Total, u.Assigned, u.Available, ready)
			rows++
		}
		if rows == 0 {
			fmt.Fprintf(t, "%s\t-\t-\t-\t-\t%s\n", p.Name, ready)
		}
		for _, pr := range p.Problems {
			fmt.Fprintf(t, "\t%s\t\t\t\t\n", pr)
		}
	}
	t.Flush()
}

func writeDrain(w io.Writer, d Drain) {
	fmt.Fprintf(w, "Draining %s moves %s; %s stay where they are.\n", d.Node, addresses(len(d.Moves)), addresses(d.Unchanged))
	if len(d.Moves) > 0 {
		t := tab(w)
		fmt.Fprintln(t, "ADDRESS\tPROTOCOL\tSERVICES\tFROM\tTO")
		for _, m := range d.Moves {
			to := strings.Join(m.To, ",")
			if m.Dark {
				to = "nobody (" + m.Reason + ")"
			}
			fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\n", m.IP, m.Protocol, strings.Join(m.Services, ","), orDash(strings.Join(m.From, ",")), to)
		}
		t.Flush()
	}
	for _, n := range d.Notes {
		fmt.Fprintln(w, "note:", n)
	}
}

// family is one family's usage of a pool.
type family struct {
	name string
	u    *v1beta1.PoolUsage
}

// families lists the families a pool's status counts.
func families(p PoolStatus) []family {
	var out []family
	for _, f := range []family{{"IPv4", p.IPv4}, {"IPv6", p.IPv6}} {
		if f.u != nil {
			out = append(out, f)
		}
	}
	return out
}

func addresses(n int) string {
	if n == 1 {
		return "1 address"
	}
	return fmt.Sprintf("%d addresses", n)
}
