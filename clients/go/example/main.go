// Command example is a sessiond client in Go (grpc-go), built from the code
// `make clients-go` generates from proto/.
//
// It runs one pass over the API against a running server and prints what it
// saw as JSON on stdout: a health check, CreateSession, ValidateSession, one
// batch on ValidateSessionStream, RevokeSessions, and ValidateSession again
// (which must now say REVOKED). It exits 1 when a call fails or an answer is
// not what the API promises, 2 on bad usage. test/55-go-client.test.ts runs it
// against a real server; it is also a starting point for Go backends.
//
// The API key of its principal comes from the variable SESSIOND_API_KEY, never
// a flag (argv shows in ps), and goes on every call except the health check as
// "authorization: Bearer <key>".
//
//	make clients-go
//	SESSIOND_API_KEY=sk_sessiond_... clients/go/gen/bin/sessiond-go-example 127.0.0.1:50051 [-ca-file ca.pem]
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	sessionsv1 "sessiond/gen/sessions/v1"
)

// The response header by which the server says it reads batches on
// ValidateSessionStream, and how many items one message may carry.
const batchMaxHeader = "x-sessiond-validate-batch-max"

// bearer sends the API key on every call. grpc-go would refuse to send
// credentials that require transport security over a plaintext connection;
// the key is sent either way because loopback and in-cluster deployments run
// without TLS, and the server decides what it accepts.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

type output struct {
	GRPCVersion string       `json:"grpc_version"`
	Health      *healthOut   `json:"health,omitempty"`
	Create      *createOut   `json:"create,omitempty"`
	Validate    *validateOut `json:"validate,omitempty"`
	Stream      *streamOut   `json:"stream,omitempty"`
	Revoke      *revokeOut   `json:"revoke,omitempty"`
	Error       *rpcError    `json:"error,omitempty"`
	Failed      string       `json:"failed,omitempty"`
}

type healthOut struct {
	Status      string `json:"status"`
	Liveness    string `json:"liveness"`
	JournalMode string `json:"journal_mode"`
}

type createOut struct {
	ID              string            `json:"id"`
	ServerID        string            `json:"server_id"`
	Subject         string            `json:"subject"`
	Attributes      map[string]string `json:"attributes"`
	TokenLength     int               `json:"token_length"`
	LifetimeSeconds int64             `json:"lifetime_seconds"`
}

type validateOut struct {
	Valid bool   `json:"valid"`
	ID    string `json:"id"`
}

type answerOut struct {
	CorrelationID uint64 `json:"correlation_id"`
	Valid         bool   `json:"valid"`
	ID            string `json:"id,omitempty"`
	Reason        string `json:"reason"`
	ErrorCode     int32  `json:"error_code"`
	ErrorMessage  string `json:"error_message,omitempty"`
}

type streamOut struct {
	BatchMax int                  `json:"batch_max"`
	Answers  map[string]answerOut `json:"answers"`
}

type revokeOut struct {
	RevokedCount int64  `json:"revoked_count"`
	ValidAfter   bool   `json:"valid_after"`
	ReasonAfter  string `json:"reason_after"`
}

type rpcError struct {
	Call    string `json:"call"`
	Code    string `json:"code"`
	Details string `json:"details"`
}

// callError is a failed RPC, named by the call that made it.
type callError struct {
	call string
	err  error
}

func (e *callError) Error() string { return e.call + ": " + e.err.Error() }

func failed(call string, err error) error { return &callError{call, err} }

func main() {
	os.Exit(run())
}

