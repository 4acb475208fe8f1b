package dev.outbox.r2dbc;

import java.time.Instant;

/**
 * A batch that could not be published, from the dead-letter table.
 *
 * @param reason why it was dead-lettered (the failure the relay saw)
 * @param rawData the encoded batch (owned by this record; do not modify)
 */
public record DeadLetter(
    String batchId,
    int messageCount,
    int writeRetries,
    String reason,
    byte[] rawData,
    Instant insertTime,
    Instant deadLetteredAt) {}
