// Command kitexserver runs one real Kitex server variant for the kitex_fast interop tests.
//
//	kitexserver -mode default|meta|echometa|notutf8|mux|generic-v1|sizelimit|multi -service echo|rich [-max-size N] [-listen 127.0.0.1:0] [-stats 127.0.0.1:0]
//
// "echometa" is "meta" that also tells the client what it received: each TTHeader reply carries
// the string header "received-rpc-timeout-ms", the RPCTimeout (int key 12) of the request as
// Kitex's ServerTTHeaderHandler read it ("0" when there was none), and "received-traceparent",
// the transient metainfo value "traceparent" when the request carried one. "notutf8" answers every TTHeader
// request with string headers whose bytes are not UTF-8 (a value ff fe, a name "bad-" fe).
//
// It binds its own listener, prints exactly one line "LISTENING <host:port>" on stdout once the
// server is serving, and runs until SIGTERM/SIGINT (graceful stop, exit status 0).
//
// With -stats it also serves, over plain HTTP on that address (printed first as "STATS
// <host:port>"), what a test needs to see the server's side of the connection model: GET /stats
// returns {"in_flight","max_in_flight","handled","peers"} (requests in the handler now, the most
// at once, requests handled, distinct client addresses seen, i.e. connections used) and
// POST /reset zeroes them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudwego/gopkg/protocol/thrift"
	"github.com/cloudwego/kitex/pkg/generic"
	"github.com/cloudwego/kitex/pkg/kerrors"
	"github.com/cloudwego/kitex/pkg/klog"
	"github.com/cloudwego/kitex/pkg/endpoint"
	"github.com/cloudwego/kitex/pkg/remote"
	"github.com/cloudwego/kitex/pkg/remote/codec"
	"github.com/cloudwego/kitex/pkg/rpcinfo"
	"github.com/bytedance/gopkg/cloud/metainfo"
	"github.com/cloudwego/kitex/pkg/transmeta"
	"github.com/cloudwego/kitex/server"
	"github.com/cloudwego/kitex/server/genericserver"

	"github.com/kitex-fast/interop/kitex_gen/echo"
	echosvc "github.com/kitex-fast/interop/kitex_gen/echo/echo"
	"github.com/kitex-fast/interop/kitex_gen/rich"
	richsvc "github.com/kitex-fast/interop/kitex_gen/rich/rich"
)

// echoHandler is the Dapr test scenario: reply = request + ",hi Kitex".
type echoHandler struct{}

func (echoHandler) Echo(_ context.Context, req *echo.Request) (*echo.Response, error) {
	return &echo.Response{Message: req.GetMessage() + ",hi Kitex"}, nil
}

type richHandler struct{}

func (richHandler) Roundtrip(_ context.Context, value *rich.AllTypes) (*rich.AllTypes, error) {
	return value, nil
}

func (richHandler) RaiseDeclared(_ context.Context, code int32, reason string) (string, error) {
	return "", &rich.RichError{Code: code, Reason: reason}
}

