package dev.outbox.test;

import dev.outbox.r2dbc.Message;
import java.util.List;

/**
 * The outbox rows one committed transaction wrote, in insert order.
 *
 * @param transactionId the PostgreSQL transaction id ({@code writer_xid})
 * @param batches its rows, in insert order; unmodifiable and never empty
 */
public record OutboxTransaction(long transactionId, List<OutboxBatch> batches) {

  public OutboxTransaction {
    batches = List.copyOf(batches);
    if (batches.isEmpty()) {
      throw new IllegalArgumentException("A transaction of the outbox has at least one batch");
    }
  }

  /** The messages of all its batches, in the order written. */
  public List<Message> messages() {
    return batches.stream().flatMap(batch -> batch.messages().stream()).toList();
  }
}
