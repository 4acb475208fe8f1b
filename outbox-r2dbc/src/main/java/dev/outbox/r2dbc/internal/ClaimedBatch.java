package dev.outbox.r2dbc.internal;

import java.time.Instant;
import java.util.UUID;

/**
 * Internal (the relay's protocol with the table; may change without notice). A batch claimed by {@link RelayStore#claim}: the stored bytes plus the lease that fences its
 * settlement. Settle it with {@link RelayStore#delete}, {@link RelayStore#retryLater}, {@link
 * RelayStore#release} or {@link RelayStore#deadLetter}, passing this object back.
 *
 * @param batchId KSUID of the batch
 * @param insertSeq position in insert order: the row's own {@code insert_seq} (settlement finds
 *     the row by it)
 * @param messageCount messages in {@code rawData}, as written
 * @param writeRetries failed publish attempts before this claim
 * @param rawData the encoded batch (owned by this record; do not modify)
 * @param insertTime when the batch was written
 * @param leaseToken the token that every settlement must present
 * @param leaseExpiresAt after this, another relay may claim the batch again
 */
public record ClaimedBatch(
    String batchId,
    long insertSeq,
    int messageCount,
    int writeRetries,
    byte[] rawData,
    Instant insertTime,
    UUID leaseToken,
    Instant leaseExpiresAt) {

  private static final byte[] NO_DATA = new byte[0];

  /** This claim without its stored bytes, to hold on to after decoding (settlement needs none). */
  public ClaimedBatch withoutData() {
    return new ClaimedBatch(batchId, insertSeq, messageCount, writeRetries, NO_DATA, insertTime,
        leaseToken, leaseExpiresAt);
  }
}