// Sleep honours the context deadline, which a "meta" server (WithEnableContextTimeout) derives
// from TTHeader int key 12 RPCTimeout (kitex server/middlewares.go serverTimeoutMW only sets the
// deadline; a handler that ignores ctx is never interrupted).
func (richHandler) Sleep(ctx context.Context, millis int32) (string, error) {
	t := time.NewTimer(time.Duration(millis) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return fmt.Sprintf("slept %d", millis), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (richHandler) Fail(_ context.Context, message string) (string, error) {
	return "", errors.New(message)
}

func (richHandler) Biz(_ context.Context, code int32, message string, extra map[string]string) (string, error) {
	return "", kerrors.NewBizStatusErrorWithExtra(code, message, extra)
}

func (richHandler) Crash(_ context.Context, message string) (string, error) {
	panic(message)
}

// genericEchoV1 mirrors the Dapr e2e echo server: a V1 binary generic handler that receives the
// full request message and must return a full REPLY message carrying the request's seq id
// (Kitex does not fix the seq id for V1, see kitex pkg/generic/binarythrift_codec.go).
type genericEchoV1 struct{}

func (genericEchoV1) GenericCall(_ context.Context, method string, request interface{}) (interface{}, error) {
	buf, ok := request.([]byte)
	if !ok {
		return nil, fmt.Errorf("generic-v1: request is %T, want []byte", request)
	}
	args := echo.NewEchoEchoArgs()
	name, seq, err := thrift.UnmarshalFastMsg(buf, args)
	if err != nil {
		return nil, fmt.Errorf("generic-v1: decode %q request: %w", method, err)
	}
	if name != "echo" {
		return nil, fmt.Errorf("generic-v1: unknown method %q", name)
	}
	res := echo.NewEchoEchoResult()
	res.Success = &echo.Response{Message: args.GetReq().GetMessage() + ",hi Kitex"}
	return thrift.MarshalFastMsg(name, thrift.REPLY, seq, res)
}

// replyHeaders is a server MetaHandler that adds string headers to every reply. It runs after
// transmeta.ServerTTHeaderHandler, whose ReadMeta set the request's RPCTimeout (int key 12) into
// the RPCInfo config (kitex v0.16.3 pkg/transmeta/ttheader.go); the TTHeader codec writes the
// reply message's TransStrInfo (pkg/remote/codec/header_codec.go).
type replyHeaders struct{ echoTimeout, notUTF8 bool }

func (h replyHeaders) WriteMeta(ctx context.Context, msg remote.Message) (context.Context, error) {
	out := map[string]string{}
	if h.echoTimeout {
		ms := int64(0)
		if ri := msg.RPCInfo(); ri != nil && ri.Config() != nil {
			ms = ri.Config().RPCTimeout().Milliseconds()
		}
		out["received-rpc-timeout-ms"] = strconv.FormatInt(ms, 10)
		// The trace context a Dapr component forwards as transient metainfo
		// (RPC_TRANSIT_traceparent), as Kitex's default metainfo handler put it in ctx.
		if tp, ok := metainfo.GetValue(ctx, "traceparent"); ok {
			out["received-traceparent"] = tp
		}
	}
	if h.notUTF8 {
		out["not-utf8"] = "\xff\xfe"
		out["bad-\xfe"] = "name"
	}
	msg.TransInfo().PutTransStrInfo(out)
	return ctx, nil
}

func (replyHeaders) ReadMeta(ctx context.Context, _ remote.Message) (context.Context, error) {
	return ctx, nil
}

// stats counts what the handlers see: a middleware runs around every request.
type stats struct {
	mu          sync.Mutex
	inFlight    int
	maxInFlight int
	handled     int
	peers       map[string]struct{}
}

func (s *stats) middleware(next endpoint.Endpoint) endpoint.Endpoint {
	return func(ctx context.Context, req, resp interface{}) error {
		peer := ""
		if ri := rpcinfo.GetRPCInfo(ctx); ri != nil && ri.From() != nil && ri.From().Address() != nil {
			peer = ri.From().Address().String()
		}
		s.mu.Lock()
		s.inFlight++
		if s.inFlight > s.maxInFlight {
			s.maxInFlight = s.inFlight
		}
		s.peers[peer] = struct{}{}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inFlight--
			s.handled++
			s.mu.Unlock()
		}()
		return next(ctx, req, resp)
	}
}

func (s *stats) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.URL.Path {
	case "/reset":
		s.maxInFlight, s.handled, s.peers = s.inFlight, 0, map[string]struct{}{}
	case "/stats":
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]int{
		"in_flight": s.inFlight, "max_in_flight": s.maxInFlight, "handled": s.handled, "peers": len(s.peers),
	})
}

