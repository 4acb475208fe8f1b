package dev.outbox.r2dbc.internal;

import dev.outbox.r2dbc.InvalidConfigurationException;
import java.time.Duration;

/**
 * Internal (the relay's protocol with the table; may change without notice). What {@link RelayStore#claim(ClaimRequest)} may take: at most {@code maxBatches} due batches,
 * in insert order, whose messages add up to at most {@code maxMessages} and whose stored bytes add up to at most
 * {@code maxBytes}. When {@code
 * admitOversizedFirst} is set, the first batch is taken even if it alone exceeds {@code
 * maxMessages}, so that a batch larger than the budget can still make progress (the relay sets
 * it only when nothing else is in flight). {@code ordered}: see {@link #inOrder()}.
 *
 * <pre>{@code
 * ClaimRequest.of(100, Duration.ofSeconds(30), "relay-1").withMessageBudget(1_000, false)
 * }</pre>
 */
public record ClaimRequest(int maxBatches, int maxMessages, long maxBytes,
    boolean admitOversizedFirst, Duration lease, String owner, boolean ordered) {

  public ClaimRequest {
    if (maxBatches < 1) {
      throw new InvalidConfigurationException("claim maxBatches must be >= 1, got " + maxBatches);
    }
    if (maxMessages < 1) {
      throw new InvalidConfigurationException("claim maxMessages must be >= 1, got " + maxMessages);
    }
    if (maxBytes < 1) {
      throw new InvalidConfigurationException("claim maxBytes must be >= 1, got " + maxBytes);
    }
    if (lease.isNegative() || lease.isZero()) {
      throw new InvalidConfigurationException("claim lease must be positive, got " + lease);
    }
    if (owner.isBlank() || owner.length() > 255) {
      throw new InvalidConfigurationException("claim owner must be 1 to 255 characters, got '"
          + owner + "'");
    }
  }

  /** Up to {@code maxBatches} batches, however many messages they hold. */
  public static ClaimRequest of(int maxBatches, Duration lease, String owner) {
    return new ClaimRequest(maxBatches, Integer.MAX_VALUE, Long.MAX_VALUE, true, lease, owner,
        false);
  }

  /** This request, also bounded to {@code maxMessages} messages in total. */
  public ClaimRequest withMessageBudget(int maxMessages, boolean admitOversizedFirst) {
    return new ClaimRequest(maxBatches, maxMessages, maxBytes, admitOversizedFirst, lease, owner,
        ordered);
  }

  /**
   * This request, also bounded to {@code maxBytes} bytes of {@code raw_data} in total (the first
   * batch may exceed it when {@code admitOversizedFirst}).
   */
  public ClaimRequest withByteBudget(long maxBytes) {
    return new ClaimRequest(maxBatches, maxMessages, maxBytes, admitOversizedFirst, lease, owner,
        ordered);
  }

  /**
   * This request, taking only batches that can be published in order: below the commit
   * watermark, and with no key shared with an earlier unpublished batch.
   */
  public ClaimRequest inOrder() {
    return new ClaimRequest(maxBatches, maxMessages, maxBytes, admitOversizedFirst, lease, owner,
        true);
  }
}
