package dev.outbox.relay;

import dev.outbox.r2dbc.InvalidConfigurationException;
import io.netty.channel.unix.DomainSocketAddress;
import io.r2dbc.postgresql.api.PostgresqlConnection;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;
import java.util.function.Supplier;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.FluxSink;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;
import reactor.netty.tcp.TcpServer;
import reactor.netty.udp.UdpServer;
import reactor.util.retry.Retry;

/**
 * The relay's external wake-ups: LISTEN/NOTIFY on a dedicated connection, and heartbeat
 * listeners on TCP, UDP and a UNIX-domain socket. Each emits a signal per notification or per
 * read; what arrives is never buffered or parsed (any bytes mean "there is work"), so garbage,
 * huge lines and floods cost only their reads, and the relay debounces the signals.
 */
final class WakeSources {
  private static final Logger log = LoggerFactory.getLogger(WakeSources.class);

  private WakeSources() {}

  /** Every configured source, merged; subscribe once, dispose to stop them all. */
  static Flux<Long> of(Triggers triggers, ConnectionFactory unpooled, String instanceId) {
    List<Flux<Long>> sources = new ArrayList<>();
    if (triggers.listenChannel() != null) {
      sources.add(listen(unpooled, triggers.listenChannel(), instanceId));
    }
    if (triggers.tcp() != null) {
      InetSocketAddress address = triggers.tcp();
      sources.add(streamServer("TCP " + address, () -> address));
    }
    if (triggers.udp() != null) {
      InetSocketAddress address = triggers.udp();
      sources.add(server("UDP " + address, sink -> UdpServer.create()
          .bindAddress(() -> address)
          .handle((in, out) -> in.receive().doOnNext(bytes -> sink.next(1L)).then())
          .bind()
          .map(connection -> (Disposable) connection)));
    }
    if (triggers.unixSocket() != null) {
      Path path = triggers.unixSocket();
      sources.add(Mono.fromRunnable(() -> deleteStale(path))
          .subscribeOn(Schedulers.boundedElastic())
          .thenMany(streamServer("UNIX socket " + path,
              () -> new DomainSocketAddress(path.toString()))));
    }
    return Flux.merge(sources);
  }

  /** A TCP or UNIX-domain stream server: one signal per read. */
  private static Flux<Long> streamServer(String what, Supplier<? extends SocketAddress> address) {
    return server(what, sink -> TcpServer.create()
        .bindAddress(address)
        .handle((in, out) -> in.receive().doOnNext(bytes -> sink.next(1L)).then())
        .bind()
        .map(server -> (Disposable) server));
  }

  /** LISTEN, emit once (to catch up on what was missed), then once per notification. */
  private static Flux<Long> listen(ConnectionFactory unpooled, String channel, String instanceId) {
    return Flux.usingWhen(Mono.from(unpooled.create()),
            connection -> {
              if (!(connection instanceof PostgresqlConnection postgres)) {
                return Flux.error(new InvalidConfigurationException(
                    "listen(...) needs r2dbc-postgresql connections, got " + connection.getClass()));
              }
              return Flux.from(postgres.createStatement("LISTEN " + channel).execute())
                  .concatMap(result -> result.getRowsUpdated())
                  .then(Mono.fromRunnable(() -> log.info("Outbox relay {} listening on channel {}",
                      instanceId, channel)))
                  .thenMany(Flux.just(0L).concatWith(postgres.getNotifications().map(n -> 1L)))
                  .concatWith(Mono.error(() -> new IllegalStateException("the LISTEN connection closed")));
            },
            WakeSources::closeQuietly)
        .retryWhen(Retry.backoff(Long.MAX_VALUE, Duration.ofMillis(100))
            .maxBackoff(Duration.ofSeconds(5))
            .transientErrors(true)
            .doBeforeRetry(signal -> log.warn("Outbox relay {} lost its LISTEN connection; listening"
                + " again: {}", instanceId, signal.failure().toString())));
  }

  private static Mono<Void> closeQuietly(Connection connection) {
    return Mono.from(connection.close()).onErrorResume(error -> Mono.empty());
  }

  /** A server bound on subscription and disposed on cancel, emitting what its handler signals. */
  private static Flux<Long> server(String what,
      Function<FluxSink<Long>, Mono<Disposable>> bind) {
    return Flux.create(sink -> {
      AtomicReference<@Nullable Disposable> server = new AtomicReference<>();
      sink.onDispose(() -> {
        Disposable bound = server.getAndSet(null);
        if (bound != null) {
          bound.dispose();
        }
      });
      bind.apply(sink).subscribe(bound -> {
        log.info("Outbox relay accepting heartbeats on {}", what);
        if (!server.compareAndSet(null, bound) || sink.isCancelled()) {
          bound.dispose();
        }
      }, sink::error);
    }, FluxSink.OverflowStrategy.LATEST);
  }

  private static void deleteStale(Path path) {
    try {
      Files.deleteIfExists(path);
    } catch (IOException e) {
      throw new UncheckedIOException("Cannot remove the stale socket file " + path, e);
    }
  }
}
