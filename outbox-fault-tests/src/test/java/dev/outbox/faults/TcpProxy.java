package dev.outbox.faults;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A loopback TCP proxy the test controls: {@link #cut()} resets every open connection and
 * refuses new ones until {@link #restore()}, which is what a relay sees when the network to
 * PostgreSQL or Kafka goes away.
 *
 * <p>Blocking sockets on daemon platform threads (test code, never a Reactor thread).
 * Thread-safe.
 */
final class TcpProxy implements AutoCloseable {
  private final String name;
  private volatile int targetPort;
  private final ServerSocket server;
  private final Set<Socket> open = ConcurrentHashMap.newKeySet();
  private final AtomicLong accepted = new AtomicLong();
  private final AtomicLong refused = new AtomicLong();
  private volatile boolean cut;
  private volatile boolean closed;

  private TcpProxy(String name, int targetPort, ServerSocket server) {
    this.name = name;
    this.targetPort = targetPort;
    this.server = server;
  }

  /** Listens on a free loopback port and forwards to {@code localhost:targetPort}. */
  static TcpProxy start(String name, int targetPort) {
    try {
      ServerSocket server = new ServerSocket(0, 200, InetAddress.getLoopbackAddress());
      TcpProxy proxy = new TcpProxy(name, targetPort, server);
      daemon("proxy-" + name + "-accept", proxy::acceptLoop).start();
      return proxy;
    } catch (IOException e) {
      throw new UncheckedIOException("Could not start the " + name + " proxy", e);
    }
  }

  int port() {
    return server.getLocalPort();
  }

  /** Forwards new connections to {@code localhost:targetPort} from now on. */
  void forwardTo(int targetPort) {
    this.targetPort = targetPort;
  }

  /** Resets every proxied connection and refuses new ones. */
  void cut() {
    cut = true;
    open.forEach(TcpProxy::reset);
  }

  /** Forwards new connections again. */
  void restore() {
    cut = false;
  }

  long acceptedConnections() {
    return accepted.get();
  }

  long refusedConnections() {
    return refused.get();
  }

  private void acceptLoop() {
    while (!closed) {
      Socket client;
      try {
        client = server.accept();
      } catch (IOException e) {
        return; // closed
      }
      if (cut) {
        refused.incrementAndGet();
        reset(client);
        continue;
      }
      Socket upstream = new Socket();
      try {
        upstream.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), targetPort),
            5_000);
      } catch (IOException e) {
        refused.incrementAndGet();
        reset(client);
        reset(upstream);
        continue;
      }
      accepted.incrementAndGet();
      open.add(client);
      open.add(upstream);
      daemon("proxy-" + name + "-up", () -> pump(client, upstream)).start();
      daemon("proxy-" + name + "-down", () -> pump(upstream, client)).start();
    }
  }

  private void pump(Socket from, Socket to) {
    byte[] buffer = new byte[64 * 1024];
    try {
      InputStream in = from.getInputStream();
      OutputStream out = to.getOutputStream();
      for (int n; (n = in.read(buffer)) >= 0; ) {
        out.write(buffer, 0, n);
      }
    } catch (IOException e) {
      // the other side went away, or cut() reset it
    } finally {
      reset(from);
      reset(to);
      open.remove(from);
      open.remove(to);
    }
  }

  /** Closes with SO_LINGER 0, so the peer sees a reset rather than an orderly end. */
  private static void reset(Socket socket) {
    try {
      if (!socket.isClosed() && socket.isConnected()) {
        socket.setSoLinger(true, 0);
      }
    } catch (IOException e) {
      // closing below anyway
    }
    try {
      socket.close();
    } catch (IOException e) {
      // already gone
    }
  }

  private static Thread daemon(String name, Runnable task) {
    Thread thread = new Thread(task, name);
    thread.setDaemon(true);
    return thread;
  }

  @Override
  public void close() {
    closed = true;
    try {
      server.close();
    } catch (IOException e) {
      // nothing to release
    }
    open.forEach(TcpProxy::reset);
  }

  @Override
  public String toString() {
    return name + " proxy :" + port() + " -> :" + targetPort;
  }
}
