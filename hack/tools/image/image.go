package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed shape. The Dockerfile declares the same (its final
// stage: distroless/static nonroot, the binaries in /, USER, ENTRYPOINT);
// TestDockerfileAgrees holds the two together.
const (
	user       = "65532:65532"
	entrypoint = "/controller"
	caBundle   = "/etc/ssl/certs/ca-certificates.crt"
)

var env = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"SSL_CERT_FILE=" + caBundle,
}

// Spec is everything an image is made of. The same Spec gives the same
// bytes, so the same digest: nothing of the build machine's clock, file
// modes or owners gets in.
type Spec struct {
	Arch string // GOARCH
	// Binaries maps a path in the image ("/controller") to a file here.
	Binaries map[string]string
	// CA is the CA bundle's file here; Licenses maps a path in the image
	// to a licence text here.
	CA       string
	Licenses map[string]string
	// Epoch stamps every file and the image (the commit's time).
	Epoch time.Time
	// Labels are the OCI annotations of the image config
	// (org.opencontainers.image.*).
	Labels map[string]string
}

// file is one entry of a layer.
type file struct {
	name string // absolute path in the image
	mode int64
	uid  int
	data []byte // nil for a directory
}

// Build assembles the image of one platform: a base layer (passwd,
// group, CA bundle, home and tmp directories, licence texts) and one layer
// per binary, so a change to one binary leaves the other layers shared.
func Build(s Spec) (v1.Image, error) {
	ca, err := os.ReadFile(s.CA)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w (install Debian's ca-certificates)", err)
	}
	base := []file{
		{name: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: caBundle, mode: 0o644, data: ca},
		{name: "/home/nonroot", mode: 0o700, uid: 65532},
		{name: "/tmp", mode: 0o1777},
	}
	for dst, src := range s.Licenses {
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("licence text: %w", err)
		}
		base = append(base, file{name: dst, mode: 0o644, data: data})
	}
	layers := []layer{{"base: passwd, group, CA certificates, licences", base}}
	var bins []string
	for dst := range s.Binaries {
		bins = append(bins, dst)
	}
	sort.Strings(bins)
	for _, dst := range bins {
		data, err := os.ReadFile(s.Binaries[dst])
		if err != nil {
			return nil, fmt.Errorf("binary for %s: %w (run `make image`)", dst, err)
		}
		layers = append(layers, layer{dst, []file{{name: dst, mode: 0o755, data: data}}})
	}
	return assemble(s.Arch, s.Epoch, layers, v1.Config{User: user, Entrypoint: []string{entrypoint}, Env: env, WorkingDir: "/", Labels: s.Labels})
}

// layer is one layer of an image: what it holds and its history line.
type layer struct {
	what  string
	files []file
}

// assemble makes an OCI image of layers, in order, with config, every
// time in it epoch: the same input, the same digest.
func assemble(arch string, epoch time.Time, layers []layer, config v1.Config) (v1.Image, error) {
	created := v1.Time{Time: epoch.UTC()}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, l := range layers {
		tarData, err := tarOf(l.files, epoch)
		if err != nil {
			return nil, err
		}
		tl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(tarData)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: tl, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "hack/tools/image: " + l.what, Comment: "ironlb",
		}})
		if err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Created = arch, "linux", created
	cf.Config = config
	return mutate.ConfigFile(img, cf)
}

// tarOf writes files (and their parent directories) as a tar stream in a
// fixed order with fixed times and owners.
func tarOf(files []file, epoch time.Time) ([]byte, error) {
	entries := map[string]file{}
	for _, f := range files {
		entries[f.name] = f
		for dir := path.Dir(f.name); dir != "/"; dir = path.Dir(dir) {
			if _, ok := entries[dir]; !ok {
				entries[dir] = file{name: dir, mode: 0o755}
			}
		}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		f := entries[n]
		h := &tar.Header{Name: n[1:], Mode: f.mode, Uid: f.uid, Gid: f.uid, ModTime: epoch.UTC(), Format: tar.FormatPAX}
		if f.data == nil {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// LabImage is an image of the lab's own (test/kubelet): one static binary
// alone, at /NAME, its entrypoint, run as 65535 as upstream's pause is. The
// pods' sandbox image (pause) and the backend pods' image are such.
func LabImage(arch, binary string, epoch time.Time) (v1.Image, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("lab image binary: %w", err)
	}
	entry := "/" + filepath.Base(binary)
	return assemble(arch, epoch, []layer{{entry, []file{{name: entry, mode: 0o755, data: data}}}},
		v1.Config{User: "65535:65535", Entrypoint: []string{entry}, WorkingDir: "/"})
}
