package dev.outbox.spring.boot;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.DeadLetter;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.r2dbc.UndecodableBatchException;
import java.time.Instant;
import java.util.List;
import java.util.Map;
import org.jspecify.annotations.Nullable;
import org.springframework.boot.actuate.endpoint.annotation.DeleteOperation;
import org.springframework.boot.actuate.endpoint.annotation.Endpoint;
import org.springframework.boot.actuate.endpoint.annotation.ReadOperation;
import org.springframework.boot.actuate.endpoint.annotation.Selector;
import org.springframework.boot.actuate.endpoint.annotation.WriteOperation;
import reactor.core.publisher.Mono;

/**
 * The Actuator endpoint {@code outboxdeadletters} over the outbox's dead letters ({@link
 * OutboxStore}): list them, show one with its messages decoded (without payloads), re-drive one
 * into the outbox, delete one for good. Exposed and secured like any Actuator endpoint: not over
 * HTTP until {@code management.endpoints.web.exposure.include} names it; {@code
 * management.endpoint.outboxdeadletters.access=read-only} keeps only the read operations.
 *
 * <pre>
 * GET    /actuator/outboxdeadletters?limit=50    oldest first
 * GET    /actuator/outboxdeadletters/{batchId}   404 when there is none
 * POST   /actuator/outboxdeadletters/{batchId}   re-drive: back into the outbox, due at once
 * DELETE /actuator/outboxdeadletters/{batchId}   its messages are never published
 * </pre>
 */
@Endpoint(id = "outboxdeadletters")
public final class OutboxDeadLettersEndpoint {
  static final int DEFAULT_LIMIT = 50;
  static final int MAX_LIMIT = 1_000;

  private final OutboxStore store;
  private final Codec codec;

  OutboxDeadLettersEndpoint(OutboxStore store, Codec codec) {
    this.store = store;
    this.codec = codec;
  }

  /** Up to {@code limit} (default 50, at most 1,000) dead letters, oldest first. */
  @ReadOperation
  public Mono<DeadLetters> list(@Nullable Integer limit) {
    int n = Math.max(1, Math.min(MAX_LIMIT, limit == null ? DEFAULT_LIMIT : limit));
    return store.deadLetters(n).map(OutboxDeadLettersEndpoint::summary).collectList()
        .map(letters -> new DeadLetters(store.table().deadLetterQualifiedName(), letters));
  }

  /** One dead letter with its messages; empty (404 over HTTP) when there is none. */
  @ReadOperation
  public Mono<DeadLetterDetails> show(@Selector String batchId) {
    return store.findDeadLetter(batchId).map(this::details);
  }

  /** Moves the dead letter back into the outbox, due at once, keeping its id. */
  @WriteOperation
  public Mono<Change> redrive(@Selector String batchId) {
    return store.redrive(batchId).map(found -> new Change(batchId, "redrive", found));
  }

  /** Deletes the dead letter for good. */
  @DeleteOperation
  public Mono<Change> delete(@Selector String batchId) {
    return store.deleteDeadLetter(batchId).map(found -> new Change(batchId, "delete", found));
  }

  private static DeadLetterSummary summary(DeadLetter d) {
    return new DeadLetterSummary(d.batchId(), d.messageCount(), d.writeRetries(), d.reason(),
        d.rawData().length, d.insertTime(), d.deadLetteredAt());
  }

  private DeadLetterDetails details(DeadLetter d) {
    List<MessageSummary> messages;
    String undecodable = null;
    try {
      messages = codec.decode(d.rawData()).stream().map(OutboxDeadLettersEndpoint::message)
          .toList();
    } catch (UndecodableBatchException e) {
      // Still worth showing (and deleting): say why its bytes do not decode.
      messages = List.of();
      undecodable = e.getMessage();
    }
    return new DeadLetterDetails(summary(d), messages, undecodable);
  }

  private static MessageSummary message(Message m) {
    return new MessageSummary(m.id(), m.stream(), m.key().orElse(null), m.contentType(),
        m.time(), m.dataLength(), m.headers());
  }

  /** The answer of {@link #list}. */
  public record DeadLetters(String table, List<DeadLetterSummary> deadLetters) {}

  /** One dead letter, without its bytes. */
  public record DeadLetterSummary(String batchId, int messageCount, int writeRetries,
      String reason, int sizeBytes, Instant insertTime, Instant deadLetteredAt) {}

  /** One dead letter and its decoded messages; {@code undecodable} says why there are none. */
  public record DeadLetterDetails(DeadLetterSummary deadLetter, List<MessageSummary> messages,
      @Nullable String undecodable) {}

  /** A message of a dead letter, without its payload (which may hold personal data). */
  public record MessageSummary(String id, String stream, @Nullable String key,
      String contentType, Instant time, int sizeBytes, Map<String, String> headers) {}

  /** What a write or delete operation did; {@code found} is false when there was no such dead letter. */
  public record Change(String batchId, String operation, boolean found) {}
}
