package dev.outbox.r2dbc;

import io.netty.channel.unix.DomainSocketAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.file.Path;
import java.util.function.Supplier;
import reactor.core.publisher.Mono;
import reactor.netty.tcp.TcpClient;
import reactor.netty.udp.UdpClient;

/**
 * The client side of the relay's heartbeat triggers, for applications whose relay runs as a
 * separate (sidecar) process: after a transaction that wrote to the outbox commits, tell the
 * relay there is work instead of waiting for its next poll.
 *
 * <pre>{@code
 * HeartbeatNotifier relay = HeartbeatNotifier.udp(new InetSocketAddress("127.0.0.1", 7071));
 * OutboxTransactions.inTransaction(pool, c -> placeOrder(c, order))
 *     .then(relay.notifyWork().onErrorResume(e -> Mono.empty()));   // a hint: never fail on it
 * }</pre>
 *
 * <p>It lives in the writer's module so that a writer application need not depend on the relay;
 * it needs reactor-netty, which r2dbc-postgresql already brings. Each {@link #notifyWork()} opens a connection (or sends one datagram) and sends one byte.
 * Immutable and thread-safe.
 */
public final class HeartbeatNotifier {
  private static final byte[] HEARTBEAT = {'\n'};

  private final Mono<Void> send;

  private HeartbeatNotifier(Mono<Void> send) {
    this.send = send;
  }

  public static HeartbeatNotifier tcp(InetSocketAddress address) {
    return stream(() -> address);
  }

  /** A UNIX-domain socket (Linux). */
  public static HeartbeatNotifier unixSocket(Path path) {
    return stream(() -> new DomainSocketAddress(path.toString()));
  }

  public static HeartbeatNotifier udp(InetSocketAddress address) {
    return new HeartbeatNotifier(Mono.usingWhen(
        UdpClient.create().remoteAddress(() -> address).connect(),
        connection -> connection.outbound().sendByteArray(Mono.just(HEARTBEAT)).then(),
        connection -> Mono.fromRunnable(connection::dispose)));
  }

  private static HeartbeatNotifier stream(Supplier<? extends SocketAddress> address) {
    return new HeartbeatNotifier(Mono.usingWhen(
        TcpClient.newConnection().remoteAddress(address).connect(),
        connection -> connection.outbound().sendByteArray(Mono.just(HEARTBEAT)).then(),
        connection -> Mono.fromRunnable(connection::dispose)));
  }

  /** Sends one heartbeat; completes when it is written. Lazy. */
  public Mono<Void> notifyWork() {
    return send;
  }
}
