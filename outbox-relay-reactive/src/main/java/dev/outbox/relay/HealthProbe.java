package dev.outbox.relay;

import dev.outbox.r2dbc.OutboxTable;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.Row;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.function.Function;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.errors.AuthenticationException;
import org.apache.kafka.common.errors.AuthorizationException;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.Disposable;
import reactor.core.Disposables;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;

/**
 * Checks periodically whether the relay can publish, and keeps the last answer for {@link
 * RelayHandle#health()}. Every check has a timeout, nothing blocks a non-blocking thread (Kafka
 * admin calls and thread lookups run on {@link Schedulers#boundedElastic()}), and {@link
 * #dispose()} stops it and closes its admin client.
 *
 * <p>DOWN when: the database does not answer or the outbox table (or its dead-letter table) is
 * missing; Kafka does not answer a cluster description with the producer's settings
 * (unreachable, authentication failed); the producer's network thread ({@code
 * kafka-producer-network-thread | <client.id>}) is not alive. Details only (a WARN log line at
 * most every {@link #LOG_EVERY}, and a meter): in ORDERED and WAL mode the oldest transaction
 * with a transaction id that has run longer than the threshold (it holds the commit watermark,
 * and WAL slot creation, back); in WAL mode, a slot that does not exist, and the replication
 * lag ({@code walLag}: bytes behind, WAL retained, seconds behind; also as meters).
 *
 * <pre>{@code
 * HealthProbe probe = new HealthProbe(pool, table, mode, producerProperties, walSlot,
 *     walPublication, metrics,
 *     HealthProbe.DEFAULT_INTERVAL, HealthProbe.DEFAULT_TIMEOUT);
 * probe.start();            // after the sink (its producer) was created
 * ... probe.health() ...
 * probe.dispose();          // before the sink is closed
 * }</pre>
 */
final class HealthProbe implements Disposable {
  static final Duration DEFAULT_INTERVAL = Duration.ofSeconds(5);
  static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(3);
  /** Transactions running longer than this are reported as holding publication back. */
  static final Duration DEFAULT_HELD_BACK_THRESHOLD = Duration.ofSeconds(10);
  /** At most one WARN line per condition this often while it lasts. */
  static final Duration LOG_EVERY = Duration.ofMinutes(1);
  static final String PRODUCER_THREAD_PREFIX = "kafka-producer-network-thread | ";

  private static final Logger log = LoggerFactory.getLogger(HealthProbe.class);

  private final ConnectionFactory connections;
  private final OutboxTable table;
  private final RelayMode mode;
  private final @Nullable Map<String, Object> adminProperties;
  private final @Nullable String producerThreadName;
  private final String walSlot;
  private final String walPublication;
  private final RelayMetrics metrics;
  private final Duration interval;
  private final Duration checkTimeout;
  private final Duration heldBackThreshold;

  private final Disposable.Swap timer = Disposables.swap();
  private final AtomicReference<@Nullable Admin> admin = new AtomicReference<>();
  private final AtomicBoolean disposed = new AtomicBoolean();
  private volatile RelayHealth current = RelayHealth.down("health not checked yet");
  private volatile long startedNanos = System.nanoTime();
  /** The producer's network thread once seen; only its liveness is checked after that. */
  private volatile @Nullable Thread producerThread;
  private final AtomicLong heldBackLoggedNanos = new AtomicLong(Long.MIN_VALUE);
  private final AtomicLong slotLoggedNanos = new AtomicLong(Long.MIN_VALUE);
  private volatile long slotMissingSinceNanos = Long.MIN_VALUE;
  private volatile boolean heldBackReported;

  HealthProbe(ConnectionFactory connections, OutboxTable table, RelayMode mode,
      @Nullable Map<String, Object> producerProperties, String walSlot, String walPublication,
      RelayMetrics metrics, Duration interval, Duration checkTimeout) {
    this(connections, table, mode, producerProperties, walSlot, walPublication, metrics, interval,
        checkTimeout, DEFAULT_HELD_BACK_THRESHOLD);
  }

