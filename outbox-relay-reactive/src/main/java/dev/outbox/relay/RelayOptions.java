package dev.outbox.relay;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.InvalidConfigurationException;
import dev.outbox.r2dbc.OutboxTable;
import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ThreadLocalRandom;
import org.jspecify.annotations.Nullable;

/**
 * Immutable relay configuration; {@link Builder#build()} validates every option and applies the
 * defaults listed on the builder methods.
 *
 * <pre>{@code
 * RelayOptions options = RelayOptions.builder()
 *     .table(OutboxTable.of("order_outbox"))
 *     .kafka(Map.of("bootstrap.servers", "localhost:9092"))   // or .sink(customSink)
 *     .maxInFlight(2_000)
 *     .build();
 * }</pre>
 *
 * <p>Options hold configuration only: a relay started from them creates what it owns (the Kafka
 * sink built from {@link Builder#kafka}) when it starts and closes it when it stops, so one
 * options object can start any number of relays, one after another or side by side (leave the
 * default {@link Builder#instanceId}: each relay then gets its own). A sink passed to {@link
 * Builder#sink} stays yours: no relay closes it.
 *
 * <p>Immutable and thread-safe; the builder is not thread-safe.
 */
public final class RelayOptions {
  /**
   * Default {@link Builder#maxInFlight} in every mode but WAL ({@link #DEFAULT_WAL_MAX_IN_FLIGHT}):
   * 10,000 records. With 1,000 a PARTITIONED drain was bound by read round trips (small reads,
   * one every eighth of the budget) rather than CPU:
   * 1,000,000 messages in rows of 10 went at 0.45 of a minimal correct loop in the same run,
   * 0.67–0.80 with 10,000 (benchmark {@code relay}, {@code MinimalLoop}).
   */
  public static final int DEFAULT_MAX_IN_FLIGHT = 10_000;

  /**
   * Default {@link Builder#maxInFlight} in {@link RelayMode#WAL} mode: 2,000 records. The log
   * hands rows over without reads, so past what keeps the producer busy the budget only makes
   * records queue longer: draining 200,000 one-message rows, 10,000 in flight cost 16.3 µs of
   * JVM CPU a message, 2,000 cost 10.8 µs and drained 1.4 times as fast (fewer live objects for
   * the collector to copy and for the caches to miss; benchmark {@code relay}, WAL).
   */
  public static final int DEFAULT_WAL_MAX_IN_FLIGHT = 2_000;

  /**
   * The {@link Builder#maxInFlight} a relay in {@code mode} gets unless one is given: {@link
   * #DEFAULT_WAL_MAX_IN_FLIGHT} in WAL mode, {@link #DEFAULT_MAX_IN_FLIGHT} otherwise.
   */
  public static int defaultMaxInFlight(RelayMode mode) {
    return mode == RelayMode.WAL ? DEFAULT_WAL_MAX_IN_FLIGHT : DEFAULT_MAX_IN_FLIGHT;
  }

  /** Default {@link Builder#claimSize}: 500 rows per read (PARTITIONED) or claim. */
  public static final int DEFAULT_CLAIM_SIZE = 500;

  /** Default {@link Builder#rowsPerKeyInFlight}. */
  public static final int DEFAULT_ROWS_PER_KEY_IN_FLIGHT = 64;

  /** Default {@link Builder#maxInFlightBytes}: 32 MiB of stored batch data. */
  public static final long DEFAULT_MAX_IN_FLIGHT_BYTES = 32L << 20;

  private final OutboxTable table;
  private final Codec codec;
  private final @Nullable RecordSink sink;
  private final @Nullable Map<String, Object> kafka;
  private final RelayMode mode;
  private final int claimSize;
  private final Duration leaseDuration;
  private final Duration leaseRenewal;
  private final int maxInFlight;
  private final long maxInFlightBytes;
  private final int settleConcurrency;
  private final int rowsPerKeyInFlight;
  private final RetryPolicy retryPolicy;
  private final FailureClassifier failureClassifier;
  private final Duration pollInterval;
  private final Duration leadershipRetry;
  private final Triggers triggers;
  private final String walSlot;
  private final String walPublication;
  private final Duration statsInterval;
  private final Duration statementTimeout;
  private final int outcomeBuffer;
  private final String instanceId;
  private final boolean instanceIdGiven;
  private final RelayMetrics metrics;
  private final @Nullable RecordInterceptor recordInterceptor;

