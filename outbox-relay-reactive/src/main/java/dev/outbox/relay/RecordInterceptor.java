package dev.outbox.relay;

import dev.outbox.r2dbc.Message;
import java.util.Map;
import org.jspecify.annotations.Nullable;

/**
 * Sees each Kafka record the relay builds from a stored message, may replace the headers it is
 * sent with, and hears how its send ended: a hook for trace propagation (the Spring Boot
 * starter's Micrometer Tracing support starts a producer span per traced message here and sends
 * that span's {@code traceparent}). Set one with {@link RelayOptions.Builder#recordInterceptor};
 * by default there is none and records go as built.
 *
 * <p>It works behind every sink, the library's and custom ones: it changes only the record's
 * headers, never how records are grouped, guarded or ordered.
 *
 * <p>Implementations are thread-safe and must not block. An exception thrown by {@link #intercept}
 * or {@link Interception#answered} is logged and otherwise ignored: the record is sent as built,
 * and tracing never stops publishing.
 */
@FunctionalInterface
public interface RecordInterceptor {

  /**
   * Called once for each record, when the relay builds it from {@code message} (on a Reactor
   * parallel worker, before the record is handed to the sink; a record sent again after a retry
   * is built, so intercepted, again).
   *
   * @param message the stored message
   * @param headers what the record would carry: the message's headers plus {@value
   *     Message#MESSAGE_ID_HEADER} and {@value Message#CONTENT_TYPE_HEADER}; unmodifiable
   * @return {@code null} to send the record as built and hear nothing more of it (the cheap
   *     path: nothing is allocated per record), or the headers to send instead (keep {@value
   *     Message#MESSAGE_ID_HEADER} and {@value Message#CONTENT_TYPE_HEADER}) and what to call when
   *     the record is answered
   */
  @Nullable Interception intercept(Message message, Map<String, String> headers);

  /** What {@link #intercept} decided for one record. */
  interface Interception {

    /** The headers the record is sent with instead of those it was built with. */
    Map<String, String> headers();

    /**
     * Called once, when the sink answered the record: {@code error} is {@code null} when Kafka
     * acknowledged it, else why it failed (including a record not sent because an earlier record
     * of its unit failed). Runs on the sink's thread; must not block. Not called for a record
     * that never got an answer because the relay's pipeline failed as a whole and restarted.
     */
    void answered(@Nullable Throwable error);
  }
}
