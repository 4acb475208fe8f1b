package dev.outbox.test;

import dev.outbox.r2dbc.Message;
import java.time.Instant;
import java.util.List;
import java.util.Objects;

/**
 * One outbox row as the test sees it: what one {@code OutboxWriter.write} stored (one row per key
 * with {@code rowPerKey(true)}), decoded.
 *
 * @param batchId the row's {@code batch_id} (a KSUID)
 * @param transactionId the id of the transaction that wrote it ({@code writer_xid}); the rows of
 *     one transaction share it
 * @param insertTime when it was inserted
 * @param messages its messages, in the order written; unmodifiable
 */
public record OutboxBatch(String batchId, long transactionId, Instant insertTime,
    List<Message> messages) {

  public OutboxBatch {
    Objects.requireNonNull(batchId, "batchId");
    Objects.requireNonNull(insertTime, "insertTime");
    messages = List.copyOf(messages);
  }
}
