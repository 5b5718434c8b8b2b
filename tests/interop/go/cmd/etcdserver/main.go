// Command etcdserver runs one real Kitex echo server that registers itself in etcd with
// kitex-contrib/registry-etcd, for kitex_fast's service-discovery tests (docs/registry.md).
//
//	etcdserver -etcd 127.0.0.1:2379[,host:port] [-service echo] [-weight 10] [-lease-ttl 60]
//	           [-prefix kitex/registry-etcd] [-listen 127.0.0.1:0] [-drain 0s] [-tag k=v ...]
//
// It binds its own listener, prints "LISTENING <host:port>" once serving (as kitexserver does),
// and runs until SIGTERM/SIGINT: a graceful Stop deregisters (deletes its key) before the
// transport server stops, as Kitex's server.Stop does. SIGKILL leaves the key until its lease
// expires. Each reply names the instance that served it, "<message>,hi Kitex@<host:port>#<n>",
// where n counts the calls this process handled, so a test can count calls per instance.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/kitex/pkg/klog"
	"github.com/cloudwego/kitex/pkg/registry"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/cloudwego/kitex/server"
	etcd "github.com/kitex-contrib/registry-etcd"

	"github.com/kitex-fast/interop/kitex_gen/echo"
	echosvc "github.com/kitex-fast/interop/kitex_gen/echo/echo"
)

type echoHandler struct {
	addr  string
	calls atomic.Int64
}

func (h *echoHandler) Echo(_ context.Context, req *echo.Request) (*echo.Response, error) {
	n := h.calls.Add(1)
	return &echo.Response{Message: fmt.Sprintf("%s,hi Kitex@%s#%d", req.GetMessage(), h.addr, n)}, nil
}

// drainingRegistry deregisters, then waits before Kitex goes on to stop its transport server.
// Kitex's server.Stop deregisters and stops right away (kitex v0.16.3 server/server.go), closing
// idle connections at once, while clients learn of the removal asynchronously (kitex_fast's
// watch: milliseconds; Kitex's own client: its resolver refresh). A call sent on such a connection
// in that window is reset. Deployments close the window with a drain delay (a Kubernetes preStop
// sleep); -drain does it here (docs/registry.md).
type drainingRegistry struct {
	registry.Registry
	drain time.Duration
}

func (d drainingRegistry) Deregister(info *registry.Info) error {
	err := d.Registry.Deregister(info)
	time.Sleep(d.drain)
	return err
}

type tagFlags map[string]string

func (t tagFlags) String() string { return fmt.Sprint(map[string]string(t)) }
func (t tagFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("tag %q is not key=value", v)
	}
	t[k] = val
	return nil
}

func main() {
	endpoints := flag.String("etcd", "", "etcd endpoints, host:port[,host:port]")
	service := flag.String("service", "echo", "service name to register")
	weight := flag.Int("weight", 0, "registry weight (0: Kitex's discovery.DefaultWeight, 10)")
	leaseTTL := flag.Int("lease-ttl", 0, "lease TTL in seconds (0: registry-etcd's default, 60, or KITEX_ETCD_REGISTRY_LEASE_TTL)")
	prefix := flag.String("prefix", "", "key prefix (empty: registry-etcd's default, kitex/registry-etcd)")
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	drain := flag.Duration("drain", 0, "on a graceful stop, wait this long after deregistering before closing connections")
	tags := tagFlags{}
	flag.Var(tags, "tag", "instance tag key=value (repeatable)")
	flag.Parse()
	if *endpoints == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "etcdserver: -etcd is required and no arguments are taken")
		flag.Usage()
		os.Exit(2)
	}
	klog.SetOutput(os.Stderr)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if *leaseTTL > 0 {
		// registry-etcd reads the TTL from the environment only (etcd_registry.go getTTL).
		os.Setenv("KITEX_ETCD_REGISTRY_LEASE_TTL", strconv.Itoa(*leaseTTL))
	}
	var ropts []etcd.Option
	if *prefix != "" {
		ropts = append(ropts, etcd.WithEtcdServicePrefix(*prefix))
	}
	reg, err := etcd.NewEtcdRegistry(strings.Split(*endpoints, ","), ropts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdserver: registry: %v\n", err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdserver: listen %s: %v\n", *listen, err)
		os.Exit(1)
	}
	info := &registry.Info{ServiceName: *service, Weight: *weight}
	if len(tags) > 0 {
		info.Tags = tags
	}
	h := &echoHandler{addr: ln.Addr().String()}
	svr := echosvc.NewServer(h,
		server.WithListener(ln),
		server.WithServerBasicInfo(&rpcinfo.EndpointBasicInfo{ServiceName: *service}),
		server.WithRegistry(drainingRegistry{reg, *drain}),
		server.WithRegistryInfo(info),
		server.WithExitWaitTime(2*time.Second),
		server.WithExitSignal(func() <-chan error {
			exit := make(chan error, 1)
			go func() { <-sigs; exit <- nil }()
			return exit
		}))
	server.RegisterStartHook(func() {
		fmt.Fprintf(os.Stdout, "LISTENING %s\n", ln.Addr().String())
		os.Stdout.Sync()
	})
	if err := svr.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "etcdserver: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "etcdserver: stopped after %d calls\n", h.calls.Load())
}
