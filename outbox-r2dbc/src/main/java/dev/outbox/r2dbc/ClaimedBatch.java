package dev.outbox.r2dbc;

import java.time.Instant;
import java.util.UUID;

/**
 * A batch claimed by {@link OutboxStore#claim}: the stored bytes plus the lease that fences its
 * settlement. Settle it with {@link OutboxStore#delete}, {@link OutboxStore#retryLater}, {@link
 * OutboxStore#release} or {@link OutboxStore#deadLetter}, passing this object back.
 *
 * @param batchId KSUID of the batch
 * @param insertSeq position in insert order
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
    Instant leaseExpiresAt) {}