  /** A copy with another {@code instanceId}. */
  private RelayOptions(RelayOptions o, String instanceId, boolean instanceIdGiven) {
    this.table = o.table;
    this.codec = o.codec;
    this.sink = o.sink;
    this.kafka = o.kafka;
    this.mode = o.mode;
    this.claimSize = o.claimSize;
    this.leaseDuration = o.leaseDuration;
    this.leaseRenewal = o.leaseRenewal;
    this.maxInFlight = o.maxInFlight;
    this.maxInFlightBytes = o.maxInFlightBytes;
    this.settleConcurrency = o.settleConcurrency;
    this.rowsPerKeyInFlight = o.rowsPerKeyInFlight;
    this.retryPolicy = o.retryPolicy;
    this.failureClassifier = o.failureClassifier;
    this.pollInterval = o.pollInterval;
    this.leadershipRetry = o.leadershipRetry;
    this.triggers = o.triggers;
    this.walSlot = o.walSlot;
    this.walPublication = o.walPublication;
    this.statsInterval = o.statsInterval;
    this.statementTimeout = o.statementTimeout;
    this.outcomeBuffer = o.outcomeBuffer;
    this.instanceId = instanceId;
    this.instanceIdGiven = instanceIdGiven;
    this.metrics = o.metrics;
    this.recordInterceptor = o.recordInterceptor;
  }

  private RelayOptions(Builder b, @Nullable Map<String, Object> kafka, Duration leaseRenewal,
      int maxInFlight, String instanceId) {
    this.table = b.table;
    this.codec = b.codec;
    this.sink = b.sink;
    this.kafka = kafka;
    this.mode = b.mode;
    this.claimSize = b.claimSize;
    this.leaseDuration = b.leaseDuration;
    this.leaseRenewal = leaseRenewal;
    this.maxInFlight = maxInFlight;
    this.maxInFlightBytes = b.maxInFlightBytes;
    this.settleConcurrency = b.settleConcurrency;
    this.rowsPerKeyInFlight = b.rowsPerKeyInFlight;
    this.retryPolicy = b.retryPolicy;
    this.failureClassifier = b.failureClassifier;
    this.pollInterval = b.pollInterval;
    this.leadershipRetry = b.leadershipRetry;
    this.triggers = new Triggers(b.listenChannel, b.heartbeatTcp, b.heartbeatUdp,
        b.heartbeatUnixSocket, b.wakeDebounce);
    this.walSlot = b.walSlot != null ? b.walSlot : b.table.walRelayName();
    this.walPublication = b.walPublication != null ? b.walPublication : b.table.walRelayName();
    this.statsInterval = b.statsInterval;
    this.statementTimeout = b.statementTimeout;
    this.outcomeBuffer = b.outcomeBuffer;
    this.instanceId = instanceId;
    this.instanceIdGiven = b.instanceId != null;
    this.metrics = b.metrics;
    this.recordInterceptor = b.recordInterceptor;
  }

  /** The outbox table. */
  public OutboxTable table() {
    return table;
  }

  /** Decodes {@code raw_data}. */
  public Codec codec() {
    return codec;
  }

  /** The caller's sink (never closed by the relay), or {@code null} when {@link #kafka()} is set. */
  public @Nullable RecordSink sink() {
    return sink;
  }

  /**
   * Producer properties of the sink each relay creates at start and closes at stop, or {@code
   * null} when {@link #sink()} is set.
   */
  public @Nullable Map<String, Object> kafka() {
    return kafka;
  }

  /** How relay instances share the table. */
  public RelayMode mode() {
    return mode;
  }

  /** Most batches per claim statement. */
  public int claimSize() {
    return claimSize;
  }

  /** How long a claim is exclusive unless renewed. */
  public Duration leaseDuration() {
    return leaseDuration;
  }

