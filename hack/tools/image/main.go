// Command image assembles ironlb's container image without a container
// engine and without pulling a base image: the static binaries `make
// image` cross-compiled, on an empty base with what they need (passwd and
// group for the non-root user 65532, the CA bundle, licence texts), one
// layer per binary, for linux/amd64 and linux/arm64. It writes an OCI
// layout (an index of both platforms) and a docker-archive tarball per
// platform, reproducibly: file and image times are the commit's, owners
// and modes fixed, so the same commit gives the same digest. With -push
// it sends the written layout to a registry.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

var arches = []string{"amd64", "arm64"}

func main() {
	root := flag.String("root", "", "the ironlb checkout (for go list and the licences)")
	bin := flag.String("bin", "", "directory with linux_<arch>/<binary> for each platform")
	out := flag.String("out", "", "output directory: oci/ (layout) and ironlb-linux-<arch>.tar")
	tag := flag.String("tag", "ghcr.io/ironlb/ironlb:dev", "the docker archives' image name")
	version := flag.String("version", "dev", "org.opencontainers.image.version")
	revision := flag.String("revision", "", "org.opencontainers.image.revision (the commit)")
	epoch := flag.Int64("epoch", 0, "seconds since 1970 of the commit: every time in the image")
	ca := flag.String("ca", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to ship")
	push := flag.String("push", "", "push the layout in -out to this reference instead of building")
	labImage := flag.String("lab-image", "", "instead: an image of the lab's from this one binary (its sandbox's pause, its backend), as a docker archive at -out named -tag")
	flag.Parse()
	var err error
	if *labImage != "" {
		err = writeLabImage(*labImage, *out, *tag, time.Unix(*epoch, 0))
	} else if *push != "" {
		err = pushLayout(filepath.Join(*out, "oci"), *push)
	} else {
		err = build(*root, *bin, *out, *tag, *ca, *version, *revision, time.Unix(*epoch, 0))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func build(root, bin, out, tag, ca, version, revision string, epoch time.Time) error {
	if root == "" || bin == "" || out == "" {
		return fmt.Errorf("-root, -bin and -out are required")
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("-tag %q: %w", tag, err)
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "ironlb",
		"org.opencontainers.image.description": "LoadBalancer Services for Kubernetes without a cloud provider: controller and speaker",
		"org.opencontainers.image.source":      "https://github.com/ironlb/ironlb",
		"org.opencontainers.image.version":     version,
		"org.opencontainers.image.revision":    revision,
		"org.opencontainers.image.created":     epoch.UTC().Format(time.RFC3339),
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	if err := os.RemoveAll(filepath.Join(out, "oci")); err != nil {
		return err
	}
	for _, arch := range arches {
		binaries, err := binariesOf(filepath.Join(bin, "linux_"+arch))
		if err != nil {
			return err
		}
		licences, err := licencesOf(root, arch, binaries)
		if err != nil {
			return err
		}
		img, err := Build(Spec{Arch: arch, Binaries: binaries, CA: ca, Licenses: licences, Epoch: epoch, Labels: labels})
		if err != nil {
			return fmt.Errorf("linux/%s: %w", arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
		archive := filepath.Join(out, "ironlb-linux-"+arch+".tar")
		if err := tarball.WriteToFile(archive, ref, img); err != nil {
			return err
		}
		if err := describe(os.Stdout, "linux/"+arch, img); err != nil {
			return err
		}
		fmt.Printf("  docker archive %s (tag %s)\n", archive, ref)
	}
	p, err := layout.Write(filepath.Join(out, "oci"), idx)
	if err != nil {
		return err
	}
	// What a runtime will read: the layout as written, every blob's digest
	// and size checked.
	written, err := p.ImageIndex()
	if err != nil {
		return err
	}
	if err := validate.Index(written); err != nil {
		return fmt.Errorf("the written OCI layout is not valid: %w", err)
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("OCI layout %s, index %s\n", filepath.Join(out, "oci"), d)
	return nil
}

// writeLabImage writes a LabImage for this machine's platform as a docker
// archive that test/kubelet's containerd imports.
func writeLabImage(binary, out, tag string, epoch time.Time) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("-tag %q: %w", tag, err)
	}
	img, err := LabImage(runtime.GOARCH, binary, epoch)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(out, ref, img); err != nil {
		return err
	}
	// What ctr will read: the archive as written.
	written, err := tarball.ImageFromPath(out, &ref)
	if err != nil {
		return err
	}
	if err := validate.Image(written); err != nil {
		return fmt.Errorf("the written image %s is not valid: %w", out, err)
	}
	return nil
}

// describe prints the image's digest and each layer's compressed size.
func describe(w io.Writer, platform string, img v1.Image) error {
	d, err := img.Digest()
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	var total int64
	fmt.Fprintf(w, "%s %s\n", platform, d)
	for i, l := range layers {
		size, err := l.Size()
		if err != nil {
			return err
		}
		total += size
		fmt.Fprintf(w, "  layer %-50s %8.2f MiB compressed\n", strings.TrimPrefix(cf.History[i].CreatedBy, "hack/tools/image: "), float64(size)/(1<<20))
	}
	fmt.Fprintf(w, "  total %.2f MiB compressed\n", float64(total)/(1<<20))
	return nil
}

// binariesOf maps /NAME to each file of dir.
func binariesOf(dir string) (map[string]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("binaries: %w (run `make image`, which builds them)", err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if e.Type().IsRegular() {
			out["/"+e.Name()] = filepath.Join(dir, e.Name())
		}
	}
	if out[entrypoint] == "" {
		return nil, fmt.Errorf("%s has no %s", dir, entrypoint[1:])
	}
	return out, nil
}

// licencesOf maps /licenses/MODULE/FILE to the licence texts of Go and of
// every module linked into the binaries of one platform (/NAME, built
// from ./cmd/NAME), so the licences follow what the image carries.
func licencesOf(root, arch string, binaries map[string]string) (map[string]string, error) {
	args := []string{"list", "-deps", "-tags", "grpcnotrace", "-f", "{{with .Module}}{{.Path}} {{.Dir}}{{end}}"}
	for _, b := range slices.Sorted(maps.Keys(binaries)) {
		args = append(args, "./cmd"+b)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	listed, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list the binaries' modules: %w: %s", err, stderr.String())
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, err
	}
	out := map[string]string{"/licenses/go/LICENSE": filepath.Join(strings.TrimSpace(string(goroot)), "LICENSE")}
	sc := bufio.NewScanner(bytes.NewReader(listed))
	for sc.Scan() {
		mod, dir, ok := strings.Cut(sc.Text(), " ")
		if !ok || dir == "" || mod == "github.com/ironlb/ironlb" {
			continue
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		found := false
		for _, e := range ents {
			n := strings.ToUpper(e.Name())
			if e.Type().IsRegular() && (strings.HasPrefix(n, "LICENSE") || strings.HasPrefix(n, "LICENCE") || strings.HasPrefix(n, "COPYING") || strings.HasPrefix(n, "NOTICE")) {
				out["/licenses/"+mod+"/"+e.Name()] = filepath.Join(dir, e.Name())
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("module %s (%s) has no licence file to ship", mod, dir)
		}
	}
	return out, sc.Err()
}

// pushLayout pushes the index of an OCI layout to ref, with the
// credentials of the docker config (docker login, podman login).
func pushLayout(dir, ref string) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		return fmt.Errorf("%s: %w (run `make image` first)", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return err
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return fmt.Errorf("push reference %q: %w", ref, err)
	}
	if err := remote.WriteIndex(r, idx, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("push %s: %w", r, err)
	}
	d, _ := idx.Digest()
	fmt.Printf("pushed %s@%s\n", r, d)
	return nil
}
