package dev.outbox.relay;

import org.jspecify.annotations.Nullable;

/**
 * What a sink asks right before it hands a record to the producer: whether an earlier record of
 * the same stored batch already failed. Such a record is answered as failed instead ({@link
 * EarlierRecordFailedException}), so a batch that is retried whole is never partly ahead of
 * itself in Kafka: without this, a record whose {@code send} failed (say after {@code
 * max.block.ms} in an outage) could be overtaken by the batch's later records, sent once the
 * broker was back, and each key's order broken when the batch is retried. The relay's own
 * correlation ({@link BatchInFlight.RecordRef}) implements it; a sink that checks it says so
 * ({@link RecordSink#checksSendGuard()}).
 */
interface SendGuard {
  /** True once a record of this batch failed: do not send the rest. */
  boolean sendAbandoned();

  /** A record of this batch failed (called by the sink from the producer's callback). */
  void sendFailed();

  /** The answer for a record that was not sent because an earlier one of its batch failed. */
  final class EarlierRecordFailedException extends org.apache.kafka.common.errors.RetriableException {
    private static final long serialVersionUID = 1L;

    EarlierRecordFailedException() {
      super("not sent: an earlier record sent with it (of its batch, or of an earlier batch of its"
          + " key) failed; retried after that one");
    }
  }

  /** The guard carried by {@code correlation}, or {@code null}. */
  static @Nullable SendGuard of(@Nullable Object correlation) {
    return correlation instanceof SendGuard guard ? guard : null;
  }
}
