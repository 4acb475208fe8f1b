package dev.outbox.relay;

import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.RecordBatchTooLargeException;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.errors.UnsupportedVersionException;

/**
 * Decides whether a send failure is worth retrying. The default treats as <em>fatal</em> what
 * no retry can fix: a record too large, an illegal topic name, a missing authorization, a
 * serialization failure, an unsupported version. Everything else (timeouts, broker unavailable,
 * not enough replicas, unknown errors) is <em>retriable</em>, bounded by the {@link
 * RetryPolicy}, after which the batch is dead-lettered anyway.
 */
@FunctionalInterface
public interface FailureClassifier {

  boolean isFatal(Throwable error);

  /** The default classification described above. */
  static FailureClassifier kafkaDefault() {
    return error -> {
      for (Throwable e = error; e != null; e = e.getCause()) {
        if (e instanceof RecordTooLargeException || e instanceof RecordBatchTooLargeException
            || e instanceof InvalidTopicException || e instanceof AuthorizationException
            || e instanceof SerializationException || e instanceof UnsupportedVersionException) {
          return true;
        }
      }
      return false;
    };
  }
}
