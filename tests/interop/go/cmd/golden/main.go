// Command golden writes DIR/frames.json: TTHeader/Framed/Buffered frames, Thrift messages and
// structs produced by Kitex's own Go code, for the kitex_fast codec tests.
//
//	golden -out DIR
//
// Two sources: (1) cloudwego/gopkg encoders (protocol/ttheader.Encode, protocol/thrift
// MarshalFastMsg / ApplicationException / FastMarshal of the generated kitex_gen types) and
// (2) frames captured from a real Kitex V1 binary-generic client (the Dapr binding's client)
// writing to an in-process TCP listener. Everything is emitted in a fixed order with fixed seq
// ids, so entries marked deterministic are byte-for-byte stable across runs.
package main

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/cloudwego/gopkg/bufiox"
	"github.com/cloudwego/gopkg/protocol/thrift"
	"github.com/cloudwego/gopkg/protocol/ttheader"
	"github.com/cloudwego/kitex/client"
	"github.com/cloudwego/kitex/client/genericclient"
	"github.com/cloudwego/kitex/pkg/generic"
	"github.com/cloudwego/kitex/pkg/klog"
	"github.com/cloudwego/kitex/pkg/transmeta"
	"github.com/cloudwego/kitex/transport"

	"github.com/kitex-fast/interop/kitex_gen/echo"
	"github.com/kitex-fast/interop/kitex_gen/rich"
)

type frameEntry struct {
	Name          string            `json:"name"`
	Transport     string            `json:"transport"`
	Frame         string            `json:"frame"`
	Payload       string            `json:"payload"`
	SeqID         *int32            `json:"seq_id"`
	Flags         int               `json:"flags"`
	StrHeaders    map[string]string `json:"str_headers"`
	IntHeaders    map[string]string `json:"int_headers"`
	ACLToken      *string           `json:"acl_token"`
	Deterministic bool              `json:"deterministic"`
}

type exceptionInfo struct {
	Type    int32  `json:"type"`
	Message string `json:"message"`
}

type messageEntry struct {
	Name       string         `json:"name"`
	Message    string         `json:"message"`
	Type       int32          `json:"type"`
	Method     string         `json:"method"`
	SeqID      int32          `json:"seq_id"`
	BodyOffset int            `json:"body_offset"`
	Exception  *exceptionInfo `json:"exception,omitempty"`
}

type structEntry struct {
	Name string `json:"name"`
	Data string `json:"data"`
	End  int    `json:"end"`
}

type golden struct {
	Generator string         `json:"generator"`
	Frames    []frameEntry   `json:"frames"`
	Messages  []messageEntry `json:"messages"`
	Structs   []structEntry  `json:"structs"`
}

func main() {
	out := flag.String("out", "", "output directory (frames.json is written there)")
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: golden -out DIR")
		os.Exit(2)
	}
	klog.SetLevel(klog.LevelFatal)
	g := golden{Generator: generatorText()}
	addMessages(&g)
	addStructs(&g)
	addEncodedFrames(&g)
	addCapturedFrames(&g)

	data, err := json.MarshalIndent(g, "", "  ")
	check(err)
	check(os.MkdirAll(*out, 0o755))
	check(os.WriteFile(filepath.Join(*out, "frames.json"), append(data, '\n'), 0o644))
}

func generatorText() string {
	s := "tests/interop/go/cmd/golden"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			switch m.Path {
			case "github.com/cloudwego/kitex", "github.com/cloudwego/gopkg":
				s += " " + m.Path + "@" + m.Version
			}
		}
	}
	return s
}

// ---- messages ---------------------------------------------------------------------------

func echoArgs(msg string) *echo.EchoEchoArgs {
	return &echo.EchoEchoArgs{Req: &echo.Request{Message: msg}}
}

