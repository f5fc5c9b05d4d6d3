#!/usr/bin/env bash
# Builds the real kube-apiserver, kubectl and etcd binaries used by
# controller-runtime envtest, the kube-proxy and kube-controller-manager
# the lab and the e2e tests run for the real data path, and the node parts
# test/kubelet runs (kubelet, kube-scheduler, containerd v2 with its runc
# shim and ctr, a pause image), from the Go module proxy (no release
# tarballs, no registry), into bin/k8s/ at the repo root:
#
#   hack/k8s-binaries.sh [--force]
#   KUBEBUILDER_ASSETS="$PWD/bin/k8s" go test ./...
#
# The sources come from nested wrapper modules with committed go.sum
# files, so builds are reproducible and never touch the main module:
#   hack/tools/kube  -> cmd/kube-apiserver, cmd/kubectl, cmd/kube-proxy,
#                       cmd/kube-controller-manager, cmd/kubelet,
#                       cmd/kube-scheduler               (k8s.io/kubernetes)
#   hack/tools/etcd  -> etcd                             (go.etcd.io/etcd/server/v3)
#   hack/tools/containerd -> containerd, containerd-shim-runc-v2, ctr
#                                                        (github.com/containerd/containerd/v2)
#   hack/tools/image -> pause.tar, backend.tar (the pods' sandbox image and the
#                       lab's backend pods' image)
#
# bin/k8s/VERSIONS records what was built; when the binaries exist and it
# matches the pins below, nothing is rebuilt (a re-run takes about a second).
# --force (or K8S_BINARIES_FORCE=1) rebuilds regardless.
#
# To bump a version: change the pin here AND in the wrapper module, then
# regenerate its go.sum, e.g. for Kubernetes v1.X.Y:
#   cd hack/tools/kube
#   go mod edit -require=k8s.io/kubernetes@v1.X.Y
#   # re-pin every staging module to v0.X.Y; the list is the replace block of
#   # k8s.io/kubernetes@v1.X.Y's own go.mod (new staging modules appear there)
#   go mod edit -replace=k8s.io/api=k8s.io/api@v0.X.Y ...
#   go mod tidy
# and for etcd: cd hack/tools/etcd && go mod edit -require=go.etcd.io/etcd/server/v3@v3.A.B && go mod tidy
# and for containerd: cd hack/tools/containerd && go get github.com/containerd/containerd/v2@v2.C.D && go mod tidy
set -Eeuo pipefail

