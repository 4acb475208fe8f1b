package dev.outbox.r2dbc;

import java.util.Map;
import reactor.util.context.ContextView;

/**
 * SPI: headers that describe the writing subscriber's Reactor {@code Context}, added by {@link
 * OutboxWriter#write} to every message of the batch. Made for trace propagation: the Spring Boot
 * starter's implementation returns the W3C {@code traceparent} (and {@code tracestate}) of the
 * span active at the write, so that the relay can continue the trace. Configure one with {@link
 * OutboxWriter.Builder#contextHeaders}.
 *
 * <p>The writer calls {@link #headers} once per {@code write}, when it is subscribed, before
 * anything is encoded or written. A message that already carries <em>any</em> of the returned
 * names keeps all of its own headers and gets none of these (so a {@code traceparent} the caller
 * set is never paired with another trace's {@code tracestate}); every other message gets all of
 * them. An empty map adds nothing and costs no copy.
 *
 * <p>Implementations must not block, must be thread-safe, and must return neither null names nor
 * null values, nor the names reserved for the relay ({@value Message#MESSAGE_ID_HEADER}, {@value
 * Message#CONTENT_TYPE_HEADER}): the write then fails with {@link InvalidMessageException}.
 */
@FunctionalInterface
public interface ContextHeaders {

  /** Headers for the messages of a write subscribed with {@code context}; empty for none. */
  Map<String, String> headers(ContextView context);
}
