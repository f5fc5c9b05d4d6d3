package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"flag"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

var builtLayout = flag.String("layout", "../../../bin/image/oci", "the OCI layout `make image` wrote")

const repo = "../../.."

// fakeBinaries writes a small file per binary the Dockerfile builds into
// dir, with the given mode and modification time.
func fakeBinaries(t *testing.T, dir string, mode os.FileMode, mtime time.Time) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, c := range parseDockerfile(t).binaries() {
		p := filepath.Join(dir, c)
		if err := os.WriteFile(p, []byte("binary "+c), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		out["/"+c] = p
	}
	return out
}

func spec(bins map[string]string, epoch time.Time) Spec {
	return Spec{Arch: "amd64", Binaries: bins, CA: "/etc/ssl/certs/ca-certificates.crt",
		Licenses: map[string]string{"/licenses/go/LICENSE": filepath.Join(repo, "go.mod")},
		Epoch:    epoch, Labels: map[string]string{"org.opencontainers.image.version": "test"}}
}

func digests(t *testing.T, img v1.Image) (v1.Hash, []v1.Hash) {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var ls []v1.Hash
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, h)
	}
	return d, ls
}

// TestReproducible: the same inputs give the same digest whatever the
// build machine's file times and modes; another commit time gives another
// digest; a changed binary changes its own layer only.
func TestReproducible(t *testing.T) {
	epoch := time.Unix(1765000000, 0)
	a := fakeBinaries(t, t.TempDir(), 0o755, time.Now())
	b := fakeBinaries(t, t.TempDir(), 0o700, time.Unix(42, 0))
	build := func(s Spec) v1.Image {
		img, err := Build(s)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	da, la := digests(t, build(spec(a, epoch)))
	db, _ := digests(t, build(spec(b, epoch)))
	if da != db {
		t.Errorf("same inputs, other file times and modes: digest %s, then %s", da, db)
	}
	if dc, _ := digests(t, build(spec(a, epoch.Add(time.Second)))); dc == da {
		t.Error("another commit time gave the same digest: the epoch does not reach the image")
	}
	if err := os.WriteFile(a["/speaker"], []byte("another speaker"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, ld := digests(t, build(spec(a, epoch)))
	changed := 0
	for i := range la {
		if la[i] != ld[i] {
			changed++
		}
	}
	if len(la) != 3 || changed != 1 {
		t.Errorf("%d layers, %d changed by a new speaker binary; want 3 layers (base, controller, speaker), 1 changed", len(la), changed)
	}
}

// dockerfile is what the Dockerfile's final stage declares.
type dockerfile struct {
	base, user string
	entrypoint []string
	copyTo     string // where the build stage's binaries go
	build      string // the build stage's go build line
}

// binaries names what the build stage's go build line builds: the image
// carries these cmd/ packages, not every one (kubectl-ironlb runs on the
// admin's machine, not in the cluster).
func (d dockerfile) binaries() []string {
	var out []string
	for _, f := range strings.Fields(d.build) {
		if c, ok := strings.CutPrefix(f, "./cmd/"); ok {
			out = append(out, c)
		}
	}
	return out
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	f, err := os.Open(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	args := func(n *parser.Node) []string {
		var out []string
		for a := n.Next; a != nil; a = a.Next {
			out = append(out, a.Value)
		}
		return out
	}
	for _, n := range res.AST.Children {
		switch strings.ToLower(n.Value) {
		case "from":
			d = dockerfile{base: args(n)[0], build: d.build} // a new stage
		case "user":
			d.user = args(n)[0]
		case "entrypoint":
			if !n.Attributes["json"] {
				t.Fatalf("Dockerfile line %d: ENTRYPOINT in shell form; the image has no shell", n.StartLine)
			}
			d.entrypoint = args(n)
		case "copy":
			if slices.Contains(n.Flags, "--from=build") {
				d.copyTo = args(n)[len(args(n))-1]
			}
		case "run":
			if line := strings.Join(args(n), " "); strings.Contains(line, "go build") {
				d.build = line
			}
		}
	}
	return d
}

// files lists an image's files (path → content) over all layers.
func files(t *testing.T, img v1.Image) map[string][]byte {
	t.Helper()
	r := mutate.Extract(img)
	defer r.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out["/"+strings.TrimSuffix(h.Name, "/")] = data
	}
}

// checkAgainstDockerfile holds an image to what the Dockerfile declares:
// the same user (with an /etc/passwd entry, as distroless nonroot has),
// entrypoint, binaries at the same place, distroless static's PATH and CA
// bundle.
func checkAgainstDockerfile(t *testing.T, d dockerfile, img v1.Image) map[string][]byte {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != d.user {
		t.Errorf("image user %q, Dockerfile USER %q", cf.Config.User, d.user)
	}
	if !slices.Equal(cf.Config.Entrypoint, d.entrypoint) {
		t.Errorf("image entrypoint %q, Dockerfile ENTRYPOINT %q", cf.Config.Entrypoint, d.entrypoint)
	}
	fs := files(t, img)
	for _, c := range d.binaries() {
		if _, ok := fs[filepath.Join(d.copyTo, c)]; !ok {
			t.Errorf("the Dockerfile copies cmd/%s to %s; the image has no such file", c, filepath.Join(d.copyTo, c))
		}
	}
	uid, _, _ := strings.Cut(d.user, ":")
	if !strings.Contains(string(fs["/etc/passwd"]), ":x:"+uid+":") {
		t.Errorf("user %s has no /etc/passwd entry:\n%s", uid, fs["/etc/passwd"])
	}
	if !strings.Contains(d.base, "distroless/static") || !strings.HasSuffix(d.base, ":nonroot") {
		t.Errorf("the Dockerfile's base %s is no longer distroless/static nonroot: update this image (env, files) to match it", d.base)
	}
	if len(fs[caBundle]) == 0 || !slices.Contains(cf.Config.Env, "SSL_CERT_FILE="+caBundle) {
		t.Errorf("no CA bundle at %s (as distroless/static has)", caBundle)
	}
	return fs
}

// TestDockerfileAgrees: the Dockerfile (for users with Docker) and this
// builder describe the same image, and build the binaries alike.
func TestDockerfileAgrees(t *testing.T) {
	d := parseDockerfile(t)
	img, err := Build(spec(fakeBinaries(t, t.TempDir(), 0o755, time.Now()), time.Unix(1765000000, 0)))
	if err != nil {
		t.Fatal(err)
	}
	checkAgainstDockerfile(t, d, img)
	mk, err := os.ReadFile(filepath.Join(repo, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	var makeLine dockerfile
	for _, l := range strings.Split(string(mk), "\n") {
		if strings.Contains(l, "-o bin/image/linux_") {
			makeLine.build = l
		}
	}
	if got, want := makeLine.binaries(), d.binaries(); len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("`make image` builds cmd/%v, the Dockerfile cmd/%v", got, want)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-tags grpcnotrace", "-trimpath", "-s -w -X main.version="} {
		if !strings.Contains(d.build, want) {
			t.Errorf("the Dockerfile's go build lacks %q, which `make image` uses: %s", want, d.build)
		}
	}
}

// TestBuiltImage reads the layout `make image` wrote (make test builds it
// first): one image per platform, each as the Dockerfile declares, with
// binaries for its own CPU and the OCI labels.
func TestBuiltImage(t *testing.T) {
	p, err := layout.FromPath(*builtLayout)
	if err != nil {
		t.Fatalf("%s: %v (run `make image`)", *builtLayout, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	var platforms []string
	d := parseDockerfile(t)
	for _, desc := range m.Manifests {
		arch := desc.Platform.Architecture
		platforms = append(platforms, desc.Platform.OS+"/"+arch)
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		fs := checkAgainstDockerfile(t, d, img)
		for _, bin := range []string{"/controller", "/speaker"} {
			f, err := elf.NewFile(bytes.NewReader(fs[bin]))
			if err != nil {
				t.Errorf("%s %s: %v", arch, bin, err)
				continue
			}
			if f.Machine != machines[arch] {
				t.Errorf("%s image: %s is for %s", arch, bin, f.Machine)
			}
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range []string{"version", "revision", "source", "created"} {
			if cf.Config.Labels["org.opencontainers.image."+l] == "" {
				t.Errorf("%s image: no label org.opencontainers.image.%s", arch, l)
			}
		}
		if cf.Architecture != arch || cf.OS != "linux" || cf.Created.Unix() == 0 {
			t.Errorf("%s image config: %s/%s created %s", arch, cf.OS, cf.Architecture, cf.Created)
		}
	}
	if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("platforms %v", platforms)
	}
}

// TestPush pushes the built layout the way `make image-push` does, to
// go-containerregistry's in-process registry (an implementation of the
// OCI distribution API; no other registry runs here), and reads the index
// back by tag: same digest, both platforms.
func TestPush(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/ironlb:test"
	if err := pushLayout(*builtLayout, ref); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(*builtLayout)
	if err != nil {
		t.Fatal(err)
	}
	local, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := local.Digest()
	got, err := pulled.Digest()
	if err != nil || got != want {
		t.Fatalf("pulled index %s (%v), pushed %s", got, err, want)
	}
	if err := validate.Index(pulled); err != nil {
		t.Fatalf("the pushed index does not validate: %v", err)
	}
}

// TestLabImage: the lab's one-binary images run it as their entrypoint, as
// 65535, and are the same bytes from the same binary.
func TestLabImage(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pause")
	if err := os.WriteFile(bin, []byte("\x7fELF not really"), 0o755); err != nil {
		t.Fatal(err)
	}
	var digests []v1.Hash
	for range 2 {
		img, err := LabImage("amd64", bin, time.Unix(1700000000, 0))
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if got := cf.Config.Entrypoint; !slices.Equal(got, []string{"/pause"}) || cf.Config.User != "65535:65535" {
			t.Fatalf("entrypoint %v user %q; want [/pause] 65535:65535", got, cf.Config.User)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds, two digests: %v", digests)
	}
}
