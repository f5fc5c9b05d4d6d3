package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// BGPNodeStatus is written by the speaker of one node (the object is named
// after the node and owned by it, so it goes away with the node): the
// state of that node's BGP sessions, for `kubectl get bgpnodestatus`. It
// has no spec; it is an observation, not configuration.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpstatus,categories=ironlb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Established",type=integer,JSONPath=`.status.established`
// +kubebuilder:printcolumn:name="Peers",type=integer,JSONPath=`.status.peerCount`
// +kubebuilder:printcolumn:name="Prefixes",type=integer,JSONPath=`.status.prefixes`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPNodeStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Status BGPNodeStatusStatus `json:"status,omitempty"`
}

// BGPNodeStatusStatus lists one node's sessions. Its counts are never
// omitted (and default to 0), so `kubectl get` prints 0 rather than a blank
// column while no session is up.
type BGPNodeStatusStatus struct {
	// PeerCount is the number of BGPPeers selecting this node.
	// +kubebuilder:default=0
	// +optional
	PeerCount int32 `json:"peerCount"`
	// Established is the number of sessions up.
	// +kubebuilder:default=0
	// +optional
	Established int32 `json:"established"`
	// Prefixes is the number of prefixes this node announces.
	// +kubebuilder:default=0
	// +optional
	Prefixes int32 `json:"prefixes"`
	// +optional
	// +listType=map
	// +listMapKey=name
	Peers []BGPSessionStatus `json:"peers,omitempty"`
	// Conditions: PeersConfigured is False while a BGPPeer selecting this
	// node cannot run here (its VRF or interface is missing on the node,
	// its password Secret is unreadable, ...), with the reason of the
	// first such peer and a message naming the node and every peer left
	// out.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ConditionPeersConfigured is the BGPNodeStatus condition saying every
// BGPPeer that selects the node runs there.
const ConditionPeersConfigured = "PeersConfigured"

// Reasons of a False PeersConfigured condition (and of a session's
// Reason).
const (
	ReasonVRFNotFound          = "VRFNotFound"
	ReasonInterfaceNotFound    = "InterfaceNotFound"
	ReasonNoLinkLocalNeighbor  = "NoLinkLocalNeighbor"
	ReasonBFDNeedsL3mdevAccept = "BFDNeedsL3mdevAccept"
	ReasonPeerConfigError      = "PeerConfigError"
	ReasonAllPeersConfigured   = "AllPeersConfigured"
)

// BGPSessionStatus is one session from this node.
type BGPSessionStatus struct {
	// Name of the BGPPeer.
	Name string `json:"name"`
	// Address of the peer.
	Address string `json:"address"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State string `json:"state"`
	// Since is when the session entered its state (uptime when
	// established).
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// PrefixesSent is the number of prefixes advertised to the peer.
	// +kubebuilder:default=0
	// +optional
	PrefixesSent int64 `json:"prefixesSent"`
	// BFD is the BFD session state (up, down, init, admindown), empty
	// without BFD.
	// +optional
	BFD string `json:"bfd,omitempty"`
	// Error is the last error configuring the session (a missing password
	// Secret, say).
	// +optional
	Error string `json:"error,omitempty"`
	// Reason is Error's cause in one CamelCase word (VRFNotFound,
	// InterfaceNotFound, NoLinkLocalNeighbor, BFDNeedsL3mdevAccept,
	// PeerConfigError).
	// +optional
	Reason string `json:"reason,omitempty"`
}

// BGPNodeStatusList is a list of BGPNodeStatus.
//
// +kubebuilder:object:root=true
type BGPNodeStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPNodeStatus `json:"items"`
}
