// Command kitexpeer is the Go peer of `kitex-fast component`: a Dapr pluggable OutputBinding
// component that calls Kitex the way Dapr's Go bindings.kitex did (components-contrib
// bindings/kitex, removed in Dapr 1.17): metadata from each call, one binary generic client per
// version.destService.methodName.hostPorts key behind a RWMutex, never evicted, GenericCall with
// the caller's full Thrift message, the reply message as data. What a Dapr >= 1.17 user who wants
// the old binding back would build, on Kitex v0.16.3.
//
//	kitexpeer -socket DIR/NAME.sock
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"

	compv1 "github.com/dapr/dapr/pkg/proto/components/v1"

	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/client/genericclient"
	"github.com/cloudwego/kitex/pkg/generic"
	"github.com/cloudwego/kitex/pkg/klog"

	"github.com/kitex-fast/daprbench/internal/pluggable"
)

type kitexContext struct {
	client genericclient.Client
	method string
}

type binding struct {
	mu    sync.RWMutex
	cache map[string]*kitexContext
}

func (b *binding) context(md map[string]string) (*kitexContext, error) {
	// Presence checks in the Go binding's order (contrib bindings/kitex/context.go).
	for _, k := range []string{"destService", "hostPorts", "methodName"} {
		if _, ok := md[k]; !ok {
			return nil, errors.New("missing metadata field " + k)
		}
	}
	key := md["version"] + "." + md["destService"] + "." + md["methodName"] + "." + md["hostPorts"]
	b.mu.RLock()
	kc := b.cache[key]
	b.mu.RUnlock()
	if kc != nil {
		return kc, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if kc = b.cache[key]; kc != nil {
		return kc, nil
	}
	cli, err := genericclient.NewClient(md["destService"], generic.BinaryThriftGeneric(),
		client.WithHostPorts(md["hostPorts"]))
	if err != nil {
		return nil, fmt.Errorf("create a kitex generic client err %w", err)
	}
	kc = &kitexContext{client: cli, method: md["methodName"]}
	b.cache[key] = kc
	return kc, nil
}

func (b *binding) invoke(ctx context.Context, req *compv1.InvokeRequest) (*compv1.InvokeResponse, error) {
	kc, err := b.context(req.GetMetadata())
	if err != nil {
		return nil, err
	}
	// req.Data is this call's own buffer (fresh from protobuf): the V1 generic codec may write
	// its seq id into it in place.
	resp, err := kc.client.GenericCall(ctx, kc.method, req.GetData())
	if err != nil {
		return nil, err
	}
	data, _ := resp.([]byte)
	return &compv1.InvokeResponse{Data: data}, nil
}

func main() {
	socket := flag.String("socket", "", "unix socket path; daprd registers bindings.<file name without .sock>")
	flag.Parse()
	if *socket == "" {
		fmt.Fprintln(os.Stderr, "kitexpeer: -socket is required")
		os.Exit(2)
	}
	klog.SetLevel(klog.LevelWarn)
	b := &binding{cache: map[string]*kitexContext{}}
	if err := pluggable.Serve(*socket, b.invoke); err != nil {
		fmt.Fprintf(os.Stderr, "kitexpeer: %v\n", err)
		os.Exit(1)
	}
}