// allTypes fills every field. Maps have one entry each: the generated FastWrite iterates Go
// maps, so with two or more entries the bytes would change from run to run.
func allTypes() *rich.AllTypes {
	return &rich.AllTypes{
		Flag:    true,
		Tiny:    -7,
		Small:   -12345,
		Medium:  2147483647,
		Large:   -9223372036854775807,
		Ratio:   3.25,
		Text:    "héllo, Kitex",
		Blob:    []byte{0x00, 0xff, 0x80, 0x01},
		Numbers: []int32{1, -2, 3},
		Tags:    []string{"a", "b"},
		Index:   map[string]*rich.Inner{"k": {Id: 1, Name: "one"}},
		Inner:   &rich.Inner{Id: 2, Name: "two"},
		Color:   rich.Color_BLUE,
		Inners:  []*rich.Inner{{Id: 3, Name: "three"}, {Id: 4, Name: ""}},
		Nested:  map[int64][]string{-1: {"x", "y"}},
	}
}

func addMessage(g *golden, name, method string, typ thrift.TMessageType, seq int32, body thrift.FastCodec) {
	b, err := thrift.MarshalFastMsg(method, typ, seq, body)
	check(err)
	m := messageEntry{
		Name: name, Message: hex.EncodeToString(b), Type: typ, Method: method, SeqID: seq,
		BodyOffset: thrift.Binary.MessageBeginLength(method),
	}
	if ex, ok := body.(*thrift.ApplicationException); ok {
		m.Exception = &exceptionInfo{Type: ex.TypeID(), Message: ex.Msg()}
	}
	g.Messages = append(g.Messages, m)
}

func addMessages(g *golden) {
	addMessage(g, "echo-call", "echo", thrift.CALL, 1, echoArgs("hello"))
	addMessage(g, "echo-reply", "echo", thrift.REPLY, 1,
		&echo.EchoEchoResult{Success: &echo.Response{Message: "hello,hi Kitex"}})
	addMessage(g, "echo-call-empty-string", "echo", thrift.CALL, 2, echoArgs(""))
	addMessage(g, "echo-call-seq-max", "echo", thrift.CALL, 2147483647, echoArgs("max"))
	addMessage(g, "echo-call-seq-negative", "echo", thrift.CALL, -2, echoArgs("neg"))
	addMessage(g, "echo-call-no-fields", "echo", thrift.CALL, 3, &echo.EchoEchoArgs{})
	addMessage(g, "rich-roundtrip-call", "roundtrip", thrift.CALL, 7,
		&rich.RichRoundtripArgs{Value: allTypes()})
	addMessage(g, "rich-roundtrip-reply", "roundtrip", thrift.REPLY, 7,
		&rich.RichRoundtripResult{Success: allTypes()})
	addMessage(g, "rich-raise-declared-reply", "raise_declared", thrift.REPLY, 8,
		&rich.RichRaiseDeclaredResult{Err: &rich.RichError{Code: 42, Reason: "declared"}})
	// The texts are the ones a Kitex v0.16 server really sends (see tests/interop/test_servers.py).
	addMessage(g, "exception-unknown-method", "nope", thrift.EXCEPTION, 9,
		thrift.NewApplicationException(thrift.UNKNOWN_METHOD, "unknown method nope (service Rich)"))
	addMessage(g, "exception-internal-error", "fail", thrift.EXCEPTION, 10,
		thrift.NewApplicationException(thrift.INTERNAL_ERROR, "biz error: boom"))
	addMessage(g, "exception-protocol-error", "sleep", thrift.EXCEPTION, 11,
		thrift.NewApplicationException(thrift.PROTOCOL_ERROR, "*rich.RichSleepArgs field 1 skip type 11 error: invalid data length"))
	addMessage(g, "exception-panic", "crash", thrift.EXCEPTION, 13,
		thrift.NewApplicationException(thrift.INTERNAL_ERROR, "panic: [happened in biz handler, method=Rich.crash, please check the panic at the server side] boom"))
	addMessage(g, "exception-unknown-service", "Foo", thrift.EXCEPTION, 1,
		thrift.NewApplicationException(20, "unknown service , method Foo"))
	addMessage(g, "exception-empty-message", "echo", thrift.EXCEPTION, 12,
		thrift.NewApplicationException(thrift.UNKNOWN_APPLICATION_EXCEPTION, ""))
}