  /**
   * How often the relay extends the leases of the batches it holds by {@link #leaseDuration()};
   * {@link Duration#ZERO}: never, so a publish must then finish within the lease.
   */
  public Duration leaseRenewal() {
    return leaseRenewal;
  }

  /** Most records claimed and not yet settled (a larger single batch still goes alone). */
  public int maxInFlight() {
    return maxInFlight;
  }

  /**
   * Most bytes of stored batch data ({@code raw_data}) claimed and not yet settled (a larger
   * single batch still goes alone).
   */
  public long maxInFlightBytes() {
    return maxInFlightBytes;
  }

  /** Settlement statements run at once. */
  public int settleConcurrency() {
    return settleConcurrency;
  }

  /** PARTITIONED and WAL: most rows of one key sent as one unit; see {@link Builder#rowsPerKeyInFlight}. */
  public int rowsPerKeyInFlight() {
    return rowsPerKeyInFlight;
  }

  /** Backoff and attempts for retriable failures. */
  public RetryPolicy retryPolicy() {
    return retryPolicy;
  }

  /** Which failures are fatal. */
  public FailureClassifier failureClassifier() {
    return failureClassifier;
  }

  /** How often the table is polled for due batches. */
  public Duration pollInterval() {
    return pollInterval;
  }

  /** ORDERED mode: how often a standby tries to lead and the leader checks its lock. */
  public Duration leadershipRetry() {
    return leadershipRetry;
  }

  /** What else wakes the relay besides polling. */
  public Triggers triggers() {
    return triggers;
  }

  /** WAL mode: the replication slot. */
  public String walSlot() {
    return walSlot;
  }

  /** WAL mode: the publication. */
  public String walPublication() {
    return walPublication;
  }

  /** How often backlog meters are refreshed. */
  public Duration statsInterval() {
    return statsInterval;
  }

  /** Longest any statement of the relay may run before it is abandoned. */
  public Duration statementTimeout() {
    return statementTimeout;
  }

  /** Outcomes buffered per {@link RelayHandle#outcomes()} subscriber before the newest drop. */
  public int outcomeBuffer() {
    return outcomeBuffer;
  }

  /**
   * The lease owner name: the one given to {@link Builder#instanceId}, or a default {@code
   * relay-<pid>-<random>}. With the default, each relay started from these options gets a fresh
   * one of its own (relays side by side must not share a lease owner or a producer client id).
   */
  public String instanceId() {
    return instanceId;
  }

  /** The options one relay runs with: its own default instance id unless one was given. */
  RelayOptions forOneRelay() {
    return instanceIdGiven ? this : new RelayOptions(this, defaultInstanceId(), false);
  }

  private static String defaultInstanceId() {
    return "relay-" + ProcessHandle.current().pid() + "-"
        + Long.toString(ThreadLocalRandom.current().nextLong() & Long.MAX_VALUE, 36);
  }

  /** Where measurements go. */
  public RelayMetrics metrics() {
    return metrics;
  }

  /** Sees each record built from a message (tracing); {@code null} for none. */
  public @Nullable RecordInterceptor recordInterceptor() {
    return recordInterceptor;
  }

  @Override
  public String toString() {
    return "RelayOptions[table=" + table + ", mode=" + mode + ", sink="
        + (sink != null ? sink : "kafka " + kafka.get("bootstrap.servers")) + ", claimSize="
        + claimSize + ", maxInFlight=" + maxInFlight + ", maxInFlightBytes=" + maxInFlightBytes
        + ", leaseDuration=" + leaseDuration + ", leaseRenewal=" + leaseRenewal
        + ", instanceId=" + instanceId + "]";
  }

  public static Builder builder() {
    return new Builder();
  }

