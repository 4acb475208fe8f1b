package dev.outbox.relay.standalone;

import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.relay.MicrometerRelayMetrics;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayHealth;
import dev.outbox.relay.RelayOptions;
import dev.outbox.relay.RelayOutcome;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.binder.jvm.JvmMemoryMetrics;
import io.micrometer.core.instrument.binder.jvm.JvmThreadMetrics;
import io.micrometer.core.instrument.binder.system.ProcessorMetrics;
import io.micrometer.core.instrument.binder.system.UptimeMetrics;
import io.micrometer.prometheusmetrics.PrometheusConfig;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import io.netty.channel.group.ChannelGroup;
import io.netty.channel.group.DefaultChannelGroup;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.util.concurrent.GlobalEventExecutor;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.pool.ConnectionPoolConfiguration;
import io.r2dbc.spi.ValidationDepth;
import io.r2dbc.pool.PoolMetrics;
import io.r2dbc.spi.ConnectionFactories;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.ConnectionFactoryOptions;
import java.time.Duration;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.ToDoubleFunction;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.Disposable;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;
import reactor.netty.DisposableServer;
import reactor.netty.http.server.HttpServer;
import reactor.netty.http.server.HttpServerRequest;
import reactor.netty.http.server.HttpServerResponse;

/**
 * A running relay process: a connection pool over the configured database, an {@link
 * OutboxRelay} publishing to Kafka, and an HTTP server with two endpoints:
 *
 * <ul>
 *   <li>{@code GET /health}: {@code 200 {"status":"UP","details":{...}}} while the relay runs and
 *       its last health check ({@link RelayHandle#health()}) found it able to publish; otherwise
 *       {@code 503 {"status":"DOWN","reason":"...","reasons":[...],"details":{...}}}.
 *   <li>{@code GET /metrics}: every meter of the relay ({@code outbox_relay_*}), of the database
 *       pool ({@code outbox_relay_db_pool_*}) and of the JVM, in the Prometheus text format.
 * </ul>
 *
 * <pre>{@code
 * StandaloneRelay relay = StandaloneRelay.start(StandaloneConfig.fromEnvironment(System.getenv()));
 * log.info("health and metrics on port {}", relay.httpPort());
 * ...
 * relay.stop(Duration.ofSeconds(10)).block(Duration.ofSeconds(15));   // on shutdown
 * }</pre>
 *
 * <p>With {@link StandaloneConfig#deadLetterRetention()} set it also deletes expired dead
 * letters now and then (bounded runs, each count logged).
 *
 * <p>{@link RelayMain} is the process entry point around this class. Thread-safe.
 */
public final class StandaloneRelay {
  /** How long {@link #stop} waits for the HTTP server to close. */
  private static final Duration HTTP_CLOSE_TIMEOUT = Duration.ofSeconds(5);
  private static final String PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8";
  private static final String JSON = "application/json";
  /** Most dead letters one retention run deletes (one statement; locks stay short). */
  static final int RETENTION_BATCH = 1_000;
  /** After a run that deleted a full batch: the next one comes this soon. */
  private static final Duration RETENTION_CATCH_UP = Duration.ofSeconds(1);
  /** Retention runs at least this often (the retention / 10 when shorter), at most every 1 s. */
  private static final Duration RETENTION_MAX_INTERVAL = Duration.ofMinutes(10);

  private static final Logger log = LoggerFactory.getLogger(StandaloneRelay.class);

  private final StandaloneConfig config;
  private final ConnectionPool pool;
  private final PrometheusMeterRegistry registry;
  /** The HTTP connections, closed on stop (keep-alive clients would otherwise stay connected). */
  private final ChannelGroup httpConnections =
      new DefaultChannelGroup("outbox-relay-http", GlobalEventExecutor.INSTANCE);
  private final AtomicReference<State> state = new AtomicReference<>(State.STARTING);
  private final AtomicReference<@Nullable Mono<Void>> stopping = new AtomicReference<>();
  private volatile @Nullable RelayHandle handle;
  private volatile @Nullable DisposableServer server;
  private volatile @Nullable Disposable retention;

  private enum State { STARTING, RUNNING, FAILED, STOPPING }

  private StandaloneRelay(StandaloneConfig config, ConnectionPool pool,
      PrometheusMeterRegistry registry) {
    this.config = config;
    this.pool = pool;
    this.registry = registry;
  }

