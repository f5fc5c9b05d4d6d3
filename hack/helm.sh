#!/usr/bin/env bash
# Builds helm from source through the Go module proxy (no release
# download) into bin/k8s/helm, for the chart tests. The version is pinned in
# hack/tools/helm/go.mod (a `tool` directive); a re-run with the binary in
# place and the same version is instant.
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${K8S_BIN_DIR:-${ROOT}/bin/k8s}"
MOD="${ROOT}/hack/tools/helm"
VERSION="$(awk '$1=="helm.sh/helm/v3"{print $2}' "${MOD}/go.mod")"
[[ -n "${VERSION}" ]] || { echo "helm: no helm.sh/helm/v3 version in ${MOD}/go.mod" >&2; exit 1; }
mkdir -p "${OUT}"
if [[ -x "${OUT}/helm" && "$(cat "${OUT}/HELM_VERSION" 2>/dev/null)" == "${VERSION}" ]]; then
  echo "helm ${VERSION}: reused"
  exit 0
fi
start=${SECONDS}
rm -f "${OUT}/HELM_VERSION"
(cd "${MOD}" && CGO_ENABLED=0 GOWORK=off go build -mod=readonly -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${VERSION}" \
  -o "${OUT}/.helm.tmp" helm.sh/helm/v3/cmd/helm)
mv "${OUT}/.helm.tmp" "${OUT}/helm"
"${OUT}/helm" version --short | grep -q "${VERSION}" || { echo "helm: built binary does not report ${VERSION}" >&2; exit 1; }
echo "${VERSION}" > "${OUT}/HELM_VERSION"
echo "helm ${VERSION}: built in $((SECONDS - start))s"
