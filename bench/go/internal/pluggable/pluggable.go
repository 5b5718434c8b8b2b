// Package pluggable serves one Dapr pluggable OutputBinding component on a unix socket: the
// scaffolding every Go component needs (socket, gRPC reflection for daprd's discovery, Init,
// ListOperations, Ping), with Invoke supplied by the caller.
package pluggable

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	compv1 "github.com/dapr/dapr/pkg/proto/components/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
)

// InvokeFunc is the component's Invoke.
type InvokeFunc func(ctx context.Context, req *compv1.InvokeRequest) (*compv1.InvokeResponse, error)

type outputBinding struct {
	compv1.UnimplementedOutputBindingServer
	invoke InvokeFunc
}

func (outputBinding) Init(context.Context, *compv1.OutputBindingInitRequest) (*compv1.OutputBindingInitResponse, error) {
	return &compv1.OutputBindingInitResponse{}, nil
}

func (outputBinding) ListOperations(context.Context, *compv1.ListOperationsRequest) (*compv1.ListOperationsResponse, error) {
	return &compv1.ListOperationsResponse{Operations: []string{"get"}}, nil
}

func (outputBinding) Ping(context.Context, *compv1.PingRequest) (*compv1.PingResponse, error) {
	return &compv1.PingResponse{}, nil
}

func (b outputBinding) Invoke(ctx context.Context, req *compv1.InvokeRequest) (*compv1.InvokeResponse, error) {
	return b.invoke(ctx, req)
}

// Serve listens on socket (removing a stale file first: daprd hangs on a dead socket), prints
// "LISTENING <socket>" on stdout, and serves until SIGTERM/SIGINT; then it stops and removes the
// socket. Discovery needs the socket in place before daprd starts.
func Serve(socket string, invoke InvokeFunc) error {
	_ = os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	defer os.Remove(socket)
	srv := grpc.NewServer()
	compv1.RegisterOutputBindingServer(srv, outputBinding{invoke: invoke})
	reflection.Register(srv) // v1 and v1alpha; daprd asks v1alpha for ListServices
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			srv.Stop()
		}
	}()
	fmt.Printf("LISTENING %s\n", socket)
	os.Stdout.Sync()
	return srv.Serve(ln)
}
