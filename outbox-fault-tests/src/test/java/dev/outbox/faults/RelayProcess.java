package dev.outbox.faults;

import dev.outbox.relay.standalone.RelayMain;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The standalone relay ({@link RelayMain}) in its own JVM, so a test can kill it with SIGKILL or
 * freeze it with SIGSTOP as an operating system would; it runs under BlockHound ({@link
 * BlockHoundRelayMain}). Output goes to a log file per relay name (launches append).
 */
final class RelayProcess {
  private static final Pattern HTTP_PORT = Pattern.compile("HTTP server listening on port (\\d+)");

  private final String name;
  private final Process process;
  private final Path log;

  private RelayProcess(String name, Process process, Path log) {
    this.name = name;
    this.process = process;
    this.log = log;
  }

  /**
   * Starts a relay JVM ({@code -Xmx256m}) with exactly these {@code OUTBOX_*} variables, under
   * BlockHound ({@link BlockHoundRelayMain}).
   */
  static RelayProcess start(String name, Map<String, String> outboxEnv, Path log) {
    return start(name, outboxEnv, log, List.of());
  }

  /** As {@link #start(String, Map, Path)}, with extra JVM options (after the defaults). */
  static RelayProcess start(String name, Map<String, String> outboxEnv, Path log,
      List<String> jvmOptions) {
    String java = Paths.get(System.getProperty("java.home"), "bin", "java").toString();
    List<String> command = new ArrayList<>(List.of(java, "-Xmx256m", "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1", // starts faster, and it is restarted ten times a run
        "-XX:+AllowRedefinitionToAddDeleteMethods")); // BlockHound on Java 13+
    command.addAll(jvmOptions);
    command.addAll(List.of("-cp", System.getProperty("java.class.path"),
        BlockHoundRelayMain.class.getName()));
    ProcessBuilder builder = new ProcessBuilder(command);
    builder.environment().keySet().removeIf(variable -> variable.startsWith("OUTBOX_"));
    builder.environment().putAll(outboxEnv);
    builder.redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()));
    try {
      return new RelayProcess(name, builder.start(), log);
    } catch (IOException e) {
      throw new UncheckedIOException("Could not start relay " + name, e);
    }
  }

  long pid() {
    return process.pid();
  }

  boolean isAlive() {
    return process.isAlive();
  }

  /** SIGKILL: no shutdown hook, no drain, leases left behind. */
  void kill() {
    process.destroyForcibly();
    awaitExit(30);
  }

  /** SIGTERM: the relay drains and exits. */
  void stop() {
    process.destroy();
    if (!awaitExit(60)) {
      kill();
    }
  }

  /** SIGSTOP: the JVM stops running but keeps its sockets, leases and sessions. */
  void freeze() {
    signal("STOP");
  }

  /** SIGCONT after {@link #freeze()}. */
  void resume() {
    signal("CONT");
  }

  private void signal(String signal) {
    try {
      Process kill = new ProcessBuilder("kill", "-" + signal, Long.toString(pid()))
          .redirectErrorStream(true).start();
      if (!kill.waitFor(10, TimeUnit.SECONDS) || kill.exitValue() != 0) {
        throw new IllegalStateException("kill -" + signal + " " + pid() + " failed");
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IllegalStateException(e);
    }
  }

  /** Whether the relay's output so far reports a BlockHound violation. */
  boolean reportedBlocking() {
    return output().contains(BlockHoundRelayMain.VIOLATION);
  }

  /** Whether the relay's JVM has installed BlockHound. */
  boolean blockHoundInstalled() {
    return output().contains(BlockHoundRelayMain.INSTALLED);
  }

  /** The process's exit status; only once it has exited. */
  int exitValue() {
    return process.exitValue();
  }

  /** Waits up to {@code seconds} for the JVM to exit; whether it did. */
  boolean awaitExit(long seconds) {
    try {
      return process.waitFor(seconds, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return false;
    }
  }

  /**
   * The sum of the Prometheus samples on this launch's {@code GET /metrics} whose line starts
   * with {@code prefix} (a metric name, optionally with the first tags), or -1 when the relay
   * does not answer. The port is the last one the log announced, so this launch's once it has
   * started.
   */
  double metric(String prefix) {
    Matcher port = HTTP_PORT.matcher(output());
    String last = null;
    while (port.find()) {
      last = port.group(1);
    }
    if (last == null || !isAlive()) {
      return -1;
    }
    try {
      HttpResponse<String> response = HttpClient.newHttpClient().send(
          HttpRequest.newBuilder(URI.create("http://localhost:" + last + "/metrics"))
              .timeout(Duration.ofSeconds(5)).build(),
          HttpResponse.BodyHandlers.ofString());
      return response.body().lines().filter(line -> line.startsWith(prefix))
          .mapToDouble(line -> Double.parseDouble(line.substring(line.lastIndexOf(' ') + 1)))
          .sum();
    } catch (IOException | RuntimeException e) {
      return -1;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return -1;
    }
  }

  /** The relay's output so far, for failure messages. */
  String output() {
    try {
      return Files.readString(log, StandardCharsets.UTF_8);
    } catch (IOException e) {
      return "(unreadable: " + e + ")";
    }
  }

  @Override
  public String toString() {
    return "relay " + name + " (pid " + process.pid() + ")";
  }
}