  /**
   * @param connections the relay's pool
   * @param producerProperties the sink's effective producer properties, {@code null} when the
   *     caller supplied their own sink (Kafka and the producer thread are then not checked)
   * @param walSlot WAL mode: the replication slot; ignored in other modes
   * @param walPublication WAL mode: the publication that must include the table
   * @param interval time between two rounds of checks
   * @param checkTimeout longest wait for one check
   * @param heldBackThreshold report transactions running longer than this
   */
  HealthProbe(ConnectionFactory connections, OutboxTable table, RelayMode mode,
      @Nullable Map<String, Object> producerProperties, String walSlot, String walPublication,
      RelayMetrics metrics, Duration interval, Duration checkTimeout, Duration heldBackThreshold) {
    this.connections = Objects.requireNonNull(connections, "connections");
    this.table = Objects.requireNonNull(table, "table");
    this.mode = Objects.requireNonNull(mode, "mode");
    this.walSlot = OutboxTable.checkChannel(walSlot);
    this.walPublication = OutboxTable.checkChannel(walPublication);
    this.metrics = Objects.requireNonNull(metrics, "metrics");
    this.interval = positive("interval", interval);
    this.checkTimeout = positive("checkTimeout", checkTimeout);
    this.heldBackThreshold = Objects.requireNonNull(heldBackThreshold, "heldBackThreshold");
    if (producerProperties == null) {
      this.adminProperties = null;
      this.producerThreadName = null;
    } else {
      this.adminProperties = adminProperties(producerProperties, checkTimeout);
      Object clientId = producerProperties.get(CommonClientConfigs.CLIENT_ID_CONFIG);
      this.producerThreadName = clientId == null || clientId.toString().isBlank() ? null
          : PRODUCER_THREAD_PREFIX + clientId;
    }
  }

  private static Duration positive(String name, Duration value) {
    if (value.isNegative() || value.isZero()) {
      throw new IllegalArgumentException(name + " must be positive, got " + value);
    }
    return value;
  }

