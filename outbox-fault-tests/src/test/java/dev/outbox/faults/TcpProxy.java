package dev.outbox.faults;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A loopback TCP proxy the test controls: {@link #cut()} resets every open connection and
 * refuses new ones until {@link #restore()}, which is what a relay sees when the network to
 * PostgreSQL or Kafka goes away.
 *
 * <p>{@link #silence()} is the other way a network fails: a black hole. Connections stay open
 * and new ones are accepted, but no byte is forwarded either way and nothing is reset (bytes
 * already read are held, not dropped). Then either {@link #resume()}: every connection
 * forwards again, held bytes first; or {@link #resumeNewConnectionsOnly()}: connections opened
 * from then on work, the earlier ones stay silent for good (a NAT or firewall that lost its
 * state, a failed-over address), until {@link #restore()} resets them.
 *
 * <p>Blocking sockets on daemon platform threads (test code, never a Reactor thread).
 * Thread-safe.
 */
final class TcpProxy implements AutoCloseable {
  private final String name;
  private volatile int targetPort;
  private final ServerSocket server;
  private final Set<Socket> open = ConcurrentHashMap.newKeySet();
  private final Map<Socket, Long> ids = new ConcurrentHashMap<>();
  private final AtomicLong accepted = new AtomicLong();
  private final AtomicLong refused = new AtomicLong();
  private final AtomicLong connectionIds = new AtomicLong();
  /** Guards the silence state; pumps wait on it while their connection is silent. */
  private final Object gate = new Object();
  private volatile boolean cut;
  private volatile boolean closed;
  private volatile boolean silent;
  /** Connections with an id below this never forward again (until {@link #restore()}). */
  private volatile long abandonedBelow;

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

  /**
   * Forwards new connections again. After {@link #resumeNewConnectionsOnly()}, also resets the
   * connections left silent (so that no session stays behind for the next scenario).
   */
  void restore() {
    cut = false;
    synchronized (gate) {
      silent = false;
      if (abandonedBelow > 0) {
        open.stream().filter(s -> idOf(s) < abandonedBelow).forEach(TcpProxy::reset);
        abandonedBelow = 0;
      }
      gate.notifyAll();
    }
  }

  /** Every connection, open or new, stops forwarding; none is reset. */
  void silence() {
    synchronized (gate) {
      silent = true;
    }
  }

  /** After {@link #silence()}: every connection forwards again, bytes held first. */
  void resume() {
    synchronized (gate) {
      silent = false;
      gate.notifyAll();
    }
  }

  /**
   * After {@link #silence()}: connections opened from now on forward; every connection opened
   * before stays silent, without a reset, until {@link #restore()}.
   */
  void resumeNewConnectionsOnly() {
    synchronized (gate) {
      abandonedBelow = connectionIds.get() + 1;
      silent = false;
      gate.notifyAll();
    }
  }

  /** Connections open now that will not forward (silenced or abandoned). */
  long silentConnections() {
    return open.stream().filter(s -> silent || idOf(s) < abandonedBelow).count() / 2;
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
      long id = connectionIds.incrementAndGet();
      ids.put(client, id);
      ids.put(upstream, id);
      open.add(client);
      open.add(upstream);
      daemon("proxy-" + name + "-up-" + id, () -> pump(id, client, upstream)).start();
      daemon("proxy-" + name + "-down-" + id, () -> pump(id, upstream, client)).start();
    }
  }

  private void pump(long id, Socket from, Socket to) {
    byte[] buffer = new byte[64 * 1024];
    try {
      InputStream in = from.getInputStream();
      OutputStream out = to.getOutputStream();
      awaitForwarding(id, from);
      for (int n; (n = in.read(buffer)) >= 0; ) {
        // Read bytes are held while silent: no byte lost, none forwarded, and no further read,
        // so the sender's buffers fill as they would in front of a black hole.
        awaitForwarding(id, from);
        out.write(buffer, 0, n);
      }
    } catch (IOException e) {
      // the other side went away, or cut() reset it
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } finally {
      reset(from);
      reset(to);
      open.remove(from);
      open.remove(to);
      ids.remove(from);
      ids.remove(to);
    }
  }

  /** Returns when connection {@code id} may forward; throws when it was reset meanwhile. */
  private void awaitForwarding(long id, Socket from) throws InterruptedException, IOException {
    synchronized (gate) {
      while (silent || id < abandonedBelow) {
        if (closed || from.isClosed()) {
          throw new IOException("reset while silent");
        }
        gate.wait(200);
      }
    }
  }

  private long idOf(Socket socket) {
    return ids.getOrDefault(socket, Long.MAX_VALUE);
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
    synchronized (gate) {
      gate.notifyAll();
    }
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