func run() int {
	flags := flag.NewFlagSet("sessiond-go-example", flag.ContinueOnError)
	caFile := flags.String("ca-file", "", "PEM CA bundle: connect with TLS, trusting it")
	certFile := flags.String("cert-file", "", "PEM client certificate (mTLS), with -key-file")
	keyFile := flags.String("key-file", "", "PEM private key of -cert-file")
	serverID := flags.String("server-id", "web-go", "server_id of the session it creates")
	subject := flags.String("subject", "alice-go", "subject of the session it creates, and of the revocation")
	timeout := flags.Duration("timeout", 10*time.Second, "deadline of each call")
	flags.Usage = func() {
		fmt.Fprintln(flags.Output(), "usage: sessiond-go-example [flags] host:port   (API key from SESSIOND_API_KEY)")
		flags.PrintDefaults()
	}
	if err := flags.Parse(os.Args[1:]); err == flag.ErrHelp {
		return 0
	} else if err != nil {
		return 2
	}
	if flags.NArg() != 1 {
		flags.Usage()
		return 2
	}
	if (*certFile == "") != (*keyFile == "") {
		fmt.Fprintln(os.Stderr, "sessiond-go-example: -cert-file and -key-file go together")
		return 2
	}

	opts := []grpc.DialOption{}
	if *caFile != "" || *certFile != "" {
		cfg, err := tlsConfig(*caFile, *certFile, *keyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sessiond-go-example:", err)
			return 2
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	} else {
		opts = append(opts, grpc.WithInsecure())
	}
	// The key goes on each call rather than on the connection, so that the
	// health check can be made without it, as a load balancer's would be.
	var callOpts []grpc.CallOption
	if key := os.Getenv("SESSIOND_API_KEY"); key != "" {
		callOpts = append(callOpts, grpc.PerRPCCredentials(bearer(key)))
	}

	// Dial does not wait for the connection: a server that is not there shows
	// as UNAVAILABLE on the first call, within its deadline.
	conn, err := grpc.Dial(flags.Arg(0), opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sessiond-go-example:", err)
		return 2
	}
	defer conn.Close()

	out := &output{GRPCVersion: grpc.Version}
	err = pass(conn, callOpts, *serverID, *subject, *timeout, out)
	var ce *callError
	switch {
	case err == nil:
	case errors.As(err, &ce):
		st := status.Convert(ce.err)
		out.Error = &rpcError{Call: ce.call, Code: canonicalCode(st.Code()), Details: st.Message()}
		fmt.Fprintf(os.Stderr, "sessiond-go-example: %s: %s: %s\n", ce.call, out.Error.Code, out.Error.Details)
	default:
		out.Failed = err.Error()
		fmt.Fprintln(os.Stderr, "sessiond-go-example:", err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if encErr := enc.Encode(out); encErr != nil {
		fmt.Fprintln(os.Stderr, "sessiond-go-example:", encErr)
		return 1
	}
	if err != nil {
		return 1
	}
	return 0
}

func tlsConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := ioutil.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// pass fills out as it goes, so that a failure still shows what came before it.
func pass(conn *grpc.ClientConn, callOpts []grpc.CallOption, serverID, subject string, timeout time.Duration, out *output) error {
	health := healthpb.NewHealthClient(conn)
	sessions := sessionsv1.NewSessionServiceClient(conn)
	call := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), timeout)
	}

	// Health needs no key: "" is the whole server (readiness), "liveness"
	// answers SERVING while the process answers at all.
	ctx, cancel := call()
	var header metadata.MD
	ready, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: ""}, grpc.Header(&header))
	cancel()
	if err != nil {
		return failed("Health.Check", err)
	}
	ctx, cancel = call()
	live, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "liveness"})
	cancel()
	if err != nil {
		return failed("Health.Check(liveness)", err)
	}
	out.Health = &healthOut{Status: ready.Status.String(), Liveness: live.Status.String(), JournalMode: first(header, "x-sessiond-journal-mode")}
	if ready.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("the server is %s, not SERVING", ready.Status)
	}

	ctx, cancel = call()
	created, err := sessions.CreateSession(ctx, &sessionsv1.CreateSessionRequest{
		ServerId:    serverID,
		Subject:     subject,
		Attributes:  map[string]string{"lang": "go"},
		Ttl:         durationpb.New(time.Hour),
		IdleTimeout: durationpb.New(10 * time.Minute),
	}, callOpts...)
	cancel()
	if err != nil {
		return failed("CreateSession", err)
	}
	s := created.GetSession()
	out.Create = &createOut{
		ID: s.GetId(), ServerID: s.GetServerId(), Subject: s.GetSubject(), Attributes: s.GetAttributes(),
		TokenLength:     len(created.GetToken()),
		LifetimeSeconds: s.GetExpireTime().GetSeconds() - s.GetCreateTime().GetSeconds(),
	}

	ctx, cancel = call()
	v, err := sessions.ValidateSession(ctx, &sessionsv1.ValidateSessionRequest{Token: created.GetToken(), Touch: true}, callOpts...)
	cancel()
	if err != nil {
		return failed("ValidateSession", err)
	}
	out.Validate = &validateOut{Valid: v.GetValid(), ID: v.GetSession().GetId()}
	if !v.GetValid() || v.GetSession().GetId() != s.GetId() {
		return fmt.Errorf("the new token did not validate to session %s (valid=%v, reason %s)", s.GetId(), v.GetValid(), v.GetReason())
	}

	// One batch: the new token, a token never issued, and an empty token. The
	// empty one is a bad item, not a bad stream: it gets an answer with
	// error_code set, and the others are answered all the same.
	tokens := map[uint64]string{1: created.GetToken(), 2: "never-issued-" + s.GetId(), 3: ""}
	stream, err := validateBatch(sessions, callOpts, tokens, timeout)
	out.Stream = stream
	if err != nil {
		return err
	}
	if a := stream.Answers["1"]; !a.Valid || a.ID != s.GetId() {
		return fmt.Errorf("stream: the new token did not validate: %+v", a)
	}
	if a := stream.Answers["2"]; a.Valid || a.Reason != sessionsv1.InvalidReason_INVALID_REASON_NOT_FOUND.String() {
		return fmt.Errorf("stream: a token never issued was not NOT_FOUND: %+v", a)
	}
	if a := stream.Answers["3"]; a.ErrorCode == 0 {
		return fmt.Errorf("stream: an empty token was not refused: %+v", a)
	}

	ctx, cancel = call()
	revoked, err := sessions.RevokeSessions(ctx, &sessionsv1.RevokeSessionsRequest{ServerId: serverID, Subject: subject}, callOpts...)
	cancel()
	if err != nil {
		return failed("RevokeSessions", err)
	}
	ctx, cancel = call()
	after, err := sessions.ValidateSession(ctx, &sessionsv1.ValidateSessionRequest{Token: created.GetToken()}, callOpts...)
	cancel()
	if err != nil {
		return failed("ValidateSession (after revoking)", err)
	}
	out.Revoke = &revokeOut{RevokedCount: revoked.GetRevokedCount(), ValidAfter: after.GetValid(), ReasonAfter: after.GetReason().String()}
	if after.GetValid() || after.GetReason() != sessionsv1.InvalidReason_INVALID_REASON_REVOKED {
		return fmt.Errorf("the revoked token still validates, or not as REVOKED (valid=%v, reason %s)", after.GetValid(), after.GetReason())
	}
	return nil
}