// ---- structs ----------------------------------------------------------------------------

func addStruct(g *golden, name string, v thrift.FastCodec) {
	b := thrift.FastMarshal(v)
	end := len(b)
	b = append(b, 0xaa, 0xbb, 0xcc)
	g.Structs = append(g.Structs, structEntry{Name: name, Data: hex.EncodeToString(b), End: end})
}

func addStructs(g *golden) {
	addStruct(g, "empty", &echo.Request{}) // an unset string field is still written (default requiredness)
	addStruct(g, "echo-request", &echo.Request{Message: "hello"})
	addStruct(g, "echo-args", echoArgs("hello"))
	addStruct(g, "rich-inner", &rich.Inner{Id: 1, Name: "one"})
	addStruct(g, "rich-alltypes", allTypes())
	addStruct(g, "rich-roundtrip-args", &rich.RichRoundtripArgs{Value: allTypes()})
	addStruct(g, "rich-alltypes-zero", rich.NewAllTypes())
	addStruct(g, "rich-error", &rich.RichError{Code: -1, Reason: "x"})
	addStruct(g, "application-exception", thrift.NewApplicationException(thrift.PROTOCOL_ERROR, "bad"))
}

// ---- frames from gopkg's encoders --------------------------------------------------------

// specEchoPayload is the docs/protocol.md §11 payload: CALL "Echo", seq 1, args {1: {1: "hello"}}.
func specEchoPayload() []byte {
	b, err := thrift.MarshalFastMsg("Echo", thrift.CALL, 1, echoArgs("hello"))
	check(err)
	return b
}

func echoCall(seq int32, msg string) []byte {
	b, err := thrift.MarshalFastMsg("echo", thrift.CALL, seq, echoArgs(msg))
	check(err)
	return b
}

func framed(msg []byte) []byte {
	// Framed: u32 length of the message, excluding itself (kitex default_codec.go EncodePayload).
	out := binary.BigEndian.AppendUint32(nil, uint32(len(msg)))
	return append(out, msg...)
}

// ttheaderFrame encodes a TTHeader frame with gopkg's encoder and patches LENGTH = total - 4,
// as kitex default_codec.go EncodeMetaAndPayload does after writing the payload.
func ttheaderFrame(seq int32, flags ttheader.HeaderFlags, intInfo map[uint16]string, strInfo map[string]string, payload []byte) []byte {
	var buf []byte
	w := bufiox.NewBytesWriter(&buf)
	lenField, err := ttheader.Encode(context.Background(), ttheader.EncodeParam{
		Flags: flags, SeqID: seq, IntInfo: intInfo, StrInfo: strInfo,
	}, w)
	check(err)
	p, err := w.Malloc(len(payload))
	check(err)
	copy(p, payload)
	binary.BigEndian.PutUint32(lenField, uint32(w.WrittenLen()-4))
	check(w.Flush())
	return buf
}

