package io.imgate.examples;

import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.StatusRuntimeException;
import io.imgate.v1.BatchSendRequest;
import io.imgate.v1.BatchSendResponse;
import io.imgate.v1.BatchSummary;
import io.imgate.v1.FailureReason;
import io.imgate.v1.GatewayServiceGrpc;
import io.imgate.v1.Message;
import io.imgate.v1.RecipientOutcome;
import io.imgate.v1.TextContent;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;

/**
 * Sends one text message to many recipients through an imgate gateway and prints one line per
 * outcome, then the summary. Exits 1 unless every unique recipient got exactly one outcome.
 *
 * <pre>java io.imgate.examples.SendBatch 127.0.0.1:50051 bob,carol,ghost1,bob "hello" [backend] [sender]</pre>
 */
public final class SendBatch {
  private SendBatch() {}

  public static void main(String[] args) throws InterruptedException {
    if (args.length < 3) {
      System.err.println("usage: SendBatch HOST:PORT ID[,ID...] TEXT [BACKEND] [SENDER]");
      System.exit(2);
    }
    String[] recipients = args[1].split(",");
    BatchSendRequest request =
        BatchSendRequest.newBuilder()
            .addAllRecipientIds(Arrays.asList(recipients))
            .setMessage(
                Message.newBuilder().setText(TextContent.newBuilder().setText(args[2])))
            .setBackend(args.length > 3 ? args[3] : "")
            .setSenderId(args.length > 4 ? args[4] : "")
            .build();
    ManagedChannel channel = ManagedChannelBuilder.forTarget(args[0]).usePlaintext().build();
    int status = 0;
    try {
      status = run(channel, request, new LinkedHashSet<>(Arrays.asList(recipients)));
    } catch (StatusRuntimeException error) {
      System.err.println("SendBatch: " + error.getStatus());
      status = 1;
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.exit(status);
  }

  private static int run(ManagedChannel channel, BatchSendRequest request, Set<String> unique) {
    Iterator<BatchSendResponse> stream =
        GatewayServiceGrpc.newBlockingStub(channel)
            .withDeadlineAfter(60, TimeUnit.SECONDS)
            .batchSend(request);
    Map<String, Integer> seen = new HashMap<>();
    BatchSummary summary = null;
    while (stream.hasNext()) {
      BatchSendResponse response = stream.next();
      for (RecipientOutcome outcome : response.getOutcomesList()) {
        seen.merge(outcome.getRecipientId(), 1, Integer::sum);
        String line = outcome.getRecipientId() + "  " + outcome.getState();
        if (outcome.getReason() != FailureReason.FAILURE_REASON_UNSPECIFIED) {
          line += "  " + outcome.getReason();
        }
        System.out.println(line);
      }
      if (response.hasSummary()) {
        summary = response.getSummary();
      }
    }
    if (summary == null) {
      System.err.println("SendBatch: the stream ended without a summary");
      return 1;
    }
    System.out.printf(
        "total=%d accepted=%d failed=%d uncertain=%d duplicates_removed=%d%n",
        summary.getTotal(),
        summary.getAccepted(),
        summary.getFailed(),
        summary.getUncertain(),
        summary.getDuplicatesRemoved());
    boolean once = seen.values().stream().allMatch(count -> count == 1);
    if (!once || !seen.keySet().equals(unique) || summary.getTotal() != unique.size()) {
      System.err.printf("SendBatch: %d outcomes for %d unique recipients%n", seen.size(), unique.size());
      return 1;
    }
    return 0;
  }
}
