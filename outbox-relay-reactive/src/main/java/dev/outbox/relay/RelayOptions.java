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
 * @param table the outbox table
 * @param codec decodes {@code raw_data}
 * @param sink where records go
 * @param closeSinkOnStop whether {@link RelayHandle#stop} closes the sink (true when the relay
 *     created it from {@link Builder#kafka})
 * @param mode how relay instances share the table
 * @param claimSize most batches per claim statement
 * @param leaseDuration how long a claim is exclusive unless renewed
 * @param leaseRenewal how often the relay extends the leases of the batches it still holds
 *     (claimed, not yet settled) by {@code leaseDuration}; {@link Duration#ZERO} never, so a
 *     publish must then finish within the lease
 * @param maxInFlight most records claimed and not yet settled (a single batch larger than this
 *     is still taken when nothing else is in flight)
 * @param settleConcurrency settlement statements run at once
 * @param retryPolicy backoff and attempts for retriable failures
 * @param failureClassifier which failures are fatal
 * @param pollInterval how often the table is polled for due batches
 * @param leadershipRetry in ORDERED mode, how often a standby tries to become leader, and how
 *     often the leader checks its lock connection
 * @param triggers what else wakes the relay besides polling
 * @param walSlot WAL mode: the replication slot (created if missing)
 * @param walPublication WAL mode: the publication (created if missing)
 * @param statsInterval how often backlog meters are refreshed
 * @param instanceId this relay's lease owner name, unique per instance
 * @param metrics where measurements go
 */
public record RelayOptions(
    OutboxTable table,
    Codec codec,
    RecordSink sink,
    boolean closeSinkOnStop,
    RelayMode mode,
    int claimSize,
    Duration leaseDuration,
    Duration leaseRenewal,
    int maxInFlight,
    int settleConcurrency,
    RetryPolicy retryPolicy,
    FailureClassifier failureClassifier,
    Duration pollInterval,
    Duration leadershipRetry,
    Triggers triggers,
    String walSlot,
    String walPublication,
    Duration statsInterval,
    String instanceId,
    RelayMetrics metrics) {

  public static Builder builder() {
    return new Builder();
  }

  /** Collects options; not thread-safe. */
  public static final class Builder {
    private OutboxTable table = OutboxTable.defaultTable();
    private Codec codec = Codec.protobuf();
    private @Nullable RecordSink sink;
    private @Nullable Map<String, Object> kafka;
    private RelayMode mode = RelayMode.PARALLEL;
    private int claimSize = 100;
    private Duration leaseDuration = Duration.ofSeconds(30);
    private @Nullable Duration leaseRenewal;
    private int maxInFlight = 1_000;
    private int settleConcurrency = 8;
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
    private @Nullable String instanceId;
    private RelayMetrics metrics = RelayMetrics.none();

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

    /** A sink you own (the relay does not close it). Exclusive with {@link #kafka}. */
    public Builder sink(RecordSink sink) {
      this.sink = sink;
      return this;
    }

    /**
     * Producer properties (at least {@code bootstrap.servers}) for a {@link ReactorKafkaSink}
     * that the relay creates with {@code maxInFlight} and closes on stop. Exclusive with {@link
     * #sink}.
     */
    public Builder kafka(Map<String, Object> producerProperties) {
      this.kafka = Map.copyOf(producerProperties);
      return this;
    }

    /** Default {@link RelayMode#PARALLEL}. */
    public Builder mode(RelayMode mode) {
      this.mode = mode;
      return this;
    }

    /** Default 100 batches. */
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

    /** Default 1,000 records. */
    public Builder maxInFlight(int maxInFlight) {
      this.maxInFlight = maxInFlight;
      return this;
    }

    /** Default 8. */
    public Builder settleConcurrency(int settleConcurrency) {
      this.settleConcurrency = settleConcurrency;
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
      positive("maxInFlight", maxInFlight);
      positive("settleConcurrency", settleConcurrency);
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
      String id = instanceId != null ? instanceId
          : "relay-" + ProcessHandle.current().pid() + "-"
              + Long.toString(ThreadLocalRandom.current().nextLong() & Long.MAX_VALUE, 36);
      if (id.isBlank() || id.length() > 255) {
        throw new InvalidConfigurationException("instanceId must be 1 to 255 characters");
      }
      if ((sink == null) == (kafka == null)) {
        throw new InvalidConfigurationException(sink == null
            ? "Set where records go: kafka(producerProperties) or sink(recordSink)"
            : "Set either kafka(producerProperties) or sink(recordSink), not both");
      }
      boolean ownSink = sink == null;
      RecordSink target = ownSink ? ReactorKafkaSink.create(kafka, maxInFlight) : sink;
      return new RelayOptions(table, codec, target, ownSink, mode, claimSize, leaseDuration,
          renewal, maxInFlight, settleConcurrency, retryPolicy, failureClassifier, pollInterval,
          leadershipRetry,
          new Triggers(listenChannel, heartbeatTcp, heartbeatUdp, heartbeatUnixSocket, wakeDebounce),
          walSlot != null ? walSlot : table.name() + "_relay",
          walPublication != null ? walPublication : table.name() + "_relay",
          statsInterval, id, metrics);
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
