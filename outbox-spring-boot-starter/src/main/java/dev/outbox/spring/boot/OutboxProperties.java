package dev.outbox.spring.boot;

import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.relay.RelayMode;
import java.time.Duration;
import java.util.Map;
import org.jspecify.annotations.Nullable;
import org.springframework.boot.context.properties.ConfigurationProperties;
import org.springframework.boot.context.properties.bind.DefaultValue;
import org.springframework.util.unit.DataSize;

/**
 * Configuration under "outbox.*", bound by {@link OutboxAutoConfiguration}. The defaults
 * are the library's own ("RelayOptions.builder()", "OutboxTable.defaultTable()").
 *
 * @param table The outbox table, "name" or "schema.name"
 * @param notifyOnWrite Whether the writer runs "pg_notify" on the table's channel in its insert
 *     and the embedded relay LISTENs on it (lower latency than polling; every notifying commit
 *     takes PostgreSQL's global notification lock)
 * @param deleteOnceLogged WAL mode: whether the writer logs each batch to the WAL alone (a
 *     logical decoding message, no row) while the WAL relay's slot ("relay.wal-slot") is ready
 *     to carry it ("OutboxWriter.Builder#deleteOnceLogged"): the relay publishes it from the log
 *     and deletes nothing; dropping the slot loses the batches it had not confirmed (see the
 *     README)
 * @param schema Schema creation at startup
 * @param relay The embedded relay
 * @param tracing Trace propagation through the outbox (with Micrometer Tracing)
 */
@ConfigurationProperties(prefix = "outbox")
public record OutboxProperties(
    @DefaultValue(OutboxTable.DEFAULT_NAME) String table,
    @DefaultValue("false") boolean notifyOnWrite,
    @DefaultValue("false") boolean deleteOnceLogged,
    @DefaultValue Schema schema,
    @DefaultValue Relay relay,
    @DefaultValue Tracing tracing) {

  /**
   * Trace propagation.
   *
   * @param enabled Whether, when Micrometer Tracing is present (a "Tracer" and a "Propagator"
   *     bean), the writer stores the active trace context with each message and the embedded
   *     relay publishes it inside a producer span that continues that trace
   */
  public record Tracing(@DefaultValue("true") boolean enabled) {}

  /**
   * Schema creation.
   *
   * @param createIfMissing Whether to create the outbox and dead-letter tables (the library's
   *     versioned SQL, "OutboxSchema.createIfMissing") at startup, before the relay starts;
   *     for tests and demos, use migrations (Flyway, Liquibase) in production
   * @param timeout How long startup waits for the schema statements
   */
  public record Schema(
      @DefaultValue("false") boolean createIfMissing,
      @DefaultValue("60s") Duration timeout) {}

  /**
   * The relay embedded in the application.
   *
   * @param enabled Whether the relay runs in this application; false when a standalone relay
   *     (or another service) publishes this table
   * @param mode How relays share the table: PARTITIONED (default), WAL, or the deprecated
   *     PARALLEL and ORDERED
   * @param pollInterval How often to look for due batches when not woken
   * @param maxInFlight Most records claimed and not yet settled; default 10000, 2000 in WAL mode
   * @param maxInFlightBytes Most bytes of stored batch data claimed and not yet settled
   * @param claimSize PARALLEL and ORDERED: most batches per claim statement
   * @param leaseDuration How long partition ownership (PARTITIONED) or a row's claim (PARALLEL,
   *     ORDERED) lasts unless renewed, at least 1 s
   * @param leaseRenewal How often ownership or leases are renewed; default a third of
   *     "lease-duration"
   * @param settleConcurrency Settlement statements at once
   * @param rowsPerKeyInFlight PARTITIONED: most consecutive rows of one key sent as one unit;
   *     1 sends a key's rows one round trip at a time
   * @param statementTimeout Longest any statement of the relay may run
   * @param statsInterval How often the backlog (meters, health) is read
   * @param instanceId Lease owner name; default "relay-<pid>-<random>"
   * @param walSlot WAL mode: replication slot; default "<table>_relay"
   * @param walPublication WAL mode: publication; default "<table>_relay"
   * @param retry Retries of failed publishes before a batch is dead-lettered
   * @param shutdownTimeout How long a graceful shutdown waits for records in flight before the
   *     relay releases what is left (keep it under
   *     "spring.lifecycle.timeout-per-shutdown-phase", 30 s by default)
   * @param health The Actuator health indicator
   * @param kafka Kafka producer properties ("outbox.relay.kafka.linger.ms=20");
   *     "bootstrap.servers" defaults to "spring.kafka.producer.bootstrap-servers", then
   *     "spring.kafka.bootstrap-servers"
   */
  public record Relay(
      @DefaultValue("true") boolean enabled,
      @DefaultValue("PARTITIONED") RelayMode mode,
      @DefaultValue("1s") Duration pollInterval,
      @Nullable Integer maxInFlight,
      @DefaultValue("32MB") DataSize maxInFlightBytes,
      @DefaultValue("500") int claimSize,
      @DefaultValue("30s") Duration leaseDuration,
      @Nullable Duration leaseRenewal,
      @DefaultValue("8") int settleConcurrency,
      @DefaultValue("64") int rowsPerKeyInFlight,
      @DefaultValue("30s") Duration statementTimeout,
      @DefaultValue("10s") Duration statsInterval,
      @Nullable String instanceId,
      @Nullable String walSlot,
      @Nullable String walPublication,
      @DefaultValue Retry retry,
      @DefaultValue("10s") Duration shutdownTimeout,
      @DefaultValue Health health,
      @Nullable Map<String, String> kafka) {

    public Relay {
      kafka = kafka == null ? Map.of() : Map.copyOf(kafka);
    }

    /** Never null (empty when none are set). */
    @Override
    public Map<String, String> kafka() {
      return kafka == null ? Map.of() : kafka;
    }
  }

  /**
   * Retries of a failed publish ("RetryPolicy").
   *
   * @param maxAttempts Failed attempts before a batch is dead-lettered
   * @param initialBackoff Wait after the first failure, doubling after each further one
   * @param maxBackoff The wait never exceeds this (before jitter)
   * @param jitter Relative spread of each wait, in [0, 1)
   */
  public record Retry(
      @DefaultValue("20") int maxAttempts,
      @DefaultValue("500ms") Duration initialBackoff,
      @DefaultValue("60s") Duration maxBackoff,
      @DefaultValue("0.2") double jitter) {}

  /**
   * The "outbox" health indicator (Actuator).
   *
   * @param backlogAgeThreshold DOWN while the oldest unpublished row is older than this (as last
   *     read, every "stats-interval"); "0" turns the check off
   */
  public record Health(@DefaultValue("5m") Duration backlogAgeThreshold) {}
}
