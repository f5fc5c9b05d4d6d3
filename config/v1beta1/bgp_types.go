package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// IPAddress is one IPv4 or IPv6 address in canonical text form.
// +kubebuilder:validation:MaxLength=45
// +kubebuilder:validation:XValidation:rule="isIP(self)",messageExpression="'address ' + self + ' is not an IP address'"
type IPAddress string

// BGPPeer is a router the speakers open BGP sessions to.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgppeer,categories=ironlb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.spec.peerAddress`
// +kubebuilder:printcolumn:name="Interface",type=string,JSONPath=`.spec.interface`
// +kubebuilder:printcolumn:name="VRF",type=string,JSONPath=`.spec.vrf`
// +kubebuilder:printcolumn:name="ASN",type=integer,JSONPath=`.spec.peerASN`
// +kubebuilder:printcolumn:name="My-ASN",type=integer,JSONPath=`.spec.myASN`
// +kubebuilder:printcolumn:name="BFD",type=string,JSONPath=`.spec.bfdProfile`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec BGPPeerSpec `json:"spec"`
	// +optional
	Status CommonStatus `json:"status,omitempty"`
}

// BGPPeerSpec describes one BGP session (per matching node).
// +kubebuilder:validation:XValidation:rule="!has(self.keepaliveTime) || !has(self.holdTime) || duration(self.holdTime) == duration('0s') || duration(self.keepaliveTime) < duration(self.holdTime)",message="keepaliveTime must be shorter than holdTime"
// +kubebuilder:validation:XValidation:rule="has(self.peerAddress) != has(self.interface)",message="set exactly one of peerAddress (a numbered session) and interface (BGP unnumbered)"
// +kubebuilder:validation:XValidation:rule="!has(self.sourceAddress) || !has(self.peerAddress) || ip(self.sourceAddress).family() == ip(self.peerAddress).family()",message="sourceAddress and peerAddress must be of the same IP family"
// +kubebuilder:validation:XValidation:rule="!has(self.interface) || !has(self.sourceAddress)",message="sourceAddress cannot be set with interface: an unnumbered session starts from the interface's IPv6 link-local address"
// +kubebuilder:validation:XValidation:rule="!has(self.interface) || !has(self.ebgpMultiHop) || !self.ebgpMultiHop",message="ebgpMultiHop cannot be set with interface: an unnumbered router is on the link itself"
type BGPPeerSpec struct {
	// MyASN is the speaker's AS number.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	MyASN int64 `json:"myASN"`
	// PeerASN is the router's AS number; equal to myASN means iBGP.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4294967295
	PeerASN int64 `json:"peerASN"`
	// PeerAddress is the router's address. Set it or interface.
	// +optional
	PeerAddress IPAddress `json:"peerAddress,omitempty"`
	// Interface makes the session BGP unnumbered: it names the node's
	// interface that leads straight to the router (a point-to-point link
	// with one router on it), and the session runs between the two ends'
	// IPv6 link-local addresses, learnt from the link (the router's
	// router advertisements or neighbour discovery). IPv4 and IPv6
	// routes are both sent with the node's IPv6 next hop (RFC 8950
	// extended next hop), so the link needs no address of its own. The
	// name is the same on every node the peer selects. Set it or
	// peerAddress.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[^\s/:%]+$`
	Interface string `json:"interface,omitempty"`
	// VRF is the node's VRF device (`ip link add NAME type vrf table N`)
	// through which the router is reached: the session's socket (and its
	// BFD session) is bound to the VRF, so the VRF's routing table picks
	// the path and the source address. Empty means the default VRF. A
	// node without this VRF reports it in its BGPNodeStatus and leaves
	// the peer out.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[^\s/:%]+$`
	VRF string `json:"vrf,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:default=179
	// +optional
	PeerPort *int32 `json:"peerPort,omitempty"`
	// SourceAddress is the local address the session starts from; by
	// default the kernel picks one.
	// +optional
	SourceAddress IPAddress `json:"sourceAddress,omitempty"`
	// RouterID defaults to the node's IPv4 address.
	// +optional
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip(self).family() == 4",messageExpression="'routerID ' + self + ' must be an IPv4 address'"
	RouterID string `json:"routerID,omitempty"`
	// HoldTime is 0 (no keepalives) or 3s to 65535s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) == duration('0s') || (duration(self) >= duration('3s') && duration(self) <= duration('65535s'))",message="holdTime must be 0 or between 3s and 65535s"
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('21845s')",message="keepaliveTime must be between 1s and 21845s"
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`
	// ConnectTime is the retry interval for a session that is down.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('65535s')",message="connectTime must be between 1s and 65535s"
	ConnectTime *metav1.Duration `json:"connectTime,omitempty"`
	// +optional
	EBGPMultiHop bool `json:"ebgpMultiHop,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	// PasswordSecret holds the TCP-MD5 password; it is never written in
	// the BGPPeer itself.
	// +optional
	PasswordSecret *SecretKeyRef `json:"passwordSecret,omitempty"`
	// BFDProfile names a BFDProfile; empty means no BFD.
	// +optional
	BFDProfile PoolName `json:"bfdProfile,omitempty"`
	// GracefulRestart keeps the routes at the router while a speaker
	// restarts.
	// +optional
	GracefulRestart bool `json:"gracefulRestart,omitempty"`
}

// SecretKeyRef points at one key of one Secret.
type SecretKeyRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:default=password
	// +optional
	Key string `json:"key,omitempty"`
}

// BGPPeerList is a list of BGPPeer.
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}

// BFDProfile sets the timers of the BFD sessions that watch BGP peers.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bfdprofile,categories=ironlb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="RX-ms",type=integer,JSONPath=`.spec.receiveInterval`
// +kubebuilder:printcolumn:name="TX-ms",type=integer,JSONPath=`.spec.transmitInterval`
// +kubebuilder:printcolumn:name="Multiplier",type=integer,JSONPath=`.spec.detectMultiplier`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BFDProfile struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec BFDProfileSpec `json:"spec,omitempty"`
	// +optional
	Status CommonStatus `json:"status,omitempty"`
}

// BFDProfileSpec holds BFD timers in milliseconds.
type BFDProfileSpec struct {
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +kubebuilder:default=300
	// +optional
	ReceiveInterval *int32 `json:"receiveInterval,omitempty"`
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=60000
	// +kubebuilder:default=300
	// +optional
	TransmitInterval *int32 `json:"transmitInterval,omitempty"`
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=255
	// +kubebuilder:default=3
	// +optional
	DetectMultiplier *int32 `json:"detectMultiplier,omitempty"`
	// PassiveMode waits for the peer to start the BFD session.
	// +optional
	PassiveMode bool `json:"passiveMode,omitempty"`
	// MinimumTTL is for multi-hop sessions.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=254
	// +kubebuilder:default=254
	// +optional
	MinimumTTL *int32 `json:"minimumTtl,omitempty"`
}

// BFDProfileList is a list of BFDProfile.
// +kubebuilder:object:root=true
type BFDProfileList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BFDProfile `json:"items"`
}
