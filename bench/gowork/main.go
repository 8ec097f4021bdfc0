// Command gowork is the Go workload of `cargo xtask bench` (stdlib only).
//
// It runs -goroutines goroutines (default 64) that do CPU work forever, each
// under runtime/pprof.Do with 16 labels of its own, so a profiler sees many
// labelled goroutines on GOMAXPROCS threads. A unit of work is a recursive
// descent -depth calls deep (default 20) ending in a SHA-256 of a small
// buffer.
//
// Units are counted in -counters FILE: one little-endian u64 per goroutine,
// each on its own 64-byte line, zero elsewhere, so the total is the sum of
// the file's u64 words. The harness reads the file at the edges of a window;
// it does not signal this process (with 64 busy goroutines on 2 CPUs a
// signal takes up to a second to be handled).
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"unsafe"
)

const line = 64

//go:noinline
func descend(depth int, buf []byte) byte {
	if depth == 0 {
		sum := sha256.Sum256(buf)
		return sum[0]
	}
	r := descend(depth-1, buf)
	buf[depth%len(buf)] ^= r
	return r + 1
}

func worker(ctx context.Context, id, depth int, units *uint64) {
	labels := make([]string, 0, 32)
	for k := 0; k < 16; k++ {
		labels = append(labels, "k"+strconv.Itoa(k), fmt.Sprintf("g%d-v%d", id, k))
	}
	pprof.Do(ctx, pprof.Labels(labels...), func(context.Context) {
		buf := make([]byte, 256)
		buf[0] = byte(id)
		for {
			descend(depth, buf)
			atomic.AddUint64(units, 1)
		}
	})
}

// mapCounters maps a zeroed shared file of n lines.
func mapCounters(path string, n int) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size := (n*line + 4095) &^ 4095
	if err := f.Truncate(int64(size)); err != nil {
		return nil, err
	}
	return syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
}

func main() {
	goroutines := flag.Int("goroutines", 64, "worker goroutines")
	depth := flag.Int("depth", 20, "recursion depth of a unit of work")
	counters := flag.String("counters", "", "shared counter file (required)")
	flag.Parse()
	if *counters == "" || *goroutines < 1 {
		fmt.Fprintln(os.Stderr, "usage: gowork -counters FILE [-goroutines N] [-depth D]")
		os.Exit(2)
	}
	page, err := mapCounters(*counters, *goroutines)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gowork:", err)
		os.Exit(1)
	}
	for i := 0; i < *goroutines; i++ {
		go worker(context.Background(), i, *depth, (*uint64)(unsafe.Pointer(&page[i*line])))
	}
	select {}
}
