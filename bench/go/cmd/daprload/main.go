// Command daprload is a closed-loop load generator on daprd's gRPC API: C workers share one
// grpc-go connection and call dapr.proto.runtime.v1.Dapr/InvokeBinding one call after another.
// It prints one JSON line: calls/s, latency percentiles, errors, and the CPU ticks (utime+stime
// from /proc/<pid>/stat) each watched process spent over the measured calls.
//
//	daprload -addr 127.0.0.1:PORT -binding NAME -data-file F -meta k=v ... -c 64 -duration 5s -warmup 1s
//	         [-n CALLS] [-cycle-key version -cycle 1000] [-expect TEXT] [-pids name=pid,...]
//
// With -n the measured phase is that many calls, otherwise it lasts -duration. With -cycle N the
// value of -cycle-key takes N distinct values v0..v<N-1>, one per call in turn.
//
// With -component SOCKET it calls a pluggable component directly instead of daprd
// (dapr.proto.components.v1.OutputBinding/Invoke on its unix socket, instance -binding, as daprd
// names it in x-component-instance): the component's own cost, without daprd in the loop.
package main

import (
	"bytes"
	"context"
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

	compv1 "github.com/dapr/dapr/pkg/proto/components/v1"
	rtv1 "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

type kvList map[string]string

func (m kvList) String() string { return fmt.Sprint(map[string]string(m)) }
func (m kvList) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want KEY=VALUE, got %q", s)
	}
	m[k] = v
	return nil
}

type result struct {
	Calls      int64            `json:"calls"`
	Seconds    float64          `json:"seconds"`
	CallsPerS  float64          `json:"calls_per_s"`
	P50us      float64          `json:"p50_us"`
	P90us      float64          `json:"p90_us"`
	P99us      float64          `json:"p99_us"`
	MeanUs     float64          `json:"mean_us"`
	Errors     int64            `json:"errors"`
	BadReplies int64            `json:"bad_replies"`
	FirstError string           `json:"first_error,omitempty"`
	CPUTicks   map[string]int64 `json:"cpu_ticks"`
	WarmCalls  int64            `json:"warmup_calls"`
}

func cpuTicks(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// Fields after the last ')' (the command name may hold spaces): state is [0]; utime [11], stime [12].
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

type runner struct {
	client  rtv1.DaprClient
	direct  compv1.OutputBindingClient // -component: the component itself, not daprd
	binding string
	op      string
	data    []byte
	metas   []map[string]string
	timeout time.Duration
	expect  []byte

	next       atomic.Int64
	errs       atomic.Int64
	bad        atomic.Int64
	firstError atomic.Value
}

// phase runs c workers until n calls are made (n > 0) or until the deadline; latencies in ns.
func (r *runner) phase(c int, n int64, d time.Duration) ([]int64, float64) {
	r.next.Store(0)
	var mu sync.Mutex
	var all []int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for w := 0; w < c; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]int64, 0, 1024)
			for {
				i := r.next.Add(1) - 1
				if n > 0 && i >= n {
					break
				}
				t0 := time.Now()
				if n <= 0 && !t0.Before(deadline) {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
				data, err := r.invoke(ctx, r.metas[int(i)%len(r.metas)])
				cancel()
				lat = append(lat, int64(time.Since(t0)))
				if err != nil {
					if r.errs.Add(1) == 1 {
						r.firstError.Store(err.Error())
					}
				} else if len(r.expect) > 0 && !bytes.Contains(data, r.expect) {
					if r.bad.Add(1) == 1 {
						r.firstError.Store(fmt.Sprintf("reply without %q: %q", r.expect, data))
					}
				}
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, time.Since(start).Seconds()
}

// invoke makes one call, through daprd or (-component) straight to the component.
func (r *runner) invoke(ctx context.Context, meta map[string]string) ([]byte, error) {
	if r.direct != nil {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-component-instance", r.binding)
		resp, err := r.direct.Invoke(ctx, &compv1.InvokeRequest{Data: r.data, Metadata: meta, Operation: r.op})
		return resp.GetData(), err
	}
	resp, err := r.client.InvokeBinding(ctx, &rtv1.InvokeBindingRequest{
		Name: r.binding, Data: r.data, Metadata: meta, Operation: r.op})
	return resp.GetData(), err
}

func pct(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i]) / 1e3
}

