#!/usr/bin/env bash
# Builds the peers ironlb is measured beside (issue 18) from the Go module
# proxy into bin/peers/: MetalLB's controller and speaker, from the nested
# module hack/tools/metallb (never vendored, never in the main module).
#
#   hack/peers.sh [--force]
#
# bin/peers/VERSIONS records what was built; when it matches, nothing is
# rebuilt. A module the proxy refuses fails the build naming it.
set -Eeuo pipefail

METALLB_VERSION=v0.15.2            # go.universe.tf/metallb
FRRK8S_VERSION=v0.0.21             # github.com/metallb/frr-k8s (the newest served)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${ROOT}/bin/peers"
MOD="${ROOT}/hack/tools/metallb"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

die() { echo "peers: ERROR: $*" >&2; exit 1; }
grep -q "go.universe.tf/metallb ${METALLB_VERSION}" "${MOD}/go.mod" || die "hack/tools/metallb/go.mod does not require go.universe.tf/metallb ${METALLB_VERSION}"
grep -q "github.com/metallb/frr-k8s ${FRRK8S_VERSION}" "${MOD}/go.mod" || die "hack/tools/metallb/go.mod does not pin github.com/metallb/frr-k8s ${FRRK8S_VERSION}"

want="metallb ${METALLB_VERSION} frr-k8s ${FRRK8S_VERSION}"
if [[ "${FORCE}" != 1 && -x "${OUT}/metallb-controller" && -x "${OUT}/metallb-speaker" && "$(cat "${OUT}/VERSIONS" 2>/dev/null)" == "${want}" ]]; then
  echo "peers: reused ${want}"
  exit 0
fi
mkdir -p "${OUT}"
rm -f "${OUT}/VERSIONS"
export CGO_ENABLED=0 GOWORK=off
# Fetch first, so that a version the proxy refuses is named as such.
if ! out="$(cd "${MOD}" && go mod download -x go.universe.tf/metallb github.com/metallb/frr-k8s 2>&1)"; then
  die "the Go module proxy refused go.universe.tf/metallb@${METALLB_VERSION} or github.com/metallb/frr-k8s@${FRRK8S_VERSION}:"$'\n'"$(echo "${out}" | tail -5)"
fi
for bin in controller speaker; do
  start=${EPOCHREALTIME/./}
  (cd "${MOD}" && go build -mod=readonly -trimpath -ldflags="-s -w" -o "${OUT}/metallb-${bin}" "go.universe.tf/metallb/${bin}") ||
    die "building go.universe.tf/metallb/${bin}@${METALLB_VERSION} failed (see above)"
  end=${EPOCHREALTIME/./}
  echo "metallb-${bin}: built in $(( (end - start) / 1000000 )) s"
done
echo "${want}" >"${OUT}/VERSIONS"
echo "peers: ok (${want}) in ${OUT}"
