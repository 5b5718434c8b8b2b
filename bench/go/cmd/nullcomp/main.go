// Command nullcomp is a Dapr pluggable OutputBinding component that answers Invoke with the
// request's data and calls nothing: the floor of any pluggable component (grpc-go, as a Go
// component author would write it).
//
//	nullcomp -socket DIR/NAME.sock
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	compv1 "github.com/dapr/dapr/pkg/proto/components/v1"

	"github.com/kitex-fast/daprbench/internal/pluggable"
)

func main() {
	socket := flag.String("socket", "", "unix socket path; daprd registers bindings.<file name without .sock>")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "nullcomp: -socket is required")
		os.Exit(2)
	}
	err := pluggable.Serve(*socket, func(_ context.Context, req *compv1.InvokeRequest) (*compv1.InvokeResponse, error) {
		return &compv1.InvokeResponse{Data: req.GetData()}, nil
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "nullcomp: %v\n", err)
		os.Exit(1)
	}
}
