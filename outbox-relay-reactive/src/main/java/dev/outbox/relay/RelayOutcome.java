package dev.outbox.relay;

import java.time.Duration;
import org.jspecify.annotations.Nullable;

/**
 * What the relay did with one claimed batch, as seen on {@link RelayHandle#outcomes()}.
 *
 * @param kind the settlement
 * @param batchId KSUID of the batch
 * @param messageCount messages in the batch
 * @param failedAttempts failed attempts so far, this one included (0 when published)
 * @param reason the failure, {@code null} when published
 * @param retryIn when the next attempt may start, for {@link Kind#RETRY_SCHEDULED}
 */
public record RelayOutcome(Kind kind, String batchId, int messageCount, int failedAttempts,
    @Nullable String reason, @Nullable Duration retryIn) {

  public enum Kind {
    /** Every record was acknowledged and the row deleted. */
    PUBLISHED,
    /** A retriable failure; the row waits for {@code next_attempt_at}. */
    RETRY_SCHEDULED,
    /** A fatal failure, an undecodable batch, or retries exhausted: moved to the dead letters. */
    DEAD_LETTERED,
    /**
     * The lease was lost before settlement (another relay reclaimed the batch): nothing was
     * changed; the records may have been published twice.
     */
    LEASE_LOST,
    /** Claimed but not attempted (shutdown); the lease was released. */
    RELEASED,
  }
}
