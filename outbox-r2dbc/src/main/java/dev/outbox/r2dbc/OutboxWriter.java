package dev.outbox.r2dbc;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import org.jspecify.annotations.Nullable;
import reactor.core.publisher.Mono;

/**
 * Appends a batch of messages to the outbox table inside the caller's transaction.
 *
 * <pre>{@code
 * OutboxWriter writer = OutboxWriter.builder().table(OutboxTable.of("order_outbox")).build();
 *
 * Mono<Void> placeOrder(Order order) {
 *   return OutboxTransactions.inTransaction(connectionFactory, connection ->
 *       insertOrder(connection, order)
 *           .then(writer.write(Message.builder().stream("orders").key(order.id())
 *               .data(order.toJson()).build())));
 * }
 * }</pre>
 *
 * <p>Each {@code write} is lazy, reads the connection from the Reactor Context when subscribed,
 * and inserts one row (one batch, a fresh KSUID {@code batch_id}); with {@link
 * Builder#rowPerKey(boolean) rowPerKey(true)} (for PARTITIONED relays) one row per message key
 * instead. Several writes in one transaction give several rows. Errors, all before anything is written: {@link
 * InvalidMessageException} (null or empty batch, null element), {@link
 * MissingConnectionException}, {@link NotInTransactionException}.
 *
 * <p>Instances are immutable and thread-safe.
 */
public interface OutboxWriter {

  /** Writes {@code batch} as one outbox row; completes when the row is inserted (not committed). */
  Mono<Void> write(List<Message> batch);

  /** Convenience for {@link #write(List)}. */
  default Mono<Void> write(Message... batch) {
    return write(Arrays.asList(batch));
  }

  /** A writer with the defaults: table {@value OutboxTable#DEFAULT_NAME}, protobuf codec. */
  static OutboxWriter create() {
    return builder().build();
  }

  static Builder builder() {
    return new Builder();
  }

  /** Options for {@link OutboxWriter}; {@link #build()} validates and applies defaults. */
  final class Builder {
    private OutboxTable table = OutboxTable.defaultTable();
    private Codec codec = Codec.protobuf();
    private @Nullable String notifyChannel;
    private boolean rowPerKey;
    private boolean deleteOnceLogged;
    private @Nullable String walSlot;
    private @Nullable String walPublication;
    private final List<ConnectionResolver> resolvers = new ArrayList<>();
    private final List<ContextHeaders> contextHeaders = new ArrayList<>();

    private Builder() {}

    /** Default {@value OutboxTable#DEFAULT_NAME}. */
    public Builder table(OutboxTable table) {
      this.table = Objects.requireNonNull(table, "table");
      return this;
    }

    /** Default {@link Codec#protobuf()}. */
    public Builder codec(Codec codec) {
      this.codec = Objects.requireNonNull(codec, "codec");
      return this;
    }

    /**
     * Also runs {@code pg_notify(channel, batch_id)} in the same statement as the insert, so
     * relays listening on {@code channel} (usually {@link OutboxTable#notifyChannel()}) wake at
     * commit, and never for a rolled-back write. Default: none, because every notifying commit
     * takes PostgreSQL's global notification-queue lock, which serializes commits under heavy
     * write load. The notification is only a hint; relays still poll.
     */
    public Builder notifyChannel(@Nullable String channel) {
      this.notifyChannel = channel;
      return this;
    }

    /**
     * Default {@code false}: every batch is one row whatever its keys, as the Go {@code streams}
     * writer does. {@code true}: a batch whose messages carry more than one key (stream and key)
     * is stored as one row per key, in the order each key first appears, the messages without a
     * key together in one more row, all in the caller's transaction; each key's messages keep
     * their order. Turn it on for PARTITIONED relays: a row's partition follows its first key
     * only, so without it the other keys of a multi-key row may be published out of order with
     * their rows in other partitions. It costs one insert per key.
     */
    public Builder rowPerKey(boolean rowPerKey) {
      this.rowPerKey = rowPerKey;
      return this;
    }

    /**
     * For a WAL-mode relay: the log holds each batch's only copy. Once the relay's slot is ready
     * to carry it, a batch is not inserted into the table but written to the WAL alone, as a
     * transactional logical decoding message ({@code pg_logical_emit_message}, prefix {@code
     * dev.outbox:<slot>}) that commits or rolls back with the transaction. The relay publishes
     * it from the log and deletes nothing: in WAL mode the relay's per-row {@code DELETE} costs
     * the database more than everything else the relay asks of it, and a message logs one WAL
     * record where a row logs one per index too (see the README). The relay's slot and
     * publication are {@code <table>_relay} (the relay's defaults); {@link
     * #deleteOnceLogged(String, String)} names others.
     *
     * <p>The batch goes into the table as a row (and the relay deletes it, as without this
     * option) when the slot does not exist, has not reached its consistent point, no longer keeps
     * its WAL, or its publication does not carry the table, and on PostgreSQL before 14
     * (pgoutput sends messages from 14). It costs the writer no extra statement. What changes
     * for the relay: after a crash it publishes again every such batch the slot had not
     * confirmed (a restart cannot look for it in the table); a retry waits in its memory; the
     * batches exist only in the WAL the slot keeps, so dropping the slot, or moving it past
     * batches not yet published, loses them; and only a relay of this version or later reads
     * them: an older one on the same slot skips them (see the README's WAL section). Default:
     * off.
     */
    public Builder deleteOnceLogged(boolean deleteOnceLogged) {
      this.deleteOnceLogged = deleteOnceLogged;
      return this;
    }

    /** {@link #deleteOnceLogged(boolean) deleteOnceLogged(true)} for a relay's own slot and publication. */
    public Builder deleteOnceLogged(String slot, String publication) {
      this.walSlot = Objects.requireNonNull(slot, "slot");
      this.walPublication = Objects.requireNonNull(publication, "publication");
      this.deleteOnceLogged = true;
      return this;
    }

    /** Adds a resolver consulted when no connection is bound with {@link OutboxContext}. */
    public Builder connectionResolver(ConnectionResolver resolver) {
      resolvers.add(Objects.requireNonNull(resolver, "resolver"));
      return this;
    }

    /**
     * Adds headers taken from the writing subscriber's Reactor Context to every message written,
     * for example the trace context (see {@link ContextHeaders}; the Spring Boot starter sets one
     * when Micrometer Tracing is present). Several are applied in the order added. Default: none.
     */
    public Builder contextHeaders(ContextHeaders headers) {
      contextHeaders.add(Objects.requireNonNull(headers, "headers"));
      return this;
    }

    public OutboxWriter build() {
      if (notifyChannel != null) {
        OutboxTable.checkChannel(notifyChannel);
      }
      if (deleteOnceLogged && (walSlot != null && walSlot.isBlank()
          || walPublication != null && walPublication.isBlank())) {
        throw new IllegalArgumentException("deleteOnceLogged: the slot and publication names"
            + " must not be blank");
      }
      R2dbcOutboxWriter.OnceLogged onceLogged = !deleteOnceLogged ? null : new R2dbcOutboxWriter.OnceLogged(
          walSlot != null ? walSlot : table.walRelayName(),
          walPublication != null ? walPublication : table.walRelayName());
      return new R2dbcOutboxWriter(table, codec, notifyChannel, rowPerKey, onceLogged,
          List.copyOf(resolvers), List.copyOf(contextHeaders));
    }
  }
}
