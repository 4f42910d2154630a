// Command sendbatch sends one text message to many recipients through an imgate gateway
// and prints one line per outcome, then the summary. It exits 1 unless every unique
// recipient got exactly one outcome.
//
//	go run ./examples/go -target 127.0.0.1:50051 -to bob,carol,ghost1,bob -text hi
//
// The stubs come from protos/imgate/v1/gateway.proto (see clients/go/README.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"

	imgatev1 "github.com/imgate/imgate/gen/go/imgate/v1"
)

func main() {
	target := flag.String("target", "127.0.0.1:50051", "gateway HOST:PORT")
	backend := flag.String("backend", "", "backend name (empty: the gateway's default)")
	sender := flag.String("from", "", "sender account id (empty on tencent: the app admin)")
	to := flag.String("to", "", "recipient ids, comma-separated")
	text := flag.String("text", "hello from Go", "text to send")
	requestID := flag.String("request-id", "", "idempotency key")
	flag.Parse()
	recipients := strings.Split(*to, ",")
	if err := run(*target, &imgatev1.BatchSendRequest{
		RequestId:    *requestID,
		Backend:      *backend,
		SenderId:     *sender,
		RecipientIds: recipients,
		Message: &imgatev1.Message{
			Content: &imgatev1.Message_Text{Text: &imgatev1.TextContent{Text: *text}},
		},
	}); err != nil {
		fmt.Fprintln(os.Stderr, "sendbatch:", err)
		os.Exit(1)
	}
}

func run(target string, request *imgatev1.BatchSendRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, target, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		return fmt.Errorf("dial %s: %w", target, err)
	}
	defer conn.Close()
	stream, err := imgatev1.NewGatewayServiceClient(conn).BatchSend(ctx, request)
	if err != nil {
		return err
	}
	seen := map[string]int{}
	var summary *imgatev1.BatchSummary
	for {
		response, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		for _, outcome := range response.Outcomes {
			seen[outcome.RecipientId]++
			line := outcome.RecipientId + "  " + outcome.State.String()
			if outcome.Reason != imgatev1.FailureReason_FAILURE_REASON_UNSPECIFIED {
				line += "  " + outcome.Reason.String()
			}
			fmt.Println(line)
		}
		if response.Summary != nil {
			summary = response.Summary
		}
	}
	if summary == nil {
		return fmt.Errorf("the stream ended without a summary")
	}
	fmt.Printf("total=%d accepted=%d failed=%d uncertain=%d duplicates_removed=%d\n",
		summary.Total, summary.Accepted, summary.Failed, summary.Uncertain,
		summary.DuplicatesRemoved)
	unique := map[string]bool{}
	for _, id := range request.RecipientIds {
		unique[id] = true
	}
	if len(seen) != len(unique) || int(summary.Total) != len(unique) {
		return fmt.Errorf("%d outcomes for %d unique recipients", len(seen), len(unique))
	}
	for id, count := range seen {
		if count != 1 || !unique[id] {
			return fmt.Errorf("recipient %q: %d outcomes", id, count)
		}
	}
	return nil
}
