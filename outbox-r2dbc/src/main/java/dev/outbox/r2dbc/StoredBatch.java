package dev.outbox.r2dbc;

import java.time.Instant;
import java.util.UUID;
import org.jspecify.annotations.Nullable;

/**
 * One outbox row as stored, from {@link OutboxStore#find}.
 *
 * @param rawData the encoded batch (owned by this record; do not modify)
 * @param leaseToken token of the current or last claim, {@code null} when unclaimed
 */
public record StoredBatch(
    String batchId,
    long insertSeq,
    boolean inFlight,
    int messageCount,
    int writeRetries,
    @Nullable String lastWriteError,
    byte[] rawData,
    Instant insertTime,
    Instant nextAttemptAt,
    @Nullable String leaseOwner,
    @Nullable UUID leaseToken,
    @Nullable Instant leaseExpiresAt) {}