// validateBatch sends the tokens on one ValidateSessionStream, half-closes,
// and reads answers until the server ends the stream. A server that does not
// send the batch header predates batches and would ignore items, so it gets
// one validation per message instead.
func validateBatch(sessions sessionsv1.SessionServiceClient, callOpts []grpc.CallOption, tokens map[uint64]string, timeout time.Duration) (*streamOut, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream, err := sessions.ValidateSessionStream(ctx, callOpts...)
	if err != nil {
		return nil, failed("ValidateSessionStream", err)
	}
	header, err := stream.Header()
	if err != nil {
		return nil, failed("ValidateSessionStream", err)
	}
	out := &streamOut{Answers: map[string]answerOut{}}
	if max, convErr := strconv.Atoi(first(header, batchMaxHeader)); convErr == nil {
		out.BatchMax = max
	}
	if out.BatchMax >= len(tokens) {
		req := &sessionsv1.ValidateSessionStreamRequest{}
		for id, token := range tokens {
			req.Items = append(req.Items, &sessionsv1.ValidateSessionStreamItem{CorrelationId: id, Token: token})
		}
		err = stream.Send(req)
	} else {
		for id, token := range tokens {
			if err = stream.Send(&sessionsv1.ValidateSessionStreamRequest{CorrelationId: id, Token: token}); err != nil {
				break
			}
		}
	}
	// Send reports io.EOF when the server has ended the stream; Recv has its status.
	if err != nil && err != io.EOF {
		return out, failed("ValidateSessionStream.Send", err)
	}
	if err := stream.CloseSend(); err != nil {
		return out, failed("ValidateSessionStream.CloseSend", err)
	}
	record := func(a answerOut) { out.Answers[strconv.FormatUint(a.CorrelationID, 10)] = a }
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, failed("ValidateSessionStream.Recv", err)
		}
		if len(msg.GetAnswers()) == 0 {
			record(answerOut{
				CorrelationID: msg.GetCorrelationId(), Valid: msg.GetValid(), ID: msg.GetSession().GetId(),
				Reason: msg.GetReason().String(), ErrorCode: msg.GetErrorCode(), ErrorMessage: msg.GetErrorMessage(),
			})
		}
		for _, a := range msg.GetAnswers() {
			record(answerOut{
				CorrelationID: a.GetCorrelationId(), Valid: a.GetValid(), ID: a.GetSession().GetId(),
				Reason: a.GetReason().String(), ErrorCode: a.GetErrorCode(), ErrorMessage: a.GetErrorMessage(),
			})
		}
	}
	if len(out.Answers) != len(tokens) {
		return out, fmt.Errorf("stream: %d answers to %d validations", len(out.Answers), len(tokens))
	}
	for id := range tokens {
		if _, ok := out.Answers[strconv.FormatUint(id, 10)]; !ok {
			return out, fmt.Errorf("stream: no answer for correlation_id %d", id)
		}
	}
	return out, nil
}

// canonicalCode names a status code as the gRPC documentation and the other
// clients do (PERMISSION_DENIED); grpc-go's String() says PermissionDenied.
func canonicalCode(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
