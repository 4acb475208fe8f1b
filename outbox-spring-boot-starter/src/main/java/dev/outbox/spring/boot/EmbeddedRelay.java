package dev.outbox.spring.boot;

import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayHealth;
import dev.outbox.relay.RelayOptions;
import io.r2dbc.spi.ConnectionFactory;
import java.time.Duration;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.context.SmartLifecycle;

/**
 * The relay as a {@link SmartLifecycle}: started with the application context, stopped on its
 * (graceful) shutdown, draining records in flight for up to the shutdown timeout. In the default
 * phase, so it starts after the web server and stops before it; either order is safe, since rows
 * written after the stop stay in the table for the next relay.
 */
final class EmbeddedRelay implements SmartLifecycle {
  private static final Logger log = LoggerFactory.getLogger(EmbeddedRelay.class);

  private final ConnectionFactory connectionFactory;
  private final RelayOptions options;
  private final RelayObservations observations;
  private final Duration shutdownTimeout;
  private volatile @Nullable RelayHandle running;

  EmbeddedRelay(ConnectionFactory connectionFactory, RelayOptions options,
      RelayObservations observations, Duration shutdownTimeout) {
    this.connectionFactory = connectionFactory;
    this.options = options;
    this.observations = observations;
    this.shutdownTimeout = shutdownTimeout;
  }

  @Override
  public synchronized void start() {
    if (running != null) {
      return;
    }
    // A new OutboxRelay per start: one instance starts once, and a context may be restarted.
    running = OutboxRelay.create(connectionFactory, options).start();
    log.info("Outbox relay started on {} ({} mode)", options.table(), options.mode());
  }

  @Override
  public void stop(Runnable callback) {
    RelayHandle relay;
    synchronized (this) {
      relay = running;
      running = null;
    }
    if (relay == null) {
      callback.run();
      return;
    }
    relay.stop(shutdownTimeout)
        .doFinally(signal -> callback.run())
        .subscribe(unused -> {}, error -> log.warn("Outbox relay did not stop cleanly", error),
            () -> log.info("Outbox relay stopped on {}", options.table()));
  }

  @Override
  public void stop() {
    stop(() -> {});
  }

  @Override
  public boolean isRunning() {
    return running != null;
  }

  RelayOptions options() {
    return options;
  }

  RelayObservations observations() {
    return observations;
  }

  /** The relay's last health; DOWN while it is not running. */
  RelayHealth health() {
    RelayHandle relay = running;
    return relay == null ? RelayHealth.down("the embedded relay is not running") : relay.health();
  }
}
