package dev.outbox.testing;

import io.zonky.test.db.postgres.embedded.EmbeddedPostgres;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.nio.file.Path;
import org.jspecify.annotations.Nullable;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * An embedded PostgreSQL that a test can stop and start again on the same port with the same
 * data directory, for fault-injection tests; configured like {@link TestPostgres}'s server.
 *
 * <p>Not shared: the test that creates it closes it. Thread-safe; all methods block.
 */
public final class RestartablePostgres implements AutoCloseable {
  private static final Logger log = LoggerFactory.getLogger(RestartablePostgres.class);

  private final Path dataDirectory;
  private final int port;
  private final TestPostgres client;
  private @Nullable EmbeddedPostgres server;

  private RestartablePostgres(Path dataDirectory, int port) {
    this.dataDirectory = dataDirectory;
    this.port = port;
    this.client = new TestPostgres("r2dbc:postgresql://postgres@localhost:" + port + "/postgres",
        null);
  }

  /** Initialises a new data directory (which must not exist yet) and starts the server. */
  public static RestartablePostgres start(Path dataDirectory) {
    RestartablePostgres postgres = new RestartablePostgres(dataDirectory, freePort());
    postgres.startServer();
    Runtime.getRuntime().addShutdownHook(new Thread(postgres::close, "restartable-postgres-stop"));
    return postgres;
  }

  private static int freePort() {
    try (ServerSocket socket = new ServerSocket(0)) {
      return socket.getLocalPort();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  /** Helpers and connections for this server (its URL stays the same across restarts). */
  public TestPostgres client() {
    return client;
  }

  public int port() {
    return port;
  }

  /** Starts the stopped server again: same port, same data (crash recovery runs if needed). */
  public synchronized void startServer() {
    if (server != null) {
      throw new IllegalStateException("PostgreSQL is already running on port " + port);
    }
    try {
      server = TestPostgres.embeddedBuilder()
          .setDataDirectory(dataDirectory)
          .setCleanDataDirectory(false)
          .setPort(port)
          .start();
      log.info("Restartable PostgreSQL running on port {} with data in {}", port, dataDirectory);
    } catch (IOException e) {
      throw new UncheckedIOException("Could not start PostgreSQL on port " + port, e);
    }
  }

  /**
   * Stops the server ({@code pg_ctl stop}); clients see their connections closed. Returns
   * whether the fast shutdown stopped it (false: it had to be stopped immediately, see below).
   */
  public synchronized boolean stopServer() {
    EmbeddedPostgres running = server;
    if (running == null) {
      return true;
    }
    server = null;
    try {
      running.close();
    } catch (IOException e) {
      throw new UncheckedIOException("Could not stop PostgreSQL on port " + port, e);
    }
    return !stopImmediatelyIfStillRunning();
  }

  /**
   * A fast shutdown ({@code pg_ctl stop -m fast -t 5}, which the embedded server logs and
   * swallows when it times out) waits for each walsender until its client has confirmed what it
   * was sent; a WAL-mode relay with rows in flight cannot confirm past them (their DELETEs fail
   * while the server shuts down) and ends its stream only once it finds the server unavailable,
   * or not at all while Kafka does not answer, so the postmaster can stay up. Then: an immediate shutdown
   * (SIGQUIT), as an operator would, and crash recovery at the next start. Returns whether it
   * was needed.
   */
  private boolean stopImmediatelyIfStillRunning() {
    Path pidFile = dataDirectory.resolve("postmaster.pid");
    try {
      if (!java.nio.file.Files.exists(pidFile)) {
        return false;
      }
      long pid = Long.parseLong(java.nio.file.Files.readAllLines(pidFile).get(0).trim());
      java.util.Optional<ProcessHandle> postmaster = ProcessHandle.of(pid);
      if (postmaster.isEmpty() || !postmaster.get().isAlive()) {
        return false;
      }
      log.warn("PostgreSQL on port {} is still up after a fast shutdown; stopping it immediately", port);
      new ProcessBuilder("kill", "-QUIT", Long.toString(pid)).inheritIO().start().waitFor();
      postmaster.get().onExit().get(30, java.util.concurrent.TimeUnit.SECONDS);
      return true;
    } catch (java.util.concurrent.TimeoutException e) {
      throw new IllegalStateException("PostgreSQL on port " + port + " did not stop", e);
    } catch (IOException e) {
      throw new UncheckedIOException("Could not stop PostgreSQL on port " + port, e);
    } catch (java.util.concurrent.ExecutionException e) {
      throw new IllegalStateException(e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException(e);
    }
  }

  /** Stops the server; the data directory stays for inspection (the build cleans it). */
  @Override
  public void close() {
    stopServer();
  }
}