  /** Collects options; not thread-safe. */
  public static final class Builder {
    private OutboxTable table = OutboxTable.defaultTable();
    private Codec codec = Codec.protobuf();
    private @Nullable RecordSink sink;
    private @Nullable Map<String, Object> kafka;
    private RelayMode mode = RelayMode.PARTITIONED;
    private int claimSize = DEFAULT_CLAIM_SIZE;
    private Duration leaseDuration = Duration.ofSeconds(30);
    private @Nullable Duration leaseRenewal;
    private @Nullable Integer maxInFlight;
    private long maxInFlightBytes = DEFAULT_MAX_IN_FLIGHT_BYTES;
    private int settleConcurrency = 8;
    private int rowsPerKeyInFlight = DEFAULT_ROWS_PER_KEY_IN_FLIGHT;
    private RetryPolicy retryPolicy = RetryPolicy.DEFAULT;
    private FailureClassifier failureClassifier = FailureClassifier.kafkaDefault();
    private Duration pollInterval = Duration.ofSeconds(1);
    private Duration leadershipRetry = Duration.ofSeconds(1);
    private @Nullable String listenChannel;
    private @Nullable InetSocketAddress heartbeatTcp;
    private @Nullable InetSocketAddress heartbeatUdp;
    private @Nullable Path heartbeatUnixSocket;
    private Duration wakeDebounce = Duration.ofMillis(20);
    private @Nullable String walSlot;
    private @Nullable String walPublication;
    private Duration statsInterval = Duration.ofSeconds(10);
    private Duration statementTimeout = Duration.ofSeconds(30);
    private int outcomeBuffer = 1_024;
    private @Nullable String instanceId;
    private RelayMetrics metrics = RelayMetrics.none();
    private @Nullable RecordInterceptor recordInterceptor;

    private Builder() {}

    /** Default {@code streams_egress}. */
    public Builder table(OutboxTable table) {
      this.table = table;
      return this;
    }

    /** Default {@link Codec#protobuf()}. */
    public Builder codec(Codec codec) {
      this.codec = codec;
      return this;
    }

    /**
     * A sink you own: relays use it and never close it (close it yourself after the last relay
     * using it has stopped). Exclusive with {@link #kafka}.
     */
    public Builder sink(RecordSink sink) {
      this.sink = sink;
      return this;
    }

    /**
     * Producer properties (at least {@code bootstrap.servers}) for a {@link ReactorKafkaSink}
     * that each relay creates when it starts (with {@code maxInFlight}) and closes when it
     * stops. Validated by {@link #build()} against the producer's own definitions. Exclusive
     * with {@link #sink}.
     */
    public Builder kafka(Map<String, Object> producerProperties) {
      this.kafka = Map.copyOf(producerProperties);
      return this;
    }

    /** Default {@link RelayMode#PARTITIONED}. */
    public Builder mode(RelayMode mode) {
      this.mode = mode;
      return this;
    }

    /** Default {@value #DEFAULT_CLAIM_SIZE} batches. */
    public Builder claimSize(int claimSize) {
      this.claimSize = claimSize;
      return this;
    }

    /** Default 30 s. */
    public Builder leaseDuration(Duration leaseDuration) {
      this.leaseDuration = leaseDuration;
      return this;
    }

    /**
     * Default a third of {@code leaseDuration}: while a relay runs, its leases do not expire,
     * however long Kafka takes; they expire only when it stops renewing (crashed, frozen, or cut
     * off from the database). {@link Duration#ZERO} turns renewal off.
     */
    public Builder leaseRenewal(Duration leaseRenewal) {
      this.leaseRenewal = leaseRenewal;
      return this;
    }

    /**
     * Most records claimed (WAL: taken from the log) and not yet acknowledged by Kafka. Default
     * {@value #DEFAULT_MAX_IN_FLIGHT} records, {@value #DEFAULT_WAL_MAX_IN_FLIGHT} in WAL mode
     * ({@link #defaultMaxInFlight}).
     */
    public Builder maxInFlight(int maxInFlight) {
      this.maxInFlight = maxInFlight;
      return this;
    }

    /**
     * Default {@link #DEFAULT_MAX_IN_FLIGHT_BYTES} (32 MiB): most bytes of stored batch data
     * claimed and not yet settled, next to the record bound, so that large messages cannot
     * exhaust the heap (the decoded records and the producer's buffer take about as much again).
     */
    public Builder maxInFlightBytes(long maxInFlightBytes) {
      this.maxInFlightBytes = maxInFlightBytes;
      return this;
    }

    /** Default 8. */
    public Builder settleConcurrency(int settleConcurrency) {
      this.settleConcurrency = settleConcurrency;
      return this;
    }

