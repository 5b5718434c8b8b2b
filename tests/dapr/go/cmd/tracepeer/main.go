// Command tracepeer is a real Kitex echo server that answers with the Kitex metainfo it received,
// to prove how the component forwards Dapr's trace context.
//
//	tracepeer [-listen 127.0.0.1:0]
//
// Kitex's OpenTelemetry server middleware (kitex-contrib/obs-opentelemetry tracing.ServerMiddleware)
// extracts the W3C trace context from metainfo.GetAllValues(ctx), which Kitex's default
// MetainfoServerHandler fills from TTHeader string headers prefixed RPC_TRANSIT_. The reply is
// "<message>,hi Kitex|k1=v1;k2=v2" with those values sorted by key. Like kitexserver, it prints
// "LISTENING <host:port>" once serving and exits 0 on SIGTERM/SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/bytedance/gopkg/cloud/metainfo"
	"github.com/cloudwego/kitex/server"

	"github.com/kitex-fast/interop/kitex_gen/echo"
	echosvc "github.com/kitex-fast/interop/kitex_gen/echo/echo"
)

type handler struct{}

func (handler) Echo(ctx context.Context, req *echo.Request) (*echo.Response, error) {
	values := metainfo.GetAllValues(ctx)
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	pairs := make([]string, 0, len(keys))
	for _, k := range keys {
		pairs = append(pairs, k+"="+values[k])
	}
	return &echo.Response{Message: req.GetMessage() + ",hi Kitex|" + strings.Join(pairs, ";")}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	flag.Parse()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tracepeer: listen %s: %v\n", *listen, err)
		os.Exit(1)
	}
	svr := echosvc.NewServer(&handler{},
		server.WithListener(ln),
		server.WithExitWaitTime(time.Second),
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
		fmt.Fprintf(os.Stderr, "tracepeer: %v\n", err)
		os.Exit(1)
	}
}