  /**
   * Creates the pool, binds the HTTP server on {@link StandaloneConfig#httpPort()} and starts
   * the relay; returns once the port is bound (the database and Kafka are reached in the
   * background, and {@code /health} says whether they answer). Blocks while binding: call it
   * from an ordinary thread (such as {@code main}), not from a Reactor thread.
   *
   * @throws dev.outbox.r2dbc.InvalidConfigurationException when the relay options are invalid
   * @throws RuntimeException from reactor-netty when the port cannot be bound
   */
  public static StandaloneRelay start(StandaloneConfig config) {
    Objects.requireNonNull(config, "config");
    PrometheusMeterRegistry registry = new PrometheusMeterRegistry(PrometheusConfig.DEFAULT);
    ConnectionFactory factory =
        ConnectionFactories.get(ConnectionFactoryOptions.parse(config.databaseUrl()));
    ConnectionPool pool = new ConnectionPool(ConnectionPoolConfiguration.builder(factory)
        .name("outbox-relay")
        .initialSize(0)
        .maxSize(config.dbPoolSize())
        .maxAcquireTime(Duration.ofSeconds(30))
        // Opening a connection through a silent network never completes, and a pending creation
        // holds a pool slot: bound it (connectTimeout covers only the TCP connect).
        .maxCreateConnectionTime(Duration.ofSeconds(10))
        // LOCAL: a connection the relay gave up after a statement timeout (closed) is dropped.
        .validationDepth(ValidationDepth.LOCAL)
        .build());
    StandaloneRelay relay = new StandaloneRelay(config, pool, registry);
    try {
      relay.bindMeters();
      relay.server = HttpServer.create()
          .port(config.httpPort())
          .channelGroup(relay.httpConnections)
          .route(routes -> routes
              .get("/health", relay::health)
              .get("/metrics", relay::metrics))
          .bindNow(Duration.ofSeconds(30));
      relay.startRelay();
      Duration keep = config.deadLetterRetention();
      if (keep != null) {
        relay.startRetention(keep);
      }
    } catch (RuntimeException e) {
      relay.disposeNow();
      throw e;
    }
    log.info("Outbox relay HTTP server listening on port {} (GET /health, GET /metrics)",
        relay.httpPort());
    return relay;
  }

  private void bindMeters() {
    new JvmMemoryMetrics().bindTo(registry);
    new JvmThreadMetrics().bindTo(registry);
    new ProcessorMetrics().bindTo(registry);
    new UptimeMetrics().bindTo(registry);
    poolGauge("outbox.relay.db.pool.acquired", PoolMetrics::acquiredSize);
    poolGauge("outbox.relay.db.pool.idle", PoolMetrics::idleSize);
    poolGauge("outbox.relay.db.pool.pending", PoolMetrics::pendingAcquireSize);
    poolGauge("outbox.relay.db.pool.max", PoolMetrics::getMaxAllocatedSize);
  }

  private void poolGauge(String name, ToDoubleFunction<PoolMetrics> value) {
    Gauge.builder(name, pool, p -> p.getMetrics().map(value::applyAsDouble).orElse(Double.NaN))
        .tag("table", config.table().qualifiedName())
        .register(registry);
  }

  private void startRelay() {
    RelayOptions.Builder options = RelayOptions.builder()
        .table(config.table())
        .kafka(config.producerProperties())
        .mode(config.mode())
        .pollInterval(config.pollInterval())
        .maxInFlight(config.maxInFlight())
        .claimSize(config.claimSize())
        .leaseDuration(config.lease())
        .walSlot(config.walSlot())
        .walPublication(config.walPublication())
        .metrics(MicrometerRelayMetrics.create(registry, config.table().qualifiedName()));
    String instanceId = config.instanceId();
    if (instanceId != null) {
      options.instanceId(instanceId);
    }
    OutboxRelay relay = OutboxRelay.create(pool, options.build());
    relay.outcomes().subscribe(this::logOutcome, error -> relayEnded(), this::relayEnded);
    handle = relay.start();
    state.compareAndSet(State.STARTING, State.RUNNING);
  }

