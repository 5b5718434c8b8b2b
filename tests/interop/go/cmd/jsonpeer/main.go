// Command jsonpeer holds the Kitex references for `kitex-fast call`: Kitex's own JSON generic
// client (the anchor for JSON <-> Thrift) and a server whose handler reads and writes metainfo.
//
//	jsonpeer call -idl FILE -hostports H -method M -data JSON [-service S] [-transport T]
//	    one call through genericclient + generic.JSONThriftGeneric (Kitex's defaults: binary as
//	    base64, no dynamicgo); prints "REPLY <json>" or "ERROR <text>", exit 0
//	jsonpeer metaserver [-listen 127.0.0.1:0]
//	    an Echo server (idl/echo.thrift) whose reply message is the JSON
//	    {"message": ..., "transient": {...}, "persistent": {...}} of the request message and the
//	    metainfo its handler saw, and which sends every transient value back as the backward
//	    value "echo-<key>"; prints "LISTENING <host:port>", serves until SIGTERM/SIGINT
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/bytedance/gopkg/cloud/metainfo"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/client/genericclient"
	"github.com/cloudwego/kitex/pkg/generic"
	"github.com/cloudwego/kitex/pkg/klog"
	"github.com/cloudwego/kitex/server"
	"github.com/cloudwego/kitex/transport"

	"github.com/kitex-fast/interop/kitex_gen/echo"
	echosvc "github.com/kitex-fast/interop/kitex_gen/echo/echo"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: jsonpeer call|metaserver ...")
	}
	switch os.Args[1] {
	case "call":
		call(os.Args[2:])
	case "metaserver":
		metaserver(os.Args[2:])
	default:
		fail("jsonpeer: unknown command %q (call|metaserver)", os.Args[1])
	}
}

func call(args []string) {
	fs := flag.NewFlagSet("jsonpeer call", flag.ExitOnError)
	idl := fs.String("idl", "", "Thrift IDL file")
	hostports := fs.String("hostports", "", "comma-separated host:port list")
	service := fs.String("service", "kitex-fast", "destination service name")
	method := fs.String("method", "", "method name")
	data := fs.String("data", "", "the request arguments as JSON")
	trans := fs.String("transport", "framed", "framed|ttheader")
	_ = fs.Parse(args)
	if *idl == "" || *hostports == "" || *method == "" || fs.NArg() != 0 {
		fail("jsonpeer call: -idl, -hostports and -method are required")
	}
	klog.SetLevel(klog.LevelFatal)
	p, err := generic.NewThriftFileProvider(*idl)
	if err != nil {
		fail("jsonpeer call: load %s: %v", *idl, err)
	}
	g, err := generic.JSONThriftGeneric(p)
	if err != nil {
		fail("jsonpeer call: %v", err)
	}
	tp := transport.Framed
	if *trans == "ttheader" {
		tp = transport.TTHeader
	}
	cli, err := genericclient.NewClient(*service, g,
		client.WithHostPorts(strings.Split(*hostports, ",")...),
		client.WithTransportProtocol(tp),
		client.WithRPCTimeout(10*time.Second))
	if err != nil {
		fail("jsonpeer call: %v", err)
	}
	resp, err := cli.GenericCall(context.Background(), *method, *data)
	if err != nil {
		fmt.Printf("ERROR %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	fmt.Printf("REPLY %v\n", resp)
}

// metaEcho answers with what the Kitex metainfo server handler (on by default,
// kitex internal/server/option.go) decoded from the request's TTHeader string keys.
type metaEcho struct{}

func (metaEcho) Echo(ctx context.Context, req *echo.Request) (*echo.Response, error) {
	transient := metainfo.GetAllValues(ctx)
	for k, v := range transient {
		metainfo.SendBackwardValue(ctx, "echo-"+k, v)
	}
	seen, err := json.Marshal(map[string]interface{}{
		"message":    req.GetMessage(),
		"transient":  nonNil(transient),
		"persistent": nonNil(metainfo.GetAllPersistentValues(ctx)),
	})
	if err != nil {
		return nil, err
	}
	return &echo.Response{Message: string(seen)}, nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func metaserver(args []string) {
	fs := flag.NewFlagSet("jsonpeer metaserver", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	_ = fs.Parse(args)
	klog.SetOutput(os.Stderr)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fail("jsonpeer metaserver: listen %s: %v", *listen, err)
	}
	svr := echosvc.NewServer(&metaEcho{},
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
		fail("jsonpeer metaserver: %v", err)
	}
}

func fail(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(2)
}
