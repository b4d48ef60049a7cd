package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

// TestWarmVersusSkopeo measures warm's throughput on a cold multi-layer
// image against skopeo pulling the same image cold through the mirror
// (to a dir: layout), each against a fresh mirror process, alternating,
// in the same run. It is a measurement, not a check:
//
//	ECR_MIRROR_BENCH=1 go test -run TestWarmVersusSkopeo -v ./cmd/ecr-mirror/
func TestWarmVersusSkopeo(t *testing.T) {
	if os.Getenv("ECR_MIRROR_BENCH") == "" {
		t.Skip("a measurement; set ECR_MIRROR_BENCH=1 to run it")
	}
	bin := mirrorBinary(t)
	sk := newSkopeo(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	const layers, layerSize = 8, 16 << 20
	img, err := random.Image(layerSize, layers)
	if err != nil {
		t.Fatal(err)
	}
	putImage(t, fake, "team/big", "v1", img)
	size := int64(layers * layerSize)

	timeIt := func(f func() error) time.Duration {
		start := time.Now()
		if err := f(); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	var warmTotal, skopeoTotal time.Duration
	for round := range 3 {
		p := startProcess(t, bin, fake, t.TempDir())
		skopeoTime := timeIt(func() error {
			return sk.copy(t, "docker://"+p.addr+"/team/big:v1", "dir:"+filepath.Join(t.TempDir(), "out"))
		})
		p.signal(t, os.Interrupt, 10*time.Second)

		p = startProcess(t, bin, fake, t.TempDir())
		warmTime := timeIt(func() error {
			if code, _, errOut := runBinary(t, bin, t.TempDir(), "warm", "--quiet", "--mirror", "http://"+p.addr, "team/big:v1"); code != exitOK {
				return fmt.Errorf("warm: exit %d\n%s", code, errOut)
			}
			return nil
		})
		p.signal(t, os.Interrupt, 10*time.Second)
		warmTotal += warmTime
		skopeoTotal += skopeoTime
		t.Logf("round %d: %d layers, %d MiB: skopeo cold pull %v (%.0f MB/s), warm %v (%.0f MB/s): warm/skopeo throughput %.2fx",
			round, layers, size>>20, skopeoTime.Round(time.Millisecond), float64(size)/skopeoTime.Seconds()/1e6,
			warmTime.Round(time.Millisecond), float64(size)/warmTime.Seconds()/1e6, skopeoTime.Seconds()/warmTime.Seconds())
	}
	t.Logf("all rounds: warm/skopeo throughput %.2fx", skopeoTotal.Seconds()/warmTotal.Seconds())
}
