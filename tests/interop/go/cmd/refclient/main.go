// Command refclient is the Go reference client: it calls a Kitex server the way Dapr's Go Kitex
// binding does (V1 binary generic client, full Thrift message in, full reply message out).
//
//	refclient call -hostports H -service S -method M -transport T -request-hex HEX [-rpc-timeout 1s]
//	    prints "REPLY <hex>" or "ERROR <text>", exit 0
//	refclient load -hostports H -service S -method M -transport T -request-hex HEX -n N -c C
//	    prints one JSON line with throughput and latency percentiles;
//	    -samples PATH also writes every call's latency in ns, one per line, in call order
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/client/genericclient"
	"github.com/cloudwego/kitex/pkg/generic"
	"github.com/cloudwego/kitex/pkg/klog"
	"github.com/cloudwego/kitex/transport"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "call" && os.Args[1] != "load") {
		fmt.Fprintln(os.Stderr, "usage: refclient call|load -hostports H -service S -method M -transport T -request-hex HEX ...")
		os.Exit(2)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet("refclient "+cmd, flag.ExitOnError)
	hostports := fs.String("hostports", "", "comma-separated host:port list")
	service := fs.String("service", "", "destination service name")
	method := fs.String("method", "", "method name (must match the name inside the request message)")
	trans := fs.String("transport", "framed", "framed|ttheader|ttheader-framed|buffered")
	reqHex := fs.String("request-hex", "", "complete strict-binary Thrift CALL message, hex")
	rpcTimeout := fs.Duration("rpc-timeout", 0, "RPC timeout (0 = none)")
	n := fs.Int("n", 1000, "load: total calls")
	c := fs.Int("c", 1, "load: concurrency (closed loop)")
	samples := fs.String("samples", "", "load: write every latency in ns to this file, one per line")
	_ = fs.Parse(os.Args[2:])
	if *hostports == "" || *service == "" || *method == "" || *reqHex == "" || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "refclient: -hostports, -service, -method and -request-hex are required")
		os.Exit(2)
	}
	request, err := hex.DecodeString(*reqHex)
	if err != nil {
		fmt.Fprintf(os.Stderr, "refclient: bad -request-hex: %v\n", err)
		os.Exit(2)
	}
	// Kitex >= v0.13 ORs the protocol into a Framed default (pkg/rpcinfo/rpcconfig.go
	// SetTransportProtocol), so "ttheader" goes out as TTHeader+Framed; only PurePayload resets it.
	var tp transport.Protocol
	switch *trans {
	case "framed":
		tp = transport.Framed
	case "ttheader":
		tp = transport.TTHeader
	case "ttheader-framed":
		tp = transport.TTHeaderFramed
	case "buffered":
		tp = transport.PurePayload
	default:
		fmt.Fprintf(os.Stderr, "refclient: unknown -transport %q\n", *trans)
		os.Exit(2)
	}
	klog.SetLevel(klog.LevelFatal) // keep stdout/stderr clean; errors are reported as ERROR lines
	opts := []client.Option{
		client.WithHostPorts(strings.Split(*hostports, ",")...),
		client.WithTransportProtocol(tp),
	}
	if *rpcTimeout > 0 {
		opts = append(opts, client.WithRPCTimeout(*rpcTimeout))
	}
	cli, err := genericclient.NewClient(*service, generic.BinaryThriftGeneric(), opts...)
	if err != nil {
		fmt.Printf("ERROR %s\n", oneLine(err.Error()))
		return
	}
	if cmd == "call" {
		resp, err := cli.GenericCall(context.Background(), *method, request)
		if err != nil {
			fmt.Printf("ERROR %s\n", oneLine(err.Error()))
			return
		}
		b, ok := resp.([]byte)
		if !ok {
			fmt.Printf("ERROR reply is %T, not []byte\n", resp)
			return
		}
		fmt.Printf("REPLY %s\n", hex.EncodeToString(b))
		return
	}
	load(cli, *method, request, *n, *c, *samples)
}

func load(cli genericclient.Client, method string, request []byte, n, c int, samples string) {
	if n < 1 || c < 1 {
		fmt.Fprintln(os.Stderr, "refclient: -n and -c must be >= 1")
		os.Exit(2)
	}
	lat := make([]time.Duration, n)
	var next, errs int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The V1 generic client writes its seq id into the request buffer in place
			// (kitex pkg/generic/binarythrift_codec.go SetSeqID): one buffer per worker.
			buf := make([]byte, len(request))
			for {
				i := atomic.AddInt64(&next, 1) - 1
				if i >= int64(n) {
					return
				}
				copy(buf, request)
				t0 := time.Now()
				_, err := cli.GenericCall(context.Background(), method, buf)
				lat[i] = time.Since(t0)
				if err != nil {
					atomic.AddInt64(&errs, 1)
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if samples != "" {
		// Before the sort below, so the file keeps call order (warm-up calls come first).
		if err := writeSamples(samples, lat); err != nil {
			fmt.Fprintf(os.Stderr, "refclient: -samples: %v\n", err)
			os.Exit(1)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		i := int(p * float64(n-1))
		return float64(lat[i].Nanoseconds()) / 1e3
	}
	out, _ := json.Marshal(map[string]interface{}{
		"calls": n, "concurrency": c, "seconds": secs, "calls_per_s": float64(n) / secs,
		"p50_us": pct(0.50), "p90_us": pct(0.90), "p99_us": pct(0.99), "errors": errs,
	})
	fmt.Println(string(out))
}

func writeSamples(path string, lat []time.Duration) error {
	var b strings.Builder
	for _, d := range lat {
		b.WriteString(strconv.FormatInt(d.Nanoseconds(), 10))
		b.WriteByte('\n')
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