  /**
   * {@value StandaloneConfig#DEAD_LETTER_RETENTION}: deletes dead letters older than {@code keep}
   * now and then every {@link #retentionInterval}, {@value #RETENTION_BATCH} per run (sooner
   * again after a full run, so a large backlog of expired ones drains without one long
   * statement). A failed run is logged and retried at the next interval.
   */
  private void startRetention(Duration keep) {
    OutboxStore store = OutboxStore.create(pool, config.table());
    Duration every = retentionInterval(keep);
    String where = config.table().deadLetterQualifiedName();
    log.info("Dead letters older than {} are deleted from {} every {}, {} at most per run",
        StandaloneConfig.format(keep), where, StandaloneConfig.format(every), RETENTION_BATCH);
    retention = Mono.defer(() -> store.deleteDeadLettersOlderThan(keep, RETENTION_BATCH))
        .doOnNext(deleted -> {
          if (deleted > 0) {
            log.info("Deleted {} dead letters older than {} from {} ({})", deleted,
                StandaloneConfig.format(keep), where, StandaloneConfig.DEAD_LETTER_RETENTION);
          }
        })
        .onErrorResume(e -> {
          log.warn("Deleting expired dead letters from {} failed; trying again in {}: {}",
              where, StandaloneConfig.format(every), e.toString());
          return Mono.just(0L);
        })
        .flatMap(deleted -> Mono.delay(deleted >= RETENTION_BATCH ? RETENTION_CATCH_UP : every))
        .repeat()
        .subscribe(ignored -> { }, e -> log.error("Dead-letter retention ended", e));
  }

  /** A tenth of the retention, between 1 s and {@link #RETENTION_MAX_INTERVAL}. */
  static Duration retentionInterval(Duration keep) {
    Duration tenth = keep.dividedBy(10);
    if (tenth.compareTo(Duration.ofSeconds(1)) < 0) {
      return Duration.ofSeconds(1);
    }
    return tenth.compareTo(RETENTION_MAX_INTERVAL) > 0 ? RETENTION_MAX_INTERVAL : tenth;
  }

  private void logOutcome(RelayOutcome outcome) {
    if (outcome.kind() == RelayOutcome.Kind.DEAD_LETTERED) {
      log.warn("Batch {} ({} messages) dead-lettered: {}", outcome.batchId(),
          outcome.messageCount(), outcome.reason());
    } else if (log.isDebugEnabled()) {
      log.debug("{}", outcome);
    }
  }

  /** The outcomes complete when the relay has stopped: unexpected unless we are stopping. */
  private void relayEnded() {
    if (state.compareAndSet(State.RUNNING, State.FAILED)) {
      log.error("Outbox relay ended without being stopped; /health reports DOWN");
    }
  }

  /** The port of {@code /health} and {@code /metrics} (the bound one when configured as 0). */
  public int httpPort() {
    DisposableServer bound = server;
    if (bound == null) {
      throw new IllegalStateException("The HTTP server is not bound");
    }
    return bound.port();
  }

  public StandaloneConfig config() {
    return config;
  }

  /** Records claimed and not yet settled, now. */
  public long inFlightRecords() {
    RelayHandle running = handle;
    return running == null ? 0 : running.inFlightRecords();
  }

  /**
   * Stops the relay ({@link RelayHandle#stop}: no more claims, in-flight records get up to
   * {@code drain} to be acknowledged and settled, the rest are released), then closes the HTTP
   * server and the connection pool. {@code /health} reports DOWN from the moment this is
   * subscribed. Completes within about {@code drain} plus 5 s; never fails. Idempotent: every
   * call returns the same stop.
   */
  public Mono<Void> stop(Duration drain) {
    Objects.requireNonNull(drain, "drain");
    Mono<Void> stop = Mono.defer(() -> stopping(drain)).cache();
    return stopping.compareAndSet(null, stop) ? stop : Objects.requireNonNull(stopping.get());
  }

  private Mono<Void> stopping(Duration drain) {
    state.set(State.STOPPING);
    disposeRetention();
    RelayHandle running = handle;
    Mono<Void> relayStop = running == null ? Mono.empty() : running.stop(drain)
        .onErrorResume(e -> {
          log.warn("Outbox relay did not stop cleanly: {}", e.toString());
          return Mono.empty();
        });
    return relayStop
        .then(closeHttpServer())
        .then(pool.disposeLater().onErrorResume(e -> {
          log.warn("Connection pool did not close cleanly: {}", e.toString());
          return Mono.empty();
        }))
        .then(Mono.fromRunnable(registry::close));
  }