# ---- version pins (must match hack/tools/{kube,etcd}/go.mod) ---------------
KUBE_VERSION=v1.37.0                   # k8s.io/kubernetes
KUBE_STAGING_VERSION=v0${KUBE_VERSION#v1}  # k8s.io/{api,apiserver,kubectl,...} = v0.37.0
ETCD_VERSION=v3.6.5                    # go.etcd.io/etcd/server/v3
CONTAINERD_VERSION=v2.4.2              # github.com/containerd/containerd/v2
PAUSE_IMAGE=localhost/ironlb-lab/pause:1      # the sandbox image test/kubelet configures
BACKEND_IMAGE=localhost/ironlb-lab/backend:1  # the lab's backend pods (test/datapath)
# -----------------------------------------------------------------------------

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${K8S_BIN_DIR:-${ROOT}/bin/k8s}"
KUBE_MOD="${ROOT}/hack/tools/kube"
ETCD_MOD="${ROOT}/hack/tools/etcd"
CTRD_MOD="${ROOT}/hack/tools/containerd"
IMAGE_MOD="${ROOT}/hack/tools/image"
FORCE="${K8S_BINARIES_FORCE:-0}"

die() { echo "k8s-binaries: ERROR: $*" >&2; exit 1; }
trap 'echo "k8s-binaries: ERROR: command failed (exit $?) at line ${LINENO}: ${BASH_COMMAND}" >&2' ERR

for arg in "$@"; do
  case "${arg}" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '${arg}' (usage: $0 [--force])" ;;
  esac
done

command -v go >/dev/null 2>&1 || die "'go' is not on PATH"
[[ -f "${KUBE_MOD}/go.mod" && -f "${KUBE_MOD}/go.sum" ]] || die "missing ${KUBE_MOD}/go.mod or go.sum"
[[ -f "${ETCD_MOD}/go.mod" && -f "${ETCD_MOD}/go.sum" ]] || die "missing ${ETCD_MOD}/go.mod or go.sum"

# The wrapper modules are the source of truth for what gets compiled; refuse
# to build (and label) something other than the pins above.
grep -Eq "^[[:space:]]*(require[[:space:]]+)?k8s\.io/kubernetes ${KUBE_VERSION}\$" "${KUBE_MOD}/go.mod" ||
  die "hack/tools/kube/go.mod does not require k8s.io/kubernetes ${KUBE_VERSION} (see 'To bump a version' in $0)"
bad_replaces="$(grep -E '=> k8s\.io/[^ ]+ v' "${KUBE_MOD}/go.mod" | grep -Ev " ${KUBE_STAGING_VERSION}\$" || true)"
[[ -z "${bad_replaces}" ]] ||
  die "hack/tools/kube/go.mod pins staging modules to something other than ${KUBE_STAGING_VERSION}:"$'\n'"${bad_replaces}"
grep -Eq "^[[:space:]]*(require[[:space:]]+)?go\.etcd\.io/etcd/server/v3 ${ETCD_VERSION}\$" "${ETCD_MOD}/go.mod" ||
  die "hack/tools/etcd/go.mod does not require go.etcd.io/etcd/server/v3 ${ETCD_VERSION} (see 'To bump a version' in $0)"
grep -Eq "^[[:space:]]*(require[[:space:]]+)?github\.com/containerd/containerd/v2 ${CONTAINERD_VERSION}\$" "${CTRD_MOD}/go.mod" ||
  die "hack/tools/containerd/go.mod does not require github.com/containerd/containerd/v2 ${CONTAINERD_VERSION} (see 'To bump a version' in $0)"

mkdir -p "${OUT}"

# VERSIONS is "kube <version> etcd <version> containerd <version>"; a group
# being (re)built is recorded as "none" first so the file never claims a
# version it doesn't hold.
rec_kube=none rec_etcd=none rec_ctrd=none
if [[ -f "${OUT}/VERSIONS" ]]; then
  read -r _ rec_kube _ rec_etcd _ rec_ctrd _ <"${OUT}/VERSIONS" || true
  rec_kube="${rec_kube:-none}" rec_etcd="${rec_etcd:-none}" rec_ctrd="${rec_ctrd:-none}"
fi
write_versions() { echo "kube ${rec_kube} etcd ${rec_etcd} containerd ${rec_ctrd}" >"${OUT}/VERSIONS"; }

now_us() { local t="${EPOCHREALTIME}"; echo "${t/./}"; }
elapsed() { local us=$(($(now_us) - $1)); printf '%d.%01d' $((us / 1000000)) $((us % 1000000 / 100000)); }

# Common build environment: static, no go.work, go.sum must already be complete.
export CGO_ENABLED=0 GOWORK=off GOFLAGS="${GOFLAGS:-}"

# build_bin <module dir> <package> <binary name> <ldflags>
build_bin() {
  local mod="$1" pkg="$2" name="$3" ldflags="$4" start tmp
  start="$(now_us)"
  tmp="${OUT}/.${name}.tmp"
  rm -f "${tmp}"
  if ! (cd "${mod}" && go build -mod=readonly -buildvcs=false -trimpath -ldflags="${ldflags}" -o "${tmp}" "${pkg}"); then
    rm -f "${tmp}"
    die "building ${name} from ${mod#"${ROOT}"/} failed (see output above)"
  fi
  mv -f "${tmp}" "${OUT}/${name}"
  echo "${name}: built in $(elapsed "${start}")s"
}

# reuse_bin <binary name> <recorded version> <wanted version>: true if reusable
reuse_bin() {
  local name="$1" have="$2" want="$3"
  [[ "${FORCE}" != 1 && "${have}" == "${want}" && -x "${OUT}/${name}" ]]
}

# ---- kube-apiserver, kubectl, kube-proxy, kube-controller-manager ------------
kube_major="${KUBE_VERSION#v}"; kube_major="${kube_major%%.*}"
kube_minor="${KUBE_VERSION#v*.}"; kube_minor="${kube_minor%%.*}"
# Release date of the pinned module (from the local module cache), so the
# binaries are reproducible; falls back to the version package's default.
kube_date="$( (cd "${KUBE_MOD}" && go list -mod=readonly -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes) 2>/dev/null || true)"
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
  kube_ldflags+=" -X ${pkg}.gitMajor=${kube_major} -X ${pkg}.gitMinor=${kube_minor}"
  kube_ldflags+=" -X ${pkg}.gitTreeState=clean"
  [[ -z "${kube_date}" ]] || kube_ldflags+=" -X ${pkg}.buildDate=${kube_date}"
done

kube_todo=()
kube_bins=(kube-apiserver kubectl kube-proxy kube-controller-manager kubelet kube-scheduler)
for name in "${kube_bins[@]}"; do
  if reuse_bin "${name}" "${rec_kube}" "${KUBE_VERSION}"; then
    echo "${name}: reused ${KUBE_VERSION} in 0.0s"
  else
    kube_todo+=("${name}")
  fi
done
if ((${#kube_todo[@]})); then
  rec_kube=none; write_versions
  for name in "${kube_todo[@]}"; do
    build_bin "${KUBE_MOD}" "./cmd/${name}" "${name}" "${kube_ldflags}"
  done
  rec_kube="${KUBE_VERSION}"; write_versions
fi

# ---- etcd ---------------------------------------------------------------------
if reuse_bin etcd "${rec_etcd}" "${ETCD_VERSION}"; then
  echo "etcd: reused ${ETCD_VERSION} in 0.0s"
else
  rec_etcd=none; write_versions
  build_bin "${ETCD_MOD}" . etcd "-s -w"
  rec_etcd="${ETCD_VERSION}"; write_versions
fi

# ---- containerd v2 (the kubelet's runtime) and the pods' pause image --------
ctrd_bins=(containerd containerd-shim-runc-v2 ctr)
ctrd_ok=1
for name in "${ctrd_bins[@]}" pause.tar backend.tar; do
  [[ -e "${OUT}/${name}" ]] || ctrd_ok=0
done
if [[ "${ctrd_ok}" == 1 ]] && reuse_bin containerd "${rec_ctrd}" "${CONTAINERD_VERSION}"; then
  echo "containerd: reused ${CONTAINERD_VERSION} in 0.0s"
else
  rec_ctrd=none; write_versions
  # No btrfs/devmapper/zfs snapshotters: the lab uses overlayfs, and the
  # others need cgo and their C headers.
  ctrd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION}"
  for name in "${ctrd_bins[@]}"; do
    GOFLAGS="${GOFLAGS} -tags=no_btrfs,no_devmapper,no_zfs" build_bin "${CTRD_MOD}" "github.com/containerd/containerd/v2/cmd/${name}" "${name}" "${ctrd_ldflags}"
  done
  for img in pause:"${PAUSE_IMAGE}" backend:"${BACKEND_IMAGE}"; do
    name="${img%%:*}"
    build_bin "${IMAGE_MOD}" "./${name}" "${name}" "-s -w"
    (cd "${IMAGE_MOD}" && go run -mod=readonly . -lab-image "${OUT}/${name}" -out "${OUT}/${name}.tar" -tag "${img#*:}") ||
      die "assembling the ${name} image from hack/tools/image failed (see output above)"
  done
  rec_ctrd="${CONTAINERD_VERSION}"; write_versions
fi

# ---- verify that the binaries run and report the pinned versions ------------
# check <expected substring> <command...>
check() {
  local want="$1" out; shift
  out="$("$@" 2>&1)" || die "'${*#"${OUT}"/}' failed; remove ${OUT} and re-run. Output:"$'\n'"${out}"
  [[ "${out}" == *"${want}"* ]] ||
    die "'$*' did not report '${want}'; remove ${OUT} and re-run. Output:"$'\n'"${out}"
}
check "Kubernetes ${KUBE_VERSION}" "${OUT}/kube-apiserver" --version
check "Client Version: ${KUBE_VERSION}" "${OUT}/kubectl" version --client
check "Kubernetes ${KUBE_VERSION}" "${OUT}/kube-proxy" --version
check "Kubernetes ${KUBE_VERSION}" "${OUT}/kube-controller-manager" --version
check "etcd Version: ${ETCD_VERSION#v}" "${OUT}/etcd" --version
check "Kubernetes ${KUBE_VERSION}" "${OUT}/kubelet" --version
check "Kubernetes ${KUBE_VERSION}" "${OUT}/kube-scheduler" --version
check "containerd/v2 ${CONTAINERD_VERSION}" "${OUT}/containerd" --version
check "${CONTAINERD_VERSION}" "${OUT}/ctr" --version

echo "k8s-binaries: ok ($(cat "${OUT}/VERSIONS")); use KUBEBUILDER_ASSETS=${OUT}"