    /**
     * PARTITIONED and WAL, default {@value #DEFAULT_ROWS_PER_KEY_IN_FLIGHT}: most consecutive
     * rows of one key sent as one unit (PARTITIONED: taken by one read; WAL: claimed right
     * behind the key's batch in flight). A key's unit is in flight alone until
     * Kafka has acknowledged all of it; once a record of it fails, its records not yet handed to
     * the producer are not sent. {@code 1} sends a key's rows one round trip at a time, so that
     * a failure the producer reports only after it accepted later records (a delivery timeout)
     * can never let a later row of the key through first. Behind a custom {@link #sink} it is
     * 1 unless that sink {@linkplain RecordSink#checksSendGuard() checks the guard}.
     */
    public Builder rowsPerKeyInFlight(int rowsPerKeyInFlight) {
      this.rowsPerKeyInFlight = rowsPerKeyInFlight;
      return this;
    }

    /** Default {@link RetryPolicy#DEFAULT}. */
    public Builder retryPolicy(RetryPolicy retryPolicy) {
      this.retryPolicy = retryPolicy;
      return this;
    }

    /** Default {@link FailureClassifier#kafkaDefault()}. */
    public Builder failureClassifier(FailureClassifier failureClassifier) {
      this.failureClassifier = failureClassifier;
      return this;
    }

    /** Default 1 s. */
    public Builder pollInterval(Duration pollInterval) {
      this.pollInterval = pollInterval;
      return this;
    }

    /** Default 1 s: a standby takes over within about this long after the leader's lock goes. */
    public Builder leadershipRetry(Duration leadershipRetry) {
      this.leadershipRetry = leadershipRetry;
      return this;
    }

    /**
     * LISTEN on {@code channel} (usually {@link OutboxTable#notifyChannel()}, the channel the
     * writer's {@code notifyChannel} option notifies) on a dedicated connection, and claim when
     * a notification arrives. Re-listens with backoff after a disconnect. Default: off.
     */
    public Builder listen(String channel) {
      this.listenChannel = OutboxTable.checkChannel(channel);
      return this;
    }

    /** Accept heartbeats ("there is work") on this TCP address. Default: off. */
    public Builder heartbeatTcp(InetSocketAddress address) {
      this.heartbeatTcp = address;
      return this;
    }

    /** Accept heartbeat datagrams on this UDP address. Default: off. */
    public Builder heartbeatUdp(InetSocketAddress address) {
      this.heartbeatUdp = address;
      return this;
    }

    /** Accept heartbeats on this UNIX-domain socket (Linux, epoll). Default: off. */
    public Builder heartbeatUnixSocket(Path path) {
      this.heartbeatUnixSocket = path;
      return this;
    }

    /**
     * Notifications and heartbeats within this window wake the relay once, at the end of the
     * window: at most one claim cycle per window however many arrive. Default 20 ms.
     */
    public Builder wakeDebounce(Duration wakeDebounce) {
      this.wakeDebounce = wakeDebounce;
      return this;
    }

    /** WAL mode: replication slot name. Default {@code <table name>_relay}. */
    public Builder walSlot(String walSlot) {
      this.walSlot = OutboxTable.checkChannel(walSlot);
      return this;
    }

    /** WAL mode: publication name. Default {@code <table name>_relay}. */
    public Builder walPublication(String walPublication) {
      this.walPublication = OutboxTable.checkChannel(walPublication);
      return this;
    }

    /** Default 10 s. */
    public Builder statsInterval(Duration statsInterval) {
      this.statsInterval = statsInterval;
      return this;
    }

    /**
     * Default 30 s: longest any statement of the relay may run; a statement that takes longer is
     * abandoned (the connection given up), so a database that stops answering cannot wedge the
     * relay.
     */
    public Builder statementTimeout(Duration statementTimeout) {
      this.statementTimeout = statementTimeout;
      return this;
    }

    /**
     * Default 1,024: outcomes buffered for each {@link RelayHandle#outcomes()} subscriber. The
     * relay never waits for a subscriber; when one falls this far behind, newer outcomes are
     * dropped for it (and counted: {@link RelayMetrics#outcomesDropped}).
     */
    public Builder outcomeBuffer(int outcomeBuffer) {
      this.outcomeBuffer = outcomeBuffer;
      return this;
    }