func addEncodedFrames(g *golden) {
	spec := specEchoPayload()
	add := func(name string, frame []byte) { g.Frames = append(g.Frames, describe(name, frame)) }

	add("spec-ttheader-empty", ttheaderFrame(1, 0, nil, nil, spec))
	add("spec-ttheader-isn-tomethod", ttheaderFrame(1, 0,
		map[uint16]string{ttheader.ToMethod: "Echo"}, map[string]string{ttheader.HeaderIDLServiceName: "EchoService"}, spec))
	add("spec-ttheader-framed", ttheaderFrame(1, 0, nil, nil, framed(spec)))

	add("framed-echo", framed(echoCall(5, "hello")))
	add("buffered-echo", echoCall(6, "hello"))
	add("ttheader-empty-echo", ttheaderFrame(7, 0, nil, nil, echoCall(7, "hello")))
	add("ttheader-framed-echo", ttheaderFrame(8, 0, nil, nil, framed(echoCall(8, "hello"))))
	add("ttheader-isn", ttheaderFrame(9, 0, nil, map[string]string{"isn": "Echo"}, echoCall(9, "hello")))
	add("ttheader-int-timeout", ttheaderFrame(10, 0, map[uint16]string{ttheader.RPCTimeout: "1000"}, nil, echoCall(10, "hi")))
	add("ttheader-acl-token", ttheaderFrame(11, 0, nil,
		map[string]string{ttheader.GDPRToken: "abcdefg"}, echoCall(11, "hello")))
	add("ttheader-acl-str-int", ttheaderFrame(12, 0, map[uint16]string{ttheader.FromService: "caller"},
		map[string]string{ttheader.GDPRToken: "tok", "isn": "Echo"}, echoCall(12, "hello")))
	add("ttheader-empty-strings", ttheaderFrame(13, 0, map[uint16]string{ttheader.LogID: ""},
		map[string]string{"": ""}, echoCall(13, "")))
	add("ttheader-utf8-headers", ttheaderFrame(14, 0, nil,
		map[string]string{"RPC_PERSIST_clé": "välue ✓"}, echoCall(14, "✓")))
	add("ttheader-seq-negative", ttheaderFrame(-5, 0, nil, nil, echoCall(-5, "neg")))
	add("ttheader-flags-out-of-order", ttheaderFrame(15, ttheader.HeaderFlagSupportOutOfOrder, nil, nil, echoCall(15, "mux")))
	add("ttheader-multi-kv", ttheaderFrame(16, 0,
		map[uint16]string{
			ttheader.FromService: "caller", ttheader.ToService: "Echo", ttheader.ToMethod: "echo",
			ttheader.RPCTimeout: "1000", ttheader.MsgType: "1", ttheader.TransportType: "unframed",
		},
		map[string]string{"isn": "Echo", "RPC_PERSIST_trace": "abc", "RPC_TRANSIT_tenant": "t1", "x": ""},
		echoCall(16, "hello")))
	add("ttheader-multi-kv-acl-framed", ttheaderFrame(17, 0,
		map[uint16]string{ttheader.FromService: "caller", ttheader.ToMethod: "echo"},
		map[string]string{ttheader.GDPRToken: "token", "isn": "Echo", "k": "v"},
		framed(echoCall(17, "hello"))))
	// Replies as Kitex servers write them: default (empty header) and ServerTTHeaderHandler (MsgType 22).
	reply, err := thrift.MarshalFastMsg("echo", thrift.REPLY, 7,
		&echo.EchoEchoResult{Success: &echo.Response{Message: "hello,hi Kitex"}})
	check(err)
	add("ttheader-reply-default", ttheaderFrame(7, 0, nil, nil, reply))
	add("ttheader-reply-meta", ttheaderFrame(7, 0, map[uint16]string{ttheader.MsgType: "2"}, nil, reply))
	add("framed-reply", framed(reply))
	add("ttheader-biz-status-reply", ttheaderFrame(18, 0, map[uint16]string{ttheader.MsgType: "2"},
		map[string]string{"biz-status": "1001", "biz-message": "no", "biz-extra": `{"k":"v"}`},
		mustMsg("biz", thrift.REPLY, 18, &rich.RichBizResult{})))
}

func mustMsg(method string, typ thrift.TMessageType, seq int32, body thrift.FastCodec) []byte {
	b, err := thrift.MarshalFastMsg(method, typ, seq, body)
	check(err)
	return b
}

// ---- frames captured from a real Kitex client ---------------------------------------------

