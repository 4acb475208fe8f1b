package dev.outbox.relay;

import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.util.retry.Retry;

/**
 * Leadership of one outbox table for {@link RelayMode#ORDERED}: a session-level PostgreSQL
 * advisory lock held on a dedicated connection. The lock lives exactly as long as the session,
 * so a leader that dies, or whose connection is killed, releases it at once, and a standby that
 * retries {@code pg_try_advisory_lock} takes over.
 *
 * <p>{@link #states()} emits {@code true} when this instance becomes leader and {@code false}
 * when it stops being leader: when the heartbeat on the lock connection fails or does not
 * answer within the heartbeat interval (a stalled connection counts as lost). A leader that
 * lost its lock waits three retry intervals before competing again, so a waiting standby wins.
 */
final class Leadership {
  private static final Logger log = LoggerFactory.getLogger(Leadership.class);

  private final ConnectionFactory connections;
  private final String lockName;
  private final String instanceId;
  private final Duration retry;
  private final Duration heartbeat;
  private final AtomicBoolean lost = new AtomicBoolean();

  Leadership(ConnectionFactory connections, String lockName, String instanceId, Duration retry,
      Duration heartbeat) {
    this.connections = connections;
    this.lockName = lockName;
    this.instanceId = instanceId;
    this.retry = retry;
    this.heartbeat = heartbeat;
  }

  /** Leadership changes, starting with {@code false}; never completes until cancelled. */
  Flux<Boolean> states() {
    return Flux.defer(() -> Flux.usingWhen(
                Mono.defer(() -> lost.getAndSet(false)
                        ? Mono.delay(retry.multipliedBy(3)).then() : Mono.<Void>empty())
                    .then(Mono.from(connections.create())),
                this::session,
                Connection::close))
        .onErrorResume(error -> {
          log.warn("Outbox relay {} lost its leadership connection: {}", instanceId, error.toString());
          lost.set(true);
          return Flux.just(false).concatWith(Mono.error(error));
        })
        .retryWhen(Retry.fixedDelay(Long.MAX_VALUE, retry))
        .startWith(false)
        .distinctUntilChanged();
  }

  /** Tries the lock until it is granted, then checks the session until it fails. */
  private Flux<Boolean> session(Connection connection) {
    Mono<Boolean> tryLock = Flux.from(connection
            .createStatement("SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS granted")
            .bind(0, lockName).execute())
        .concatMap(result -> result.map((row, meta) -> Boolean.TRUE.equals(row.get("granted", Boolean.class))))
        .single();
    Mono<Integer> alive = Flux.from(connection.createStatement("SELECT 1 AS alive").execute())
        .concatMap(result -> result.map((row, meta) -> 1))
        .single()
        .timeout(heartbeat);
    return tryLock
        .repeatWhen(attempts -> attempts.delayElements(retry))
        .takeUntil(granted -> granted)
        .filter(granted -> granted)
        .doOnNext(granted -> log.info("Outbox relay {} is now the leader for {}", instanceId, lockName))
        .concatWith(Flux.interval(heartbeat, heartbeat)
            .onBackpressureDrop()
            .concatMap(tick -> alive)
            .then(Mono.empty()));
  }
}