    /** Default {@code relay-<pid>-<random>}. */
    public Builder instanceId(String instanceId) {
      this.instanceId = instanceId;
      return this;
    }

    /** Default {@link RelayMetrics#none()}. */
    public Builder metrics(RelayMetrics metrics) {
      this.metrics = metrics;
      return this;
    }

    /**
     * Default none: sees each record the relay builds from a stored message and may replace its
     * headers, and hears how its send ended (see {@link RecordInterceptor}; the Spring Boot
     * starter sets one for trace propagation when Micrometer Tracing is present). {@code null}
     * removes it.
     */
    public Builder recordInterceptor(@Nullable RecordInterceptor recordInterceptor) {
      this.recordInterceptor = recordInterceptor;
      return this;
    }

    /**
     * @throws InvalidConfigurationException naming the first invalid option
     */
    public RelayOptions build() {
      Objects.requireNonNull(table, "table");
      Objects.requireNonNull(codec, "codec");
      Objects.requireNonNull(mode, "mode");
      Objects.requireNonNull(retryPolicy, "retryPolicy");
      Objects.requireNonNull(failureClassifier, "failureClassifier");
      Objects.requireNonNull(metrics, "metrics");
      positive("claimSize", claimSize);
      positive("outcomeBuffer", outcomeBuffer);
      positive("statementTimeout", statementTimeout);
      if (maxInFlightBytes < 1) {
        throw new InvalidConfigurationException("maxInFlightBytes must be >= 1, got " + maxInFlightBytes);
      }
      int inFlight = maxInFlight != null ? maxInFlight : defaultMaxInFlight(mode);
      positive("maxInFlight", inFlight);
      positive("settleConcurrency", settleConcurrency);
      positive("rowsPerKeyInFlight", rowsPerKeyInFlight);
      positive("leaseDuration", leaseDuration);
      positive("pollInterval", pollInterval);
      positive("statsInterval", statsInterval);
      positive("leadershipRetry", leadershipRetry);
      positive("wakeDebounce", wakeDebounce);
      if (leaseDuration.compareTo(Duration.ofSeconds(1)) < 0) {
        throw new InvalidConfigurationException(
            "leaseDuration must be at least 1 s (it must outlast a publish), got " + leaseDuration);
      }
      Duration renewal = leaseRenewal != null ? leaseRenewal : leaseDuration.dividedBy(3);
      if (renewal.isNegative() || renewal.compareTo(leaseDuration) >= 0) {
        throw new InvalidConfigurationException("leaseRenewal must be zero (off) or shorter than"
            + " leaseDuration " + leaseDuration + ", got " + renewal);
      }
      if (mode == RelayMode.PARTITIONED && !renewal.isZero()
          && renewal.compareTo(leaseDuration.dividedBy(2)) > 0) {
        throw new InvalidConfigurationException("leaseRenewal must be at most half of"
            + " leaseDuration in PARTITIONED mode (ownership is renewed every leaseRenewal and"
            + " must not lapse between rounds), got " + renewal + " for " + leaseDuration);
      }
      String id = instanceId != null ? instanceId : defaultInstanceId();
      if (id.isBlank() || id.length() > 255) {
        throw new InvalidConfigurationException("instanceId must be 1 to 255 characters");
      }
      if ((sink == null) == (kafka == null)) {
        throw new InvalidConfigurationException(sink == null
            ? "Set where records go: kafka(producerProperties) or sink(recordSink)"
            : "Set either kafka(producerProperties) or sink(recordSink), not both");
      }
      Map<String, Object> producer = kafka == null ? null : KafkaRecords.validated(kafka);
      return new RelayOptions(this, producer, renewal, inFlight, id);
    }

    private static void positive(String name, int value) {
      if (value < 1) {
        throw new InvalidConfigurationException(name + " must be >= 1, got " + value);
      }
    }

    private static void positive(String name, Duration value) {
      if (value.isNegative() || value.isZero()) {
        throw new InvalidConfigurationException(name + " must be positive, got " + value);
      }
    }
  }
}