  /** The producer's settings an admin client understands, with timeouts of one check. */
  private static Map<String, Object> adminProperties(Map<String, Object> producer,
      Duration checkTimeout) {
    Set<String> known = AdminClientConfig.configNames();
    Map<String, Object> props = new HashMap<>();
    producer.forEach((name, value) -> {
      if (known.contains(name) && value != null) {
        props.put(name, value);
      }
    });
    Object clientId = producer.get(CommonClientConfigs.CLIENT_ID_CONFIG);
    props.put(CommonClientConfigs.CLIENT_ID_CONFIG,
        (clientId == null ? "outbox-relay" : clientId) + "-health");
    int millis = (int) Math.min(Integer.MAX_VALUE, checkTimeout.toMillis());
    props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, millis);
    props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, millis);
    props.put(AdminClientConfig.RETRIES_CONFIG, 0);
    return props;
  }

  /** Starts the periodic checks (the first at once); idempotent until disposed. */
  void start() {
    if (disposed.get() || timer.get() != null) {
      return;
    }
    startedNanos = System.nanoTime();
    timer.update(Flux.interval(Duration.ZERO, interval)
        .onBackpressureDrop()
        .concatMap(tick -> check())
        .subscribe(health -> {}, error -> log.error("Outbox relay health checks ended", error)));
  }

  /** The last answer; DOWN "health not checked yet" before the first round completes. */
  RelayHealth health() {
    return current;
  }

  /** Runs every check once now; the answer also becomes {@link #health()}. Never fails. */
  Mono<RelayHealth> check() {
    return Mono.defer(() -> {
      long started = System.nanoTime();
      List<Mono<Result>> checks = new ArrayList<>();
      checks.add(bounded("database", checkTable()));
      if (adminProperties != null) {
        checks.add(bounded("kafka", checkKafka()));
      }
      if (producerThreadName != null) {
        checks.add(checkProducerThread());
      }
      if (mode == RelayMode.ORDERED || mode == RelayMode.WAL || mode == RelayMode.PARTITIONED) {
        checks.add(bounded("heldBackBy", checkHeldBack()));
      }
      if (mode == RelayMode.WAL) {
        checks.add(bounded("walSlot", checkSlot()));
        checks.add(bounded("walPublication", checkPublication()));
        checks.add(checkWalLag());
      }
      return Flux.mergeSequential(checks).collectList()
          .map(results -> {
            List<String> reasons = new ArrayList<>();
            Map<String, Object> details = new LinkedHashMap<>();
            details.put("mode", mode.name());
            details.put("table", table.qualifiedName());
            for (Result result : results) {
              if (result.reason() != null) {
                reasons.add(result.reason());
              }
              details.put(result.name(), result.detail());
            }
            details.put("checkMillis", (System.nanoTime() - started) / 1_000_000);
            RelayHealth health = RelayHealth.of(reasons, details, Instant.now());
            if (!disposed.get()) {
              RelayHealth before = current;
              current = health;
              metrics.health(health.isUp());
              if (!health.isUp() && !health.reasons().equals(before.reasons())) {
                log.warn("Outbox relay health DOWN on {}: {}", table, reasons);
              } else if (!before.isUp() && health.isUp() && !before.details().isEmpty()) {
                log.info("Outbox relay health UP again on {}", table);
              }
            }
            return health;
          });
    });
  }

  /** One check's outcome: a DOWN reason or null, and what goes under {@code name} in details. */
  private record Result(String name, @Nullable String reason, Object detail) {
    static Result ok(String name, Object detail) {
      return new Result(name, null, detail);
    }

    static Result down(String name, String reason) {
      return new Result(name, reason, reason);
    }
  }

  private Mono<Result> bounded(String name, Mono<Result> check) {
    return check
        .timeout(checkTimeout)
        .onErrorResume(error -> Mono.just(Result.down(name, describe(name, error))));
  }

  private String describe(String name, Throwable error) {
    Throwable cause = unwrap(error);
    String what = switch (name) {
      case "database" -> "database";
      case "kafka" -> "Kafka";
      default -> name;
    };
    if (cause instanceof TimeoutException
        // Kafka's own TimeoutException; the name clashes with java.util.concurrent's.
        || cause instanceof org.apache.kafka.common.errors.TimeoutException) {
      if (name.equals("kafka")) {
        return "Kafka unreachable: no answer from "
            + Objects.requireNonNull(adminProperties).get(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG)
            + " within " + checkTimeout + " (" + cause.getClass().getSimpleName() + ": "
            + cause.getMessage() + ")";
      }
      return what + " did not answer within " + checkTimeout;
    }
    if (cause instanceof AuthenticationException) {
      return "Kafka authentication failed: " + cause.getClass().getSimpleName() + ": "
          + cause.getMessage();
    }
    if (cause instanceof AuthorizationException) {
      return "Kafka authorization failed: " + cause.getClass().getSimpleName() + ": "
          + cause.getMessage();
    }
    return what + ": " + cause.getClass().getSimpleName() + ": " + cause.getMessage();
  }

  private static Throwable unwrap(Throwable error) {
    Throwable cause = error;
    while ((cause instanceof ExecutionException || cause instanceof CompletionException)
        && cause.getCause() != null) {
      cause = cause.getCause();
    }
    return cause;
  }

  // ---- the checks ----

  /** The outbox table and its dead-letter table exist (and the database answers). */
  private Mono<Result> checkTable() {
    // Validated identifiers (letters, digits, '_', one optional '.'): safe as literals.
    String sql = "SELECT to_regclass('" + table.qualifiedName() + "') IS NOT NULL, to_regclass('"
        + table.deadLetterQualifiedName() + "') IS NOT NULL, to_regclass('"
        + table.partitionsQualifiedName() + "') IS NOT NULL";
    return query(sql, row -> new boolean[] {
        Boolean.TRUE.equals(row.get(0, Boolean.class)),
        Boolean.TRUE.equals(row.get(1, Boolean.class)),
        Boolean.TRUE.equals(row.get(2, Boolean.class))})
        .map(found -> {
          if (!found[0]) {
            return Result.down("database", "outbox table " + table.qualifiedName()
                + " does not exist (apply the outbox schema)");
          }
          if (!found[1]) {
            return Result.down("database", "dead-letter table " + table.deadLetterQualifiedName()
                + " does not exist (apply the outbox schema)");
          }
          if (mode == RelayMode.PARTITIONED && !found[2]) {
            return Result.down("database", "partitions table " + table.partitionsQualifiedName()
                + " does not exist (PARTITIONED mode: apply OutboxSchema.enablePartitions)");
          }
          return Result.ok("database", "ok, tables present");
        });
  }

  private <T> Mono<T> query(String sql, Function<Row, T> mapper) {
    return Mono.usingWhen(connections.create(),
        connection -> Flux.from(connection.createStatement(sql).execute())
            .concatMap(result -> result.map((row, meta) -> mapper.apply(row)))
            .next(),
        Connection::close);
  }

  /** Kafka answers a cluster description with the producer's address and security settings. */
  private Mono<Result> checkKafka() {
    return Mono.fromCallable(this::adminClient)
        .subscribeOn(Schedulers.boundedElastic())
        .flatMap(client -> {
          DescribeClusterResult cluster = client.describeCluster(new DescribeClusterOptions()
              .timeoutMs((int) Math.min(Integer.MAX_VALUE, checkTimeout.toMillis())));
          return Mono.zip(fromKafka(cluster.clusterId()), fromKafka(cluster.nodes()))
              .map(found -> {
                Map<String, Object> detail = new LinkedHashMap<>();
                detail.put("clusterId", String.valueOf(found.getT1()));
                detail.put("brokers", found.getT2().size());
                return Result.ok("kafka", detail);
              })
              // A failed or stuck client is replaced: its I/O thread may be dead.
              .doOnError(error -> replaceAdmin(client))
              .doOnCancel(() -> replaceAdmin(client));
        });
  }

  private static <T> Mono<T> fromKafka(KafkaFuture<T> future) {
    return Mono.<T>create(sink -> {
      future.whenComplete((value, error) -> {
        if (error != null) {
          sink.error(error);
        } else if (value == null) {
          sink.success();
        } else {
          sink.success(value);
        }
      });
      sink.onCancel(() -> future.cancel(true));
    });
  }

  /** On boundedElastic only: creating an admin client resolves host names. */
  private Admin adminClient() {
    synchronized (admin) { // only boundedElastic threads wait here
      Admin client = admin.get();
      if (client == null) {
        client = Admin.create(Objects.requireNonNull(adminProperties));
        admin.set(client);
      }
      if (disposed.get()) {
        replaceAdmin(client);
        throw new CancellationException("health probe disposed");
      }
      return client;
    }
  }

  private void replaceAdmin(Admin failed) {
    if (admin.compareAndSet(failed, null)) {
      closeLater(failed);
    }
  }

  private static void closeLater(Admin client) {
    Schedulers.boundedElastic().schedule(() -> {
      try {
        client.close(Duration.ZERO);
      } catch (RuntimeException e) {
        log.debug("Health admin client did not close cleanly", e);
      }
    });
  }

  /** The producer's I/O thread is alive (it dies, for example, of an OutOfMemoryError). */
  private Mono<Result> checkProducerThread() {
    String name = Objects.requireNonNull(producerThreadName);
    return Mono.fromCallable(() -> {
          Thread known = producerThread;
          if (known == null) {
            known = findThread(name);
            producerThread = known;
          }
          if (known != null && known.isAlive()) {
            return Result.ok("producerNetworkThread", "alive");
          }
          if (known == null
              && System.nanoTime() - startedNanos < interval.plus(checkTimeout).toNanos()) {
            return Result.ok("producerNetworkThread", "not started yet");
          }
          return Result.down("producerNetworkThread", "Kafka producer network thread '" + name
              + "' is " + (known == null ? "not running" : "dead")
              + ": the producer can send nothing (restart the relay)");
        })
        .subscribeOn(Schedulers.boundedElastic())
        .timeout(checkTimeout)
        .onErrorResume(error -> Mono.just(Result.down("producerNetworkThread",
            "producer network thread: " + error)));
  }

  /** Only until the thread is first seen; after that its liveness alone is checked. */
  private static @Nullable Thread findThread(String name) {
    for (Thread thread : Thread.getAllStackTraces().keySet()) {
      if (name.equals(thread.getName()) && thread.isAlive()) {
        return thread;
      }
    }
    return null;
  }

  /**
   * The oldest transaction with a transaction id running longer than the threshold, anywhere in
   * the cluster: until it ends, ORDERED claims stop at the commit watermark and a new WAL slot
   * cannot be created. Needs {@code pg_read_all_stats} (or superuser) to see other roles'
   * sessions.
   */
  private Mono<Result> checkHeldBack() {
    double seconds = heldBackThreshold.toMillis() / 1000.0;
    String sql = "SELECT pid, EXTRACT(EPOCH FROM (clock_timestamp() - xact_start))::float8,"
        + " state, datname, usename FROM pg_stat_activity"
        + " WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
        + " AND xact_start < clock_timestamp() - make_interval(secs => " + seconds + ")"
        + " ORDER BY xact_start LIMIT 1";
    return query(sql, row -> {
          Map<String, Object> detail = new LinkedHashMap<>();
          detail.put("pid", row.get(0, Integer.class));
          Double age = row.get(1, Double.class);
          detail.put("ageSeconds", age == null ? 0 : Math.round(age));
          detail.put("state", String.valueOf(row.get(2, String.class)));
          detail.put("database", String.valueOf(row.get(3, String.class)));
          detail.put("user", String.valueOf(row.get(4, String.class)));
          return detail;
        })
        .map(detail -> {
          long ageSeconds = ((Number) detail.get("ageSeconds")).longValue();
          metrics.heldBack(Duration.ofSeconds(ageSeconds));
          heldBackReported = true;
          if (rateLimited(heldBackLoggedNanos)) {
            log.warn("Outbox relay publication on {} ({} mode) is held back by transaction of"
                    + " pid {} ({} s old, {}, database {}, user {}): {} until it ends",
                table, mode, detail.get("pid"), ageSeconds, detail.get("state"),
                detail.get("database"), detail.get("user"),
                mode == RelayMode.WAL ? "a missing replication slot cannot be created"
                    : "nothing committed after it started is published");
          }
          return Result.ok("heldBackBy", (Object) detail);
        })
        .defaultIfEmpty(Result.ok("heldBackBy", "none"))
        .doOnNext(result -> {
          if ("none".equals(result.detail())) {
            metrics.heldBack(Duration.ZERO);
            if (heldBackReported) {
              heldBackReported = false;
              heldBackLoggedNanos.set(Long.MIN_VALUE);
              log.info("Outbox relay publication on {} is no longer held back by a transaction",
                  table);
            }
          }
        });
  }

  /** WAL mode: whether the slot exists (its creation waits for running transactions). */
  private Mono<Result> checkSlot() {
    return query("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '" + walSlot + "'",
        row -> row.get(0, Long.class))
        .map(count -> {
          boolean missing = count == null || count == 0;
          metrics.walSlotMissing(missing);
          if (!missing) {
            slotMissingSinceNanos = Long.MIN_VALUE;
            return Result.ok("walSlot", walSlot + ": present");
          }
          long now = System.nanoTime();
          if (slotMissingSinceNanos == Long.MIN_VALUE) {
            slotMissingSinceNanos = now;
          } else if (now - slotMissingSinceNanos >= heldBackThreshold.toNanos()
              && rateLimited(slotLoggedNanos)) {
            log.warn("Outbox relay replication slot {} does not exist after {} s: its creation"
                    + " waits until the transactions running when it began have ended (see"
                    + " heldBackBy in the health details); nothing is published until then",
                walSlot, (now - slotMissingSinceNanos) / 1_000_000_000L);
          }
          return Result.ok("walSlot", walSlot + ": missing (creation waits for running"
              + " transactions to end)");
        });
  }

  /**
   * WAL mode: whether the publication includes the table. A table dropped and created again
   * leaves the publication; nothing of it reaches the slot until the relay restarts (which puts
   * it back and sweeps what was written meanwhile).
   */
  private Mono<Result> checkPublication() {
    return query("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '" + walPublication
            + "') AS publication, EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p"
            + " ON p.oid = r.prpubid WHERE p.pubname = '" + walPublication + "' AND r.prrelid ="
            + " to_regclass('" + table.qualifiedName() + "')) AS member",
        row -> Boolean.TRUE.equals(row.get("publication", Boolean.class))
            && !Boolean.TRUE.equals(row.get("member", Boolean.class)))
        .map(lost -> lost
            ? Result.down("walPublication", "publication " + walPublication + " does not include "
                + table.qualifiedName() + " (dropped and created again?): nothing new is"
                + " published; restart the relay to add it back")
            : Result.ok("walPublication", walPublication));
  }

  /**
   * WAL mode: how far the relay is behind, never a DOWN reason. Bytes: WAL written after the
   * slot's confirmed position ({@code pg_wal_lsn_diff(pg_current_wal_lsn(),
   * confirmed_flush_lsn)}); retained: WAL the slot keeps on disk (from its {@code restart_lsn}).
   * Seconds: the database clock minus the {@code insert_time} of the first row in insert order
   * still in the table (0 when none). An LSN carries no time (commit timestamps are off by
   * default), while a row leaves the table only once published and the slot confirms its
   * transaction only after that; so the oldest remaining row is the oldest message not yet
   * published. Bytes alone would also count WAL of other tables written while no outbox row
   * arrives (the slot then confirms nothing).
   */
  private Mono<Result> checkWalLag() {
    String sql = "SELECT s.slot_name IS NOT NULL, s.active,"
        + " pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::int8,"
        + " pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::int8,"
        + " (SELECT EXTRACT(EPOCH FROM (clock_timestamp() - t.insert_time))::float8 FROM "
        + table.qualifiedName() + " t ORDER BY t.insert_seq LIMIT 1)"
        + " FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = '"
        + walSlot + "'";
    return query(sql, row -> {
          Map<String, Object> detail = new LinkedHashMap<>();
          boolean present = Boolean.TRUE.equals(row.get(0, Boolean.class));
          Long bytes = row.get(2, Long.class);
          Long retained = row.get(3, Long.class);
          Double seconds = row.get(4, Double.class);
          long lagBytes = !present || bytes == null ? -1 : Math.max(0, bytes);
          long ageMillis = seconds == null ? 0 : Math.max(0, Math.round(seconds * 1000));
          metrics.walLagBytes(lagBytes);
          metrics.walLagAge(Duration.ofMillis(ageMillis));
          if (!present) {
            detail.put("bytes", "unknown (slot missing)");
          } else if (bytes == null) {
            // Listed while its creation waits for running transactions, without a position yet.
            detail.put("bytes", "unknown (slot not ready yet)");
          } else {
            detail.put("bytes", lagBytes);
            detail.put("retainedBytes", retained == null ? -1 : retained);
            detail.put("slotActive", Boolean.TRUE.equals(row.get(1, Boolean.class)));
          }
          detail.put("seconds", ageMillis / 1000.0);
          return Result.ok("walLag", (Object) detail);
        })
        .timeout(checkTimeout)
        .onErrorResume(error -> Mono.just(Result.ok("walLag", "unknown: "
            + describe("walLag", error))));
  }

  private static boolean rateLimited(AtomicLong lastNanos) {
    long now = System.nanoTime();
    long last = lastNanos.get();
    return (last == Long.MIN_VALUE || now - last >= LOG_EVERY.toNanos())
        && lastNanos.compareAndSet(last, now);
  }

  /** Stops the checks and closes the admin client (in the background); idempotent. */
  @Override
  public void dispose() {
    if (!disposed.compareAndSet(false, true)) {
      return;
    }
    timer.dispose();
    current = RelayHealth.down("relay stopped");
    Admin client = admin.getAndSet(null);
    if (client != null) {
      closeLater(client);
    }
  }

  @Override
  public boolean isDisposed() {
    return disposed.get();
  }
}
