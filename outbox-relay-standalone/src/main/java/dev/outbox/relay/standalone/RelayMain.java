package dev.outbox.relay.standalone;

import dev.outbox.r2dbc.InvalidConfigurationException;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.Proxy;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.config.ConfigException;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The standalone relay process: reads {@link StandaloneConfig} from the environment, logs it
 * (secrets masked), starts a {@link StandaloneRelay} and runs until the JVM is asked to stop.
 *
 * <pre>{@code
 * OUTBOX_DATABASE_URL=r2dbc:postgresql://relay:secret@db:5432/app \
 * OUTBOX_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
 * mvn -B -q -Prun -pl outbox-relay-standalone -am verify -DskipTests
 * }</pre>
 *
 * <p>On SIGTERM or SIGINT (and on any other JVM shutdown) a shutdown hook stops the relay with
 * {@code OUTBOX_DRAIN}, logs {@code Outbox relay stopped} and the process exits with status 0;
 * if the stop does not finish within the drain plus 5 s the process exits with status 1.
 * Invalid configuration exits at once with status {@value #EXIT_INVALID_CONFIGURATION} and a
 * message naming the variable; any other startup failure with status {@value #EXIT_START_FAILED}.
 *
 * <p>With arguments it runs one dead-letter, backlog or WAL slot subcommand instead ({@link
 * AdminCommands}: {@code dead-letters list|show|redrive|purge}, {@code backlog}, {@code
 * wal-slot show|drop}) and exits.
 */
public final class RelayMain {
  /** Exit status when the environment holds an invalid or missing variable. */
  public static final int EXIT_INVALID_CONFIGURATION = 2;
  /** Exit status when the relay could not start (for example, the HTTP port is taken). */
  public static final int EXIT_START_FAILED = 1;
  /** Beyond the drain, how long the shutdown hook waits for the stop. */
  static final Duration STOP_GRACE = Duration.ofSeconds(5);

  private static final Logger log = LoggerFactory.getLogger(RelayMain.class);

  private RelayMain() {}

  public static void main(String[] args) throws InterruptedException {
    Map<String, String> env = System.getenv();
    if (args.length > 0) {
      // A dead-letter or backlog subcommand: runs, prints, exits; no relay starts.
      System.exit(AdminCommands.run(List.of(args), env, System.out, System.err));
      return;
    }
    StandaloneConfig config;
    try {
      config = StandaloneConfig.fromEnvironment(env);
    } catch (InvalidConfigurationException e) {
      System.err.println("Invalid outbox relay configuration: " + e.getMessage());
      System.exit(EXIT_INVALID_CONFIGURATION);
      return;
    }
    log.info("{}", config.describe());
    List<String> unrecognized = StandaloneConfig.unrecognizedVariables(env);
    if (!unrecognized.isEmpty()) {
      log.warn("Ignoring unrecognized variables (misspelt?): {}", unrecognized);
    }

    StandaloneRelay relay;
    try {
      relay = StandaloneRelay.start(config);
    } catch (InvalidConfigurationException | ConfigException e) {
      // ConfigException: Kafka refused a producer property the checks above let through.
      System.err.println("Invalid outbox relay configuration: " + e.getMessage());
      System.exit(EXIT_INVALID_CONFIGURATION);
      return;
    } catch (RuntimeException e) {
      log.error("Outbox relay could not start", e);
      System.exit(EXIT_START_FAILED);
      return;
    }
    log.info("Outbox relay started; health on http://localhost:{}/health, metrics on /metrics",
        relay.httpPort());

    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> stopOnShutdown(relay, config, stopped),
        "outbox-relay-shutdown"));
    exitZeroOnSignal("TERM");
    exitZeroOnSignal("INT");
    stopped.await();
  }

  /** Runs in the shutdown hook thread, where blocking is fine. */
  private static void stopOnShutdown(StandaloneRelay relay, StandaloneConfig config,
      CountDownLatch stopped) {
    Duration drain = config.drain();
    log.info("Outbox relay stopping (drain {})", StandaloneConfig.format(drain));
    try {
      relay.stop(drain).block(drain.plus(STOP_GRACE));
      log.info("Outbox relay stopped");
    } catch (RuntimeException e) {
      log.error("Outbox relay did not stop within {}; exiting anyway",
          StandaloneConfig.format(drain.plus(STOP_GRACE)), e);
      Runtime.getRuntime().halt(1);
    } finally {
      stopped.countDown();
    }
  }

  /**
   * The JVM answers SIGTERM and SIGINT by running the shutdown hooks and exiting with status
   * 128 + signal (143, 130). A clean stop on request is a success for a sidecar, so these
   * signals start the same shutdown with status 0 instead. {@code sun.misc.Signal} (module
   * jdk.unsupported) is reached by reflection to keep the build free of internal-API warnings;
   * where it is missing the JVM's default handling stays.
   */
  private static void exitZeroOnSignal(String name) {
    try {
      Class<?> signalClass = Class.forName("sun.misc.Signal");
      Class<?> handlerClass = Class.forName("sun.misc.SignalHandler");
      Object signal = signalClass.getConstructor(String.class).newInstance(name);
      InvocationHandler onSignal = (proxy, method, arguments) -> {
        switch (method.getName()) {
          case "handle" -> {
            log.info("Received SIG{}", name);
            // Not on the signal thread: System.exit waits for the shutdown hooks.
            new Thread(() -> System.exit(0), "outbox-relay-exit").start();
            return null;
          }
          case "hashCode" -> {
            return System.identityHashCode(proxy);
          }
          case "equals" -> {
            return proxy == arguments[0];
          }
          default -> {
            return "exit 0 on SIG" + name;
          }
        }
      };
      Object handler = Proxy.newProxyInstance(RelayMain.class.getClassLoader(),
          new Class<?>[] {handlerClass}, onSignal);
      signalClass.getMethod("handle", signalClass, handlerClass).invoke(null, signal, handler);
    } catch (ReflectiveOperationException | RuntimeException | LinkageError e) {
      log.debug("Cannot handle SIG{}; the JVM's default exit status applies", name, e);
    }
  }
}