func main() {
	addr := flag.String("addr", "", "daprd gRPC address host:port")
	component := flag.String("component", "", "a component's unix socket: call it directly, not daprd")
	bindingName := flag.String("binding", "kitex", "binding (component) name")
	op := flag.String("op", "get", "operation")
	dataFile := flag.String("data-file", "", "request data: a complete Thrift CALL message")
	meta := kvList{}
	flag.Var(meta, "meta", "binding metadata KEY=VALUE (repeatable)")
	cycleKey := flag.String("cycle-key", "version", "metadata key whose value cycles with -cycle")
	cycle := flag.Int("cycle", 0, "cycle -cycle-key through v0..v<N-1>, one per call (0: fixed metadata)")
	c := flag.Int("c", 1, "callers (workers sharing one connection)")
	n := flag.Int64("n", 0, "measured calls (0: run for -duration)")
	duration := flag.Duration("duration", 5*time.Second, "measured time when -n is 0")
	warmup := flag.Duration("warmup", time.Second, "warm-up time before measuring (0: none)")
	timeout := flag.Duration("timeout", 30*time.Second, "per-call deadline")
	expect := flag.String("expect", "", "count a reply without this text as a bad reply")
	pids := kvList{}
	flag.Var(pids, "pid", "NAME=PID of a process whose CPU ticks to report (repeatable)")
	flag.Parse()
	if *component != "" {
		*addr = "unix://" + *component
	}
	if *addr == "" || *dataFile == "" || *c < 1 {
		fmt.Fprintln(os.Stderr, "daprload: -addr (or -component) and -data-file are required, -c >= 1")
		os.Exit(2)
	}
	data, err := os.ReadFile(*dataFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "daprload: %v\n", err)
		os.Exit(2)
	}
	metas := []map[string]string{meta}
	if *cycle > 0 {
		metas = make([]map[string]string, *cycle)
		for k := range metas {
			m := make(map[string]string, len(meta)+1)
			for a, b := range meta {
				m[a] = b
			}
			m[*cycleKey] = "v" + strconv.Itoa(k)
			metas[k] = m
		}
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "daprload: %v\n", err)
		os.Exit(1)
	}
	defer conn.Close()
	r := &runner{client: rtv1.NewDaprClient(conn), binding: *bindingName, op: *op, data: data,
		metas: metas, timeout: *timeout, expect: []byte(*expect)}
	if *component != "" {
		r.direct = compv1.NewOutputBindingClient(conn)
	}

	var res result
	if *warmup > 0 {
		lat, _ := r.phase(*c, 0, *warmup)
		res.WarmCalls = int64(len(lat))
	}
	r.errs.Store(0)
	r.bad.Store(0)
	pidOf := map[string]int{}
	before := map[string]int64{}
	for name, p := range pids {
		pid, _ := strconv.Atoi(p)
		pidOf[name] = pid
		before[name] = cpuTicks(pid)
	}
	lat, secs := r.phase(*c, *n, *duration)
	res.CPUTicks = map[string]int64{}
	for name, pid := range pidOf {
		res.CPUTicks[name] = cpuTicks(pid) - before[name]
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	var sum int64
	for _, v := range lat {
		sum += v
	}
	res.Calls, res.Seconds = int64(len(lat)), secs
	if len(lat) > 0 {
		res.CallsPerS = float64(len(lat)) / secs
		res.MeanUs = float64(sum) / float64(len(lat)) / 1e3
	}
	res.P50us, res.P90us, res.P99us = pct(lat, 0.50), pct(lat, 0.90), pct(lat, 0.99)
	res.Errors, res.BadReplies = r.errs.Load(), r.bad.Load()
	if v, ok := r.firstError.Load().(string); ok {
		res.FirstError = v
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}