func main() {
	mode := flag.String("mode", "default", "default|meta|echometa|notutf8|mux|generic-v1|sizelimit|multi")
	service := flag.String("service", "echo", "echo|rich (ignored by multi and generic-v1)")
	maxSize := flag.Int("max-size", 0, "payload size limit for -mode sizelimit")
	listen := flag.String("listen", "127.0.0.1:0", "listen address")
	statsAddr := flag.String("stats", "", "serve request statistics over HTTP on this address")
	flag.Parse()
	if flag.NArg() != 0 {
		usage("unexpected arguments: %s", strings.Join(flag.Args(), " "))
	}
	klog.SetOutput(os.Stderr)
	// Catch SIGTERM/SIGINT from the very start: Kitex installs its own handler only inside Run
	// (after the LISTENING line), and a signal before that would kill the process uncleanly.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kitexserver: listen %s: %v\n", *listen, err)
		os.Exit(1)
	}
	opts := []server.Option{
		server.WithListener(ln),
		server.WithExitWaitTime(time.Second),
		server.WithExitSignal(func() <-chan error {
			exit := make(chan error, 1)
			go func() { <-sigs; exit <- nil }()
			return exit
		}),
	}
	if *statsAddr != "" {
		st := &stats{peers: map[string]struct{}{}}
		sln, err := net.Listen("tcp", *statsAddr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kitexserver: listen %s: %v\n", *statsAddr, err)
			os.Exit(1)
		}
		go func() { _ = http.Serve(sln, http.HandlerFunc(st.serveHTTP)) }()
		fmt.Fprintf(os.Stdout, "STATS %s\n", sln.Addr().String())
		opts = append(opts, server.WithMiddleware(st.middleware))
	}
	switch *mode {
	case "default", "multi", "generic-v1":
	case "meta":
		opts = append(opts,
			server.WithMetaHandler(transmeta.ServerTTHeaderHandler),
			server.WithEnableContextTimeout(true))
	case "echometa":
		opts = append(opts,
			server.WithMetaHandler(transmeta.ServerTTHeaderHandler),
			server.WithMetaHandler(replyHeaders{echoTimeout: true}),
			server.WithEnableContextTimeout(true))
	case "notutf8":
		opts = append(opts, server.WithMetaHandler(replyHeaders{notUTF8: true}))
	case "mux":
		opts = append(opts, server.WithMuxTransport())
	case "sizelimit":
		if *maxSize <= 0 {
			usage("-mode sizelimit needs -max-size N > 0")
		}
		opts = append(opts, server.WithCodec(codec.NewDefaultCodecWithSizeLimit(*maxSize)))
	default:
		usage("unknown -mode %q", *mode)
	}

	var svr server.Server
	switch {
	case *mode == "generic-v1":
		svr = genericserver.NewServer(&genericEchoV1{}, generic.BinaryThriftGeneric(), opts...)
	case *mode == "multi":
		// Same options the generated NewServer adds; both services on one server, routed by the
		// TTHeader string key "isn" (kitex server/service.go SearchService).
		svr = server.NewServer(append(opts, server.WithCompatibleMiddlewareForUnary())...)
		must(echosvc.RegisterService(svr, &echoHandler{}))
		must(richsvc.RegisterService(svr, &richHandler{}))
	case *service == "echo":
		svr = echosvc.NewServer(&echoHandler{}, opts...)
	case *service == "rich":
		svr = richsvc.NewServer(&richHandler{}, opts...)
	default:
		usage("unknown -service %q", *service)
	}

	// Start hooks run right after the transport server started serving the listener
	// (kitex server/server.go Run); the listener is bound already, so connects queue anyway.
	server.RegisterStartHook(func() {
		fmt.Fprintf(os.Stdout, "LISTENING %s\n", ln.Addr().String())
		os.Stdout.Sync()
	})
	// Run returns after SIGINT/SIGTERM (Kitex's default exit signal) and a graceful Stop.
	if err := svr.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "kitexserver: %v\n", err)
		os.Exit(1)
	}
}

func must(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "kitexserver: %v\n", err)
		os.Exit(1)
	}
}

func usage(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "kitexserver: "+format+"\n", a...)
	flag.Usage()
	os.Exit(2)
}