// capture runs one V1 binary-generic call against an in-process listener that records the
// request bytes and then closes the connection (so the call fails fast; only the request matters).
func capture(tp transport.Protocol, extra ...client.Option) []byte {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		var data []byte
		buf := make([]byte, 65536)
		for {
			// Loopback delivers the whole request at once; stop after a short idle period.
			_ = c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
			n, err := c.Read(buf)
			data = append(data, buf[:n]...)
			if err != nil {
				break
			}
		}
		got <- data
	}()
	opts := append([]client.Option{
		client.WithHostPorts(ln.Addr().String()),
		client.WithTransportProtocol(tp),
		client.WithRPCTimeout(2 * time.Second),
	}, extra...)
	cli, err := genericclient.NewClient("Echo", generic.BinaryThriftGeneric(), opts...)
	check(err)
	// The request's own seq id (0) is overwritten in place by the client's generated seq id.
	_, _ = cli.GenericCall(context.Background(), "echo", echoCall(0, "hello"))
	_ = cli.Close()
	data := <-got
	if len(data) == 0 {
		check(fmt.Errorf("captured nothing for transport %v", tp))
	}
	return data
}

func addCapturedFrames(g *golden) {
	// Kitex's client seq ids come from a process-wide counter (kitex pkg/rpcinfo/invocation.go
	// genSeqID), so sequential calls in a fresh process get 1, 2, 3, ...
	cases := []struct {
		name string
		tp   transport.Protocol
		opts []client.Option
	}{
		{"kitex-client-framed", transport.Framed, nil},
		{"kitex-client-buffered", transport.PurePayload, nil},
		{"kitex-client-ttheader", transport.TTHeader, nil},
		{"kitex-client-ttheader-framed", transport.TTHeaderFramed, nil},
		{"kitex-client-ttheader-meta", transport.TTHeader,
			[]client.Option{client.WithMetaHandler(transmeta.ClientTTHeaderHandler)}},
	}
	for _, c := range cases {
		e := describe(c.name, capture(c.tp, c.opts...))
		g.Frames = append(g.Frames, e)
	}
}

// ---- describing a frame ------------------------------------------------------------------

func isThriftStrict(b []byte) bool {
	return len(b) >= 4 && binary.BigEndian.Uint32(b)&0xffff0000 == 0x80010000
}

// describe detects the framing the way a Kitex server does (kitex default_codec.go DecodeMeta /
// checkPayload) and fills the JSON fields from gopkg's decoder.
func describe(name string, frame []byte) frameEntry {
	e := frameEntry{Name: name, Frame: hex.EncodeToString(frame),
		StrHeaders: map[string]string{}, IntHeaders: map[string]string{}, Deterministic: true}
	var payload []byte
	switch {
	case len(frame) >= 8 && ttheader.IsTTHeader(frame):
		p, err := ttheader.DecodeFromBytes(context.Background(), frame)
		check(err)
		seq := p.SeqID
		e.SeqID = &seq
		e.Flags = int(p.Flags)
		for k, v := range p.StrInfo {
			if k == ttheader.GDPRToken {
				tok := v
				e.ACLToken = &tok
				continue
			}
			e.StrHeaders[k] = v
		}
		for k, v := range p.IntInfo {
			e.IntHeaders[strconv.Itoa(int(k))] = v
		}
		// Map iteration order makes a block with two or more keys unstable.
		e.Deterministic = len(e.StrHeaders) <= 1 && len(e.IntHeaders) <= 1
		payload = frame[p.HeaderLen:]
		if len(payload) != p.PayloadLen {
			check(fmt.Errorf("%s: payload length %d, header says %d", name, len(payload), p.PayloadLen))
		}
		e.Transport = "ttheader"
		if !isThriftStrict(payload) && len(payload) >= 8 && isThriftStrict(payload[4:]) {
			e.Transport = "ttheader-framed"
			payload = payload[4:]
		}
	case isThriftStrict(frame):
		e.Transport = "buffered"
		payload = frame
	case len(frame) >= 8 && isThriftStrict(frame[4:]):
		e.Transport = "framed"
		payload = frame[4:]
		if int(binary.BigEndian.Uint32(frame)) != len(payload) {
			check(fmt.Errorf("%s: framed length mismatch", name))
		}
	default:
		check(fmt.Errorf("%s: unrecognised frame %x", name, frame[:min(16, len(frame))]))
	}
	e.Payload = hex.EncodeToString(payload)
	return e
}

func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "golden: %v\n", err)
		os.Exit(1)
	}
}