  private Mono<Void> closeHttpServer() {
    DisposableServer bound = server;
    if (bound == null) {
      return Mono.empty();
    }
    return Mono.fromRunnable(bound::dispose)
        .then(bound.onDispose())
        .then(Mono.<Void>create(sink -> httpConnections.close().addListener(done -> sink.success())))
        .timeout(HTTP_CLOSE_TIMEOUT, Mono.fromRunnable(
            () -> log.warn("HTTP server did not close within {}", HTTP_CLOSE_TIMEOUT)))
        .onErrorResume(e -> Mono.empty());
  }

  /** After a failed start, from the thread that called {@link #start}. */
  private void disposeNow() {
    disposeRetention();
    DisposableServer bound = server;
    if (bound != null) {
      bound.dispose();
    }
    httpConnections.close();
    pool.dispose();
    registry.close();
  }

  private void disposeRetention() {
    Disposable running = retention;
    if (running != null) {
      running.dispose();
    }
  }

  // ---- HTTP ----

  private Mono<Void> health(HttpServerRequest request, HttpServerResponse response) {
    RelayHealth health = checkHealth();
    return response.status(health.isUp() ? HttpResponseStatus.OK
            : HttpResponseStatus.SERVICE_UNAVAILABLE)
        .header(HttpHeaderNames.CONTENT_TYPE, JSON)
        .header(HttpHeaderNames.CACHE_CONTROL, "no-store")
        .sendString(Mono.just(toJson(health)))
        .then();
  }

  /**
   * The relay's last health check ({@link RelayHandle#health()}: database and table, Kafka, the
   * producer's network thread, what holds publication back), or DOWN while the relay is not
   * running (starting, stopping, ended). Never blocks: the checks run in the background.
   */
  RelayHealth checkHealth() {
    State now = state.get();
    RelayHandle running = handle;
    if (now != State.RUNNING || running == null) {
      return RelayHealth.down("relay is " + now.name().toLowerCase(java.util.Locale.ROOT));
    }
    return running.health();
  }

  /**
   * {@code {"status":"UP","details":{...}}} or {@code {"status":"DOWN","reason":"a; b",
   * "reasons":["a","b"],"details":{...}}}.
   */
  static String toJson(RelayHealth health) {
    Map<String, Object> body = new LinkedHashMap<>();
    body.put("status", health.status().name());
    if (!health.isUp()) {
      body.put("reason", String.join("; ", health.reasons()));
      body.put("reasons", health.reasons());
    }
    if (!health.details().isEmpty()) {
      body.put("details", health.details());
    }
    body.put("checkedAt", health.checkedAt().toString());
    StringBuilder out = new StringBuilder();
    json(out, body);
    return out.toString();
  }

  private static void json(StringBuilder out, @Nullable Object value) {
    if (value == null) {
      out.append("null");
    } else if (value instanceof Map<?, ?> map) {
      out.append('{');
      boolean first = true;
      for (Map.Entry<?, ?> entry : map.entrySet()) {
        if (!first) {
          out.append(',');
        }
        first = false;
        out.append('"').append(jsonEscape(String.valueOf(entry.getKey()))).append("\":");
        json(out, entry.getValue());
      }
      out.append('}');
    } else if (value instanceof Collection<?> list) {
      out.append('[');
      boolean first = true;
      for (Object element : list) {
        if (!first) {
          out.append(',');
        }
        first = false;
        json(out, element);
      }
      out.append(']');
    } else if (value instanceof Number || value instanceof Boolean) {
      out.append(value);
    } else {
      out.append('"').append(jsonEscape(value.toString())).append('"');
    }
  }

  private Mono<Void> metrics(HttpServerRequest request, HttpServerResponse response) {
    // Scraping walks every meter and may take locks: keep it off the event loop.
    Mono<String> text = Mono.fromCallable(registry::scrape).subscribeOn(Schedulers.boundedElastic());
    return response.header(HttpHeaderNames.CONTENT_TYPE, PROMETHEUS_TEXT)
        .sendString(text)
        .then();
  }

  static String jsonEscape(String text) {
    StringBuilder out = new StringBuilder(text.length() + 16);
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      switch (c) {
        case '"' -> out.append("\\\"");
        case '\\' -> out.append("\\\\");
        case '\n' -> out.append("\\n");
        case '\r' -> out.append("\\r");
        case '\t' -> out.append("\\t");
        default -> {
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else {
            out.append(c);
          }
        }
      }
    }
    return out.toString();
  }
}
